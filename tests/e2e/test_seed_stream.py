"""End to end: real PostgreSQL -> real `walstream start` process -> real clients of the seed contract."""

from __future__ import annotations

import json
import signal
import threading
from decimal import Decimal

import psycopg2
import pytest
from support import SeedClient, WalstreamProcess, confirmed_flush, wait_confirmed

SCHEMA = [
    """CREATE TABLE items (id int PRIMARY KEY, price numeric(12,4), active bool, tags text[], doc jsonb,
       seen timestamptz, body text)""",
    "CREATE TABLE audit (id int, note text)",
    "ALTER TABLE audit REPLICA IDENTITY FULL",
    "CREATE TABLE other (id serial PRIMARY KEY, v text)",
    "CREATE PUBLICATION pub FOR ALL TABLES",
]


def to_jsonb(testdb, table: str, where: str) -> dict:
    row = testdb.query(f"SELECT to_jsonb(t)::text FROM {table} t WHERE {where}")[0][0]
    return json.loads(row, parse_float=Decimal)


def exact(payload: dict) -> dict:
    return json.loads(json.dumps(payload), parse_float=Decimal)


def test_new_user_walkthrough(testdb, tmp_path):
    """The issue's walkthrough: two clients, typed payloads, acks, bogus ack, no-client wait, restart."""
    testdb.execute(*SCHEMA)
    ws = WalstreamProcess(testdb.dsn, "pub", testdb.slot, temporary=False, log_dir=tmp_path).start()
    try:
        a, b = SeedClient(ws.addr), SeedClient(ws.addr, auto_ack=False)
        ws.wait_log("connected", count=2)
        big = "x" * 300_000  # TOASTed
        testdb.execute(
            "INSERT INTO items VALUES (1, 12.5000, true, '{a,\"b c\",NULL}', '{\"k\": [1, 2.50]}', "
            f"'2024-01-02 03:04:05.678+02', '{big}')",
            "INSERT INTO audit VALUES (1, 'first')",
            "UPDATE items SET price = 13 WHERE id = 1",  # body unchanged: TOAST not sent
            "UPDATE audit SET note = 'second' WHERE id = 1",
            "DELETE FROM audit WHERE id = 1",
            "DELETE FROM items WHERE id = 1",
            "INSERT INTO other (v) VALUES ('o')",
            "TRUNCATE items, other",
        )
        expected = [("INSERT", "public.items"), ("INSERT", "public.audit"), ("UPDATE", "public.items"),
                    ("UPDATE", "public.audit"), ("DELETE", "public.audit"), ("DELETE", "public.items"),
                    ("INSERT", "public.other"), ("TRUNCATE", "public.items"), ("TRUNCATE", "public.other")]
        got_a, got_b = a.take(len(expected)), b.take(len(expected))
        assert [(e.op, e.name) for e in got_a] == expected
        assert got_a == got_b
        ins, ins_audit, upd, upd_audit, del_audit, del_items = got_a[:6]
        assert exact(ins.payload) == {
            "id": 1, "price": Decimal("12.5000"), "active": True, "tags": ["a", "b c", None],
            "doc": {"k": [1, Decimal("2.50")]}, "seen": "2024-01-02T01:04:05.678+00:00", "body": big}
        assert exact(upd.payload) == {"id": 1, "price": Decimal("13.0000"), "active": True,
                                      "tags": ["a", "b c", None], "doc": {"k": [1, Decimal("2.50")]},
                                      "seen": "2024-01-02T01:04:05.678+00:00"}  # no "body": unchanged TOAST
        assert ins_audit.payload == {"id": 1, "note": "first"}
        assert upd_audit.payload == {"id": 1, "note": "second"}
        assert del_audit.payload == {"id": 1, "note": "second"}  # REPLICA IDENTITY FULL: the old row
        assert del_items.payload == {"id": 1}  # default identity: only the key
        end = testdb.wal_lsn()

        # b has acked nothing: the slot stays before the first transaction.
        wait_confirmed(testdb.dsn, testdb.slot, 1, timeout=5)
        assert confirmed_flush(testdb.dsn, testdb.slot) <= got_a[0].lsn
        b.ack(123)  # bogus: never delivered
        b.ack(got_a[1].lsn)  # acks the first two events: the first transaction only
        wait_confirmed(testdb.dsn, testdb.slot, got_a[0].lsn)
        assert confirmed_flush(testdb.dsn, testdb.slot) <= got_a[2].lsn
        for e in got_b[2:]:
            b.ack(e.lsn)
        wait_confirmed(testdb.dsn, testdb.slot, end)
        ws.wait_log("matches nothing it was sent")

        # No client connected: a change waits in the slot and reaches the next client.
        a.close()
        b.close()
        ws.wait_log("disconnected", count=2)
        testdb.execute("INSERT INTO other (v) VALUES ('while nobody listens')")
        c = SeedClient(ws.addr)
        (late,) = c.take(1)
        assert late.payload == {"id": 2, "v": "while nobody listens"}
        wait_confirmed(testdb.dsn, testdb.slot, late.lsn)
        c.close()
        assert ws.stop(signal.SIGTERM) == 0
        assert "Traceback" not in ws.log()

        # Down: a change made now arrives after restart; nothing acknowledged arrives twice.
        testdb.execute("INSERT INTO other (v) VALUES ('while walstream is down')")
        ws2 = WalstreamProcess(testdb.dsn, "pub", testdb.slot, temporary=False, log_dir=tmp_path).start()
        d = SeedClient(ws2.addr)
        (after,) = d.take(1)
        assert after.payload == {"id": 3, "v": "while walstream is down"}
        d.expect_nothing()
        d.close()
        assert ws2.stop() == 0
    finally:
        ws.kill()


