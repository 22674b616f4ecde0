"""Which tables a backfill copies, each table's key, and the publication's row filter and column list.

Keys: the primary key, else the replica-identity index; a table with neither cannot be chunked by key
and is refused, naming the table. Column lists and row filters (PostgreSQL 15+, pg_publication_tables)
are applied to the chunk query itself, so snapshot rows hold exactly what pgoutput would send.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..delivery.v1.adapter import InvalidSubscription, Subscription
from ..source import catalog
from ..source.messages import COLUMN_FLAG_KEY, RelationColumn
from .request import SnapshotSpec

Connection = catalog.Connection

_TABLES_SQL = """
SELECT c.oid::int8, n.nspname::text, c.relname::text
  FROM pg_catalog.pg_publication_tables pt
  JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
  JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
 WHERE pt.pubname = %s
 ORDER BY 2, 3
"""

# The key: the primary key, else the replica identity index (pg_index.indisreplident).
_KEY_SQL = """
SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod)
  FROM (SELECT i.indkey, i.indrelid FROM pg_catalog.pg_index i
         WHERE i.indrelid = %s AND (i.indisprimary OR i.indisreplident)
         ORDER BY i.indisprimary DESC LIMIT 1) k
  CROSS JOIN LATERAL unnest(k.indkey) WITH ORDINALITY AS u(attnum, pos)
  JOIN pg_catalog.pg_attribute a ON a.attrelid = k.indrelid AND a.attnum = u.attnum
 ORDER BY u.pos
"""

_COLUMNS_SQL = """
SELECT a.attname::text, a.atttypid::int8, a.atttypmod
  FROM pg_catalog.pg_attribute a
 WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped {generated}
 ORDER BY a.attnum
"""

_RELATION_SQL = """
SELECT c.relreplident::text, c.relkind::text, GREATEST(c.reltuples, 0)::int8,
       (SELECT array_agg(a.attname::text) FROM pg_catalog.pg_index i
          JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = c.oid AND ((c.relreplident = 'd' AND i.indisprimary)
                                       OR (c.relreplident = 'i' AND i.indisreplident)))
  FROM pg_catalog.pg_class c WHERE c.oid = %s
"""

_PUBLISHED_SQL = """
SELECT pt.attnames::text[], pt.rowfilter
  FROM pg_catalog.pg_publication_tables pt
 WHERE pt.pubname = %s AND pt.schemaname = %s AND pt.tablename = %s
