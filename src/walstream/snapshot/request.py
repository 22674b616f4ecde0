"""A validated SnapshotRequest: which tables (globs), the mode, the resume token and the chunk size."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .._proto import walstream_v1_pb2 as pb
from ..delivery.v1.adapter import InvalidSubscription, Subscription, TablePattern

MAX_DEFAULT_CHUNK_ROWS = 2000


class SnapshotUnavailable(Exception):
    """The request is valid but cannot be served here (gRPC FAILED_PRECONDITION); the message says why."""


@dataclass(frozen=True)
class SnapshotSpec:
    patterns: tuple[TablePattern, ...]
    texts: tuple[str, ...]  # the patterns as given, for the request hash
    mode: int
    resume_token: bytes
    chunk_rows: int  # 0: chosen by the server

    @classmethod
    def parse(cls, req: pb.SnapshotRequest) -> SnapshotSpec:
        patterns = tuple(TablePattern.parse(p, f"snapshot.tables[{i}]") for i, p in enumerate(req.tables))
        if req.mode not in (pb.INCREMENTAL, pb.CONSISTENT):
            raise InvalidSubscription(f"snapshot.mode: {req.mode} is not a snapshot mode; use INCREMENTAL or "
                                      "CONSISTENT")
        return cls(patterns, tuple(req.tables), req.mode, bytes(req.resume_token), req.chunk_rows)

    def wants(self, schema: str, table: str) -> bool:
        return not self.patterns or any(p.matches(schema, table) for p in self.patterns)

    def request_hash(self, sub: Subscription) -> str:
        """What a resume token must have been made for: the snapshot's and the subscription's table patterns."""
        parts = ["\x1f".join(self.texts), "\x1f".join(map(repr, sub.include)), "\x1f".join(map(repr, sub.exclude))]
        return hashlib.sha256("\x1e".join(parts).encode()).hexdigest()[:32]

    def chunk_size(self, queue_size: int, max_unacked: int) -> int:
        """Rows per chunk: a chunk's rows count toward the client queue and the unacknowledged bound, so at
        most a quarter of either (a backfilling client is at worst a slow client)."""
        limit = max(1, min(queue_size, max_unacked) // 4)
        if self.chunk_rows > limit:
            raise InvalidSubscription(
                f"snapshot.chunk_rows: {self.chunk_rows} is above this server's maximum; use 1 to {limit} "
                "(a quarter of --client-queue-size and --max-unacked), or 0 to let walstream choose")
        return self.chunk_rows or min(MAX_DEFAULT_CHUNK_ROWS, limit)
