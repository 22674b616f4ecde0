"""walstream.events.values against the real thing: for every built-in type a table column can hold (and
arrays, domains, enums, composites), the converted pgoutput text must equal PostgreSQL's to_jsonb().

The text a value is converted from is its type's output function's, fetched raw (no psycopg2 typecasting)
in a session with TimeZone=UTC and DateStyle=ISO, as in the walsender. It is not `col::text`: that cast
differs from the output function for bool ('true' vs 't'), inet ('1.2.3.4/32' vs '1.2.3.4') and bpchar
(trailing blanks dropped). test_pgoutput_row_equals_to_jsonb_row checks that pgoutput really sends it.

JSON is compared after parsing both sides with numbers kept as their exact text, so 1.50 != 1.5.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg2
import psycopg2.extensions
import pytest
from support import has_xml_support

from walstream.events.values import TypeCatalog
from walstream.pgcluster import Cluster
from walstream.source.type_lookup import catalog_lookup

SCHEMA = "walstream_values_e2e"

# Input texts per type ("SQL:" marks an SQL expression instead). Hostile strings on purpose: quotes,
# backslashes, the array/record punctuation, "NULL", blanks, unicode, extremes and special values.
TEXTY = ["", "NULL", "null", "a b", 'quote " and backslash \\ end', "{braces},(parens);semi", "ünï ✓ 😀",
         "tab\there\nnewline", " lead", "trail ", "\\", '"', "x"]
SAMPLES: dict[str, list[str]] = {
    "bool": ["true", "false"],
    "bytea": ["\\x", "\\x0102ff", "SQL:convert_to('a\"b\\c', 'UTF8')"],
    "char": ["a", '"', "\\", " ", "é", "SQL:'\\x00'::text::\"char\""],
    "name": ["abc", "a b", "NULL", 'with "quote"', "ünï", ""],
    "int8": ["0", "-9223372036854775808", "9223372036854775807"],
    "int2": ["-32768", "32767", "0"],
    "int2vector": ["1 2 3", "", "-1"],
    "int4": ["-2147483648", "2147483647", "42"],
    "regproc": ["now", "-", "int4in"],
    "text": TEXTY,
    "oid": ["0", "4294967295", "1"],
    "tid": ["(0,1)", "(4294967295,65535)"],
    "xid": ["0", "4294967295"],
    "cid": ["0", "7"],
    "oidvector": ["1 2", "", "4294967295"],
    "json": ['{"a":1,"a":2}', "[1.0E+2, -0, -0.0, 1e-3, 12345678901234567890123, 1.50, 0.1e1]",
             '"str\\u00e9\\n\\"\\\\\\/"', ' { "k" : [ true , false , null ] , "e": {} , "l": [] } ', "1.50",
             '{"nested":{"x":[{"y":"z","y":"last"}]}}', '"\\ud83d\\ude00"', "-1E-2", "1e400", "null", '""',
             "[1e131071, 1e-16383, -1.5E-3, 0E5, -0e-5]"],
    "xml": ['<a b="c">d &amp; e</a>', "text node", ""],
    "pg_node_tree": ["SQL:(SELECT adbin FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid "
                     "WHERE c.relname = 'stats_src' LIMIT 1)"],
    "point": ["(1,2)", "(-1.5,1e-7)", "(NaN,Infinity)"],
    "lseg": ["[(1,2),(3,4)]"],
    "path": ["((0,0),(1,1),(2,0))", "[(0,0),(1,1)]"],
    "box": ["(1,1),(0,0)", "(-1.5,2),(3,4e10)"],
    "polygon": ["((0,0),(1,1),(1,0))"],
    "line": ["{1,-1,0}"],
    "cidr": ["192.168.0.0/16", "::1/128"],
    "float4": ["1.25", "-0", "0", "NaN", "Infinity", "-Infinity", "1e-7", "3.4028235e+38", "1.1754944e-38",
               "1e-45", "123456789012", "0.1", "-1.5e+20", "100000"],
    "float8": ["0.1", "-0", "NaN", "Infinity", "-Infinity", "1e-7", "1.7976931348623157e308", "5e-324",
               "1e20", "123456789012345680000", "-1.5e-10", "1e15", "1e16", "0.0001", "0.00001", "-2"],
    "circle": ["<(1,2),3>"],
    "macaddr8": ["08:00:2b:01:02:03:04:05"],
    "money": ["12.34", "-1000000.5", "0"],
    "macaddr": ["08:00:2b:01:02:03"],
    "inet": ["192.168.1.1", "10.0.0.1/8", "::ffff:1.2.3.4", "2001:db8::1/64"],
    "aclitem": ["=r/postgres", "postgres=arwdDxt/postgres"],
    "bpchar": ["ab", "ab   ", "", 'q"uote', "SQL:'ab'::char(5)"],
    "varchar": ["x", "", "a,b", "NULL", "\\"],
    "date": ["2024-01-02", "0044-03-15 BC", "infinity", "-infinity", "5874897-12-31", "4713-11-24 BC",
             "0001-01-01", "10000-01-01"],
    "time": ["12:34:56.789", "24:00:00", "00:00", "23:59:59.999999"],
    "timestamp": ["2024-01-02 03:04:05.123456", "0044-03-15 10:00:00 BC", "infinity", "-infinity",
                  "294276-12-31 23:59:59.999999", "2000-01-01 00:00:00", "4714-11-24 00:00:00 BC",
                  "10000-01-01 00:00:00.5"],
    "timestamptz": ["2024-01-02 03:04:05.5+02", "0044-03-15 10:00:00+00 BC", "infinity", "-infinity",
                    "294276-12-31 23:59:59.999999+00", "1900-01-01 00:00:00+00", "2024-06-01 12:00:00-05:30",
                    "4714-11-24 00:00:00+00 BC", "12345-06-07 08:09:10.000001+00"],
    "interval": ["1 year 2 months 3 days 04:05:06.789", "-1 day", "0", "-178000000 years",
                 "1 day -00:00:01"],
    "timetz": ["12:34:56+05:30", "00:00:00-00:00:30", "12:00:00+14", "23:59:59.5-12"],
    "bit": ["1", "0"],
    "varbit": ["", "10101"],
    "numeric": ["1.50", "-0.000", "0", "NaN", "Infinity", "-Infinity", "1e100", "-1.5e-10",
                "-123456789012345678901234567890.123456789", "0.000000000000000000001",
                "SQL:repeat('9', 131072)::numeric", "SQL:('0.' || repeat('0', 16382) || '1')::numeric",
                "1e-1000", "100", "3.14159265358979323846264338327950288419716939937510"],
    "refcursor": ["cur", "a b"],
    "regprocedure": ["int4in(cstring)", "-"],
    "regoper": ["||/", "0"],
    "regoperator": ["+(integer,integer)", "-(NONE,integer)"],
    "regclass": ["pg_class", "pg_catalog.pg_type", "-"],
    "regtype": ["integer", "character varying", "int4[]", '"char"'],
    "uuid": ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "00000000-0000-0000-0000-000000000000"],
    "txid_snapshot": ["10:20:10,14,15", "1:1:"],
    "pg_lsn": ["16/B374D848", "0/0", "FFFFFFFF/FFFFFFFF"],
    "pg_ndistinct": ["SQL:(SELECT stxdndistinct FROM pg_statistic_ext_data WHERE stxdndistinct IS NOT NULL "
                     "LIMIT 1)"],
    "pg_dependencies": ["SQL:(SELECT stxddependencies FROM pg_statistic_ext_data "
                        "WHERE stxddependencies IS NOT NULL LIMIT 1)"],
    "pg_mcv_list": ["SQL:(SELECT stxdmcv FROM pg_statistic_ext_data WHERE stxdmcv IS NOT NULL LIMIT 1)"],
    "tsvector": ["a fat cat", "'a b':1A 'it''s':2B,3 \\\\", ""],
    "tsquery": ["fat & (rat | cat)", "'a b' & !c:*"],
    "regconfig": ["english", "simple"],
    "regdictionary": ["simple"],
    "jsonb": ['{"a":[1,2.50,"x"],"b":null,"a":3}', '"\\u00e9\\"\\\\"', "1e2", "[]", "{}", "-0.0",
              '{"k": {"deep": [[], {}, "😀"]}}'],
    "jsonpath": ["$.a[*] ? (@ > 1)", 'strict $."k y"'],
    "regnamespace": ["pg_catalog", "public"],
    "regrole": ["postgres"],
    "regcollation": ['"C"', "default"],
    "pg_snapshot": ["10:20:10,14,15"],
    "xid8": ["0", "18446744073709551615"],
    # ranges and multiranges (typtype r/m)
    "int4range": ["[1,5)", "empty", "(,)", "[-10,)"],
    "int8range": ["[1,5]", "(,0)"],
    "numrange": ["[1.5,2.50]", "(,1e3)"],
    "tsrange": ['["2024-01-01 00:00","2024-02-01 00:00")', "[-infinity,infinity]"],
    "tstzrange": ['["2024-01-01 00:00+00","2024-02-01 00:00+02")'],
    "daterange": ["[2024-01-01,2024-02-01)", "[0044-03-15 BC,)"],
    "int4multirange": ["{[1,5), [7,9)}", "{}"],
    "int8multirange": ["{[1,2)}"],
    "nummultirange": ["{[1.5,2.5]}"],
    "tsmultirange": ['{["2024-01-01 00:00","2024-01-02 00:00")}'],
    "tstzmultirange": ['{["2024-01-01 00:00+00","2024-01-02 00:00+00")}'],
    "datemultirange": ["{[2024-01-01,2024-02-01), [2025-01-01,)}"],
}

# Built-in types of typtype b/r/m left out, and why.
EXCLUDED = {
    "gtsvector": "input function raises 'not implemented'; values exist only inside GiST indexes",
    "pg_brin_bloom_summary": "input function refuses all values; values exist only inside BRIN indexes",
    "pg_brin_minmax_multi_summary": "input function refuses all values; values exist only inside BRIN indexes",
}

CHECKED: Counter[str] = Counter()  # what was compared, for the summary


def _strict(text: str) -> object:
    """Parse JSON keeping each number's exact text, so 1.50 and 1.5 differ."""
    return json.loads(text, parse_float=lambda s: ("num", s), parse_int=lambda s: ("num", s))


