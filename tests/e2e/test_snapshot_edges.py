"""End to end: INCREMENTAL snapshots through TRUNCATE, ALTER TABLE, key updates and deletes inside chunk
ranges; publication row filters and column lists; the slot held until the client acknowledges a chunk."""

from __future__ import annotations

import threading
import time
import urllib.request

import grpc
import psycopg2
import pytest
from slot_checks import quick_status_updates, reported_flush_after
from snapshot_replica import Replica, ReplicaClient
from support import confirmed_flush, wait_confirmed

from walstream._proto import walstream_v1_pb2 as pb
from walstream._proto import walstream_v1_pb2_grpc
from walstream.pgcluster import free_port


def wait_progress(client: ReplicaClient, chunks: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(client.replica.progress) < chunks:
        assert not client.done.is_set(), client.error
        assert time.monotonic() < deadline, f"only {len(client.replica.progress)} chunks"
        time.sleep(0.01)


def caught_up(testdb, client: ReplicaClient, label: str) -> None:
    testdb.execute("UPDATE marker SET v = %s WHERE id = 1", params=(label,))
    client.wait_row("public.marker", (1,), {"id": 1, "v": label})


def test_truncate_alter_table_key_updates_and_deletes_during_the_backfill(testdb, walstream):
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY, v text)",
                   "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 6000) g",
                   "CREATE TABLE marker (id int PRIMARY KEY, v text)", "INSERT INTO marker VALUES (1, 'start')",
                   "CREATE PUBLICATION pub FOR ALL TABLES")
    ws = walstream()
    replica = Replica()
    client = ReplicaClient(ws.addr, replica, pb.SnapshotRequest(tables=["public.t"], chunk_rows=20))
    try:
        wait_progress(client, 5)
        # Everything below lands in chunk ranges not read yet, in the one being read, and in ones done.
        testdb.execute("ALTER TABLE t ADD COLUMN extra text", "UPDATE t SET extra = 'x' || id WHERE id % 7 = 0")
        wait_progress(client, 20)
        testdb.execute("UPDATE t SET id = id + 100000 WHERE id % 11 = 0",  # out of the key range
                       "UPDATE t SET id = id - 100000 + 6000 WHERE id > 100000 AND id % 2 = 0",  # moved up
                       "DELETE FROM t WHERE id % 13 = 0")
        for lo in range(1, 6000, 200):  # deletes and key changes right around the chunks being read
            testdb.execute("DELETE FROM t WHERE id = %s", params=(lo + 1,))
            testdb.execute("UPDATE t SET id = -id WHERE id = %s", params=(lo + 3,))
        wait_progress(client, 40)
        # TRUNCATE is not MVCC-safe: a chunk reading across it finds the table empty, which ends the backfill;
        # what is inserted after it arrives as INSERTs.
        testdb.execute("TRUNCATE t", "INSERT INTO t SELECT g, 'again' || g, NULL FROM generate_series(1, 3000) g")
        testdb.execute("INSERT INTO t SELECT g, 'later' || g, 'e' FROM generate_series(3001, 3500) g")
        client.wait_snapshot()
        caught_up(testdb, client, "end")
    finally:
        client.close()
    expected = {(i,): {"id": i, "v": v, "extra": e} for i, v, e in testdb.query("SELECT id, v, extra FROM t")}
    got = {k: {"extra": None, **row} for k, row in replica.table("public.t").items()}
    assert got == expected
    assert replica.progress[-1].done


