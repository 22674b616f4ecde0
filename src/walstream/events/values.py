"""Column values as pgoutput sends them (each type's text output) -> the JSON PostgreSQL's to_jsonb() gives.

The text is what the type's output function writes in the walsender, whose session has TimeZone=UTC,
DateStyle=ISO and the defaults for extra_float_digits, IntervalStyle and bytea_output. The rules follow
PostgreSQL's jsonb.c (jsonb_categorize_type, datum_to_jsonb) and JsonEncodeDateTime:

* domains are their base type; true arrays (array subscripting) are JSON arrays of their converted
  elements, whatever their dimensions and bounds; composite types are objects keyed by attribute name;
* bool -> true/false;
* int2/int4/int8/float4/float8/numeric -> JSON numbers, exactly as numeric_out prints the number (floats
  are re-read as numeric: 1e-07 -> 0.0000001); NaN and +-Infinity -> strings. oid and the reg* types,
  though in the numeric category, are strings, as are money and the rest;
* date, timestamp, timestamptz -> ISO 8601 with 'T' and a +hh:mm zone ("infinity" and " BC" kept);
* json -> the parsed value (duplicate keys: last wins; numbers as numeric prints them); jsonb -> itself;
* everything else (time, timetz, interval, uuid, bytea, ranges, geometric, enums, ...) -> its text.

A non-built-in base type with a function cast to json is turned by to_jsonb() into that cast's result,
which cannot be computed from the text: such types come out as their text (logged once).

Values are orjson-ready: str, bool, None, orjson.Fragment (numbers and jsonb, as exact JSON text), lists
and dicts. Text that does not parse as the catalog says (which pgoutput should never send) is kept as a
string rather than stopping the stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

import orjson

from .builtin_types import BUILTIN_TYPES
from .pgtext import PgTextError, parse_array, parse_record, parse_vector

log = logging.getLogger(__name__)

Converter = Callable[[str], object]
Lookup = Callable[[list[int]], Mapping[int, "TypeInfo"]]

FIRST_NORMAL_OBJECT_ID = 16384  # user-defined objects (and extensions') get OIDs from here on


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """What the conversion needs of one pg_type row."""

    oid: int
    name: str
    typtype: str  # b base, c composite, d domain, e enum, p pseudo, r range, m multirange
    category: str = "U"
    elem: int = 0  # element type of a true array (what to_jsonb makes a JSON array), else 0
    delim: str = ","  # typdelim: separates this type's values when they are array elements
    base: int = 0  # domains: typbasetype
    attributes: tuple[tuple[str, int], ...] = ()  # composites: live attributes (name, type) by attnum
    vector: bool = False  # int2vector/oidvector text form: "1 2 3"
    json_cast: bool = False  # has a function cast to json (to_jsonb uses it for non-built-in types)


BUILTIN: dict[int, TypeInfo] = {
    oid: TypeInfo(oid, name, typtype, cat, elem, delim, vector=vector)
    for oid, name, typtype, cat, elem, delim, _array, vector in BUILTIN_TYPES
}


# --- scalar converters --------------------------------------------------------------------------------

_Fragment = orjson.Fragment
_ZERO = orjson.Fragment(b"0")
_MAX_WEIGHT = 131071  # numeric holds up to 131072 digits before the point
_MAX_SCALE = 16383  # and 16383 after it


def numeric_text(text: str) -> str:
    """numeric_out(numeric_in(text)) for a finite number: exponents expanded, the scale kept, -0 -> 0."""
    if "e" in text or "E" in text:
        number = Decimal(text)
        exponent = number.as_tuple().exponent
        if not isinstance(exponent, int) or not -_MAX_SCALE <= exponent <= _MAX_WEIGHT:
            return text  # beyond numeric's range (to_jsonb fails on it): do not expand a million digits
        text = format(number, "f")  # 1.5e+20 -> 150000000000000000000, 1e-07 -> 0.0000001
    if text[0] == "-" and not text.strip("-0."):
        text = text[1:]  # numeric has no negative zero
    return text


# int2/int4/int8 text is already the JSON number; a Fragment of it is cheaper than int() (and orjson then
# copies it instead of formatting an int).
convert_int: Converter = orjson.Fragment


def convert_numeric(text: str) -> object:
    if text[-1] in "Ny":  # NaN, Infinity, -Infinity: not JSON numbers, to_jsonb makes strings
        return text
    return _Fragment(text)


def convert_float(text: str) -> object:
    if text[-1] in "Ny":
        return text
    if "e" in text:
        return _Fragment(numeric_text(text))
    if text == "-0":
        return _ZERO
    return _Fragment(text)


convert_bool: Converter = {"t": True, "f": False}.__getitem__


def convert_timestamp(text: str) -> object:
    """'2024-01-02 03:04:05.5' -> '2024-01-02T03:04:05.5'; 'infinity', ' BC' unchanged."""
    return text.replace(" ", "T", 1)


def convert_timestamptz(text: str) -> object:
    """'2024-01-02 03:04:05+00' -> '2024-01-02T03:04:05+00:00' (XSD zones always carry minutes)."""
    if text.endswith("+00") and text[10] == " ":  # the common case, in a UTC walsender
        return text.replace(" ", "T", 1) + ":00"
    if text[-1:] == "y":  # infinity, -infinity
        return text
    bc = text.endswith(" BC")
    core = (text[:-3] if bc else text).replace(" ", "T", 1)
    sign = max(core.rfind("+"), core.rfind("-"))
    if sign > core.find("T") and len(core) - sign == 3:
        core += ":00"
    return core + " BC" if bc else core


def _number_fragment(token: str) -> object:
    return _Fragment(numeric_text(token))


_json_decoder = json.JSONDecoder(parse_float=_number_fragment, parse_int=_number_fragment)


def convert_json(text: str) -> object:
    """json -> the value to_jsonb() builds from it: objects keep the last of duplicate keys, numbers print
    as numeric does (1E2 -> 100)."""
    try:
        value = _json_decoder.decode(text)
        if "\\u" in text:  # json accepts a lone surrogate escape, which orjson cannot encode as a string
            orjson.dumps(value)
        return value
    except (ValueError, TypeError, RecursionError):  # a lone surrogate, or nesting deeper than Python's
        return _Fragment(text)  # stack: to_jsonb() fails on the first, the text is still valid JSON


def convert_jsonb(text: str) -> object:
    return _Fragment(text)  # jsonb_out prints canonical JSON: unique keys, numeric numbers


SCALARS: dict[int, Converter] = {
    16: convert_bool,
    20: convert_int,
    21: convert_int,
    23: convert_int,
    700: convert_float,
    701: convert_float,
    1700: convert_numeric,
    1082: str,  # date: ISO DateStyle prints it as to_jsonb does (YYYY-MM-DD, " BC", infinity)
    1114: convert_timestamp,
    1184: convert_timestamptz,
    114: convert_json,
    3802: convert_jsonb,
}


# --- containers ---------------------------------------------------------------------------------------


def _malformed(kind: str, text: str, exc: Exception) -> str:
    log.warning("%s value does not parse (%s); sending its text: %.80r", kind, exc, text)
    return text


def array_converter(elem: Converter, delim: str = ",") -> Converter:
    def convert(text: str) -> object:
        # Inline fast path: one dimension, default bounds, nothing quoted or escaped, no NULL.
        if text[:1] == "{" and "\"" not in text and "\\" not in text and "NULL" not in text \
                and text.count("{") == 1:
            return list(map(elem, text[1:-1].split(delim))) if len(text) > 2 else []
        try:
            return parse_array(text, delim, elem)
        except PgTextError as exc:
            return _malformed("array", text, exc)

    return convert


def vector_converter(elem: Converter) -> Converter:
    def convert(text: str) -> object:
        return parse_vector(text, elem)

    return convert


def record_converter(attributes: Iterable[tuple[str, Converter]]) -> Converter:
    attrs = tuple(attributes)
    width = len(attrs)

    def convert(text: str) -> object:
        if width == 0:
            return {}
        try:
            fields = parse_record(text)
        except PgTextError as exc:
            return _malformed("record", text, exc)
        if len(fields) != width:  # the type changed and no Type message told us yet: keep the text
            return _malformed("record", text, ValueError(f"{len(fields)} fields for {width} attributes"))
        return {name: None if f is None else conv(f) for (name, conv), f in zip(attrs, fields, strict=True)}

    return convert


# --- the catalog --------------------------------------------------------------------------------------


class TypeCatalog:
    """Converters by type OID: built-in types from a static table, others through `lookup`.

    `lookup(oids)` returns TypeInfo for those OIDs and, to save round trips, may add any types they refer
    to (domain bases, array elements, attribute types). Without a lookup, or for an OID it does not know,
    values are kept as their text; an exception from the lookup propagates (and nothing is cached for
    it). Not thread-safe.
    """

    def __init__(self, lookup: Lookup | None = None) -> None:
        self._lookup = lookup
        self._infos: dict[int, TypeInfo | None] = {}  # looked-up types (None: lookup did not know it)
        self._converters: dict[int, Converter] = {}
        self._dependents: dict[int, set[int]] = {}  # oid -> types whose converters embed its converter
        self._warned: set[int] = set()

    def info(self, type_oid: int) -> TypeInfo | None:
        builtin = BUILTIN.get(type_oid)
        if builtin is not None:
            return builtin
        if type_oid in self._infos:
            return self._infos[type_oid]
        if self._lookup is None:
            return None
        for oid, info in self._lookup([type_oid]).items():
            if oid not in BUILTIN:
                self._infos[oid] = info
        return self._infos.setdefault(type_oid, None)

    def converter(self, type_oid: int) -> Converter:
        conv = self._converters.get(type_oid)
        if conv is None:
            conv = self._build(type_oid, ())
        return conv

    def missing(self, oids: Iterable[int]) -> list[int]:
        """The OIDs among these that are neither built in nor known yet: fetch them (off the event loop)
        and add() them before asking for their converters."""
        return sorted({o for o in oids if o not in BUILTIN and o not in self._infos})

    def add(self, infos: Mapping[int, TypeInfo], asked: Iterable[int]) -> None:
        """Types read elsewhere, as a lookup of `asked` would have returned them."""
        for oid, info in infos.items():
            if oid not in BUILTIN:
                self._infos[oid] = info
        for oid in asked:
            self._infos.setdefault(oid, None)

    def invalidate(self, type_oid: int) -> None:
        """Forget a type (pgoutput sent a Type message: it may have changed), the user types it is built
        from, and every type built from any of those."""
        todo = [type_oid]
        done: set[int] = set()
        while todo:
            oid = todo.pop()
            if oid in done:
                continue
            done.add(oid)
            self._converters.pop(oid, None)
            todo.extend(self._dependents.pop(oid, ()))
            info = self._infos.pop(oid, None)
            if info is not None:
                todo.extend(o for o in (info.base, info.elem, *(t for _, t in info.attributes))
                            if o and o not in BUILTIN)

    def _build(self, oid: int, path: tuple[int, ...]) -> Converter:
        conv = self._converters.get(oid)
        if conv is not None:
            return conv
        if oid in path:  # PostgreSQL forbids recursive types; never loop on a broken catalog
            return str
        conv = self._make(oid, self.info(oid), (*path, oid))
        self._converters[oid] = conv
        return conv

    def _child(self, parent: int, child: int, path: tuple[int, ...]) -> Converter:
        self._dependents.setdefault(child, set()).add(parent)
        return self._build(child, path)

    def _make(self, oid: int, info: TypeInfo | None, path: tuple[int, ...]) -> Converter:
        if info is None:
            return str
        if info.typtype == "d":
            return self._child(oid, info.base, path) if info.base else str
        if info.elem:
            elem = self._child(oid, info.elem, path)
            if info.vector:
                return vector_converter(elem)
            elem_info = self.info(info.elem)
            return array_converter(elem, elem_info.delim if elem_info is not None else ",")
        if info.typtype == "c":
            return record_converter((name, self._child(oid, t, path)) for name, t in info.attributes)
        scalar = SCALARS.get(oid)
        if scalar is not None:
            return scalar
        if info.json_cast and oid >= FIRST_NORMAL_OBJECT_ID and oid not in self._warned:
            self._warned.add(oid)
            log.warning("type %s (oid %d) has a cast to json that to_jsonb() would use; walstream sends "
                        "its text instead", info.name, oid)
        return str
