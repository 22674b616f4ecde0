"""walstream.events.values and .pgtext without a server: text formats, numbers, timestamps, the catalog.

tests/e2e/test_values_vs_to_jsonb.py checks the same rules against PostgreSQL's own to_jsonb().
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import orjson
import pytest

from walstream.events.builtin_types import BUILTIN_TYPES
from walstream.events.pgtext import PgTextError, parse_array, parse_record, parse_vector
from walstream.events.values import (
    BUILTIN,
    TypeCatalog,
    TypeInfo,
    convert_float,
    convert_json,
    convert_numeric,
    convert_timestamp,
    convert_timestamptz,
    numeric_text,
)


def dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def ident(s: str) -> object:
    return s


# --- arrays -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("{}", []),
    ("{1,2,3}", ["1", "2", "3"]),
    ("{NULL}", [None]),
    ("{NULL,\"NULL\",null,\"\"}", [None, "NULL", "null", ""]),
    ("{NULLX,xNULL}", ["NULLX", "xNULL"]),
    ('{"a b","c,d","e\\"f","g\\\\h"}', ["a b", "c,d", 'e"f', "g\\h"]),
    ('{"{","}","\\\\"}', ["{", "}", "\\"]),
    ('{"ünï ✓ 😀",ü}', ["ünï ✓ 😀", "ü"]),
    ("{{1,2},{3,NULL}}", [["1", "2"], ["3", None]]),
    ("{{{1}},{{2}}}", [[["1"]], [["2"]]]),
    ('{{"a,b",NULL},{"}",x}}', [["a,b", None], ["}", "x"]]),
    ("[0:1]={1,2}", ["1", "2"]),
    ("[-3:-2]={\"x y\",NULL}", ["x y", None]),
    ("[0:1][5:6]={{1,2},{NULL,4}}", [["1", "2"], [None, "4"]]),
    ('{"(1,\\"a b\\")",NULL}', ['(1,"a b")', None]),
    ("{a\\,b,c}", ["a,b", "c"]),  # array_in's escapes outside quotes (array_out never writes them)
    ('{"tab\there\nnl"}', ["tab\there\nnl"]),
])
def test_parse_array(text: str, expected: list[object]) -> None:
    assert parse_array(text, ",", ident) == expected


def test_parse_array_box_delimiter() -> None:
    assert parse_array("{(1,1),(0,0);(3,3),(2,2)}", ";", ident) == ["(1,1),(0,0)", "(3,3),(2,2)"]
    assert parse_array("{{(1,1),(0,0);NULL};{(3,3),(2,2);(1,1),(1,1)}}", ";", ident) == [
        ["(1,1),(0,0)", None], ["(3,3),(2,2)", "(1,1),(1,1)"]]


def test_parse_array_applies_leaf_to_values_only() -> None:
    assert parse_array('{1,NULL,"3"}', ",", int) == [1, None, 3]
    assert parse_array("{{1},{NULL}}", ",", int) == [[1], [None]]


@pytest.mark.parametrize("bad", ["", "1,2", "{1,2", "{\"a}", "{a}x", "[0:1]{1}", "{{1}x}", "{\"a\"b}"])
def test_parse_array_rejects_garbage(bad: str) -> None:
    with pytest.raises(PgTextError):
        parse_array(bad, ",", ident)


def test_parse_vector() -> None:
    assert parse_vector("1 2 3", int) == [1, 2, 3]
    assert parse_vector("", int) == []


# --- records ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("(1,\"a b\",)", ["1", "a b", None]),
    ("()", [None]),
    ("(,)", [None, None]),
    ('("")', [""]),
    ('("a""b","c\\\\d")', ['a"b', "c\\d"]),
    ('("(1,2)",x)', ["(1,2)", "x"]),
    ('("{1,2}","{""a b"",NULL}")', ["{1,2}", '{"a b",NULL}']),
    ('("(1,""x y"")")', ['(1,"x y")']),
    ("(ü,😀)", ["ü", "😀"]),
    ('(a"b c"d,e)', ["ab cd", "e"]),  # record_in's mixed quoting
    ("(a\\,b)", ["a,b"]),
    ('(" lead","trail ","tab\t")', [" lead", "trail ", "tab\t"]),
])
def test_parse_record(text: str, expected: list[str | None]) -> None:
    assert parse_record(text) == expected


@pytest.mark.parametrize("bad", ["", "(", "1,2", "(1,2", '("a)', "(1)x", '("a"'])
def test_parse_record_rejects_garbage(bad: str) -> None:
    with pytest.raises(PgTextError):
        parse_record(bad)


# --- numbers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("1.50", "1.50"), ("0", "0"), ("-0", "0"), ("-0.000", "0.000"), ("-1.5", "-1.5"),
    ("1e-07", "0.0000001"), ("1e+20", "100000000000000000000"), ("1.5e+20", "150000000000000000000"),
    ("-1.5e-10", "-0.00000000015"), ("1.2345679e+11", "123456790000"), ("1.0E-2", "0.010"),
    ("1E2", "100"), ("0.1e1", "1"), ("1e131071", "1" + "0" * 131071), ("1e131072", "1e131072"),
    ("1e-16383", "0." + "0" * 16382 + "1"), ("1e-16384", "1e-16384"), ("-0e5", "0"), ("1.50e1", "15.0"),
    ("5e-324", "0." + "0" * 323 + "5"),
])
def test_numeric_text(text: str, expected: str) -> None:
    assert numeric_text(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("1.50", "1.50"), ("-123456789012345678901234567890.123456789", "-123456789012345678901234567890.123456789"),
    ("NaN", '"NaN"'), ("Infinity", '"Infinity"'), ("-Infinity", '"-Infinity"'), ("0", "0"),
])
def test_numeric(text: str, expected: str) -> None:
    assert dumps(convert_numeric(text)) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("0.1", "0.1"), ("-0", "0"), ("1e-07", "0.0000001"), ("1e+20", "100000000000000000000"),
    ("NaN", '"NaN"'), ("Infinity", '"Infinity"'), ("-Infinity", '"-Infinity"'), ("-2", "-2"),
    ("1.7976931348623157e+308", "17976931348623157" + "0" * 292),
])
def test_float(text: str, expected: str) -> None:
    assert dumps(convert_float(text)) == expected


def test_ints_are_exact() -> None:
    conv = TypeCatalog().converter(20)
    assert dumps([conv("-9223372036854775808"), conv("9223372036854775807")]) == (
        "[-9223372036854775808,9223372036854775807]")


# --- dates and times ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-01-02 03:04:05+00", "2024-01-02T03:04:05+00:00"),
    ("2024-01-02 03:04:05.123456+00", "2024-01-02T03:04:05.123456+00:00"),
    ("2024-01-02 03:04:05+05:30", "2024-01-02T03:04:05+05:30"),
    ("2024-01-02 03:04:05-05", "2024-01-02T03:04:05-05:00"),
    ("1850-01-01 00:00:00+00:53:28", "1850-01-01T00:00:00+00:53:28"),
    ("0044-03-15 10:00:00+00 BC", "0044-03-15T10:00:00+00:00 BC"),
    ("0044-03-15 10:00:00-03 BC", "0044-03-15T10:00:00-03:00 BC"),
    ("12345-06-07 08:09:10.5+00", "12345-06-07T08:09:10.5+00:00"),
    ("infinity", "infinity"), ("-infinity", "-infinity"),
])
def test_timestamptz(text: str, expected: str) -> None:
    assert convert_timestamptz(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-01-02 03:04:05", "2024-01-02T03:04:05"),
    ("2024-01-02 03:04:05.5", "2024-01-02T03:04:05.5"),
    ("0044-03-15 10:00:00 BC", "0044-03-15T10:00:00 BC"),
    ("294276-12-31 23:59:59.999999", "294276-12-31T23:59:59.999999"),
    ("infinity", "infinity"), ("-infinity", "-infinity"),
])
def test_timestamp(text: str, expected: str) -> None:
    assert convert_timestamp(text) == expected


def test_date_time_interval_are_text() -> None:
    cat = TypeCatalog()
    assert cat.converter(1082)("0044-03-15 BC") == "0044-03-15 BC"
    for oid, text in [(1083, "12:00:00"), (1266, "12:00:00+02"), (1186, "1 day 02:00:00")]:
        assert cat.converter(oid)(text) == text


# --- json ---------------------------------------------------------------------------------------------


def test_json_is_parsed_like_to_jsonb() -> None:
    got = convert_json(' { "a" : 1e2 , "a" : -0.0 , "b" : [1.0E-2, 12345678901234567890123, "\\u00e9"] } ')
    assert dumps(got) == '{"a":0.0,"b":[0.010,12345678901234567890123,"é"]}'
    assert dumps(convert_json('"\\ud83d\\ude00"')) == '"😀"'


def test_json_that_to_jsonb_rejects_does_not_crash() -> None:
    # to_jsonb() raises for these; walstream must still emit valid JSON
    assert dumps(convert_json('["\\ud800"]')) == '["\\ud800"]'
    assert dumps(convert_json('"\\u0000"')) == '"\\u0000"'
    assert dumps(convert_json("[1e1000000000]")) == "[1e1000000000]"
    deep = "[" * 100000 + "]" * 100000
    assert dumps(convert_json(deep)) == deep


def test_jsonb_is_embedded_verbatim() -> None:
    assert dumps(TypeCatalog().converter(3802)('{"a": [1, 2.50]}')) == '{"a": [1, 2.50]}'


# --- the catalog --------------------------------------------------------------------------------------


def test_builtin_table_is_consistent() -> None:
    assert len(BUILTIN) == len(BUILTIN_TYPES) > 150
    for info in BUILTIN.values():
        assert info.typtype != "c"
        assert not info.elem or info.elem in BUILTIN
    assert BUILTIN[1007].elem == 23 and BUILTIN[603].delim == ";" and BUILTIN[22].vector
    assert BUILTIN[600].elem == 0  # point has raw subscripting, not an array to to_jsonb


def test_builtin_converters() -> None:
    cat = TypeCatalog()
    cases = [
        (16, "t", "true"), (16, "f", "false"), (23, "-5", "-5"), (26, "5", '"5"'), (2205, "pg_class", '"pg_class"'),
        (25, 'a "b"', '"a \\"b\\""'), (17, "\\x0102", '"\\\\x0102"'), (790, "$1.00", '"$1.00"'),
        (1007, "{1,NULL,3}", "[1,null,3]"), (1007, "[0:1]={{1,2},{3,4}}", "[[1,2],[3,4]]"),
        (1009, '{"a b",NULL,"NULL"}', '["a b",null,"NULL"]'), (1000, "{t,f}", "[true,false]"),
        (1185, '{"2024-01-02 03:04:05+00",infinity}', '["2024-01-02T03:04:05+00:00","infinity"]'),
        (1231, "{1.50,NaN}", '[1.50,"NaN"]'), (1022, "{1e-07,-0}", "[0.0000001,0]"),
        (1020, "{(1,1),(0,0);(2,2),(1,1)}", '["(1,1),(0,0)","(2,2),(1,1)"]'),
        (22, "1 2", "[1,2]"), (30, "1 2", '["1","2"]'), (600, "(1,2)", '"(1,2)"'),
        (3904, "[1,5)", '"[1,5)"'), (199, '{"{\\"a\\":1}",NULL}', '[{"a":1},null]'),
        (3807, '{"{\\"a\\": 1}"}', '[{"a": 1}]'),
    ]
    for oid, text, expected in cases:
        assert dumps(cat.converter(oid)(text)) == expected, (oid, text)


def test_converters_are_cached() -> None:
    cat = TypeCatalog()
    assert cat.converter(1007) is cat.converter(1007)


class FakeLookup:
    """A lookup over a fixed set of user types that records the calls."""

    def __init__(self, types: Mapping[int, TypeInfo]) -> None:
        self.types = dict(types)
        self.calls: list[list[int]] = []

    def __call__(self, oids: list[int]) -> dict[int, TypeInfo]:
        self.calls.append(list(oids))
        return {o: t for o, t in self.types.items()}  # like catalog_lookup: the asked and what they use


USER = {
    20000: TypeInfo(20000, "posint", "d", "N", base=23),
    20001: TypeInfo(20001, "_posint", "b", "A", elem=20000),
    20002: TypeInfo(20002, "mood", "e", "E"),
    20003: TypeInfo(20003, "inner", "c", "C", attributes=(("i", 20000), ("t", 25), ("m", 20002), ("a", 1007))),
    20004: TypeInfo(20004, "_inner", "b", "A", elem=20003),
    20005: TypeInfo(20005, "outer", "c", "C", attributes=(("in", 20003), ("ins", 20004), ("ts", 1184))),
    20006: TypeInfo(20006, "dombox", "d", "G", delim=";", base=603),
    20007: TypeInfo(20007, "_dombox", "b", "A", elem=20006),
    20008: TypeInfo(20008, "empty", "c", "C"),
    20009: TypeInfo(20009, "one", "c", "C", attributes=(("x", 23),)),
}


def test_user_types_through_lookup() -> None:
    lookup = FakeLookup(USER)
    cat = TypeCatalog(lookup)
    assert dumps(cat.converter(20000)("5")) == "5"
    assert dumps(cat.converter(20001)("{1,NULL}")) == "[1,null]"
    assert cat.converter(20002)("sad") == "sad"
    inner = '(1,"a ""b"", c",sad,"{1,NULL}")'
    assert json.loads(dumps(cat.converter(20003)(inner))) == {"i": 1, "t": 'a "b", c', "m": "sad", "a": [1, None]}
    outer_text = '("(1,x,,)","{""(2,y,,{})"",NULL}","2024-01-02 03:04:05+00")'
    assert json.loads(dumps(cat.converter(20005)(outer_text))) == {
        "in": {"i": 1, "t": "x", "m": None, "a": None},
        "ins": [{"i": 2, "t": "y", "m": None, "a": []}, None],
        "ts": "2024-01-02T03:04:05+00:00",
    }
    assert cat.converter(20007)("{(1,1),(0,0);(2,2),(1,1)}") == ["(1,1),(0,0)", "(2,2),(1,1)"]
    assert cat.converter(20008)("()") == {}
    assert cat.converter(20009)("()") == {"x": None}
    assert len(lookup.calls) == 1  # the first answer brought every type along


def test_malformed_values_keep_their_text(caplog: pytest.LogCaptureFixture) -> None:
    cat = TypeCatalog(FakeLookup(USER))
    with caplog.at_level(logging.WARNING):
        assert cat.converter(20009)("(1,2)") == "(1,2)"  # width changed under us
        assert cat.converter(20009)("(1") == "(1"
        assert cat.converter(1007)("{1,{2}") == "{1,{2}"
        assert cat.converter(1007)("") == ""
    assert caplog.text.count("does not parse") == 4


def test_unknown_types_are_text() -> None:
    assert TypeCatalog().converter(99999)("x y") == "x y"
    assert TypeCatalog(FakeLookup({})).converter(99999)("x y") == "x y"
    assert TypeCatalog().converter(83)("(a,b)") == "(a,b)"  # a catalog row type needs the lookup


def test_invalidate_refreshes_the_type_and_what_uses_it() -> None:
    lookup = FakeLookup(USER)
    cat = TypeCatalog(lookup)
    assert dumps(cat.converter(20001)("{1}")) == "[1]"
    # the domain turns into text (say it was dropped and recreated as a domain over text)
    lookup.types[20000] = TypeInfo(20000, "posint", "d", "S", base=25)
    cat.invalidate(20000)
    assert cat.converter(20001)("{1}") == ["1"]
    assert cat.converter(20000)("1") == "1"
    # invalidating a composite re-reads the types it is built from too
    before = dumps(cat.converter(20003)("(1,x,sad,)"))
    assert before == '{"i":"1","t":"x","m":"sad","a":null}'
    lookup.types[20000] = TypeInfo(20000, "posint", "d", "N", base=23)
    cat.invalidate(20003)
    assert dumps(cat.converter(20003)("(1,x,sad,)")) == '{"i":1,"t":"x","m":"sad","a":null}'


def test_invalidate_unknown_and_builtin_is_harmless() -> None:
    cat = TypeCatalog()
    conv = cat.converter(23)
    cat.invalidate(23)
    cat.invalidate(424242)
    assert dumps(cat.converter(23)("1")) == dumps(conv("1")) == "1"


def test_recursive_catalog_does_not_loop() -> None:
    loop = {30000: TypeInfo(30000, "a", "c", "C", attributes=(("me", 30000),))}
    assert TypeCatalog(FakeLookup(loop)).converter(30000)("(x)") == {"me": "x"}


def test_json_cast_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    cat = TypeCatalog(FakeLookup({40000: TypeInfo(40000, "hstore", "b", "U", json_cast=True)}))
    with caplog.at_level(logging.WARNING):
        assert cat.converter(40000)('"a"=>"1"') == '"a"=>"1"'
        cat.invalidate(40000)
        cat.converter(40000)
    assert caplog.text.count("cast to json") == 1
