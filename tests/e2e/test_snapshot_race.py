"""The visibility race (docs/api.md "Snapshots"; brief section 3.8), reproduced deterministically.

A transaction whose commit record is already in the WAL, and already streamed, can still be invisible to
other sessions: with synchronous_standby_names naming a standby that never answers, the committing backend
waits after writing its commit record, still listed as running. A chunk read then sees the old row. Without
the guard that stale row is delivered after the change and the replica stays wrong; with it the chunk is
read again once the transaction is visible, and the replica equals the table.
"""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest
from snapshot_replica import Replica, ReplicaClient
from support import WalstreamProcess

from walstream._proto import walstream_v1_pb2 as pb
from walstream.snapshot.runner import UNGUARDED_ENV


def wait_until(check, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("guarded", [True, False], ids=["guarded", "unguarded"])
def test_transaction_streamed_before_it_is_visible(testdb, tmp_path, monkeypatch, guarded):
    testdb.execute("SET synchronous_commit = local",  # this session's own writes never wait
                   "CREATE TABLE t (id int PRIMARY KEY, v text)",
                   "INSERT INTO t SELECT g, 'old' FROM generate_series(1, 50) g",
                   "CREATE TABLE marker (id int PRIMARY KEY, v text)", "INSERT INTO marker VALUES (1, 'start')",
                   "CREATE PUBLICATION pub FOR ALL TABLES")
    if not guarded:
        monkeypatch.setenv(UNGUARDED_ENV, "1")
    ws = WalstreamProcess(testdb.dsn, "pub", testdb.slot, log_dir=tmp_path).start()
    watcher_replica = Replica()
    watcher = ReplicaClient(ws.addr, watcher_replica, pb.SnapshotRequest(tables=["public.marker"]))
    hung = psycopg2.connect(testdb.dsn)
    hung.autocommit = True
    pid = hung.get_backend_pid()
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            testdb.execute("ALTER SYSTEM RESET synchronous_standby_names", "SELECT pg_reload_conf()")

    try:
        watcher.wait_snapshot()
        testdb.execute("ALTER SYSTEM SET synchronous_standby_names = 'nosuch'", "SELECT pg_reload_conf()")
        wait_until(lambda: testdb.query("SHOW synchronous_standby_names")[0][0] == "nosuch", "the reload")

        def update() -> None:
            with hung.cursor() as cur:
                cur.execute("SET synchronous_commit = on")
                cur.execute("UPDATE t SET v = 'new' WHERE id = 7")  # commits, then waits for the standby

        writer = threading.Thread(target=update, daemon=True)
        writer.start()
        wait_until(lambda: testdb.query("SELECT wait_event FROM pg_stat_activity WHERE pid = %s",
                                        (pid,))[0][0] == "SyncRep", "the update to wait for the standby")
        # Streamed already, while every other session still reads the old row.
        watcher.wait_row("public.t", (7,), {"id": 7, "v": "new"})
        assert testdb.query("SELECT v FROM t WHERE id = 7")[0][0] == "old"

        replica = Replica()
        client = ReplicaClient(ws.addr, replica, pb.SnapshotRequest(tables=["public.t"], chunk_rows=20))
        if guarded:
            ws.wait_log("not visible to the chunk's snapshot")  # the guard saw it: the chunk waits
            assert not client.snapshot_done.is_set()
            release()
            client.wait_snapshot()
        else:
            client.wait_snapshot()  # done with the stale row while the update is still invisible
            release()
        writer.join(30)
        assert not writer.is_alive()
        testdb.execute("UPDATE marker SET v = 'end' WHERE id = 1")
        client.wait_row("public.marker", (1,), {"id": 1, "v": "end"})
        table = {(i,): {"id": i, "v": v} for i, v in testdb.query("SELECT id, v FROM t")}
        if guarded:
            assert replica.table("public.t") == table
            assert any(p.retries for p in replica.progress)
        else:
            assert replica.table("public.t")[(7,)] == {"id": 7, "v": "old"}  # stale for good
            assert table[(7,)] == {"id": 7, "v": "new"}
        client.close()
    finally:
        release()
        watcher.close()
        hung.close()
        ws.kill()
