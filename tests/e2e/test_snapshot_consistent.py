"""End to end: CONSISTENT snapshots (`start --snapshot-consistent true`) on a real PostgreSQL under concurrent
writes, a table without a key included. The rows arrive first, all at the slot's starting point, then every
change from that point on; once the writes stop the replica equals the tables. SIGKILL of walstream and the
client mid-copy: the copy goes on as INCREMENTAL chunks with the last token, and the replica is still equal.
Where CONSISTENT cannot be offered, the request fails with FAILED_PRECONDITION saying why."""

from __future__ import annotations

import time

import grpc
import pytest
from snapshot_load import ROWS, Writer, assert_equal, caught_up
from snapshot_replica import Replica, ReplicaClient
from support import wait_until

from walstream._proto import walstream_v1_pb2 as pb
from walstream.client import Client, SnapshotProgress

NOKEY_ROWS = 800


class KeylessWriter(Writer):
    """Inserts, updates and deletes on a_nokey (REPLICA IDENTITY FULL: its rows are told apart by value)."""

    def run(self) -> None:
        r, cur = self.random, self.conn.cursor()
        try:
            while not self.stop.is_set():
                x = r.randrange(1, NOKEY_ROWS * 2)
                op = r.random()
                if op < 0.3:
                    cur.execute("INSERT INTO a_nokey SELECT %s, md5(random()::text) "
                                "WHERE NOT EXISTS (SELECT FROM a_nokey WHERE a = %s)", (x, x))
                elif op < 0.7:
                    cur.execute("UPDATE a_nokey SET b = md5(random()::text) WHERE a = %s", (x,))
                else:
                    cur.execute("DELETE FROM a_nokey WHERE a = %s", (x,))
                self.conn.commit()
                self.transactions += 1
        except BaseException as exc:  # noqa: BLE001 (reported by finish())
            self.error = exc
        finally:
            self.conn.close()


def setup(testdb, rows: int = ROWS) -> None:
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY, v text, n int NOT NULL)",
                   f"INSERT INTO t SELECT g, md5(g::text), 0 FROM generate_series(1, {rows}) g",
                   "CREATE TABLE a_nokey (a int NOT NULL, b text)", "ALTER TABLE a_nokey REPLICA IDENTITY FULL",
                   f"INSERT INTO a_nokey SELECT g, md5(g::text) FROM generate_series(1, {NOKEY_ROWS}) g",
                   "CREATE TABLE marker (id int PRIMARY KEY, v text)", "INSERT INTO marker VALUES (1, 'start')",
                   "CREATE PUBLICATION pub FOR ALL TABLES")


def assert_keyless_equal(replica: Replica, testdb) -> None:
    expected = {(a, b): {"a": a, "b": b} for a, b in testdb.query("SELECT a, b FROM a_nokey")}
    assert replica.table("public.a_nokey") == expected


def writers(testdb) -> list[Writer]:
    started = [Writer(testdb.dsn, 7), KeylessWriter(testdb.dsn, 8)]
    for w in started:
        w.start()
    return started


def test_consistent_copy_then_every_change_builds_an_equal_replica(testdb, walstream):
    setup(testdb)
    ws = walstream("--snapshot-consistent", "true")
    load = writers(testdb)
    # changes committed after the slot's starting point, before the client asks
    wait_until("the writers' first transactions", lambda: all(w.transactions >= 20 for w in load), 30)
    replica = Replica()
    client = ReplicaClient(ws.addr, replica, pb.SnapshotRequest(mode=pb.CONSISTENT, chunk_rows=200))
    try:
        client.wait_snapshot()
        with client.lock:
            ops = list(replica.ops)
        assert ops[0] == "SNAPSHOT" and replica.ops["SNAPSHOT"] == ROWS + NOKEY_ROWS + 1  # nothing before it
        positions = {p.position for p in replica.progress if p.position}
        assert len(positions) == 1, positions  # every row at the slot's starting point
        second = ReplicaClient(ws.addr, Replica(), pb.SnapshotRequest(mode=pb.CONSISTENT))
        second.done.wait(30)
        assert second.error is not None and second.error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "another subscriber took the snapshot" in (second.error.details() or "")
        for w in load:
            w.finish()
        caught_up(testdb, client, "end")
        assert replica.ops.get("UPDATE", 0) > 0 and replica.ops.get("DELETE", 0) > 0
        assert_equal(replica, testdb)
        assert_keyless_equal(replica, testdb)
    finally:
        for w in load:
            w.stop.set()
        client.close()