@pytest.fixture(scope="module")
def conn(pg: Cluster) -> Iterator[psycopg2.extensions.connection]:
    c = psycopg2.connect(pg.dsn)
    c.autocommit = True
    with c.cursor() as cur:
        cur.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'")
        cur.execute("SELECT array_agg(oid::int8) FROM pg_type")
        oids = tuple(cur.fetchone()[0])  # type: ignore[index]
        # Every value comes back as the server's text: no psycopg2 parsing of dates, numbers, arrays, json.
        psycopg2.extensions.register_type(
            psycopg2.extensions.new_type(oids, "WALSTREAM_RAW", lambda value, _cur: value), c)
        cur.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}; "
                    f"SET search_path = {SCHEMA}, public")
        # Values of the catalog-only types: a column default (pg_node_tree) and extended statistics.
        cur.execute("CREATE TABLE stats_src (a int DEFAULT 1, b int);"
                    "INSERT INTO stats_src SELECT i % 10, i % 5 FROM generate_series(1, 1000) i;"
                    "CREATE STATISTICS stats_src_s (ndistinct, dependencies, mcv) ON a, b FROM stats_src;"
                    "ANALYZE stats_src")
    try:
        yield c
    finally:
        with c.cursor() as cur:
            cur.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        c.close()


@pytest.fixture(scope="module")
def catalog(conn: psycopg2.extensions.connection) -> TypeCatalog:
    return TypeCatalog(catalog_lookup(conn))


