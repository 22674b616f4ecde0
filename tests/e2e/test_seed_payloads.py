"""json_payload through the whole pipeline (pgoutput -> walstream -> gRPC) equals to_jsonb() of the row."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from support import SeedClient, WalstreamProcess, has_xml_support

# column type -> values to insert (SQL literals); every row also gets an all-NULL companion.
COLUMNS: dict[str, list[str]] = {
    "int2": ["-32768", "7"], "int4": ["2147483647", "0"], "int8": ["-9223372036854775808", "42"],
    "float4": ["'1.5'", "'NaN'"], "float8": ["'1e-07'", "'-Infinity'"], "numeric": ["'12.5000'", "'NaN'"],
    "numeric(30,10)": ["'-0.0000000001'", "'12345678901234567890.1234567890'"],
    "bool": ["true", "false"], "text": ["'quote \" and back\\slash'", "E'uni \\u00e9 \\t tab'"],
    "varchar(10)": ["'abc'", "''"], "bpchar(3)": ["'ab'", "'xyz'"], "name": ["'n'", "'m'"],
    "bytea": ["'\\x0102ff'", "''"], "json": ["'{\"a\": 1, \"a\": 2}'", "'[1, \"x\", null]'"],
    "jsonb": ["'{\"k\": [1, 2.50, {\"n\": null}]}'", "'\"s\"'"], "date": ["'2024-02-29'", "'infinity'"],
    "timestamp": ["'2024-01-02 03:04:05.678'", "'-infinity'"],
    "timestamptz": ["'2024-01-02 03:04:05+05:30'", "'1999-12-31 23:59:59.999999+00'"],
    "time": ["'13:14:15'", "'00:00'"], "timetz": ["'13:14:15+02'", "'00:00+00'"],
    "interval": ["'1 year 2 mons 3 days 04:05:06'", "'-1 day'"], "uuid": ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"] * 2,
    "inet": ["'192.168.0.1/24'", "'::1'"], "cidr": ["'10.0.0.0/8'", "'::/0'"], "macaddr": ["'08:00:2b:01:02:03'"] * 2,
    "money": ["'12.34'", "'-1'"], "bit(3)": ["B'101'", "B'000'"], "varbit": ["B'1'", "B''"],
    "point": ["'(1,2)'", "'(0,0)'"], "box": ["'((1,1),(0,0))'", "'((2,2),(1,1))'"],
    "int4range": ["'[1,5)'", "'empty'"], "tsvector": ["'a fat cat'", "''"], "xml": ["'<a>x</a>'", "'<b/>'"],
    "oid": ["12", "0"], "int4[]": ["'{1,NULL,3}'", "'{}'"], "int4[][]": ["'{{1,2},{3,4}}'", "'[0:1]={5,6}'"],
    "text[]": ["'{\"a,b\",\"NULL\",NULL,\"q\\\"uote\"}'", "'{}'"], "numeric[]": ["'{1.10,NaN}'", "'{}'"],
    "bool[]": ["'{t,f}'", "'{}'"], "jsonb[]": ["ARRAY['{\"a\": 1}'::jsonb, 'null']", "'{}'"],
    "timestamptz[]": ["ARRAY['2024-01-02 03:04:05+00'::timestamptz]", "'{}'"],
    "box[]": ["ARRAY['((1,1),(0,0))'::box, '((3,3),(2,2))'::box]", "'{}'"], "mood": ["'happy'", "'sad'"],
    "posint": ["5", "6"], "pair": ["ROW(1, 'x y')", "ROW(NULL, '')"], "pair[]": ["ARRAY[ROW(2, 'z')::pair]", "'{}'"],
}


def exact(text: str) -> Any:
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def test_payload_equals_to_jsonb_for_every_column_type(testdb, tmp_path):
    columns = {t: v for t, v in COLUMNS.items() if t != "xml" or has_xml_support(testdb.conn)}
    cols = [f"c{i}" for i in range(len(columns))]
    testdb.execute(
        "CREATE TYPE mood AS ENUM ('happy', 'sad')",
        "CREATE DOMAIN posint AS int CHECK (VALUE > 0)",
        "CREATE TYPE pair AS (n int, s text)",
        "CREATE TABLE wide (id int PRIMARY KEY, "
        + ", ".join(f"{c} {t}" for c, t in zip(cols, columns, strict=True)) + ")",
        "ALTER TABLE wide REPLICA IDENTITY FULL",
        "CREATE PUBLICATION pub FOR ALL TABLES",
    )
    with WalstreamProcess(testdb.dsn, "pub", testdb.slot, log_dir=tmp_path) as ws:
        client = SeedClient(ws.addr)
        ws.wait_log("connected")
        for row in range(2):
            values = ", ".join(vals[row] for vals in columns.values())
            testdb.execute(f"INSERT INTO wide VALUES ({row + 1}, {values})")
        testdb.execute("INSERT INTO wide (id) VALUES (3)")  # every column NULL
        expected = {r[0]: r[1] for r in testdb.query("SELECT id, to_jsonb(w)::text FROM wide w")}
        testdb.execute("DELETE FROM wide")
        events = client.take(6)
        for event in events[:3]:
            assert event.op == "INSERT"
            want = exact(expected[event.payload["id"]])
            got = exact(event.raw)
            mismatched = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
            assert not mismatched, f"row {event.payload['id']}: walstream vs to_jsonb: {mismatched}"
            assert got == want
        # REPLICA IDENTITY FULL: deletes carry the whole old row, typed the same way.
        for event in events[3:]:
            assert event.op == "DELETE"
            assert exact(event.raw) == exact(expected[event.payload["id"]])
        client.close()
