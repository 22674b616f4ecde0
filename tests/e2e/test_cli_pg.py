"""The real `walstream` command, run as a subprocess against real PostgreSQL clusters.

Every failing command must print exactly one line, `walstream: error: ...`, exit 1, and show no traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import psycopg2.extensions
import psycopg2.extras
import pytest

from walstream.pgcluster import Cluster, free_port

SRC = str(Path(__file__).resolve().parents[2] / "src")
SECRET = "Sup3rSecretPw"


def walstream(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "CONNECTION"}
    full_env.update(env or {}, PYTHONPATH=SRC)
    return subprocess.run(
        [sys.executable, "-m", "walstream", *args], capture_output=True, text=True, env=full_env, timeout=60
    )


def assert_fails(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.stderr == f"walstream: error: {message}\n", result.stderr
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def start(pg: Cluster, publication: str, slot: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return walstream("--connection", pg.dsn, "start", "--publication", publication, "--slot", slot, *extra)


@pytest.fixture(scope="module")
def replica_pg(pg: Cluster) -> Iterator[Cluster]:
    """A second, slot-less cluster with wal_level = replica (small: it only answers catalog queries)."""
    with Cluster(bindir=pg.bindir, settings={"wal_level": "replica", "shared_buffers": "16MB",
                                             "max_connections": "20"}) as cluster:
        yield cluster


@pytest.fixture
def publication(db: psycopg2.extensions.connection, unique_name: str) -> Iterator[str]:
    name = f"pub_{unique_name}"[:63]
    with db.cursor() as cur:
        cur.execute(f'CREATE PUBLICATION "{name}" FOR ALL TABLES')
    yield name
    with db.cursor() as cur:
        cur.execute(f'DROP PUBLICATION IF EXISTS "{name}"')


def sql(db: psycopg2.extensions.connection, query: str, *params: object) -> object:
    with db.cursor() as cur:
        cur.execute(query, params)
        row = cur.fetchone() if cur.description else None
        return row[0] if row else None


def drop_slot_quietly(db: psycopg2.extensions.connection, slot: str) -> None:
    with db.cursor() as cur:
        cur.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE slot_name = %s AND NOT active", (slot,))


def replication_conn(pg: Cluster) -> psycopg2.extras.LogicalReplicationConnection:
    return psycopg2.connect(pg.dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)


# -- version and global behaviour ------------------------------------------------------------------------

def test_version() -> None:
    result = walstream("--version")
    assert result.returncode == 0
    # the version and which hot path this process runs (walstream.native): the C accelerator or pure Python
    line = r"walstream \d+\.\d+\.\d+ \((native C accelerator|pure Python \([^)]*\))\)\n"
    assert re.fullmatch(line, result.stdout), result.stdout


def test_connection_from_environment(pg: Cluster) -> None:
    result = walstream("list", "--json", env={"CONNECTION": pg.dsn})
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), list)


# -- list ------------------------------------------------------------------------------------------------

def test_list_empty(replica_pg: Cluster) -> None:
    result = walstream("--connection", replica_pg.dsn, "list")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "No replication slots on this server.\n"
    result = walstream("--connection", replica_pg.dsn, "list", "--json")
    assert (result.returncode, json.loads(result.stdout)) == (0, [])


def test_list_all_kinds(pg: Cluster, db: psycopg2.extensions.connection, unique_name: str) -> None:
    logical, physical, temp = f"{unique_name}_l", f"{unique_name}_p", f"{unique_name}_t"
    sql(db, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", logical)
    sql(db, "SELECT pg_create_physical_replication_slot(%s)", physical)  # not reserved: restart_lsn NULL
    holder = replication_conn(pg)
    try:
        holder.cursor().execute(f"CREATE_REPLICATION_SLOT {temp} TEMPORARY LOGICAL pgoutput")
        pid = holder.get_backend_pid()

        result = walstream("--connection", pg.dsn, "list", "--json")
        assert result.returncode == 0 and result.stderr == "", result.stderr
        slots = {s["name"]: s for s in json.loads(result.stdout)}
        assert slots[logical] == slots[logical] | {
            "plugin": "pgoutput", "kind": "logical", "database": "postgres", "temporary": False,
            "active": False, "active_pid": None, "wal_status": "reserved",
        }
        assert isinstance(slots[logical]["retained_bytes"], int) and slots[logical]["retained_bytes"] >= 0
        assert "/" in slots[logical]["restart_lsn"] and "/" in slots[logical]["confirmed_flush_lsn"]
        assert slots[physical] == {
            "name": physical, "plugin": None, "kind": "physical", "database": None, "temporary": False,
            "active": False, "active_pid": None, "restart_lsn": None, "confirmed_flush_lsn": None,
            "wal_status": None, "retained_bytes": None,
        }
        assert slots[temp] == slots[temp] | {"temporary": True, "active": True, "active_pid": pid}

        result = walstream("--connection", pg.dsn, "list")
        assert result.returncode == 0 and result.stderr == "", result.stderr
        lines = result.stdout.splitlines()
        header = lines[0].split()
        assert header == ["NAME", "PLUGIN", "KIND", "DATABASE", "TEMPORARY", "ACTIVE", "RESTART_LSN",
                          "CONFIRMED_FLUSH_LSN", "WAL_STATUS", "RETAINED_BYTES"]
        rows = {line.split()[0]: line for line in lines[1:]}
        assert rows[physical].split() == [physical, "-", "physical", "-", "no", "no", "-", "-", "-", "-"]
        assert f"yes (pid {pid})" in rows[temp]
        assert rows[logical].split()[:6] == [logical, "pgoutput", "logical", "postgres", "no", "no"]
        # Aligned: every column starts at the same offset in every line.
        start_of = lines[0].index("ACTIVE")
        assert rows[temp][start_of:].startswith("yes (pid")
        assert rows[logical][start_of:].startswith("no ")
    finally:
        holder.close()
        drop_slot_quietly(db, logical)
        drop_slot_quietly(db, physical)


# -- delete ----------------------------------------------------------------------------------------------

def test_delete(pg: Cluster, db: psycopg2.extensions.connection, unique_name: str) -> None:
    sql(db, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", unique_name)
    result = walstream("--connection", pg.dsn, "delete", "--slot", unique_name)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f'dropped replication slot "{unique_name}"\n'
    assert sql(db, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", unique_name) == 0


def test_delete_missing(pg: Cluster, unique_name: str) -> None:
    result = walstream("--connection", pg.dsn, "delete", "--slot", unique_name)
    assert_fails(result, f'replication slot "{unique_name}" does not exist')


def test_delete_active(pg: Cluster, db: psycopg2.extensions.connection, unique_name: str) -> None:
    holder = replication_conn(pg)
    try:
        holder.cursor().execute(f"CREATE_REPLICATION_SLOT {unique_name} TEMPORARY LOGICAL pgoutput")
        pid = holder.get_backend_pid()
        result = walstream("--connection", pg.dsn, "delete", "--slot", unique_name)
        assert_fails(result, f'replication slot "{unique_name}" is active for PID {pid}: stop that process '
                             f"first (or SELECT pg_terminate_backend({pid}); as a superuser)")
        assert sql(db, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", unique_name) == 1
    finally:
        holder.close()


def test_delete_invalid_name(pg: Cluster) -> None:
    result = walstream("--connection", pg.dsn, "delete", "--slot", "Bad-Slot")
    assert_fails(result, "invalid slot name 'Bad-Slot': use 1-63 characters, only lower-case letters, digits "
                         "and underscore")


def test_delete_slot_of_another_database(pg: Cluster, db: psycopg2.extensions.connection,
                                         unique_name: str) -> None:
    sql(db, f"CREATE DATABASE {unique_name}")
    other = psycopg2.connect(pg.dsn.replace("dbname=postgres", f"dbname={unique_name}"))
    other.autocommit = True
    try:
        sql(other, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", unique_name)
        result = walstream("--connection", pg.dsn, "delete", "--slot", unique_name)
        assert result.returncode == 0, result.stderr
        assert sql(db, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", unique_name) == 0
    finally:
        other.close()
        drop_slot_quietly(db, unique_name)
        sql(db, f"DROP DATABASE {unique_name}")


# -- start: everything that must fail before the engine runs -------------------------------------------

def test_start_unreachable() -> None:
    port = free_port()
    result = walstream("--connection", f"host=127.0.0.1 port={port} user=postgres", "start",
                       "--publication", "p", "--slot", "s")
    assert_fails(result, f'cannot connect to PostgreSQL: connection to server at "127.0.0.1", port {port} '
                         "failed: Connection refused")


def test_start_malformed_connection() -> None:
    result = walstream("--connection", "host=127.0.0.1 port", "start", "--publication", "p", "--slot", "s")
    assert_fails(result, 'invalid connection string: missing "=" after "port" in connection info string')
    result = walstream("--connection", "host=127.0.0.1 colour=blue", "start", "p", "s")
    assert_fails(result, 'invalid connection string: invalid connection option "colour"')


def test_start_wal_level_replica(replica_pg: Cluster) -> None:
    result = start(replica_pg, "p", "s")
    assert_fails(result, 'wal_level is "replica" but logical decoding needs "logical": set wal_level = '
                         "logical in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart "
                         "PostgreSQL")


def test_start_missing_publication(pg: Cluster, unique_name: str) -> None:
    assert_fails(start(pg, unique_name, unique_name),
                 f'publication "{unique_name}" does not exist in database "postgres": create it, e.g. '
                 f"CREATE PUBLICATION {unique_name} FOR ALL TABLES;")
    # Names that need quoting are quoted in the hint, as PostgreSQL's quote_ident does.
    assert_fails(start(pg, "My Pub", unique_name),
                 'publication "My Pub" does not exist in database "postgres": create it, e.g. '
                 'CREATE PUBLICATION "My Pub" FOR ALL TABLES;')


def test_start_role_without_replication(pg: Cluster, db: psycopg2.extensions.connection, publication: str,
                                        unique_name: str) -> None:
    sql(db, f"CREATE ROLE {unique_name} LOGIN")
    try:
        conn = pg.dsn.replace("user=postgres", f"user={unique_name}")
        result = walstream("--connection", conn, "start", "--publication", publication, "--slot", unique_name)
        assert_fails(result, f'role "{unique_name}" may not use replication: run ALTER ROLE {unique_name} '
                             "WITH REPLICATION; as a superuser")
    finally:
        sql(db, f"DROP ROLE {unique_name}")


def test_start_invalid_slot_name(pg: Cluster, publication: str) -> None:
    assert_fails(start(pg, publication, "no-dashes"),
                 "invalid slot name 'no-dashes': use 1-63 characters, only lower-case letters, digits and "
                 "underscore")


def test_start_slot_with_other_plugin(pg: Cluster, db: psycopg2.extensions.connection, publication: str,
                                      unique_name: str) -> None:
    sql(db, "SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", unique_name)
    try:
        assert_fails(start(pg, publication, unique_name),
                     f'replication slot "{unique_name}" uses plugin "test_decoding", not "pgoutput": choose '
                     f"another --slot or drop this one with `walstream delete --slot {unique_name}`")
    finally:
        drop_slot_quietly(db, unique_name)


def test_start_physical_slot(pg: Cluster, db: psycopg2.extensions.connection, publication: str,
                             unique_name: str) -> None:
    sql(db, "SELECT pg_create_physical_replication_slot(%s)", unique_name)
    try:
        assert_fails(start(pg, publication, unique_name, "--temporary", "false"),
                     f'replication slot "{unique_name}" is a physical slot, not a logical one: choose '
                     f"another --slot or drop this one with `walstream delete --slot {unique_name}`")
    finally:
        drop_slot_quietly(db, unique_name)


def test_start_slot_in_other_database(pg: Cluster, db: psycopg2.extensions.connection, publication: str,
                                      unique_name: str) -> None:
    sql(db, f"CREATE DATABASE {unique_name}")
    other = psycopg2.connect(pg.dsn.replace("dbname=postgres", f"dbname={unique_name}"))
    other.autocommit = True
    try:
        sql(other, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", unique_name)
        assert_fails(start(pg, publication, unique_name),
                     f'replication slot "{unique_name}" belongs to database "{unique_name}", not "postgres": '
                     f'connect to "{unique_name}" or choose another --slot')
    finally:
        other.close()
        drop_slot_quietly(db, unique_name)
        sql(db, f"DROP DATABASE {unique_name}")


# -- passwords never leak --------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["keyvalue", "quoted", "uri", "malformed_uri", "malformed_keyvalue"])
def test_password_never_printed(form: str) -> None:
    port = free_port()
    conn = {
        "keyvalue": f"host=127.0.0.1 port={port} user=postgres password={SECRET}",
        "quoted": f"host=127.0.0.1 port={port} user=postgres password='{SECRET} x'",
        "uri": f"postgresql://postgres:{SECRET}@127.0.0.1:{port}/postgres",
        "malformed_uri": f"postgresql://postgres:{SECRET}@[::1",
        "malformed_keyvalue": f"host=127.0.0.1 password={SECRET} port",
    }[form]
    for args in (["start", "p", "s"], ["list"], ["delete", "--slot", "s"]):
        for fmt in ("text", "json"):
            result = walstream("--connection", conn, "--log-level", "debug", "--log-format", fmt, *args)
            assert result.returncode == 1
            assert SECRET not in result.stdout + result.stderr
            assert "Traceback" not in result.stderr
            assert result.stderr.splitlines()[-1].startswith("walstream: error: ")