def test_interleaved_transactions_arrive_in_commit_order(testdb, tmp_path):
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY, who text)", "CREATE PUBLICATION pub FOR ALL TABLES")
    with WalstreamProcess(testdb.dsn, "pub", testdb.slot, log_dir=tmp_path) as ws:
        client = SeedClient(ws.addr)
        ws.wait_log("connected")
        first = psycopg2.connect(testdb.dsn)
        second = psycopg2.connect(testdb.dsn)
        with first.cursor() as c1, second.cursor() as c2:
            c1.execute("INSERT INTO t VALUES (1, 'first-started')")
            c2.execute("INSERT INTO t VALUES (2, 'second-started')")
            c1.execute("INSERT INTO t VALUES (3, 'first-started')")
            second.commit()
            first.commit()
        first.close()
        second.close()
        events = client.take(3)
        assert [e.payload["id"] for e in events] == [2, 1, 3]
        # The earlier-started transaction has smaller change LSNs but arrives later: acks still work.
        assert events[1].lsn < events[0].lsn
        wait_confirmed(testdb.dsn, testdb.slot, testdb.wal_lsn())
        client.close()


def test_multi_row_and_multi_table_truncate_share_lsns(testdb, tmp_path):
    testdb.execute("CREATE TABLE a (id int PRIMARY KEY)", "CREATE TABLE b (id int PRIMARY KEY)",
                   "CREATE TABLE c (id int PRIMARY KEY)", "CREATE PUBLICATION pub FOR ALL TABLES")
    with WalstreamProcess(testdb.dsn, "pub", testdb.slot, log_dir=tmp_path) as ws:
        client = SeedClient(ws.addr, auto_ack=False)
        ws.wait_log("connected")
        testdb.execute("INSERT INTO a SELECT generate_series(1, 5)", "TRUNCATE a, b, c RESTART IDENTITY")
        events = client.take(8)
        assert [e.op for e in events] == ["INSERT"] * 5 + ["TRUNCATE"] * 3
        assert {e.name for e in events[5:]} == {"public.a", "public.b", "public.c"}
        end = testdb.wal_lsn()
        # Acking the first TRUNCATE message leaves the other two unacked: the slot stays behind.
        for e in events[:6]:
            client.ack(e.lsn)
        wait_confirmed(testdb.dsn, testdb.slot, events[0].lsn)
        assert confirmed_flush(testdb.dsn, testdb.slot) <= events[5].lsn
        client.ack(events[7].lsn)  # same LSN: acks the oldest unacked one and everything before it
        client.ack(events[7].lsn)
        wait_confirmed(testdb.dsn, testdb.slot, end)
        client.close()


def test_last_client_leaving_hands_unacked_events_to_the_next(testdb, tmp_path):
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY)", "CREATE PUBLICATION pub FOR ALL TABLES")
    with WalstreamProcess(testdb.dsn, "pub", testdb.slot, log_dir=tmp_path) as ws:
        first = SeedClient(ws.addr, auto_ack=False)
        ws.wait_log("connected")
        testdb.execute("INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)", "INSERT INTO t VALUES (3)")
        events = first.take(3)
        first.ack(events[0].lsn)
        wait_confirmed(testdb.dsn, testdb.slot, events[0].lsn)
        first.cancel()
        ws.wait_log("kept for the next client")
        second = SeedClient(ws.addr)
        again = second.take(2)
        assert [e.payload for e in again] == [{"id": 2}, {"id": 3}]
        second.expect_nothing()
        wait_confirmed(testdb.dsn, testdb.slot, testdb.wal_lsn())
        second.close()


def test_a_leaving_client_stops_holding_back_the_others(testdb, tmp_path):
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY)", "CREATE PUBLICATION pub FOR ALL TABLES")
    with WalstreamProcess(testdb.dsn, "pub", testdb.slot, log_dir=tmp_path) as ws:
        good, lazy = SeedClient(ws.addr), SeedClient(ws.addr, auto_ack=False)
        ws.wait_log("connected", count=2)
        testdb.execute("INSERT INTO t VALUES (1)")
        good.take(1)
        lazy.take(1)
        end = testdb.wal_lsn()
        assert confirmed_flush(testdb.dsn, testdb.slot) < end
        lazy.cancel()
        wait_confirmed(testdb.dsn, testdb.slot, end)
        good.close()


