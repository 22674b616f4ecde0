"""The session loop (session.py) driven through its Source seam by a scripted server: no PostgreSQL.

ScriptedServer plays PostgreSQL's part that the loop depends on: a WAL of committed transactions in pgoutput
bytes, a slot whose confirmed position only the loop's status updates move, and connections that stream
every transaction not yet confirmed, from its BEGIN (a transaction cut mid-way is sent again whole). Each test
checks the ack contract on every status update: the flushed position never goes backwards and never passes
a transaction the client has not acknowledged completely.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from walstream import session
from walstream.config import StartConfig
from walstream.delivery.acks import AckTracker
from walstream.delivery.hub import Client, Hub
from walstream.errors import ErrorKind, SourceError
from walstream.events.change import ChangeEvent, Op
from walstream.events.values import TypeCatalog
from walstream.session import Pipeline
from walstream.source.base import StreamInfo

CONN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
REL = 16384
INT4, TEXT = 23, 25


def begin(final_lsn: int, xid: int) -> bytes:
    return b"B" + struct.pack(">qqi", final_lsn, 0, xid)


def relation() -> bytes:
    cols = b"".join(struct.pack(">b", flags) + name + b"\0" + struct.pack(">ii", oid, -1)
                    for flags, name, oid in ((1, b"id", INT4), (0, b"note", TEXT)))
    return b"R" + struct.pack(">i", REL) + b"public\0items\0" + b"d" + struct.pack(">h", 2) + cols


def insert(row_id: int) -> bytes:
    cells = b"".join(b"t" + struct.pack(">i", len(v)) + v for v in (str(row_id).encode(), b"row %d" % row_id))
    return b"I" + struct.pack(">i", REL) + b"N" + struct.pack(">h", 2) + cells


def commit(commit_lsn: int, end_lsn: int) -> bytes:
    return b"C" + struct.pack(">bqqq", 0, commit_lsn, end_lsn, 0)


@dataclass
class Txn:
    xid: int
    rows: list[int]
    messages: list[tuple[int, bytes]]  # (lsn, message) as the walsender sends them
    end_lsn: int


@dataclass
class ScriptedServer:
    txns: list[Txn] = field(default_factory=list)
    confirmed: int = 0x1000  # the slot's confirmed_flush_lsn: only status updates move it
    flushes: list[int] = field(default_factory=list)
    status_updates: int = 0
    acked_rows: set[int] = field(default_factory=set)  # rows the client has acknowledged (for the checks)
    connections: int = 0
    cut_after: int | None = None  # the next connection breaks after sending this many messages
    refuse: int = 0  # reconnection attempts to refuse (the first connection always works)
    sources: list[FakeSource] = field(default_factory=list)
    _next_lsn: int = 0x1000
    _next_row: int = 1

    def commit(self, rows: int) -> Txn:
        lsn = self._next_lsn
        final = lsn + 0x100 * (rows + 2)
        ids = list(range(self._next_row, self._next_row + rows))
        self._next_row += rows
        msgs = [(lsn, begin(final, 700 + len(self.txns))), (lsn, relation())]
        msgs += [(lsn + 0x100 * (i + 1), insert(r)) for i, r in enumerate(ids)]
        msgs.append((final, commit(final, final + 0x30)))
        txn = Txn(700 + len(self.txns), ids, msgs, final + 0x30)
        self.txns.append(txn)
        self._next_lsn = final + 0x100
        for src in self.sources:
            src.data_arrived()
        return txn

    @property
    def wal_end(self) -> int:
        return self.txns[-1].end_lsn if self.txns else self._next_lsn

    def acked_limit(self) -> int:
        """The furthest position the client's acknowledgements allow to be reported as flushed."""
        limit = 0x1000
        for txn in self.txns:
            if not set(txn.rows) <= self.acked_rows:
                return limit
            limit = txn.end_lsn
        return max(limit, self.wal_end)

    def open_source(self, create: bool) -> FakeSource:
        src = FakeSource(self)
        self.sources.append(src)
        return src