def test_consistent_copy_killed_mid_way_finishes_incrementally(testdb, walstream):
    setup(testdb, rows=20_000)
    ws = walstream("--snapshot-consistent", "true")
    load = writers(testdb)
    replica = Replica()
    client = ReplicaClient(ws.addr, replica, pb.SnapshotRequest(mode=pb.CONSISTENT, chunk_rows=100))
    try:
        deadline = time.monotonic() + 60
        while sum(1 for p in replica.progress if p.table == "public.t") < 5:
            assert not client.done.is_set() and time.monotonic() < deadline, client.error
            time.sleep(0.01)
        ws.kill()  # SIGKILL mid-copy
        client.drop()
        assert not replica.progress[-1].done
        ws = walstream("--snapshot-consistent", "true")
        # The slot exists now: no snapshot at its starting point to offer a new request...
        fresh = ReplicaClient(ws.addr, Replica(), pb.SnapshotRequest(mode=pb.CONSISTENT))
        fresh.done.wait(30)
        assert fresh.error is not None and fresh.error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "CONSISTENT is not available" in (fresh.error.details() or "")
        # ...but the interrupted copy goes on after its last chunk, as INCREMENTAL chunks.
        client = ReplicaClient(ws.addr, replica, pb.SnapshotRequest(mode=pb.CONSISTENT, chunk_rows=500,
                                                                    resume_token=replica.token))
        client.wait_snapshot()
        for w in load:
            w.finish()
        caught_up(testdb, client, "end")
        assert_equal(replica, testdb)
        assert_keyless_equal(replica, testdb)
    finally:
        for w in load:
            w.stop.set()
        client.close()


def test_consistent_copy_on_a_failover_slot(testdb, walstream):
    """--failover with --snapshot-consistent (PostgreSQL 17+): the slot is created as a failover slot and
    still exports its snapshot, so the copy is taken at its starting point."""
    if testdb.conn.server_version < 170000:
        pytest.skip("failover slots need PostgreSQL 17+ (test_failover checks the refusal)")
    setup(testdb, rows=500)
    ws = walstream("--snapshot-consistent", "true", "--failover")
    testdb.execute("UPDATE t SET n = 1 WHERE id <= 10")  # after the starting point: a change, not a copy
    replica = Replica()
    client = ReplicaClient(ws.addr, replica, pb.SnapshotRequest(mode=pb.CONSISTENT, chunk_rows=100))
    try:
        client.wait_snapshot()
        assert replica.ops["SNAPSHOT"] == 500 + NOKEY_ROWS + 1
        assert len({p.position for p in replica.progress if p.position}) == 1
        caught_up(testdb, client, "end")
        assert replica.ops.get("UPDATE") == 10 + 1  # the ten of t, and caught_up's marker
        assert_equal(replica, testdb)
        assert testdb.query("SELECT failover FROM pg_replication_slots WHERE slot_name = %s",
                            (testdb.slot,)) == [(True,)]
    finally:
        client.close()


def test_consistent_needs_the_option(testdb, walstream):
    setup(testdb, rows=10)
    ws = walstream()
    client = ReplicaClient(ws.addr, Replica(), pb.SnapshotRequest(mode=pb.CONSISTENT))
    client.done.wait(30)
    assert client.error is not None and client.error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "started without --snapshot-consistent true" in (client.error.details() or "")



def test_the_held_snapshot_is_given_up_once_the_stream_reads_a_change(testdb, walstream):
    """A client without a CONSISTENT request connects first and receives a change: the slot's starting point
    is past, so the held snapshot is released (its transaction would hold VACUUM back) and refused after."""
    setup(testdb, rows=10)
    ws = walstream("--snapshot-consistent", "true")
    ws.wait_log("holding the slot's exported snapshot")
    replica = Replica()
    first = ReplicaClient(ws.addr, replica, pb.SnapshotRequest(tables=["public.marker"]))
    try:
        first.wait_snapshot()
        caught_up(testdb, first, "moved")
        ws.wait_log("released the slot's exported snapshot")
        late = ReplicaClient(ws.addr, Replica(), pb.SnapshotRequest(mode=pb.CONSISTENT))
        late.done.wait(30)
        assert late.error is not None and late.error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "already read changes from the slot" in (late.error.details() or "")
    finally:
        first.close()


@pytest.mark.timeout(90)
def test_the_client_library_acks_each_consistent_chunk(testdb, walstream):
    """A CONSISTENT copy's chunks all share the slot's starting point as lsn: the library must ack each chunk
    (each matching the oldest unacknowledged), or the unacknowledged bound stops the copy after a few."""
    setup(testdb, rows=3000)
    ws = walstream("--snapshot-consistent", "true", "--max-unacked", "400")
    rows: dict[object, object] = {}

    def on_progress(progress: SnapshotProgress) -> None:
        if client.snapshot_done:  # the last chunk's rows are acknowledged
            client.close()

    with Client(ws.addr, snapshot=["public.t"], snapshot_mode="consistent", snapshot_chunk_rows=100,
                reconnect=False, on_progress=on_progress) as client:
        for batch in client.batches():
            for change in batch:
                assert change.op == "SNAPSHOT" and change.new is not None
                rows[change.new["id"]] = change.new
            client.ack(batch)
    assert client.snapshot_done
    assert len(rows) == 3000 and client.snapshot_progress["public.t"].chunks == 30
