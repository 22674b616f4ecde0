"""The Python client library (walstream.Client, walstream.AsyncClient) against a real `walstream start` on a real
PostgreSQL: typed values, acknowledgements moving the slot, filters, transaction boundaries, Status, and
reconnecting across walstream restarts without yielding acknowledged events again."""

from __future__ import annotations

import asyncio
import io
import queue
import signal
import threading
import time
from collections.abc import Iterator
from datetime import date, datetime, timezone
from datetime import time as dtime
from decimal import Decimal
from typing import Any, NoReturn

import pytest
from slot_checks import metrics_args, quick_status_updates, reported_flush_after_acks
from support import WalstreamProcess, confirmed_flush, expect_nothing_from, take_from, wait_confirmed

from walstream import AsyncClient, Change, Client, ServerUnreachable, StreamError
from walstream.pgcluster import free_port

UTC = timezone.utc

TYPED = """CREATE TABLE typed (
    id bigint PRIMARY KEY, small smallint, price numeric(12,4), ratio float8, flag bool, name text, doc jsonb,
    plain json, tags text[], grid int[], raw bytea, seen timestamptz, local timestamp, day date, at time,
    uid uuid, span interval, nothing text)"""


def setup(testdb, *extra: str) -> None:
    testdb.execute(TYPED, "CREATE TABLE other (id int PRIMARY KEY, v text)",
                   "CREATE TABLE audit (id int, note text)", "ALTER TABLE audit REPLICA IDENTITY FULL",
                   *extra, "CREATE PUBLICATION pub FOR ALL TABLES")


@pytest.fixture
def ws(testdb, tmp_path) -> Iterator[WalstreamProcess]:
    setup(testdb)
    quick_status_updates(testdb.dsn, testdb.name)
    proc = WalstreamProcess(testdb.dsn, "pub", testdb.slot, temporary=False, log_dir=tmp_path,
                            extra=metrics_args()[1]).start()
    try:
        yield proc
    finally:
        proc.kill()


class Reader:
    """Runs a sync client's changes() in a thread, so the test can wait for changes with a timeout."""

    def __init__(self, client: Client, batches: bool = False) -> None:
        self.client = client
        self.items: queue.Queue[object] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(batches,), daemon=True)
        self.thread.start()

    def _run(self, batches: bool) -> None:
        try:
            for item in (self.client.batches() if batches else self.client.changes()):
                self.items.put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def take(self, n: int, timeout: float = 30) -> list:
        def fail(out: list) -> NoReturn:
            if self.error is not None:
                raise AssertionError(f"the client failed: {self.error!r}") from self.error
            raise AssertionError(f"got {len(out)} of {n}: {out}")

        return take_from(self.items, n, timeout, fail, give_up=lambda: self.error is not None)

    def nothing(self, wait: float = 1.5) -> None:
        def fail(extra: object) -> NoReturn:
            raise AssertionError(f"unexpected {extra}")

        expect_nothing_from(self.items, wait, fail)

    def stop(self) -> None:
        self.client.close()
        self.thread.join(15)
        assert not self.thread.is_alive()


def insert_typed(testdb) -> None:
    testdb.execute("""INSERT INTO typed VALUES (1, -2, 12.5, 0.25, true, 'ä', '{"a": [1, 2.5, null], "b": {"c": 1}}',
        '[1, "x"]', '{a,"b c",NULL}', '{{1,2},{3,4}}', '\\x00ff', '2024-01-02 03:04:05.678+00',
        '2024-01-02 03:04:05', '2024-02-29', '13:14:15.000016', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
        '1 day 2 hours', NULL)""")


def check_typed(change: Change) -> None:
    assert change.op == "INSERT" and (change.schema, change.table) == ("public", "typed")
    new = change.new
    assert new == {
        "id": 1, "small": -2, "price": Decimal("12.5000"), "ratio": 0.25, "flag": True, "name": "ä",
        "doc": {"a": [1, 2.5, None], "b": {"c": 1}}, "plain": [1, "x"], "tags": ["a", "b c", None],
        "grid": [[1, 2], [3, 4]], "raw": b"\x00\xff", "seen": datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        "local": datetime(2024, 1, 2, 3, 4, 5), "day": date(2024, 2, 29), "at": dtime(13, 14, 15, 16),
        "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "span": "1 day 02:00:00", "nothing": None,
    }
    assert str(new["price"]) == "12.5000"  # exact, with the column's scale
    assert new["seen"].tzinfo is not None and new["local"].tzinfo is None
    assert change.commit_time is not None and change.commit_time.tzinfo is not None
    assert change.key == {"id": 1} and change.unchanged_toast == frozenset()
    types = {c.name: c.type_name for c in change.columns}
    assert types["price"] == "numeric" and types["tags"] == "_text" and types["doc"] == "jsonb"