class FakeSource:
    """One connection: streams every transaction whose commit the slot has not confirmed, from its BEGIN."""

    def __init__(self, server: ScriptedServer) -> None:
        self.server = server
        self.queue: list[tuple[int, bytes]] = []
        self.sent = 0
        self.cut_after: int | None = None
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)

    async def open(self) -> StreamInfo:
        server = self.server
        server.connections += 1
        if server.refuse and server.connections > 1:
            server.refuse -= 1
            raise SourceError("cannot connect to PostgreSQL: connection refused")
        self.cut_after, server.cut_after = server.cut_after, None
        self.data_arrived()
        return StreamInfo(150000, 1, "utf-8", server.connections == 1, 0, 60.0)

    def data_arrived(self) -> None:
        known = {lsn for lsn, _ in self.queue}
        for txn in self.server.txns:
            if txn.end_lsn > self.server.confirmed and txn.messages[-1][0] not in known:
                self.queue.extend(txn.messages)
        os.write(self._w, b"x")

    def read(self) -> tuple[int, bytes] | None:
        if self.cut_after is not None and self.sent >= self.cut_after:
            raise SourceError("replication stream ended: server closed the connection unexpectedly")
        if self.sent < len(self.queue):
            self.sent += 1
            return self.queue[self.sent - 1]
        try:
            os.read(self._r, 4096)
        except BlockingIOError:
            pass
        return None

    def fileno(self) -> int:
        return self._r

    @property
    def wal_end(self) -> int:
        return self.server.wal_end

    @property
    def reply_requested(self) -> bool:
        return False

    def send_status(self, write_lsn: int, flush_lsn: int) -> None:
        server = self.server
        server.status_updates += 1
        if flush_lsn == 0:  # nothing to report yet (InvalidXLogRecPtr): the walsender keeps its position
            return
        assert flush_lsn >= server.confirmed, f"flush went backwards: {flush_lsn:X} < {server.confirmed:X}"
        assert flush_lsn <= server.acked_limit(), f"flush {flush_lsn:X} passes unacknowledged changes"
        server.flushes.append(flush_lsn)
        server.confirmed = flush_lsn

    def close(self) -> None:
        if self in self.server.sources:
            self.server.sources.remove(self)
        os.close(self._r)
        os.close(self._w)


class RowAdapter:
    """A client API that sends each row change as itself, acknowledged by its own LSN."""

    api = "test"

    def expand(self, event: ChangeEvent) -> Sequence[tuple[int, object]]:
        return [(event.lsn, event)] if event.op is Op.INSERT else []

    def size(self, message: object) -> int:
        return 100


def row_id(event: ChangeEvent) -> int:
    assert event.new is not None
    value = event.new[0][1]
    assert value is not None
    return int(value)


@dataclass
class Reader:
    """The client: receives rows, acknowledges each batch unless told to hold."""

    hub: Hub
    server: ScriptedServer
    client: Client
    received: list[ChangeEvent] = field(default_factory=list)
    acking: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while (batch := await self.client.next_batch()) is not None:
            self.received.extend(batch)  # type: ignore[arg-type]
            await self.acking.wait()
            last = batch[-1]
            assert isinstance(last, ChangeEvent)
            self.server.acked_rows.update(row_id(e) for e in batch)  # type: ignore[arg-type]
            self.hub.ack(self.client, last.lsn)


@pytest.fixture(autouse=True)
def _fast_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "BACKOFF_FIRST", 0.01)
    monkeypatch.setattr(session, "PAUSED_KEEPALIVE", 0.02)
    monkeypatch.setattr(session, "MIN_STATUS_GAP", 0.0)


