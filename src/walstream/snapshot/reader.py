"""The chunk reader: its own plain SQL connection, used from one worker thread (never the event loop and
never the replication connection). Emits the watermarks and reads one keyset chunk per call.

The session uses the replication connection's text settings (walstream.source.dsn.REPLICATION_OPTIONS) and the
server encoding as client encoding, so COPY prints every value exactly as pgoutput sends it.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass

from ..delivery.v1.adapter import WATERMARK_PREFIX
from ..source import catalog
from . import tables
from .copytext import CopyChunk
from .tables import TableRef, TableShape

SESSION_SETTINGS = (
    "SET TimeZone = 'UTC'", "SET DateStyle = 'ISO'", "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1", "SET bytea_output = 'hex'",
    # Watermarks concern only this stream: never wait for a synchronous standby to write them.
    "SET synchronous_commit = local",
)
LOCK_TIMEOUT = "5s"  # a chunk waiting behind an ALTER TABLE gives up and is read again later
VISIBLE_POLL = 0.05  # seconds between checks while waiting for a transaction to become visible
M32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Snapshot:
    """pg_current_snapshot(): xids >= xmax and those in xip are not visible (64-bit xids)."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))

    def invisible(self, xid: int) -> bool:
        """Whether a committed 32-bit xid (as pgoutput sends it) is not visible to this snapshot, as
        pg_visible_in_snapshot() decides: not before xmin, and at or after xmax or in xip. Compared modulo
        2^32 the way PostgreSQL compares xids (the xids checked are recent)."""
        if _precedes(xid, self.xmin & M32):
            return False
        if not _precedes(xid, self.xmax & M32):
            return True
        return any(x & M32 == xid for x in self.xip)


NO_SNAPSHOT = Snapshot(0, 0, frozenset())  # a read in an imported snapshot: no visibility guard applies


def _precedes(a: int, b: int) -> bool:
    return ((a - b) & M32) >= 1 << 31


class KeyChanged(Exception):
    """The table's key columns are no longer the ones its backfill pages on."""

    def __init__(self, key: tuple[str, ...]) -> None:
        super().__init__(", ".join(key))
        self.key = key


@dataclass(frozen=True)
class ChunkRead:
    shape: TableShape | None  # None: the table is gone (dropped, or left the publication)
    snapshot: Snapshot
    copy: CopyChunk  # the rows: the published columns, then the key columns again (a keyset chunk)
    upto: tuple[str, ...] | None  # the table's maximum key (None: the table is empty)
    last: tuple[str, ...] | None  # the last key read (None: no rows)
    bytes_read: int
    limit: int = 0  # the most rows the read asked for (keyset chunks): fewer means the table's end

    @property
    def count(self) -> int:
        return self.copy.count


NO_ROWS = CopyChunk(b"", 1, 1)


