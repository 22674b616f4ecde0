"""walstream.delivery.v1.typed without a server: each type's pgoutput text -> walstream.v1 Value.

tests/e2e/test_v1_api.py checks the same values against a real PostgreSQL (dates and times against its
own extract(epoch)).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from functools import partial

import pytest

from walstream._proto.walstream_v1_pb2 import Row, Value
from walstream.delivery.v1.typed import (
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    TypedCatalog,
    days_from_civil,
    parse_bytea,
    parse_date,
    parse_time,
    parse_timestamp,
    to_value,
)
from walstream.delivery.v1.wire import RowEncoder
from walstream.events.change import RelationInfo
from walstream.events.values import TypeCatalog, TypeInfo
from walstream.source.messages import Cell, RelationColumn

EPOCH = datetime(1970, 1, 1)


def us(dt: datetime) -> int:
    return (dt.replace(tzinfo=None) - EPOCH) // timedelta(microseconds=1) if dt.tzinfo is None else \
        (dt - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


# User types, as the catalog lookup would describe them.
MOOD, POSINT, MOODS, POSINTS, PAIR = 16400, 16401, 16402, 16403, 16404
USER_TYPES = {
    MOOD: TypeInfo(MOOD, "mood", "e", "E"),
    POSINT: TypeInfo(POSINT, "posint", "d", "N", base=23),
    MOODS: TypeInfo(MOODS, "_mood", "b", "A", elem=MOOD),
    POSINTS: TypeInfo(POSINTS, "_posint", "b", "A", elem=POSINT),
    PAIR: TypeInfo(PAIR, "pair", "c", "C", attributes=(("a", 23), ("b", 25))),
}


def lookup(oids: list[int]) -> Mapping[int, TypeInfo]:
    return {o: USER_TYPES[o] for o in oids if o in USER_TYPES}


@pytest.fixture
def typed() -> TypedCatalog:
    return TypedCatalog(TypeCatalog(lookup), schema_of=lambda oid: "app" if oid == PAIR else "public")


def v(typed: TypedCatalog, oid: int, text: str) -> Value:
    return to_value(typed.converter(oid), text)


def kind(value: Value) -> tuple[str | None, object]:
    k = value.WhichOneof("kind")
    if k == "array":
        return k, [kind(e) for e in value.array.elements]
    return k, getattr(value, k) if k else None


# --- scalars ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("oid", "text", "expected"), [
    (21, "-32768", ("int64", -32768)),
    (23, "2147483647", ("int64", 2147483647)),
    (20, "-9223372036854775808", ("int64", INT64_MIN)),
    (20, "9007199254740993", ("int64", 9007199254740993)),  # beyond a double's exact range
    (701, "1.5", ("double", 1.5)),
    (701, "1e-07", ("double", 1e-07)),
    (700, "3.4028235e+38", ("double", 3.4028235e38)),
    (701, "Infinity", ("double", math.inf)),
    (701, "-Infinity", ("double", -math.inf)),
    (1700, "12345678901234567890.000000000001", ("numeric", "12345678901234567890.000000000001")),
    (1700, "NaN", ("numeric", "NaN")),
    (1700, "-Infinity", ("numeric", "-Infinity")),
    (16, "t", ("bool", True)),
    (16, "f", ("bool", False)),
    (25, "héllo ✓ 日本", ("text", "héllo ✓ 日本")),
    (1043, "", ("text", "")),
    (17, "\\x00ff10", ("bytes", b"\x00\xff\x10")),
    (17, "\\x", ("bytes", b"")),
    (114, '{"a": 1, "a": 2}', ("json", '{"a": 1, "a": 2}')),
    (3802, '{"k": [1, 2.50]}', ("json", '{"k": [1, 2.50]}')),
    (2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", ("text", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
    (1186, "1 day 02:00:00", ("text", "1 day 02:00:00")),
    (1266, "12:00:00+02", ("text", "12:00:00+02")),  # timetz: no better form
    (26, "4294967295", ("text", "4294967295")),  # oid is not an integer type here
    (790, "$1.00", ("text", "$1.00")),
    (3904, "[1,5)", ("text", "[1,5)")),
    (MOOD, "happy", ("text", "happy")),
    (POSINT, "7", ("int64", 7)),  # a domain is its base type
    (PAIR, '(1,"a b")', ("text", '(1,"a b")')),  # composites: their text
])
def test_scalars(typed: TypedCatalog, oid: int, text: str, expected: tuple[str, object]) -> None:
    assert kind(v(typed, oid, text)) == expected


def test_float_nan_and_negative_zero(typed: TypedCatalog) -> None:
    assert math.isnan(v(typed, 701, "NaN").double)
    assert math.isnan(v(typed, 700, "NaN").double)
    zero = v(typed, 700, "-0").double
    assert zero == 0 and math.copysign(1, zero) == -1


def test_unknown_type_is_text() -> None:
    typed = TypedCatalog(TypeCatalog())  # no lookup: user types are unknown
    assert kind(v(typed, 99999, "whatever")) == ("text", "whatever")
    assert typed.type_name(99999) == "99999"


# --- dates and times ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("1970-01-01", 0),
    ("2024-02-29", (datetime(2024, 2, 29) - EPOCH).days),
    ("1969-12-31", -1),
    ("0001-01-01", (datetime(1, 1, 1) - EPOCH).days),
    ("0001-12-31 BC", (datetime(1, 1, 1) - EPOCH).days - 1),  # 1 BC is just before 1 AD (no year 0)
    ("0001-01-01 BC", (datetime(1, 1, 1) - EPOCH).days - 366),  # 1 BC is a leap year
    ("5874897-12-31", days_from_civil(5874897, 12, 31)),
    ("infinity", INT32_MAX),
    ("-infinity", INT32_MIN),
])
def test_dates(typed: TypedCatalog, text: str, expected: int) -> None:
    assert parse_date(text) == expected
    assert kind(v(typed, 1082, text)) == ("date_days", expected)


def test_days_from_civil_matches_the_gregorian_calendar() -> None:
    for days in range(-800_000, 3_000_000, 997):
        d = EPOCH + timedelta(days=days) if -719162 <= days <= 2932896 else None
        if d is not None:
            assert days_from_civil(d.year, d.month, d.day) == days


@pytest.mark.parametrize(("text", "expected"), [
    ("00:00:00", 0),
    ("23:59:59.999999", 86_400_000_000 - 1),
    ("12:30:00.5", (12 * 3600 + 30 * 60) * 1_000_000 + 500_000),
    ("24:00:00", 86_400_000_000),
])
def test_times(typed: TypedCatalog, text: str, expected: int) -> None:
    assert parse_time(text) == expected
    assert kind(v(typed, 1083, text)) == ("time_us", expected)


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-01-02 03:04:05", us(datetime(2024, 1, 2, 3, 4, 5))),
    ("2024-01-02 03:04:05.678901", us(datetime(2024, 1, 2, 3, 4, 5, 678901))),
    ("2024-01-02 03:04:05.5", us(datetime(2024, 1, 2, 3, 4, 5, 500000))),
    ("1969-12-31 23:59:59.999999", -1),
    ("0001-01-01 00:00:00", us(datetime(1, 1, 1))),
    ("0001-12-31 23:00:00 BC", us(datetime(1, 1, 1)) - 3_600_000_000),
    ("10000-01-01 00:00:00", days_from_civil(10000, 1, 1) * 86_400_000_000),
    ("infinity", INT64_MAX),
    ("-infinity", INT64_MIN),
])
def test_timestamps(typed: TypedCatalog, text: str, expected: int) -> None:
    assert parse_timestamp(text) == expected
    assert kind(v(typed, 1114, text)) == ("timestamp_us", expected)


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-01-02 03:04:05+00", us(datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc))),
    ("2024-01-02 03:04:05.25+00", us(datetime(2024, 1, 2, 3, 4, 5, 250000, tzinfo=timezone.utc))),
    ("2024-01-02 03:04:05+02", us(datetime(2024, 1, 2, 1, 4, 5, tzinfo=timezone.utc))),
    ("2024-01-02 03:04:05-05:30", us(datetime(2024, 1, 2, 8, 34, 5, tzinfo=timezone.utc))),
    ("1883-11-18 12:00:00-04:56:02", us(datetime(1883, 11, 18, 16, 56, 2, tzinfo=timezone.utc))),
    ("0044-03-15 12:00:00+00 BC", days_from_civil(-43, 3, 15) * 86_400_000_000 + 12 * 3_600_000_000),
    ("infinity", INT64_MAX),
    ("-infinity", INT64_MIN),
])
def test_timestamptz(typed: TypedCatalog, text: str, expected: int) -> None:
    assert parse_timestamp(text, with_zone=True) == expected
    assert kind(v(typed, 1184, text)) == ("timestamptz_us", expected)


def test_timestamps_beyond_int64_microseconds_since_1970_are_text(typed: TypedCatalog) -> None:
    # PostgreSQL counts from 2000, so its last years do not fit: text rather than a wrong number.
    assert kind(v(typed, 1114, "294276-12-31 23:59:59.999999")) == ("text", "294276-12-31 23:59:59.999999")
    assert kind(v(typed, 1184, "294276-12-31 23:59:59+00")) == ("text", "294276-12-31 23:59:59+00")
    assert kind(v(typed, 1114, "294246-12-31 00:00:00"))[0] == "timestamp_us"


def test_bytea_escape_format() -> None:
    assert parse_bytea("a\\012\\\\b\\000") == b"a\n\\b\x00"
    assert parse_bytea("\\x414243") == b"ABC"


# --- arrays -------------------------------------------------------------------------------------------


def test_arrays(typed: TypedCatalog) -> None:
    assert kind(v(typed, 1007, "{1,NULL,3}")) == ("array", [("int64", 1), ("null", True), ("int64", 3)])
    assert kind(v(typed, 1007, "{}")) == ("array", [])
    assert v(typed, 1007, "{}").HasField("array")
    assert kind(v(typed, 1007, "{{1,2},{3,4}}")) == (
        "array", [("array", [("int64", 1), ("int64", 2)]), ("array", [("int64", 3), ("int64", 4)])])
    assert kind(v(typed, 1009, '{"a b",NULL,"NULL","c,d","q\\"x"}')) == (
        "array", [("text", "a b"), ("null", True), ("text", "NULL"), ("text", "c,d"), ("text", 'q"x')])
    assert kind(v(typed, 1007, "[0:1]={5,6}")) == ("array", [("int64", 5), ("int64", 6)])
    assert kind(v(typed, 1231, "{1.50,NaN}")) == ("array", [("numeric", "1.50"), ("numeric", "NaN")])
    assert kind(v(typed, 1182, "{2024-01-01,infinity}")) == (
        "array", [("date_days", (datetime(2024, 1, 1) - EPOCH).days), ("date_days", INT32_MAX)])
    assert kind(v(typed, 1001, '{"\\\\x00ff"}')) == ("array", [("bytes", b"\x00\xff")])
    assert kind(v(typed, 1020, "{(1,1),(0,0);(2,2),(1,1)}")) == (  # box[]: ';' separates elements
        "array", [("text", "(1,1),(0,0)"), ("text", "(2,2),(1,1)")])
    assert kind(v(typed, MOODS, "{sad,happy}")) == ("array", [("text", "sad"), ("text", "happy")])
    assert kind(v(typed, POSINTS, "{1,2}")) == ("array", [("int64", 1), ("int64", 2)])
    assert kind(v(typed, 22, "1 2 3")) == ("array", [("int64", 1), ("int64", 2), ("int64", 3)])  # int2vector


def test_bad_text_becomes_text_and_is_logged(typed: TypedCatalog, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert kind(v(typed, 1007, "{1,x,3}")) == ("array", [("int64", 1), ("text", "x"), ("int64", 3)])
        assert kind(v(typed, 1007, "{1,2")) == ("text", "{1,2")
    assert "does not parse" in caplog.text


# --- rows and relations -------------------------------------------------------------------------------


def relation(*columns: tuple[str, int, bool]) -> RelationInfo:
    cols = tuple(RelationColumn(int(key), name, oid, -1) for name, oid, key in columns)
    return RelationInfo(1, "public", "t", "d", cols, tuple(str for _ in cols),
                        tuple(i for i, c in enumerate(cols) if c.is_key), partial(bytes.decode, encoding="utf-8"))


def test_rows(typed: TypedCatalog, caplog: pytest.LogCaptureFixture) -> None:
    rel = relation(("id", 23, True), ("body", 25, False), ("n", 1700, False), ("ts", 1114, False))
    rows = RowEncoder(typed.relation(rel), utf8=True)

    def row(cells: tuple[Cell, ...], key_only: bool = False) -> Row:
        return Row.FromString(rows.row(cells, key_only))

    full = row((Cell("t", b"1"), Cell("u", None), Cell("n", None), Cell("t", b"1970-01-01 00:00:01")))
    assert [kind(x) for x in full.values] == [("int64", 1), ("unchanged_toast", True), ("null", True),
                                             ("timestamp_us", 1_000_000)]
    # OLD_ROW_KEY: only the key columns are set (pgoutput sends the others as NULL).
    key = row((Cell("t", b"1"), Cell("n", None), Cell("n", None), Cell("n", None)), key_only=True)
    assert [kind(x) for x in key.values] == [("int64", 1), (None, None), (None, None), (None, None)]
    with caplog.at_level(logging.WARNING):  # not what the type says: its text, logged
        bad = row((Cell("t", b"x1"), Cell("t", "ü".encode()), Cell("t", b"1"), Cell("t", b"yesterday")))
    assert [kind(x) for x in bad.values] == [("text", "x1"), ("text", "ü"), ("numeric", "1"), ("text", "yesterday")]
    assert "int4 value does not parse" in caplog.text
    with pytest.raises(ValueError, match="unexpected column kind 'b'"):
        row((Cell("b", b"\x00"), Cell("n", None), Cell("n", None), Cell("n", None)))
    assert row(()).ByteSize() == 0


def test_relation_metadata_and_its_cache(typed: TypedCatalog) -> None:
    rel = relation(("id", 23, True), ("m", MOOD, False), ("d", POSINTS, False), ("p", PAIR, False),
                   ("x", 1009, False), ("v", 1043, False))
    typing = typed.relation(rel)
    assert [(c.name, c.type_oid, c.type_name, c.is_key, c.type_modifier) for c in typing.columns] == [
        ("id", 23, "int4", True, -1), ("m", MOOD, "public.mood", False, -1),
        ("d", POSINTS, "public._posint", False, -1), ("p", PAIR, "app.pair", False, -1),
        ("x", 1009, "_text", False, -1), ("v", 1043, "varchar", False, -1)]
    assert typed.relation(rel) is typing
    changed = relation(("id", 23, True))  # a new RelationInfo for the same relation id
    assert typed.relation(changed) is not typing and len(typed.relation(changed).columns) == 1