def check(conn: psycopg2.extensions.connection, catalog: TypeCatalog, expr: str, what: str) -> None:
    with conn.cursor() as cur:
        cur.execute(f"SELECT v, to_jsonb(v)::text, pg_typeof(v)::oid::int8 FROM (SELECT {expr}) s(v)")
        text, expected, type_oid = cur.fetchone()  # type: ignore[misc]
    CHECKED[what] += 1
    if text is None:
        assert expected is None
        return
    got = orjson.dumps(catalog.converter(int(type_oid))(text))
    assert _strict(got.decode()) == _strict(expected), f"{expr}\n text: {text!r}\n got:  {got!r}\n want: {expected}"


def _literal(conn: psycopg2.extensions.connection, sample: str, typ: str) -> str:
    if sample.startswith("SQL:"):
        return f"({sample[4:]})::{typ}"
    return conn.cursor().mogrify("%s", (sample,)).decode() + f"::{typ}"


def _builtin_types(conn: psycopg2.extensions.connection) -> dict[str, tuple[str, int]]:
    """typname -> (qualified name usable in a cast with no typmod, typarray) for built-in b/r/m types."""
    with conn.cursor() as cur:
        cur.execute("""
            SELECT t.typname::text, format('%I.%I', n.nspname, t.typname), t.typarray::int8
              FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE t.typtype IN ('b', 'r', 'm') AND t.typisdefined AND t.oid < 16384
               AND t.oid NOT IN (SELECT typarray FROM pg_type)""")
        return {name: (qual, int(arr)) for name, qual, arr in cur.fetchall()}