def test_row_filter_and_column_list_apply_to_snapshot_rows(testdb, walstream):
    if int(testdb.query("SHOW server_version_num")[0][0]) < 150000:
        pytest.skip("row filters and column lists need PostgreSQL 15")
    testdb.execute("CREATE TABLE f (id int PRIMARY KEY, a int, b text, secret text)",
                   "INSERT INTO f SELECT g, g % 5, 'b' || g, 'hidden' FROM generate_series(1, 500) g",
                   "CREATE TABLE marker (id int PRIMARY KEY, v text)", "INSERT INTO marker VALUES (1, 'start')",
                   "CREATE PUBLICATION pub FOR TABLE f (id, a, b) WHERE (id > 100), marker")
    ws = walstream()
    replica = Replica()
    client = ReplicaClient(ws.addr, replica, pb.SnapshotRequest(chunk_rows=25))
    try:
        wait_progress(client, 3)
        testdb.execute("UPDATE f SET a = a + 10, secret = 'changed' WHERE id % 3 = 0",
                       "UPDATE f SET id = id + 1000 WHERE id BETWEEN 50 AND 60",  # into the filter
                       "UPDATE f SET id = id - 400 WHERE id BETWEEN 450 AND 460")  # out of it
        client.wait_snapshot()
        caught_up(testdb, client, "end")
    finally:
        client.close()
    columns = [c.name for c in client.relations[next(r for r, rel in client.relations.items()
                                                    if rel.table == "f")].columns]
    assert columns == ["id", "a", "b"]
    expected = {(i,): {"id": i, "a": a, "b": b} for i, a, b in testdb.query("SELECT id, a, b FROM f WHERE id > 100")}
    assert replica.table("public.f") == expected
    assert {p.table for p in replica.progress} == {"public.f", "public.marker"}


def test_the_slot_does_not_pass_a_chunk_until_the_client_acknowledges_it(testdb, walstream):
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY, v text)",
                   "INSERT INTO t SELECT g, 'v' FROM generate_series(1, 300) g",
                   "CREATE PUBLICATION pub FOR ALL TABLES")
    quick_status_updates(testdb.dsn, testdb.name)
    ws = walstream()
    replica = Replica()
    client = ReplicaClient(ws.addr, replica, pb.SnapshotRequest(chunk_rows=100), auto_ack=False)
    try:
        client.wait_snapshot()
        positions = [p.position for p in replica.progress if p.position]
        assert len(positions) == 3 and replica.ops["SNAPSHOT"] == 300
        # The first status update after every chunk was read: one that moved the slot wrongly shows here.
        assert reported_flush_after(testdb.dsn, testdb.slot, positions[-1]) < positions[0]
        assert confirmed_flush(testdb.dsn, testdb.slot) < positions[0]
        client.ack_all()
        wait_confirmed(testdb.dsn, testdb.slot, positions[-1])
    finally:
        client.close()


def test_a_backfill_waits_for_room_and_shows_in_status_and_metrics(testdb, walstream):
    """A client that does not acknowledge stalls its backfill at the unacknowledged bound (a backfilling client
    is at worst a slow client); Status and the metrics show where it stands."""
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY, v text)",
                   "INSERT INTO t SELECT g, 'v' FROM generate_series(1, 1000) g", "ANALYZE t",
                   "CREATE PUBLICATION pub FOR ALL TABLES")
    metrics_port = free_port()
    ws = walstream("--max-unacked", "400", "--metrics-port", str(metrics_port))
    replica = Replica()
    client = ReplicaClient(ws.addr, replica, pb.SnapshotRequest(chunk_rows=100), auto_ack=False)

    def status() -> pb.StatusResponse:
        with grpc.insecure_channel(ws.addr) as channel:
            return walstream_v1_pb2_grpc.WalstreamStub(channel).Status(pb.StatusRequest(), timeout=10)

    try:
        wait_progress(client, 4)
        time.sleep(1.0)  # room for a fifth chunk would have let it run by now
        assert len(replica.progress) == 4 and replica.ops["SNAPSHOT"] == 400
        (running,) = status().snapshots
        assert running.table == "public.t" and running.rows_sent == 400 and running.chunks == 4
        assert running.rows_estimate == 1000 and "v1#" in running.client
        client.ack_all()
        while not client.snapshot_done.is_set():
            client.ack_all()
            assert not client.done.wait(0.05), client.error
        assert replica.ops["SNAPSHOT"] == 1000 and not status().snapshots
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        assert 'walstream_snapshot_rows_total{table="public.t"} 1000.0' in text
        assert 'walstream_snapshot_chunks_total{table="public.t"} 10.0' in text
        assert "walstream_snapshots_running 0.0" in text
    finally:
        client.close()