"""


@dataclass(frozen=True)
class TableRef:
    relid: int
    schema: str
    table: str
    key: tuple[str, ...] = ()  # key column names when the backfill was planned

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class TableShape:
    """A table as one chunk reads it (in the chunk's own snapshot)."""

    ref: TableRef
    columns: tuple[RelationColumn, ...]  # as pgoutput's Relation message would list them
    replica_identity: str
    key: tuple[str, ...]  # key column names, in index order
    key_types: tuple[str, ...]  # format_type of each key column, for the keyset comparison
    row_filter: str | None
    partitioned: bool
    rows_estimate: int


def quote(conn: Connection, name: str) -> str:
    return catalog.quote_ident(name, conn)


def _rows(conn: Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


# The statements prepared on each connection (prepared statements outlive the transaction they were made in).
_PREPARED: weakref.WeakKeyDictionary[Connection, set[str]] = weakref.WeakKeyDictionary()


def _prepared_rows(conn: Connection, name: str, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """_rows for the catalog queries every chunk runs (read_shape), prepared once per connection: planning
    their joins costs more than running them, and a chunk is round trips and catalog reads more than rows."""
    prepared = _PREPARED.setdefault(conn, set())
    if name not in prepared:
        parts = sql.split("%s")
        text = "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], 1)) + parts[-1]
        with conn.cursor() as cur:
            cur.execute(f"PREPARE {name} AS {text}")
        prepared.add(name)
    return _rows(conn, f"EXECUTE {name}({', '.join(['%s'] * len(params))})", params)


def resolve(conn: Connection, publication: str, sub: Subscription, spec: SnapshotSpec) -> list[TableRef]:
    """The tables to copy, in name order, each with its key (() for none: see check_keys)."""
    refs: list[TableRef] = []
    for oid, schema, table in _rows(conn, _TABLES_SQL, (publication,)):
        if not (sub.wants_table(schema, table) and spec.wants(schema, table)):
            continue
        ref = TableRef(int(oid), schema, table)
        key = tuple(str(name) for name, _ in _rows(conn, _KEY_SQL, (ref.relid,)))
        refs.append(TableRef(ref.relid, schema, table, key))
    return refs


def check_keys(refs: list[TableRef]) -> None:
    """InvalidSubscription naming the first table INCREMENTAL chunks cannot read: one without a key (a
    CONSISTENT copy reads such a table by pages, and skips this check)."""
    for ref in refs:
        if not ref.key:
            raise InvalidSubscription(
                f"snapshot: table {ref.name} has no primary key and no replica identity index, which an "
                "INCREMENTAL snapshot needs to read it in chunks; add a primary key (or ALTER TABLE ... REPLICA "
                "IDENTITY USING INDEX on a unique index), or leave it out of snapshot.tables")


def read_shape(conn: Connection, ref: TableRef, publication: str, server_version: int) -> TableShape | None:
    """The table as the current snapshot sees it; None if it no longer exists."""
    found = _prepared_rows(conn, "walstream_shape_relation", _RELATION_SQL, (ref.relid,))
    if not found:
        return None
    replident, relkind, estimate, identity_columns = found[0]
    generated = "AND a.attgenerated = ''" if server_version >= 120000 else ""
    columns = _prepared_rows(conn, f"walstream_shape_columns{'_stored' if generated else ''}",
                             _COLUMNS_SQL.format(generated=generated), (ref.relid,))
    row_filter: str | None = None
    if server_version >= 150000:
        published = _prepared_rows(conn, "walstream_shape_published", _PUBLISHED_SQL,
                                   (publication, ref.schema, ref.table))
        if not published:
            return None  # no longer in the publication
        names, row_filter = published[0]
        if names is not None:
            keep = set(names)
            columns = [c for c in columns if c[0] in keep]
    key_cols = _prepared_rows(conn, "walstream_shape_key", _KEY_SQL, (ref.relid,))
    identity = set(identity_columns or ())
    rel_columns = tuple(
        RelationColumn(COLUMN_FLAG_KEY if replident == "f" or name in identity else 0, name, int(oid), int(typmod))
        for name, oid, typmod in columns)
    return TableShape(ref, rel_columns, replident, tuple(k for k, _ in key_cols), tuple(t for _, t in key_cols),
                      row_filter, relkind == "p", int(estimate))


def key_literal(value: bytes, type_name: str, encoding: str) -> str:
    """A key value, given as its text in the database's encoding, as SQL that is ASCII whatever the bytes:
    hex, turned back into text by the server (a SQL_ASCII database holds bytes no client codec takes)."""
    return f"pg_catalog.convert_from('\\x{value.hex()}'::bytea, '{encoding}')::{type_name}"


def chunk_query(conn: Connection, shape: TableShape, after: Sequence[bytes] | None, upto: Sequence[bytes],
                limit: int, encoding: str) -> str:
    """COPY of the next `limit` rows after key `after` up to key `upto` (inclusive), in key order: the
    published columns, then the key columns again (to page on, even when the column list leaves them out).
    Keys are each column's text in the server encoding `encoding` (a PostgreSQL encoding name)."""
    def q(name: str) -> str:
        return quote(conn, name)

    cols = [q(c.name) for c in shape.columns] + [q(k) for k in shape.key]
    key = _row([q(k) for k in shape.key])

    def literal(values: Sequence[bytes]) -> str:
        return _row([key_literal(v, t, encoding) for v, t in zip(values, shape.key_types, strict=True)])

    where = [f"{key} <= {literal(upto)}"]
    if after is not None:
        where.append(f"{key} > {literal(after)}")
    if shape.row_filter:
        where.append(f"({shape.row_filter})")
    only = "" if shape.partitioned else "ONLY "
    table = f"{q(shape.ref.schema)}.{q(shape.ref.table)}"
    order = ", ".join(q(k) for k in shape.key)
    return (f"COPY (SELECT {', '.join(cols)} FROM {only}{table} WHERE {' AND '.join(where)} "
            f"ORDER BY {order} LIMIT {int(limit)}) TO STDOUT")


def page_query(conn: Connection, shape: TableShape, first: int, pages: int) -> str:
    """COPY of the published columns of the rows in pages [first, first + pages) (a TID range scan, 14+):
    how a table without a key is read in chunks, inside one snapshot."""
    def q(name: str) -> str:
        return quote(conn, name)

    where = [f"ctid >= '({int(first)},0)'::tid", f"ctid < '({int(first + pages)},0)'::tid"]
    if shape.row_filter:
        where.append(f"({shape.row_filter})")
    cols = ", ".join(q(c.name) for c in shape.columns)
    return (f"COPY (SELECT {cols} FROM ONLY {q(shape.ref.schema)}.{q(shape.ref.table)} "
            f"WHERE {' AND '.join(where)}) TO STDOUT")


def _row(parts: list[str]) -> str:
    """One value as itself, several as a row (compared column by column, as ORDER BY sorts them)."""
    return parts[0] if len(parts) == 1 else "ROW(" + ", ".join(parts) + ")"


def max_key_query(conn: Connection, shape: TableShape, encoding: str) -> str:
    """The largest key, each column as its text's bytes in the server encoding `encoding` (bytea: no client
    codec involved): the backfill stops there (later rows arrive as INSERTs)."""
    def q(name: str) -> str:
        return quote(conn, name)

    only = "" if shape.partitioned else "ONLY "
    # Aliased: ORDER BY a bare name would sort by an output column of that name, the text.
    cols = ", ".join(f"pg_catalog.convert_to({q(k)}::text, '{encoding}') AS k{i}" for i, k in enumerate(shape.key))
    order = ", ".join(f"{q(k)} DESC" for k in shape.key)
    return f"SELECT {cols} FROM {only}{q(shape.ref.schema)}.{q(shape.ref.table)} ORDER BY {order} LIMIT 1"