def test_every_builtin_type_is_sampled_or_excluded(conn: psycopg2.extensions.connection) -> None:
    types = _builtin_types(conn)
    assert set(types) == set(SAMPLES) | set(EXCLUDED), (
        f"not sampled: {sorted(set(types) - set(SAMPLES) - set(EXCLUDED))}, "
        f"unknown: {sorted((set(SAMPLES) | set(EXCLUDED)) - set(types))}")
    with conn.cursor() as cur:  # the exclusions really cannot be made from SQL
        for name in EXCLUDED:
            with pytest.raises(psycopg2.Error):
                cur.execute(f"SELECT 'x'::{types[name][0]}")


@pytest.mark.parametrize("typname", sorted(SAMPLES))
def test_builtin_type(conn: psycopg2.extensions.connection, catalog: TypeCatalog, typname: str) -> None:
    if typname == "xml" and not has_xml_support(conn):
        pytest.skip("this PostgreSQL build has no XML support (configured without libxml)")
    qual, array_oid = _builtin_types(conn)[typname]
    lits = [_literal(conn, s, qual) for s in SAMPLES[typname]]
    for lit in lits:
        check(conn, catalog, lit, "scalar")
    if not array_oid:
        return
    a, b = lits[0], lits[-1]
    arrays = [
        f"ARRAY[{', '.join(lits)}, NULL::{qual}]",  # every sample and a NULL element
        f"ARRAY[NULL::{qual}]",
        f"'{{}}'::{qual}[]",
        f"ARRAY[[{a}, {b}], [NULL::{qual}, {a}]]",  # two dimensions
        f"ARRAY[[[{a}], [{b}]], [[NULL::{qual}], [{a}]]]",  # three
        # bounds other than 1 print as a [lb:ub]= decoration, which to_jsonb drops
        f"(SELECT ('[-3:' || (cardinality(x) - 4)::text || ']=' || x::text)::{qual}[] "
        f"FROM (SELECT ARRAY[{', '.join(lits)}, NULL::{qual}] AS x) s)",
        f"(SELECT ('[0:1][5:6]=' || x::text)::{qual}[] FROM (SELECT ARRAY[[{a}, {b}], [NULL::{qual}, {a}]] AS x) s)",
    ]
    for arr in arrays:
        check(conn, catalog, arr, "array")


USER_TYPES = """
CREATE DOMAIN d_posint AS int CHECK (VALUE > 0);
CREATE DOMAIN d_text AS text;
CREATE DOMAIN d_num AS numeric(10, 3);
CREATE DOMAIN d_ts AS timestamptz;
CREATE DOMAIN d_intarr AS int[];
CREATE DOMAIN d_dom AS d_posint;
CREATE DOMAIN d_box AS box;
CREATE DOMAIN d_char5 AS char(5);
CREATE TYPE e_mood AS ENUM ('sad', 'ok', 'a "quoted" label', 'with,comma', 'NULL', 'spa ce', '{}', '');
CREATE TYPE c_inner AS (i int, t text, ts timestamptz, n numeric, j json, b bool, arr int[], m e_mood,
                        f float8, d date, jb jsonb);
CREATE TYPE c_outer AS (inner_ c_inner, inners c_inner[], note d_text, bx box[], dom d_dom, "Odd Name" int);
CREATE TYPE c_dropped AS (a int, b text, c int);
ALTER TYPE c_dropped DROP ATTRIBUTE b;
CREATE TYPE c_one AS (x int);
CREATE TYPE c_empty AS ();
CREATE TABLE t_row (a int, b text, c c_inner);
"""

INNER = ("ROW(1, 'a \"b\" \\ c,(d)', '2024-01-02 03:04:05+00', 1.50, '{\"k\":1e2,\"k\":3}', true, "
         "ARRAY[1,NULL,3], 'a \"quoted\" label', 1e-7, '0044-03-15 BC', '{\"x\": [1.0]}')::c_inner")