def test_sync_client_typed_changes_ack_and_status(testdb, ws):
    insert_typed(testdb)
    testdb.execute("UPDATE typed SET price = 'NaN', nothing = 'x' WHERE id = 1", "DELETE FROM typed WHERE id = 1",
                   "INSERT INTO audit VALUES (1, 'a')", "DELETE FROM audit")
    end = testdb.wal_lsn()
    with Client(ws.addr, client_name="lib-test") as client:
        reader = Reader(client)
        ins, upd, dele, audit_ins, audit_del = reader.take(5)
        check_typed(ins)
        assert upd.op == "UPDATE" and upd.new["price"].is_nan() and upd.new["nothing"] == "x"
        assert upd.old is None  # the default replica identity sends no old row for an update of a non-key
        assert dele.op == "DELETE" and dele.new is None and dele.old == {"id": 1} and dele.old_is_key
        assert audit_del.old == {"id": 1, "note": "a"} and not audit_del.old_is_key
        assert [c.position for c in (ins, upd, dele, audit_ins)] == sorted(c.position for c in (ins, upd, dele,
                                                                                             audit_ins))
        before = confirmed_flush(testdb.dsn, testdb.slot)
        assert before < end  # nothing acknowledged yet: the slot waits
        client.ack(audit_del)
        wait_confirmed(testdb.dsn, testdb.slot, end)
        status = client.status()
        assert status.slot == testdb.slot and not status.temporary
        assert status.confirmed_lsn >= end and status.connected_clients == 1 and status.streaming
        assert status.server_version.split(".")[0] == str(testdb.cluster.version)
        reader.stop()
    log = ws.log()
    assert "(lib-test)" in log and "0 rejected acks" in log


def test_ack_of_events_sharing_an_lsn(testdb, ws):
    # COPY writes several rows per WAL record: their changes share an LSN, and each is acknowledged exactly.
    testdb.execute("SELECT 1")
    with testdb.conn.cursor() as cur:
        cur.copy_expert("COPY other (id, v) FROM STDIN", io.StringIO("".join(f"{i}\tv{i}\n" for i in range(1, 6))))
    end = testdb.wal_lsn()
    with Client(ws.addr) as client:
        reader = Reader(client)
        changes = reader.take(5)
        assert [c.new["id"] for c in changes] == [1, 2, 3, 4, 5]
        assert len({c.lsn for c in changes}) < 5  # shared LSNs (the case this test is about)
        client.ack(changes[2])
        # 4 and 5 are not acknowledged: the first status update after the ack still holds the slot back.
        assert reported_flush_after_acks(testdb.dsn, testdb.slot, ws.metrics_port, acks=1) < end
        assert confirmed_flush(testdb.dsn, testdb.slot) < end
        client.ack(changes[4])
        wait_confirmed(testdb.dsn, testdb.slot, end)
        reader.stop()
    assert "0 rejected acks" in ws.log()


def test_filters_boundaries_and_messages(testdb, ws):
    with Client(ws.addr, tables=["public.typ*", "audit"], exclude_tables=["public.audit"],
                operations=["insert", "delete"], transaction_boundaries=True, logical_messages=True,
                max_events=2) as client:
        reader = Reader(client, batches=True)
        insert_typed(testdb)
        testdb.execute("INSERT INTO other VALUES (1, 'no')", "INSERT INTO audit VALUES (1, 'no')",
                       "UPDATE typed SET name = 'no' WHERE id = 1",
                       "SELECT pg_logical_emit_message(false, 'walstream-test', 'hello')",
                       "BEGIN", "SELECT pg_logical_emit_message(true, 'tx', '\\x00ff'::bytea)",
                       "DELETE FROM typed", "COMMIT")
        batches: list[Any] = []
        while sum(len(b) for b in batches) < 8:
            batches.extend(reader.take(1))
        reader.nothing()
        assert all(len(b) <= 2 for b in batches)
        changes = [c for b in batches for c in b]
        assert [c.op for c in changes] == ["BEGIN", "INSERT", "COMMIT", "MESSAGE", "BEGIN", "MESSAGE", "DELETE",
                                           "COMMIT"]
        begin, ins, commit, msg, begin2, txmsg, dele, commit2 = changes
        check_typed(ins)
        assert begin.xid == ins.xid == commit.xid and begin.commit_lsn == ins.commit_lsn == commit.commit_lsn
        assert (begin.ordinal, ins.ordinal) == (0, 1) and commit.ordinal > ins.ordinal
        assert commit.end_lsn is not None and commit.end_lsn > commit.commit_lsn
        assert msg.message is not None and msg.message.prefix == "walstream-test"
        assert msg.message.content == b"hello" and not msg.message.transactional and msg.commit_time is None
        assert txmsg.message is not None and txmsg.message.content == b"\x00\xff" and txmsg.message.transactional
        assert txmsg.xid == dele.xid == begin2.xid
        assert dele.old == {"id": 1}
        client.ack(batches[-1])
        assert commit2.end_lsn is not None
        wait_confirmed(testdb.dsn, testdb.slot, commit2.end_lsn)
        reader.stop()


