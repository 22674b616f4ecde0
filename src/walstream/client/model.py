"""What the client library hands to applications: Change, Batch, Column, Status (plain frozen dataclasses)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..lsn import format_lsn

__all__ = ["Batch", "Change", "Column", "LogicalMessage", "SinkStatus", "Status", "Truncate", "format_lsn"]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_name: str  # e.g. "int4", "numeric", "_text" (arrays), "public.mood"
    type_oid: int
    type_modifier: int
    is_key: bool  # part of the replica identity


@dataclass(frozen=True, slots=True)
class Truncate:
    tables: tuple[tuple[str, str], ...]  # (schema, table) of every truncated table, in order
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    prefix: str
    content: bytes
    transactional: bool


@dataclass(frozen=True, slots=True)
class Change:
    """One event of the stream.

    `op` is one of INSERT, UPDATE, DELETE, TRUNCATE, BEGIN, COMMIT, MESSAGE, SNAPSHOT (a row the table held,
    from a snapshot: `new` as for INSERT). `(commit_lsn, ordinal)` orders
    and identifies every event (`position`); `lsn` is the change's own LSN, which is neither unique nor
    monotonic. Rows map column names to Python values (see `walstream.client.values`).
    """

    op: str
    schema: str  # INSERT/UPDATE/DELETE: the table's; TRUNCATE: the first truncated table's; else ""
    table: str
    lsn: int
    xid: int
    commit_lsn: int
    commit_time: datetime | None  # aware, UTC; None when the server sent none (non-transactional message)
    ordinal: int  # position in the transaction: BEGIN 0, changes 1.., COMMIT last
    new: dict[str, Any] | None = None  # INSERT, UPDATE: unchanged TOAST columns are left out
    old: dict[str, Any] | None = None  # DELETE; UPDATE when PostgreSQL sent the old row
    old_is_key: bool = False  # `old` holds the replica identity key columns only
    unchanged_toast: frozenset[str] = frozenset()  # columns of `new` whose value PostgreSQL did not resend
    columns: tuple[Column, ...] = ()  # the table's columns (INSERT/UPDATE/DELETE)
    relation_id: int = 0
    truncate: Truncate | None = None  # TRUNCATE
    message: LogicalMessage | None = None  # MESSAGE
    end_lsn: int | None = None  # COMMIT: the transaction's end LSN

    @property
    def position(self) -> tuple[int, int]:
        """(commit_lsn, ordinal): orders every event and tells redeliveries apart from new events.

        A non-transactional logical message has no commit: its own lsn takes the commit_lsn's place.
        """
        return (self.commit_lsn or self.lsn, self.ordinal)

    @property
    def qualified_table(self) -> str:
        """"schema.table" ("" for events without a table)."""
        return f"{self.schema}.{self.table}" if self.table else ""

    @property
    def key(self) -> dict[str, Any]:
        """The replica identity key of the row (from `new`, else `old`); {} when the table has none."""
        row = self.new if self.new is not None else self.old
        if not row:
            return {}
        return {c.name: row[c.name] for c in self.columns if c.is_key and c.name in row}

    @property
    def lsn_text(self) -> str:
        return format_lsn(self.lsn)


@dataclass(frozen=True, slots=True)
class Batch:
    """Events that arrived together, in order. Never empty. Acknowledging a batch acknowledges all of it."""

    changes: tuple[Change, ...]

    @property
    def last(self) -> Change:
        return self.changes[-1]

    @property
    def last_lsn(self) -> int:
        return self.changes[-1].lsn

    def __iter__(self) -> Iterator[Change]:
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)


@dataclass(frozen=True, slots=True)
class Status:
    slot: str
    temporary: bool
    confirmed_lsn: int  # what clients have acknowledged (reported to PostgreSQL as flushed)
    written_lsn: int  # how far walstream has read the stream
    lag_bytes: int  # server WAL position minus confirmed_lsn
    connected_clients: int
    server_version: str  # PostgreSQL's
    walstream_version: str
    streaming: bool  # the replication connection is up and this walstream holds the slot
    pgoutput_version: int
    sinks: tuple[SinkStatus, ...] = ()  # broker sinks (`walstream start --sink`), also in connected_clients


@dataclass(frozen=True, slots=True)
class SinkStatus:
    """One broker sink of the server (docs/sinks.md)."""

    url: str
    connected: bool  # the broker is reachable
    published: int  # records published, re-publishes included
    acked: int  # records the broker acknowledged (stored)
    retries: int  # times the broker was lost (or an ack timed out) and the sink started over
    in_flight: int  # published, not yet acknowledged
    queued: int  # changes waiting for the sink


@dataclass(frozen=True, slots=True)
class SnapshotProgress:
    """Where a snapshot (backfill) stands after one chunk; see docs/api.md "Snapshots"."""

    table: str  # "schema.table"
    state: str  # "RUNNING", "TABLE_DONE" or "DONE"
    rows_sent: int  # SNAPSHOT rows of this table sent on this stream
    rows_estimate: int  # pg_class.reltuples (an estimate; 0 if never analysed)
    position: int  # lsn of the chunk's rows (0: none)
    resume_token: bytes
    done: bool  # the whole snapshot is done
    rows_superseded: int
    chunks: int
    retries: int