USER_VALUES = [
    "5::d_posint", "'x \"y\"'::d_text", "1.5::d_num", "'2024-01-02 03:04:05+00'::d_ts",
    "'{1,2,NULL}'::d_intarr", "'[2:3]={7,8}'::d_intarr", "7::d_dom", "box '(1,1),(0,0)'::d_box",
    "'ab'::d_char5",
    "ARRAY['ab', NULL]::d_char5[]", "ARRAY[1, 2]::d_posint[]", "ARRAY['a,b', NULL, 'NULL']::d_text[]",
    "ARRAY[1.5]::d_num[]", "ARRAY[box '(1,1),(0,0)', box '(3,3),(2,2)']::d_box[]", "ARRAY[3]::d_dom[]",
    "'sad'::e_mood", "''::e_mood", "'{}'::e_mood",
    "enum_range(NULL::e_mood)", "ARRAY[NULL, 'NULL', 'spa ce', '', '{}']::e_mood[]",
    INNER,
    "ROW(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::c_inner",
    "ROW(0, '', NULL, 'NaN', '\"\"', false, '{}', '', 'Infinity', 'infinity', 'null')::c_inner",
    f"ROW({INNER}, ARRAY[{INNER}, NULL, {INNER}], 'n\"o,te', ARRAY[box '(1,1),(0,0)'], 3, 42)::c_outer",
    f"ARRAY[ROW({INNER}, ARRAY[{INNER}], NULL, NULL, NULL, NULL)::c_outer, NULL]",
    f"ARRAY[[{INNER}, NULL], [NULL, {INNER}]]",
    "ROW(NULL, NULL, NULL, NULL, NULL, NULL)::c_outer",
    "ROW(1, 2)::c_dropped", "ARRAY[ROW(1, NULL)::c_dropped]",
    "ROW(NULL)::c_one", "ROW(5)::c_one", "ARRAY[ROW(NULL)::c_one, NULL]",
    "ROW()::c_empty", "ARRAY[ROW()::c_empty]",
    f"ROW(1, 'x', {INNER})::t_row", "ARRAY[ROW(NULL, NULL, NULL)::t_row]",
    "(SELECT x FROM pg_class x WHERE relname = 'pg_am')",  # a catalog row type (OID below 16384)
    "'{\"(1)\"}'::c_one[]",
]


def test_user_types(conn: psycopg2.extensions.connection, catalog: TypeCatalog) -> None:
    with conn.cursor() as cur:
        cur.execute(USER_TYPES)
    for expr in USER_VALUES:
        check(conn, catalog, expr, "user-type")


def test_pgoutput_row_equals_to_jsonb_row(conn: psycopg2.extensions.connection, catalog: TypeCatalog) -> None:
    """A table with a column of every sampled type: what pgoutput sends, converted column by column, is
    to_jsonb(row) — the json_payload contract."""
    types = _builtin_types(conn)
    names = [n for n in sorted(SAMPLES) if n != "xml" or has_xml_support(conn)]
    cols = ", ".join(f"c_{n} {types[n][0]}" for n in names)
    width = max(len(v) for v in SAMPLES.values())
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE wide (id int PRIMARY KEY, {cols}, c_arr int4[], c_tarr text[])")
        cur.execute("CREATE PUBLICATION values_e2e_pub FOR TABLE wide")
        cur.execute("SELECT pg_create_logical_replication_slot('values_e2e_slot', 'pgoutput')")
        try:
            for i in range(width):
                vals = [_literal(conn, SAMPLES[n][i], types[n][0]) if i < len(SAMPLES[n]) else "NULL"
                        for n in names]
                cur.execute(f"INSERT INTO wide VALUES ({i}, {', '.join(vals)}, '{{1,NULL}}', %s)", (TEXTY,))
            cur.execute("SELECT data FROM pg_logical_slot_get_binary_changes('values_e2e_slot', NULL, NULL, "
                        "'proto_version', '1', 'publication_names', 'values_e2e_pub')")
            messages = [bytes.fromhex(row[0][2:]) for row in cur.fetchall()]
        finally:
            cur.execute("SELECT pg_drop_replication_slot('values_e2e_slot')")
            cur.execute("DROP PUBLICATION values_e2e_pub")
        cur.execute("SELECT id, to_jsonb(w)::text FROM wide w")
        expected = {int(i): j for i, j in cur.fetchall()}
    columns: list[tuple[str, int]] = []
    rows = 0
    for msg in messages:
        if msg[:1] == b"R":
            columns = _relation_columns(msg)
        elif msg[:1] == b"I":
            converters = [catalog.converter(oid) for _, oid in columns]
            cells = _new_tuple(msg)
            row = {name: None if cell is None else conv(cell)
                   for (name, _), conv, cell in zip(columns, converters, cells, strict=True)}
            got = orjson.dumps(row).decode()
            want = expected[int(cells[0] or "")]
            assert _strict(got) == _strict(want), f"row {cells[0]}\n got:  {got}\n want: {want}"
            rows += 1
    assert rows == width
    CHECKED["pgoutput-row"] += rows