def test_values_python_cannot_hold_match_postgresql_text(testdb, ws):
    """infinity, BC and far-future dates stay strings, equal to PostgreSQL's own text for them."""
    testdb.execute("SET TimeZone = 'UTC'")
    rows = [("'infinity'", "'-infinity'", "'infinity'", "'24:00'"),
            ("'0044-03-15 12:00:00.5 BC'", "'0044-03-15 12:00:00.5 BC'", "'4714-11-24 BC'", "'00:00'"),
            ("'12345-01-02 03:04:05'", "'12345-01-02 03:04:05.00001'", "'5874897-12-31'", "'23:59:59.999999'")]
    for i, values in enumerate(rows, 1):
        testdb.execute(f"INSERT INTO typed (id, seen, local, day, at) VALUES ({i}, {', '.join(values)})")
    texts = testdb.query("SELECT seen::text, local::text, day::text, at::text FROM typed ORDER BY id")
    with Client(ws.addr) as client:
        reader = Reader(client)
        changes = reader.take(3)
        reader.stop()
    got = [tuple(c.new[k] for k in ("seen", "local", "day", "at")) for c in changes]
    assert got[0] == ("infinity", "-infinity", "infinity", "24:00:00") == texts[0]
    assert got[1] == (*texts[1][:3], dtime(0)) and got[1][0] == "0044-03-15 12:00:00.5+00 BC"
    assert got[2] == (*texts[2][:3], dtime(23, 59, 59, 999999)) and got[2][2] == "5874897-12-31"


def test_async_client(testdb, ws):
    insert_typed(testdb)
    testdb.execute("INSERT INTO other VALUES (1, 'skip')", "UPDATE typed SET name = 'b' WHERE id = 1")
    end = testdb.wal_lsn()

    async def main() -> None:
        async with AsyncClient(ws.addr, tables=["typed"], operations="insert,update".split(","),
                               client_name="async-test") as client:
            got: list[Change] = []

            async def read() -> None:
                async for change in client.changes():
                    got.append(change)
                    if len(got) == 2:
                        await client.ack(change)
                        return

            await asyncio.wait_for(read(), 30)
            check_typed(got[0])
            assert got[1].op == "UPDATE" and got[1].new is not None and got[1].new["name"] == "b"
            status = await client.status()
            assert status.slot == testdb.slot and status.connected_clients == 1
        # close() sent the ack before ending the stream
        await asyncio.to_thread(wait_confirmed, testdb.dsn, testdb.slot, end)

    asyncio.run(main())
    assert "(async-test)" in ws.log()


def test_async_client_reconnects(testdb, ws):
    port = ws.port

    async def main() -> None:
        async with AsyncClient(ws.addr, backoff=(0.2, 1.0)) as client:
            stream = client.batches()
            testdb.execute("INSERT INTO other VALUES (1, 'a')", "INSERT INTO other VALUES (2, 'b')")
            first: list[Change] = []
            while len(first) < 2:
                first += (await asyncio.wait_for(anext(stream), 30)).changes
            await client.ack(first[0])  # 1 acknowledged, 2 not
            await asyncio.to_thread(wait_confirmed, testdb.dsn, testdb.slot, first[0].lsn)
            await asyncio.to_thread(ws.stop)
            ws2 = WalstreamProcess(testdb.dsn, "pub", testdb.slot, temporary=False, port=port)
            await asyncio.to_thread(ws2.start)
            try:
                testdb.execute("INSERT INTO other VALUES (3, 'c')")
                seen: list[int] = []
                while len(seen) < 2:
                    batch = await asyncio.wait_for(anext(stream), 60)
                    seen += [c.new["id"] for c in batch if c.new is not None]
                assert seen == [2, 3]  # 2 again (never acknowledged), 1 not
                await stream.aclose()  # type: ignore[attr-defined]  # an async generator
            finally:
                ws2.kill()

    asyncio.run(main())


