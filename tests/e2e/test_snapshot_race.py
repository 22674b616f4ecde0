"""The visibility race (docs/api.md "Snapshots"; brief section 3.8), reproduced deterministically.

A transaction whose commit record is already in the WAL, and already streamed, can still be invisible to
other sessions: with synchronous_standby_names naming a standby that never answers, the committing backend
waits after writing its commit record, still listed as running. A chunk read then sees the old row. Without
the guard that stale row is delivered after the change and the replica stays wrong; with it the chunk is
read again once the transaction is visible, and the replica equals the table.
"""

from __future__ import annotations

import threading

import psycopg2
import psycopg2.extensions
import pytest
from snapshot_replica import Replica, ReplicaClient
from support import WalstreamProcess, wait_until

from walstream._proto import walstream_v1_pb2 as pb
from walstream.snapshot.runner import UNGUARDED_ENV


def wait_for_synchronous_commit(testdb) -> list[psycopg2.extensions.connection]:
    """Until a commit really waits for the standby: sessions see the reloaded setting before the checkpointer
    has published it (WalSndCtl->sync_standbys_defined), and until then commits do not wait. Each probe commits
    a transaction with nothing to decode; the last one stays waiting until release."""
    probes = []
    for _ in range(50):
        probe = psycopg2.connect(testdb.dsn)
        probe.autocommit = True
        probes.append(probe)

        def commit(conn: psycopg2.extensions.connection = probe) -> None:
            with conn.cursor() as cur:
                cur.execute("SET synchronous_commit = on")
                cur.execute("CREATE TEMP TABLE probe (x int)")  # writes WAL (catalog rows) but no published change

        thread = threading.Thread(target=commit, daemon=True)
        thread.start()
        thread.join(1.0)
        if thread.is_alive():
            return probes
    raise AssertionError("commits never waited for the synchronous standby")


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
    probes: list[psycopg2.extensions.connection] = []

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            testdb.execute("ALTER SYSTEM RESET synchronous_standby_names", "SELECT pg_reload_conf()")

    try:
        watcher.wait_snapshot()
        testdb.execute("ALTER SYSTEM SET synchronous_standby_names = 'nosuch'", "SELECT pg_reload_conf()")
        probes.extend(wait_for_synchronous_commit(testdb))

        def update() -> None:
            with hung.cursor() as cur:
                cur.execute("SET synchronous_commit = on")
                cur.execute("UPDATE t SET v = 'new' WHERE id = 7")  # commits, then waits for the standby

        writer = threading.Thread(target=update, daemon=True)
        writer.start()
        wait_until("the update to wait for the standby", lambda: testdb.query(
            "SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (pid,))[0][0] == "SyncRep", 30)
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
        for probe in probes:
            probe.close()
        ws.kill()
