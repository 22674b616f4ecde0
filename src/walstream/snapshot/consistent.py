"""CONSISTENT snapshots: every table copied at exactly the slot's starting point (`start --snapshot-consistent`).

When walstream creates the slot it asks PostgreSQL to export the snapshot of the slot's consistent point
(CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT). That snapshot can be imported only until the replication
connection runs its next command, so `Held.take` imports it at once, on a connection of its own, in a
REPEATABLE READ transaction that stays open, and exports it again from there (pg_export_snapshot()): the
copy connections import that one, later, for as long as the holder's transaction lives.

The held snapshot goes to the first walstream.v1 subscriber asking for a CONSISTENT snapshot, as long as
nothing was read from the slot since it was created (no client has received anything). While it copies,
the hub reads nothing from the slot (`Hub.held`): the rows arrive first, at the consistent point's LSN
(`lsn` = `commit_lsn` = that point, ordinals counting on across chunks and tables), then the changes from
that point on. Tables are read by a few connections in parallel (each table in order by key, or by pages
for a table without a key) and delivered one after the other, each chunk one delivery followed by a
SnapshotProgress whose resume token continues the copy as INCREMENTAL chunks if it is interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from ..source import catalog
from .reader import ChunkRead, ChunkReader
from .tables import TableRef

log = logging.getLogger(__name__)

COPY_CONNECTIONS = 3  # tables read at once
PAGES_PER_CHUNK = 64  # a table without a key is read 64 pages (512 kB) at a time
QUEUED_CHUNKS = 2  # chunks read ahead per table


class Held:
    """The snapshot exported with the slot, while it is held for a CONSISTENT subscriber."""

    def __init__(self, conn_str: str) -> None:
        self.conn_str = conn_str
        self.name = ""  # the holder's own export, for the copy connections
        self.lsn = 0  # the slot's consistent point
        self.why_not = "walstream was started without --snapshot-consistent true"
        self._conn: catalog.Connection | None = None
        self.claimed = False

    def take(self, exported: str, lsn: int) -> None:
        """On the replication connection's thread, right after the slot was created: import the exported
        snapshot before that connection runs anything else. A failure leaves CONSISTENT unavailable."""
        conn = None
        try:
            conn = catalog.connect(self.conn_str)
            conn.autocommit = False
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cur.execute("SET TRANSACTION SNAPSHOT %s", (exported,))
                cur.execute("SELECT pg_catalog.pg_export_snapshot()")
                row = cur.fetchone()
        except Exception as exc:  # noqa: BLE001 (the stream must start whatever happens here)
            self.why_not = f"the snapshot exported with the slot could not be held: {catalog.first_line(exc)}"
            log.warning("snapshot: %s", self.why_not)
            if conn is not None:
                conn.close()
            return
        assert row is not None
        self._conn, self.name, self.lsn, self.why_not = conn, str(row[0]), lsn, ""
        log.info("snapshot: holding the slot's exported snapshot for a CONSISTENT subscriber")

    def claim(self, decoded_any: bool) -> str:
        """Take the held snapshot for one subscriber: "" if it is now theirs, else why not."""
        if not self.why_not and decoded_any:
            self.release()
            self.why_not = ("the stream has already read changes from the slot since it was created, so its "
                            "starting point is past")
        if self.why_not:
            return self.why_not
        self.why_not = "another subscriber took the snapshot exported with the slot (there is one per slot)"
        self.claimed = True
        return ""

    @property
    def waiting(self) -> bool:
        """Held and not taken yet."""
        return self._conn is not None and not self.claimed

    def give_up(self) -> None:
        """The stream has gone past the slot's starting point: no subscriber can have the snapshot any more,
        and its transaction would only keep VACUUM from removing rows deleted since."""
        self.release()
        self.why_not = ("the stream has already read changes from the slot since it was created, so its "
                        "starting point is past")
        log.info("snapshot: released the slot's exported snapshot (the stream went past its starting point "
                 "before a CONSISTENT subscriber asked)")

    def release(self) -> None:
        """End the holder's transaction (the copy is over, or will never run)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except catalog.DatabaseError:
                pass


class TableFeed:
    """What the readers hand the deliverer for one table: (ChunkRead, after, upto, done) or an exception."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[ChunkRead, tuple[str, ...] | None, tuple[str, ...] | None, bool]
                                  | BaseException] = asyncio.Queue(QUEUED_CHUNKS)


class ParallelCopy:
    """Reads the tables on COPY_CONNECTIONS connections that import the held snapshot, table after table."""

    def __init__(self, conn_str: str, publication: str, snapshot: str, refs: list[TableRef], chunk_rows: int,
                 stop: threading.Event) -> None:
        self.conn_str, self.publication, self.snapshot = conn_str, publication, snapshot
        self.refs, self.chunk_rows, self.stop = refs, chunk_rows, stop
        self.feeds = [TableFeed() for _ in refs]
        self._next = 0
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        workers = max(1, min(COPY_CONNECTIONS, len(refs)))
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="walstream-consistent")
        for _ in range(workers):
            self.executor.submit(self._worker)

    def close(self) -> None:
        self.stop.set()
        self.executor.shutdown(wait=False)

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= len(self.refs) or self.stop.is_set():
                return None
            self._next += 1
            return self._next - 1

    def _put(self, index: int, item: Any) -> None:
        future = asyncio.run_coroutine_threadsafe(self.feeds[index].queue.put(item), self._loop)
        while True:
            try:
                future.result(0.5)
                return
            except FutureTimeout:
                if self.stop.is_set():
                    future.cancel()
                    raise _Stopped from None

    def _worker(self) -> None:
        reader = ChunkReader(self.conn_str, self.publication)
        try:
            reader.import_snapshot(self.snapshot)
            while (index := self._take()) is not None:
                try:
                    self._copy(reader, index)
                except _Stopped:
                    return
                except Exception as exc:  # noqa: BLE001 (handed to the deliverer, which ends the call with it)
                    self._put(index, exc)
                    return
        except _Stopped:
            pass
        except Exception as exc:  # noqa: BLE001
            index = self._take()
            if index is not None:
                try:
                    self._put(index, exc)
                except _Stopped:
                    pass
        finally:
            reader.close()

    def _copy(self, reader: ChunkReader, index: int) -> None:
        ref = self.refs[index]
        if ref.key:
            after: tuple[str, ...] | None = None
            upto: tuple[str, ...] | None = None
            while not self.stop.is_set():
                read = reader.read_keyed(ref, after, upto, self.chunk_rows)
                upto = read.upto
                after = read.last if read.last is not None else after
                done = (read.shape is None or read.last is None or read.last == upto
                        or read.count < self.chunk_rows)
                self._put(index, (read, after, upto, done))
                if done:
                    return
            raise _Stopped
        pages, first = reader.table_pages(ref), 0
        while not self.stop.is_set():
            read = reader.read_pages(ref, first, PAGES_PER_CHUNK)
            if read.shape is not None and read.shape.partitioned:
                raise ValueError(f"{ref.name} is a partitioned table without a key: a CONSISTENT snapshot "
                                 "cannot read it by pages; give it a primary key, or leave it out")
            first += PAGES_PER_CHUNK
            done = read.shape is None or first >= pages
            self._put(index, (read, None, None, done))
            if done:
                return
        raise _Stopped


class _Stopped(Exception):
    """The copy was stopped (the client left): the reader ends quietly."""


def decoded_any(assembler: Any, reconnects: int) -> bool:
    """Whether the stream has read a transaction since the slot was created (or reconnected since)."""
    return bool(assembler.xids_begun) or reconnects > 0


OnExport = Callable[[str, int], None]