def test_slow_client_gets_everything_with_bounded_memory(testdb, tmp_path):
    rows = 60_000
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY, pad text)", "CREATE PUBLICATION pub FOR ALL TABLES")
    with WalstreamProcess(testdb.dsn, "pub", testdb.slot, log_dir=tmp_path,
                          extra=("--client-queue-size", "500", "--max-unacked", "2000")) as ws:
        fast, slow = SeedClient(ws.addr), SeedClient(ws.addr, auto_ack=False)
        ws.wait_log("connected", count=2)
        testdb.execute(f"INSERT INTO t SELECT g, repeat('p', 200) FROM generate_series(1, {rows}) g")
        peak = 0
        seen = 0
        while seen < rows:
            batch = slow.take(min(500, rows - seen), timeout=60)
            for e in batch:
                slow.ack(e.lsn)
            seen += len(batch)
            peak = max(peak, ws.rss_kb())
        assert [e.payload["id"] for e in slow.received] == list(range(1, rows + 1))
        assert [e.payload["id"] for e in fast.take(rows, timeout=60)] == list(range(1, rows + 1))
        wait_confirmed(testdb.dsn, testdb.slot, testdb.wal_lsn())
        assert peak < 200_000, f"walstream RSS peaked at {peak} kB"
        fast.close()
        slow.close()


def test_postgres_restart_mid_stream_loses_and_repeats_nothing(pg, testdb, tmp_path):
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY)", "CREATE PUBLICATION pub FOR ALL TABLES")
    ws = WalstreamProcess(testdb.dsn, "pub", testdb.slot, temporary=False, log_dir=tmp_path).start()
    try:
        client = SeedClient(ws.addr)
        ws.wait_log("connected")
        testdb.execute("INSERT INTO t SELECT generate_series(1, 100)")
        client.take(100)
        testdb.conn.close()
        pg.restart("immediate")
        ws.wait_log("reconnect", timeout=30)
        testdb.conn = psycopg2.connect(testdb.dsn)
        testdb.conn.autocommit = True
        testdb.execute("INSERT INTO t SELECT generate_series(101, 200)")
        more = client.take(100, timeout=60)
        assert [e.payload["id"] for e in more] == list(range(101, 201))
        client.expect_nothing()
        assert client.error is None
        wait_confirmed(testdb.dsn, testdb.slot, testdb.wal_lsn(), timeout=30)
        client.close()
        assert ws.stop() == 0
    finally:
        ws.kill()


def test_sigterm_ends_client_streams_with_unavailable(testdb, tmp_path):
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY)", "CREATE PUBLICATION pub FOR ALL TABLES")
    ws = WalstreamProcess(testdb.dsn, "pub", testdb.slot, temporary=True, log_dir=tmp_path).start()
    client = SeedClient(ws.addr)
    ws.wait_log("connected")
    assert testdb.query("SELECT temporary FROM pg_replication_slots WHERE slot_name=%s", (testdb.slot,)) == [(True,)]
    assert ws.stop(signal.SIGINT) == 0
    assert client.done.wait(5)
    import grpc

    assert client.error is not None and client.error.code() == grpc.StatusCode.UNAVAILABLE
    assert testdb.query("SELECT count(*) FROM pg_replication_slots WHERE slot_name=%s", (testdb.slot,)) == [(0,)]
    threading.Thread(target=client.channel.close).start()


@pytest.mark.parametrize("ack", [0, 2**64 - 1])
def test_garbage_acks_never_move_the_slot(testdb, tmp_path, ack):
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY)", "CREATE PUBLICATION pub FOR ALL TABLES")
    with WalstreamProcess(testdb.dsn, "pub", testdb.slot, log_dir=tmp_path) as ws:
        client = SeedClient(ws.addr, auto_ack=False)
        ws.wait_log("connected")
        testdb.execute("INSERT INTO t VALUES (1)")
        (event,) = client.take(1)
        before = confirmed_flush(testdb.dsn, testdb.slot)
        client.ack(ack)
        ws.wait_log("matches nothing it was sent")
        assert confirmed_flush(testdb.dsn, testdb.slot) == before <= event.lsn
        client.close()


def test_second_walstream_on_a_permanent_slot_waits_and_takes_over(testdb, tmp_path):
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY)", "CREATE PUBLICATION pub FOR ALL TABLES")
    first = WalstreamProcess(testdb.dsn, "pub", testdb.slot, log_dir=tmp_path).start()
    standby = WalstreamProcess(testdb.dsn, "pub", testdb.slot, log_dir=tmp_path)
    try:
        standby.start()
        pid = testdb.query("SELECT active_pid FROM pg_replication_slots WHERE slot_name=%s", (testdb.slot,))[0][0]
        standby.wait_log(f"is active for PID {pid}")
        client = SeedClient(standby.addr)
        standby.wait_log("connected")
        testdb.execute("INSERT INTO t VALUES (1)")  # committed while the standby waits
        first.kill()
        standby.wait_log("streaming slot", timeout=20)
        (event,) = client.take(1, timeout=20)
        assert event.payload == {"id": 1}
        wait_confirmed(testdb.dsn, testdb.slot, testdb.wal_lsn())
        client.close()
        assert standby.stop() == 0
    finally:
        first.kill()
        standby.kill()