def test_a_backfill_respects_the_unacknowledged_byte_bound(testdb, walstream):
    """Chunks of ~100 kB (held as ~220 kB until acknowledged) under --max-unacked-bytes 500kB: two fit, a
    third waits for acks (the stream's reader alone would let it through and stop only after it)."""
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY, v text)",
                   "INSERT INTO t SELECT g, repeat('x', 1000) FROM generate_series(1, 600) g",
                   "CREATE PUBLICATION pub FOR ALL TABLES")
    ws = walstream("--max-unacked-bytes", "500kB")
    replica = Replica()
    client = ReplicaClient(ws.addr, replica, pb.SnapshotRequest(chunk_rows=100), auto_ack=False)
    try:
        wait_progress(client, 2)
        time.sleep(1.0)  # room for a third chunk would have let it run by now
        assert len(replica.progress) == 2 and replica.ops["SNAPSHOT"] == 200
        while not client.snapshot_done.is_set():
            client.ack_all()
            assert not client.done.wait(0.05), client.error
        assert replica.ops["SNAPSHOT"] == 600 and len(replica.progress) == 6
    finally:
        client.close()


def test_a_changed_key_ends_the_backfill_and_a_dropped_table_is_skipped(testdb, walstream):
    testdb.execute("CREATE TABLE a (id int PRIMARY KEY, v text)", "CREATE TABLE b (id int PRIMARY KEY, v text)",
                   "INSERT INTO a SELECT g, 'a' FROM generate_series(1, 3000) g",
                   "INSERT INTO b SELECT g, 'b' FROM generate_series(1, 3000) g",
                   "CREATE PUBLICATION pub FOR ALL TABLES")
    ws = walstream()
    dropped = Replica()
    client = ReplicaClient(ws.addr, dropped, pb.SnapshotRequest(chunk_rows=10))
    try:
        wait_progress(client, 3)
        testdb.execute("DROP TABLE a")
        client.wait_snapshot()
    finally:
        client.close()
    assert dropped.progress[-1].done and len(dropped.table("public.b")) == 3000
    assert "table public.a was dropped or left the publication; skipped" in ws.log()

    changed = Replica()
    client = ReplicaClient(ws.addr, changed, pb.SnapshotRequest(tables=["public.b"], chunk_rows=10))
    try:
        wait_progress(client, 3)
        testdb.execute("ALTER TABLE b DROP CONSTRAINT b_pkey, ADD PRIMARY KEY (id, v)")
        assert client.done.wait(30), "the backfill did not end"
    finally:
        client.channel.close()
    assert client.error is not None and client.error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "the key of public.b changed during the backfill (from id to id, v)" in str(client.error.details())


def test_an_update_leaving_a_toasted_value_out_inside_a_window_still_completes_the_row(testdb, walstream):
    """An UPDATE that does not change a TOASTed column does not resend it. When such an update supersedes a
    chunk row, the client would never learn that column; walstream sends the row completed from the chunk."""
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY, n int, big text)",
                   "INSERT INTO t SELECT g, 0, (SELECT string_agg(md5((g * 1000 + i)::text), '') "
                   "FROM generate_series(1, 200) i) FROM generate_series(1, 600) g",
                   "CREATE TABLE marker (id int PRIMARY KEY, v text)", "INSERT INTO marker VALUES (1, 'start')",
                   "CREATE PUBLICATION pub FOR ALL TABLES")
    ws = walstream()
    replica = Replica()
    client = ReplicaClient(ws.addr, replica, pb.SnapshotRequest(tables=["public.t"], chunk_rows=5))
    stop = threading.Event()

    def touch() -> None:
        conn = psycopg2.connect(testdb.dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            while not stop.is_set():
                cur.execute("UPDATE t SET n = n + 1 WHERE id = (SELECT (random() * 599)::int + 1)")
        conn.close()

    writer = threading.Thread(target=touch, daemon=True)
    writer.start()
    try:
        client.wait_snapshot()
        stop.set()
        writer.join(10)
        caught_up(testdb, client, "end")
    finally:
        stop.set()
        client.close()
    expected = {(i,): {"id": i, "n": n, "big": big} for i, n, big in testdb.query("SELECT id, n, big FROM t")}
    got = replica.table("public.t")
    wrong = [k for k in expected if got.get(k) != expected[k]]
    assert not wrong, f"{len(wrong)} rows differ, e.g. {wrong[:5]}: {str(got.get(wrong[0]))[:200]}"
    completed = sum(int(line.rsplit(", ", 1)[1].split()[0]) for line in ws.log().splitlines()
                    if line.endswith(" completed"))
    assert completed > 0  # the case happened (and the rows are right)