async def until(condition: object, what: str, timeout: float = 10.0) -> None:
    """Wait for the event loop to make condition() true (polled each loop turn: nothing is slept on)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


class Harness:
    def __init__(self, server: ScriptedServer, max_unacked: int = 10_000) -> None:
        self.server = server
        self.hub = Hub(AckTracker(), 1000, max_unacked)
        self.pipeline = Pipeline(StartConfig(CONN, "p", "s"), CONN, self.hub, TypeCatalog(),
                                 open_source=server.open_source)
        self.states: list[str] = []
        self.pipeline.on_state = self.states.append
        client = self.hub.connect(RowAdapter(), "test")
        assert client is not None
        self.reader = Reader(self.hub, server, client)
        self.reader.acking.set()

    async def __aenter__(self) -> Harness:
        self.tasks = [asyncio.ensure_future(self.pipeline.run()), asyncio.ensure_future(self.reader.run())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.pipeline.stopping.set()
        self.reader.acking.set()
        await asyncio.wait_for(self.tasks[0], 10)
        self.hub.close()
        await asyncio.wait_for(self.tasks[1], 10)

    def rows(self) -> list[int]:
        return [row_id(e) for e in self.reader.received]


def test_a_transaction_cut_mid_way_is_resent_and_each_row_arrives_once() -> None:
    async def scenario() -> None:
        server = ScriptedServer()
        first = server.commit(3)
        second = server.commit(4)
        server.cut_after = len(first.messages) + 4  # BEGIN, Relation and two of the second's four rows
        async with Harness(server) as h:
            await until(lambda: server.confirmed == second.end_lsn, "the second transaction confirmed")
            assert h.rows() == [1, 2, 3, 4, 5, 6, 7]  # nothing twice, nothing missing, in order
            assert [e.ordinal for e in h.reader.received] == [1, 2, 3, 1, 2, 3, 4]
            assert server.connections == 2 and h.pipeline.reconnects == 1
            assert session.RECONNECTING in h.states and h.states[-1] == session.STREAMING
            third = server.commit(2)  # the new connection goes on streaming
            await until(lambda: server.confirmed == third.end_lsn, "the third transaction confirmed")
            assert h.rows()[-2:] == [8, 9]
    asyncio.run(scenario())


def test_refused_reconnects_back_off_then_resume_from_the_acknowledged_position() -> None:
    async def scenario() -> None:
        server = ScriptedServer()
        first = server.commit(2)
        server.commit(2)
        server.cut_after = len(first.messages) + 1  # after the second transaction's BEGIN
        server.refuse = 3
        async with Harness(server) as h:
            await until(lambda: h.rows() == [1, 2, 3, 4] and server.confirmed == server.wal_end, "all confirmed")
            assert server.connections == 5  # the first, three refused, the one that worked
            assert h.states.count(session.STREAMING) == 2
    asyncio.run(scenario())


def test_a_client_at_its_limit_pauses_reading_and_keepalives_go_on() -> None:
    async def scenario() -> None:
        server = ScriptedServer()
        txn = server.commit(20)
        async with Harness(server, max_unacked=5) as h:
            h.reader.acking.clear()  # the client holds its acknowledgements
            await until(lambda: len(h.reader.received) >= 5, "the first rows")
            sent = server.status_updates
            await until(lambda: server.status_updates >= sent + 3, "status updates while paused")
            held = len(h.reader.received)
            assert held < 20, "the loop kept reading past the client's limit"
            assert server.confirmed < txn.end_lsn  # nothing acknowledged: nothing reported
            h.reader.acking.set()
            await until(lambda: server.confirmed == txn.end_lsn, "the transaction confirmed after the acks")
            assert h.rows() == list(range(1, 21))
    asyncio.run(scenario())


def test_stopping_mid_transaction_finishes_it_and_reports_the_acks() -> None:
    async def scenario() -> None:
        server = ScriptedServer()
        txn = server.commit(6)
        server.cut_after = None
        async with Harness(server, max_unacked=3) as h:
            h.reader.acking.clear()
            await until(lambda: len(h.reader.received) >= 3, "the first rows")
            assert h.pipeline.assembler.in_transaction
            h.pipeline.stopping.set()
            h.reader.acking.set()
            await asyncio.wait_for(h.tasks[0], 10)
            assert h.rows() == [1, 2, 3, 4, 5, 6]
            assert server.confirmed == txn.end_lsn  # the final status update carried the last acks
    asyncio.run(scenario())


def test_a_fatal_source_error_ends_the_loop_with_it() -> None:
    class Invalidated(FakeSource):
        def read(self) -> tuple[int, bytes] | None:
            raise SourceError('replication slot "s" was invalidated', kind=ErrorKind.SLOT_STATE)

    async def scenario() -> None:
        server = ScriptedServer()
        server.commit(1)
        pipeline = Pipeline(StartConfig(CONN, "p", "s"), CONN, Hub(AckTracker(), 10, 10), TypeCatalog(),
                            open_source=lambda create: Invalidated(server))
        with pytest.raises(SourceError, match="invalidated"):
            await asyncio.wait_for(pipeline.run(), 10)
        assert pipeline.state == session.STOPPED and server.connections == 1  # not retried
    asyncio.run(scenario())
