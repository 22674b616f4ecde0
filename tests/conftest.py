"""Fixtures that start real PostgreSQL clusters (no mocks) and give each test its own names."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import pytest

from walstream.pgcluster import Cluster, find_bindir

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg() -> Iterator[Cluster]:
    """One throwaway PostgreSQL 15 cluster for the session (WALSTREAM_PG_BINDIR picks another build)."""
    extra = [os.environ["WALSTREAM_PG_BINDIR"]] if os.environ.get("WALSTREAM_PG_BINDIR") else []
    cluster = Cluster(bindir=find_bindir(extra))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def db(pg: Cluster) -> Iterator[psycopg2.extensions.connection]:
    """An autocommit connection to the session cluster."""
    conn = psycopg2.connect(pg.dsn)
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


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

    def query(self, sql: str, params: tuple[object, ...] | None = None) -> list[tuple[object, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def wal_lsn(self) -> int:
        return int(self.query("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0][0])  # type: ignore[arg-type]


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
            cur.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                        "WHERE database = %s AND active_pid IS NOT NULL", (name,))
            cur.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        "WHERE database = %s AND NOT active", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
