"""End to end: INCREMENTAL snapshots on a real PostgreSQL under concurrent writes. A client builds a replica
from the stream (SNAPSHOT rows, then changes); once the writes stop and the stream has caught up, the
replica equals the table. Also after SIGKILL of walstream and the client mid-backfill, resumed by token."""

from __future__ import annotations

import json

import grpc
from snapshot_load import ROWS, Writer, assert_equal, caught_up
from snapshot_replica import Replica, ReplicaClient

from walstream._proto import walstream_v1_pb2 as pb


def setup_tables(testdb) -> None:
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY, v text, n int NOT NULL)",
                   f"INSERT INTO t SELECT g, md5(g::text), 0 FROM generate_series(1, {ROWS}) g",
                   "CREATE TABLE marker (id int PRIMARY KEY, v text)", "INSERT INTO marker VALUES (1, 'start')",
                   "CREATE PUBLICATION pub FOR ALL TABLES")


def test_backfill_under_concurrent_writes_builds_an_equal_replica(testdb, walstream):
    setup_tables(testdb)
    ws = walstream()
    writer = Writer(testdb.dsn, 1)
    writer.start()
    replica = Replica()
    client = ReplicaClient(ws.addr, replica, pb.SnapshotRequest(tables=["public.t"], chunk_rows=100),
                           transaction_boundaries=True, logical_messages=True)
    try:
        client.wait_snapshot()
        writer.finish()
        caught_up(testdb, client, "end")
        assert_equal(replica, testdb)
    finally:
        writer.stop.set()
        client.close()
    last = replica.progress[-1]
    assert last.done and last.state == pb.SNAPSHOT_DONE and last.table == "public.t"
    assert sum(p.chunks for p in replica.progress[-1:]) >= ROWS // 100 - 1
    assert replica.ops.get("SNAPSHOT", 0) > ROWS // 2  # most rows came from the snapshot, not from changes
    assert "marker" not in {p.table for p in replica.progress}  # only the requested table was copied
    assert "MESSAGE" not in replica.ops  # watermarks are hidden, even from a client asking for messages
    assert replica.ops["BEGIN"] == replica.ops["COMMIT"]
    assert replica.repeated == 0  # every event after the one before it, in (commit_lsn, ordinal) order


def test_sigkill_mid_backfill_and_resume_by_token_still_equal(testdb, walstream):
    setup_tables(testdb)
    ws = walstream()
    writer = Writer(testdb.dsn, 2)
    writer.start()
    replica = Replica()
    request = pb.SnapshotRequest(tables=["public.t"], chunk_rows=50)
    client = ReplicaClient(ws.addr, replica, request)
    try:
        while len(replica.progress) < 10:
            assert not client.done.wait(0.05), client.error
        ws.kill()  # SIGKILL
        client.drop()
        before = len(replica.progress)
        token = replica.token
        assert token and not replica.progress[-1].done

        ws2 = walstream()
        resumed = ReplicaClient(ws2.addr, replica, pb.SnapshotRequest(tables=["public.t"], chunk_rows=50,
                                                                       resume_token=token))
        try:
            resumed.wait_snapshot()
            writer.finish()
            caught_up(testdb, resumed, "end")
            assert_equal(replica, testdb)
        finally:
            resumed.close()
    finally:
        writer.stop.set()
    # It went on from the token: the resumed run's first chunk begins after the last key the killed run sent
    # (a count of chunks would depend on how far the concurrent inserts grew the table).
    after = replica.progress[before:]
    assert after[-1].done

    def last_key(resume_token: bytes) -> int:
        return int(json.loads(resume_token[:-32])["after"][0])  # token: JSON, then a 32-byte MAC

    killed_at = last_key(token)
    assert killed_at > 300  # ten chunks of 50 rows were sent before the kill
    assert killed_at < last_key(after[0].resume_token) and after[0].rows_sent <= 50


def test_snapshot_request_errors_are_clear(testdb, walstream):
    testdb.execute("CREATE TABLE nokey (a int, b text)", "CREATE TABLE t (id int PRIMARY KEY)",
                   "CREATE PUBLICATION pub FOR ALL TABLES")
    ws = walstream()
    cases = [
        (pb.SnapshotRequest(), grpc.StatusCode.INVALID_ARGUMENT, "table public.nokey has no primary key"),
        (pb.SnapshotRequest(tables=["public.t"], resume_token=b"garbage"), grpc.StatusCode.INVALID_ARGUMENT,
         "not a walstream resume token"),
        (pb.SnapshotRequest(tables=["public.t"], chunk_rows=10**7), grpc.StatusCode.INVALID_ARGUMENT,
         "snapshot.chunk_rows: 10000000 is above"),
        (pb.SnapshotRequest(tables=["a.b.c"]), grpc.StatusCode.INVALID_ARGUMENT, "snapshot.tables[0]"),
        (pb.SnapshotRequest(tables=["public.t"], mode=pb.CONSISTENT), grpc.StatusCode.FAILED_PRECONDITION,
         "CONSISTENT is not available"),
    ]
    for request, code, text in cases:
        client = ReplicaClient(ws.addr, Replica(), request)
        assert client.done.wait(20)
        assert client.error is not None and client.error.code() == code, (request, client.error)
        assert text in (client.error.details() or ""), client.error.details()
        client.channel.close()


def test_walstream_sizes_chunks_by_the_row_width(testdb, walstream):
    """chunk_rows 0: a table's first chunk has 1,000 rows, the next ones about 8 MB of COPY text each at the
    width the chunk before had (rows of 20 kB: about 419), so a wide table is never held 5,000 rows at a time."""
    testdb.execute("CREATE TABLE wide (id int PRIMARY KEY, body text)",
                   "INSERT INTO wide SELECT g, repeat(md5(g::text), 625) FROM generate_series(1, 2500) g",
                   "CREATE TABLE narrow (id int PRIMARY KEY)",
                   "INSERT INTO narrow SELECT generate_series(1, 30000)",
                   "CREATE PUBLICATION pub FOR ALL TABLES")
    ws = walstream()
    replica = Replica()
    client = ReplicaClient(ws.addr, replica, pb.SnapshotRequest(tables=["public.wide", "public.narrow"]))
    try:
        client.wait_snapshot()
    finally:
        client.close()

    def chunks(table: str) -> list[int]:
        sent = [p.rows_sent for p in replica.progress if p.table == table]
        return [b - a for a, b in zip([0, *sent[:-1]], sent, strict=True)]

    wide = chunks("public.wide")
    assert sum(wide) == 2500 and wide[0] == 1000, wide
    assert all(400 <= n <= 440 for n in wide[1:-1]) and len(wide) >= 4, wide
    narrow = chunks("public.narrow")  # about 14 bytes a row: the most, a quarter of --max-unacked
    assert narrow == [1000, 5000, 5000, 5000, 5000, 5000, 4000], narrow