def _relation_columns(msg: bytes) -> list[tuple[str, int]]:
    pos = 1 + 4
    for _ in range(2):  # namespace, relation name
        pos = msg.index(b"\0", pos) + 1
    pos += 1  # replica identity
    (ncols,) = struct.unpack_from("!H", msg, pos)
    pos += 2
    cols = []
    for _ in range(ncols):
        pos += 1  # flags
        end = msg.index(b"\0", pos)
        name = msg[pos:end].decode()
        type_oid, _typmod = struct.unpack_from("!Ii", msg, end + 1)
        pos = end + 9
        cols.append((name, type_oid))
    return cols


def _new_tuple(msg: bytes) -> list[str | None]:
    pos = 1 + 4
    if msg[pos:pos + 1] in (b"K", b"O"):
        raise AssertionError("unexpected old tuple")
    assert msg[pos:pos + 1] == b"N"
    (ncols,) = struct.unpack_from("!H", msg, pos + 1)
    pos += 3
    cells: list[str | None] = []
    for _ in range(ncols):
        kind = msg[pos:pos + 1]
        pos += 1
        if kind == b"t":
            (length,) = struct.unpack_from("!I", msg, pos)
            cells.append(msg[pos + 4:pos + 4 + length].decode())
            pos += 4 + length
        else:
            assert kind == b"n", kind
            cells.append(None)
    return cells


def test_json_cast_types_are_flagged(conn: psycopg2.extensions.connection, caplog: pytest.LogCaptureFixture) -> None:
    """to_jsonb() runs a non-built-in type's cast to json, which walstream cannot: it keeps the text and
    says so (a known limitation, e.g. hstore)."""
    with conn.cursor() as cur:
        cur.execute("CREATE TYPE e_cast AS ENUM ('a', 'b');"
                    "CREATE FUNCTION e_cast_json(e_cast) RETURNS json LANGUAGE sql IMMUTABLE "
                    "AS $$ SELECT json_build_object('v', $1::text) $$;"
                    "CREATE CAST (e_cast AS json) WITH FUNCTION e_cast_json(e_cast);"
                    "SELECT 'e_cast'::regtype::oid::int8, to_jsonb('a'::e_cast)::text")
        oid, expected = cur.fetchone()  # type: ignore[misc]
    assert json.loads(expected) == {"v": "a"}
    catalog = TypeCatalog(catalog_lookup(conn))
    with caplog.at_level(logging.WARNING, logger="walstream.events.values"):
        assert catalog.converter(int(oid))("a") == "a"
    info = catalog.info(int(oid))
    assert info is not None and info.json_cast
    assert "cast to json" in caplog.text


def test_builtin_table_is_fresh(pg: Cluster) -> None:
    """src/walstream/events/builtin_types.py is what scripts/gen_builtin_types.py makes of this server."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "gen_builtin_types.py"
    spec = importlib.util.spec_from_file_location("gen_builtin_types", path)
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    version, version_num, rows = gen.fetch(pg.dsn)
    if version_num // 10000 != 15:
        pytest.skip(f"the table is generated from PostgreSQL 15, this is {version}")
    assert gen.OUT.read_text() == gen.render(version, version_num, rows), "run scripts/gen_builtin_types.py"


def test_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs last in this module: how much was compared (visible with -s or -rA)."""
    with capsys.disabled():
        print(f"\nvalues vs to_jsonb: {len(SAMPLES)} built-in types sampled, {len(EXCLUDED)} excluded; "
              f"comparisons: {dict(CHECKED)}")