def test_reconnect_after_restarts_yields_unacked_never_acked(testdb, ws):
    """Graceful restart and a crash that loses an ack in flight; permanent slot, one client."""
    port = ws.port
    client = Client(ws.addr, transaction_boundaries=True, backoff=(0.2, 1.0))
    reader = Reader(client)
    procs = [ws]
    try:
        for i in (1, 2, 3):
            testdb.execute(f"INSERT INTO other VALUES ({i}, 'v{i}')")
        changes = reader.take(9)
        commits = [c for c in changes if c.op == "COMMIT"]
        client.ack(commits[1])  # transactions 1 and 2
        wait_confirmed(testdb.dsn, testdb.slot, commits[1].end_lsn)

        # Crash: walstream is frozen, so the ack of transaction 3 never reaches it, then killed.
        ws.proc.send_signal(signal.SIGSTOP)
        client.ack(commits[2])
        ws.proc.kill()
        ws.proc.wait(10)
        # PostgreSQL never heard of that ack: the next walstream gets transaction 3 again from the slot.
        assert confirmed_flush(testdb.dsn, testdb.slot) < commits[2].end_lsn
        testdb.execute("INSERT INTO other VALUES (4, 'v4')")
        ws2 = WalstreamProcess(testdb.dsn, "pub", testdb.slot, temporary=False, port=port).start()
        procs.append(ws2)
        # Transaction 3 comes again from the slot, but it was acknowledged: not yielded, acknowledged for us.
        again = reader.take(3, timeout=60)
        assert [c.op for c in again] == ["BEGIN", "INSERT", "COMMIT"] and again[1].new == {"id": 4, "v": "v4"}
        wait_confirmed(testdb.dsn, testdb.slot, commits[2].end_lsn)
        assert confirmed_flush(testdb.dsn, testdb.slot) < again[2].end_lsn  # 4: yielded, not acknowledged

        # Graceful restart with transaction 4 unacknowledged: it is yielded again.
        assert ws2.stop() == 0
        assert "0 rejected acks, 3 unacknowledged, kept for the next client" in ws2.log()
        ws3 = WalstreamProcess(testdb.dsn, "pub", testdb.slot, temporary=False, port=port).start()
        procs.append(ws3)
        redelivered = reader.take(3, timeout=60)
        assert [c.new for c in redelivered if c.op == "INSERT"] == [{"id": 4, "v": "v4"}]
        assert redelivered[2].position == again[2].position
        reader.nothing()
        client.ack(redelivered[2])
        wait_confirmed(testdb.dsn, testdb.slot, redelivered[2].end_lsn)
        reader.stop()
        ws3.wait_log("disconnected")
        assert "(3 acked, 0 rejected acks, 0 unacknowledged)" in ws3.log()
    finally:
        client.close()
        for proc in procs:
            proc.kill()


def test_unreachable_and_refused_subscription(testdb, ws):
    with Client(f"127.0.0.1:{free_port()}") as client:
        started = time.monotonic()
        with pytest.raises(ServerUnreachable, match=r"cannot reach walstream at 127\.0\.0\.1:\d+: "):
            next(client.batches())
        assert time.monotonic() - started < 10
        with pytest.raises(ServerUnreachable):
            client.status()
    with Client(ws.addr, tables=["a.b.c"]) as client:
        with pytest.raises(StreamError) as info:
            next(client.batches())
        assert info.value.code == "INVALID_ARGUMENT" and "include_tables[0]" in str(info.value)
    with pytest.raises(ValueError, match="operations"):
        Client(ws.addr, operations=["begin"])

    async def aio() -> None:
        async with AsyncClient(f"127.0.0.1:{free_port()}") as client:
            with pytest.raises(ServerUnreachable):
                await anext(client.batches())

    asyncio.run(aio())


def test_no_client_connected_changes_wait_for_the_client(testdb, ws):
    testdb.execute("INSERT INTO other VALUES (1, 'early')")
    with Client(ws.addr) as client:
        for batch in client.batches():
            assert batch.changes[0].new == {"id": 1, "v": "early"}
            client.ack(batch)
            break
    wait_confirmed(testdb.dsn, testdb.slot, batch.last.lsn)