class ChunkReader:
    def __init__(self, conn_str: str, publication: str) -> None:
        self.conn_str = conn_str
        self.publication = publication
        self._conn: catalog.Connection | None = None
        self.server_version = 0
        self.encoding = "utf-8"
        self.server_encoding = "UTF8"  # PostgreSQL's name, for key literals (tables.key_literal)
        # Key values as text in resume tokens: the server encoding's codec, Latin-1 for SQL_ASCII (one
        # character per byte: any bytes a SQL_ASCII database holds come back exactly).
        self.key_codec = "utf-8"

    def _connection(self) -> catalog.Connection:
        if self._conn is None or self._conn.closed:
            conn = catalog.connect(self.conn_str)
            with conn.cursor() as cur:
                for statement in SESSION_SETTINGS:
                    cur.execute(statement)
                cur.execute("SELECT current_setting('server_encoding')")
                row = cur.fetchone()
            self.server_encoding = str(row[0]) if row else "UTF8"
            conn.set_client_encoding(self.server_encoding)
            self.encoding = catalog.python_encoding(conn)
            self.key_codec = "latin-1" if self.server_encoding == "SQL_ASCII" else self.encoding
            self.server_version = conn.server_version
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except catalog.DatabaseError:
                pass
            self._conn = None

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._connection().cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def emit(self, *contents: bytes) -> None:
        """Transactional watermark messages, in this order in one transaction (one statement string: one
        round trip and one commit), committed at once: the connection is in autocommit."""
        statement = "SELECT pg_catalog.pg_logical_emit_message(true, %s, %s::bytea)"
        with self._connection().cursor() as cur:
            cur.execute("; ".join([statement] * len(contents)),
                        tuple(v for content in contents for v in (WATERMARK_PREFIX, content)))

    def read(self, ref: TableRef, after: tuple[str, ...] | None, upto: tuple[str, ...] | None,
             limit: int) -> ChunkRead:
        """One chunk, in one REPEATABLE READ transaction: its snapshot, the table's shape, and its rows."""
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                # The transaction opened in the same round trip as the snapshot is taken (the connection stays
                # in autocommit: the driver adds no BEGIN of its own): a chunk is round trips more than rows.
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; "
                            f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; "
                            "SELECT pg_catalog.pg_current_snapshot()::text")
                row = cur.fetchone()
                assert row is not None
                snapshot = Snapshot.parse(str(row[0]))
            return self._read_keyed(conn, snapshot, ref, after, upto, limit)
        finally:
            if not conn.closed:
                with conn.cursor() as cur:
                    cur.execute("ROLLBACK")  # read only: nothing to commit

    # -- in one snapshot (walstream.snapshot.consistent) -------------------------------------------------

    def import_snapshot(self, name: str) -> None:
        """Open a REPEATABLE READ transaction on the exported snapshot `name`; the reads below run in it."""
        conn = self._connection()
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute("SET TRANSACTION SNAPSHOT %s", (name,))

    def read_keyed(self, ref: TableRef, after: tuple[str, ...] | None, upto: tuple[str, ...] | None,
                   limit: int) -> ChunkRead:
        """One keyset chunk in the imported snapshot."""
        return self._read_keyed(self._connection(), NO_SNAPSHOT, ref, after, upto, limit)

    def table_pages(self, ref: TableRef) -> int:
        """The table's size in pages now: every row the imported snapshot sees is in them (its xmin keeps
        VACUUM from removing those row versions, so they stay where they are)."""
        row = self.query("SELECT pg_catalog.pg_relation_size(%s::oid) / "
                         "current_setting('block_size')::int8", (ref.relid,))
        return int(str(row[0][0]))

    def read_pages(self, ref: TableRef, first: int, pages: int) -> ChunkRead:
        """The rows in pages [first, first + pages) in the imported snapshot (a table without a key)."""
        conn = self._connection()
        shape = tables.read_shape(conn, ref, self.publication, self.server_version)
        if shape is None:
            return ChunkRead(None, NO_SNAPSHOT, NO_ROWS, None, None, 0)
        buffer = io.BytesIO()
        with conn.cursor() as cur:
            cur.copy_expert(tables.page_query(conn, shape, first, pages), buffer)
        data = buffer.getvalue()
        width = len(shape.columns)
        return ChunkRead(shape, NO_SNAPSHOT, CopyChunk(data, width, width), None, None, len(data))

    def end_snapshot(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.rollback()
            self._conn.autocommit = True

    def _read_keyed(self, conn: catalog.Connection, snapshot: Snapshot, ref: TableRef,
                    after: tuple[str, ...] | None, upto: tuple[str, ...] | None, limit: int) -> ChunkRead:
        with conn.cursor() as cur:
            shape = tables.read_shape(conn, ref, self.publication, self.server_version)
            if shape is None:
                return ChunkRead(None, snapshot, NO_ROWS, None, None, 0)
            if shape.key != ref.key:
                raise KeyChanged(shape.key)
            codec, encoding = self.key_codec, self.server_encoding
            if upto is None:
                cur.execute(tables.max_key_query(conn, shape, encoding))
                top = cur.fetchone()
                if top is None:
                    return ChunkRead(shape, snapshot, NO_ROWS, None, None, 0)
                upto = tuple(bytes(v).decode(codec) for v in top)
            buffer = io.BytesIO()
            cur.copy_expert(tables.chunk_query(
                conn, shape, None if after is None else tuple(v.encode(codec) for v in after),
                tuple(v.encode(codec) for v in upto), limit, encoding), buffer)
        data = buffer.getvalue()
        width = len(shape.columns)
        chunk = CopyChunk(data, width + len(shape.key), width)
        key = chunk.last_key()
        last = None if key is None else tuple((v or b"").decode(self.key_codec) for v in key)
        return ChunkRead(shape, snapshot, chunk, upto, last, len(data), limit)

    def wait_visible(self, xids: list[int], stop: threading.Event) -> None:
        """Until every xid is visible to a new snapshot (they have committed: they were decoded), or until
        stop (a threading.Event) is set."""
        while not stop.is_set():
            row = self.query("SELECT pg_catalog.pg_current_snapshot()::text")
            snapshot = Snapshot.parse(str(row[0][0]))
            if not any(snapshot.invisible(x) for x in xids):
                return
            time.sleep(VISIBLE_POLL)  # waiting on another session's state: nothing to wait on but polling


def is_retryable(exc: Exception) -> bool:
    """A chunk read that failed because of a concurrent schema change or lock: read it again."""
    return isinstance(exc, catalog.TRANSIENT_READ_ERRORS)
