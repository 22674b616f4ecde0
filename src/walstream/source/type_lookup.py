"""User-defined column types, read from the catalog off the event loop.

The replication stream names columns by type OID. Built-in types come from a static table; the others are
read here, once per type (again after a Type message says it changed), over a side connection of its own
with a statement timeout, in a worker thread: the event loop never waits on catalog SQL, and a look-up
stuck behind a lock fails after the timeout instead of hanging walstream (the stream then reconnects and
asks again).
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import psycopg2.extensions

from ..errors import SourceError
from ..events.values import Lookup, TypeInfo
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



_LOOKUP_SQL = """
WITH RECURSIVE wanted(oid) AS (
    SELECT o FROM pg_catalog.unnest(%(oids)s::pg_catalog.oid[]) AS o
  UNION
    SELECT ref.oid
      FROM wanted w
      JOIN pg_catalog.pg_type t ON t.oid = w.oid
      CROSS JOIN LATERAL (
            SELECT t.typbasetype WHERE t.typtype = 'd'
        UNION ALL
            SELECT t.typelem WHERE t.typelem <> 0
        UNION ALL
            SELECT a.atttypid FROM pg_catalog.pg_attribute a
             WHERE t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
      ) AS ref(oid)
)
SELECT pg_catalog.json_build_array(
       t.oid::int8, t.typname, t.typtype, t.typcategory,
       CASE WHEN {is_array} THEN t.typelem::int8 ELSE 0 END,
       t.typdelim, t.typbasetype::int8,
       t.typinput IN ('pg_catalog.int2vectorin'::pg_catalog.regproc,
                      'pg_catalog.oidvectorin'::pg_catalog.regproc),
       ARRAY(SELECT pg_catalog.json_build_array(a.attname, a.atttypid::int8)
               FROM pg_catalog.pg_attribute a
              WHERE t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum),
       EXISTS (SELECT FROM pg_catalog.pg_cast c
                WHERE c.castsource = t.oid AND c.casttarget = 'pg_catalog.json'::pg_catalog.regtype
                  AND c.castmethod = 'f'))::text
  FROM wanted w JOIN pg_catalog.pg_type t ON t.oid = w.oid
"""
# PostgreSQL 14 made subscripting pluggable; before it an array was any varlena with an element type.
_IS_ARRAY_14 = "t.typsubscript = 'pg_catalog.array_subscript_handler'::pg_catalog.regproc"
_IS_ARRAY_OLD = "t.typlen = -1 AND t.typelem <> 0"


def catalog_lookup(conn: psycopg2.extensions.connection) -> Lookup:
    """A TypeCatalog lookup that reads pg_type/pg_attribute/pg_cast over `conn` (a psycopg2 connection,
    not a replication one). It returns the asked types and everything they are built from. A transaction
    it had to open is rolled back; one the caller had open is left alone."""
    ext = psycopg2.extensions

    def lookup(oids: list[int]) -> dict[int, TypeInfo]:
        idle = conn.get_transaction_status() == ext.TRANSACTION_STATUS_IDLE
        is_array = _IS_ARRAY_14 if conn.server_version >= 140000 else _IS_ARRAY_OLD
        try:
            with conn.cursor() as cur:
                cur.execute(_LOOKUP_SQL.format(is_array=is_array), {"oids": [int(o) for o in oids]})
                rows = cur.fetchall()
        finally:
            if idle and not conn.autocommit and conn.get_transaction_status() != ext.TRANSACTION_STATUS_IDLE:
                conn.rollback()
        infos: dict[int, TypeInfo] = {}
        for (row,) in rows:  # one JSON text per type: immune to typecasters registered on conn
            oid, name, typtype, cat, elem, delim, base, vector, attrs, json_cast = orjson.loads(row)
            attributes = tuple((str(n), int(t)) for n, t in attrs)
            infos[oid] = TypeInfo(int(oid), str(name), str(typtype), str(cat), int(elem), str(delim), int(base),
                                  attributes, bool(vector), bool(json_cast))
        return infos

    return lookup
