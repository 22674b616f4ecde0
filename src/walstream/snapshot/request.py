"""A validated SnapshotRequest: which tables (globs), the mode, the resume token and the chunk size."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .._proto import walstream_v1_pb2 as pb
from ..delivery.v1.adapter import InvalidSubscription, Subscription, TablePattern

# When walstream chooses the chunk size: a table's first chunk has FIRST_CHUNK_ROWS rows; each next one as many
# rows as make about CHUNK_TARGET_BYTES of COPY text at the last chunk's row width, at most
# MAX_DEFAULT_CHUNK_ROWS and a quarter of --max-unacked (5,000 by default). Every chunk costs a fixed few
# milliseconds (two watermarks through the stream, the table's shape, the keyset query), so small rows want
# large chunks (bench/snapshot.py: 2,000 rows 0.19x COPY, 5,000 0.26x, 20,000 0.34x); wide rows want few, as
# the chunk is held in memory until its high watermark.
FIRST_CHUNK_ROWS = 1000
MAX_DEFAULT_CHUNK_ROWS = 20_000
CHUNK_TARGET_BYTES = 8 << 20
CONSISTENT_CHUNK_ROWS = 2000  # CONSISTENT copies: three tables at once, fixed chunks (consistent.py)


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

    def chunk_size(self, queue_size: int, max_unacked: int, piece_events: int) -> int:
        """The most rows a chunk may have: at most a quarter of --max-unacked (which counts events) and of
        the client queue (a chunk is queued as pieces of up to `piece_events` rows, the client's max_events:
        each piece one entry), so a backfilling client is at worst a slow client. A chunk_rows the client
        asked for is that, if it is within the maximum."""
        limit = max(1, min(queue_size // 4 * max(1, piece_events), max_unacked // 4))
        if self.chunk_rows > limit:
            raise InvalidSubscription(
                f"snapshot.chunk_rows: {self.chunk_rows} is above this server's maximum; use 1 to {limit} "
                "(a quarter of --max-unacked, and of --client-queue-size in pieces of the subscription's "
                "max_events), or 0 to let walstream choose")
        return self.chunk_rows or min(MAX_DEFAULT_CHUNK_ROWS, limit)

    def next_chunk_rows(self, maximum: int, rows: int = 0, size: int = 0) -> int:
        """Rows for a table's next chunk, from the last one's `rows` and COPY bytes `size` (none yet: 0)."""
        if self.chunk_rows:
            return self.chunk_rows
        if rows <= 0 or size <= 0:
            return min(FIRST_CHUNK_ROWS, maximum)
        return max(1, min(maximum, rows * CHUNK_TARGET_BYTES // size))
