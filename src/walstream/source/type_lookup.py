"""User-defined column types, read from the catalog off the event loop.

The replication stream names columns by type OID. Built-in types come from a static table; the others are
read here, once per type (again after a Type message says it changed), over a side connection of its own
with a statement timeout, in a worker thread: the event loop never waits on catalog SQL, and a look-up
stuck behind a lock fails after the timeout instead of hanging walstream (the stream then reconnects and
asks again).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import SourceError
from ..events.values import TypeInfo, catalog_lookup
from .catalog import Connection, SideConnection, SideQueryFailed

_SCHEMAS_SQL = ("SELECT t.oid::int, n.nspname::text FROM pg_catalog.pg_type t "
                "JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = ANY(%s)")


class TypeLookup:
    def __init__(self, conn_str: str) -> None:
        self._side = SideConnection(conn_str)

    def fetch(self, oids: list[int]) -> tuple[Mapping[int, TypeInfo], Mapping[int, str]]:
        """The types (and every type they are built from) and the schema of each. Blocking: call it in a
        worker thread. SourceError (retryable) when PostgreSQL cannot answer in time."""

        def query(conn: Connection) -> tuple[Mapping[int, TypeInfo], Mapping[int, str]]:
            infos = catalog_lookup(conn)(oids)
            with conn.cursor() as cur:
                cur.execute(_SCHEMAS_SQL, ([*infos, *oids],))
                schemas = {int(oid): str(name) for oid, name in cur.fetchall()}
            return infos, schemas

        try:
            return self._side.run(query)
        except SideQueryFailed as exc:
            raise SourceError(f"cannot look up column types: {exc}") from None

    def close(self) -> None:
        self._side.close()
