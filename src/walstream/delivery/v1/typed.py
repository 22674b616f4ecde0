"""Column values as pgoutput sends them (each type's text output) -> walstream.v1 `Value`s, by column type.

The walsender's session has TimeZone=UTC and DateStyle=ISO, so the text of each kind below is fixed:

* int2/int4/int8 -> int64; float4/float8 -> double (NaN and +-Infinity as IEEE values); numeric -> the
  exact text numeric_out printed; bool ('t'/'f') -> bool; bytea (hex, or the escape format) -> bytes;
  json/jsonb -> json (the JSON text);
* timestamp -> timestamp_us, timestamptz -> timestamptz_us (microseconds since 1970-01-01 UTC), date ->
  date_days, time -> time_us. 'infinity'/'-infinity' become the int64 (int32 for dates) maximum and
  minimum, as PostgreSQL stores them. Dates are proleptic Gregorian: year N BC is the astronomical year 1-N.
  PostgreSQL counts microseconds from 2000, so its last 30 years (after 294247-01-10 04:00:54.775807 UTC)
  do not fit in microseconds since 1970: those timestamps are sent as text;
* true arrays (and int2vector/oidvector) -> Array of element Values, nested for each dimension; NULL
  elements are Value(null=True);
* domains are their base type; everything else (enums, composites, uuid, interval, time with zone, money,
  ranges, ...) -> text, as PostgreSQL prints it.

Text that does not parse as its type says (which pgoutput should never send) is sent as text, with a
warning, rather than stopping the stream.

A converter appends the Value to a repeated field: `convert(values.add, text)` (building a Value and
copying it into its Row would cost about twice as much); `to_value(convert, text)` returns it instead.
"""

from __future__ import annotations

import codecs
import functools
import logging
from collections.abc import Callable

from ..._proto.walstream_v1_pb2 import Column, Row, Value
from ...events.change import RelationInfo
from ...events.pgtext import PgTextError, parse_array, parse_vector
from ...events.values import BUILTIN, TypeCatalog

log = logging.getLogger(__name__)

Add = Callable[..., Value]  # the `add` of a repeated Value field: appends a Value made of its keywords
ValueConverter = Callable[[Add, str], object]  # appends the Value of one column's text
SchemaOf = Callable[[int], "str | None"]  # type OID -> the schema it lives in (None: unknown)

INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)
INT32_MAX, INT32_MIN = 2**31 - 1, -(2**31)
US_PER_DAY = 86_400_000_000


def to_value(convert: ValueConverter, text: str) -> Value:
    """The Value a converter makes of text."""
    row = Row()
    convert(row.values.add, text)
    return row.values[0]


# --- dates and times ----------------------------------------------------------------------------------


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date; year is astronomical (1 BC is 0)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


_DAYS: dict[str, int] = {}  # 'YYYY-MM-DD' -> days since 1970: rows of one load tend to share their dates


def _days(date_text: str, bc: bool) -> int:
    if not bc:
        days = _DAYS.get(date_text)
        if days is not None:
            return days
    year, month, day = date_text.split("-")
    y = int(year)
    days = days_from_civil(1 - y if bc else y, int(month), int(day))
    if not bc:
        if len(_DAYS) >= 4096:
            _DAYS.clear()
        _DAYS[date_text] = days
    return days


def _time_us(text: str) -> int:
    """'HH:MM:SS[.ffffff]' -> microseconds (24:00:00 is allowed)."""
    if len(text) >= 8 and text[2] == ":" and text[5] == ":":
        us = (int(text[:2]) * 3600 + int(text[3:5]) * 60 + int(text[6:8])) * 1_000_000
        if len(text) > 8:
            if text[8] != "." or len(text) > 15:
                raise ValueError(f"malformed time {text!r}")
            us += int(text[9:].ljust(6, "0"))
        return us
    raise ValueError(f"malformed time {text!r}")


def parse_date(text: str) -> int:
    """'YYYY-MM-DD[ BC]' -> days since 1970-01-01; infinity -> the int32 maximum/minimum."""
    if text[-1] == "y":
        if text == "infinity":
            return INT32_MAX
        if text == "-infinity":
            return INT32_MIN
    if text.endswith(" BC"):
        return _days(text[:-3], True)
    return _days(text, False)


def parse_time(text: str) -> int:
    return _time_us(text)


_MINUTES: dict[str, int] = {}  # 'YYYY-MM-DD HH:MM' -> microseconds since 1970


def parse_timestamp(text: str, with_zone: bool = False) -> int:
    """'YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM[:SS]]][ BC]' -> microseconds since 1970-01-01 (UTC with a zone);
    infinity -> the int64 maximum/minimum; a finite time beyond the int64 range -> the maximum."""
    # The common case first: a 4-digit year AD, and UTC (TimeZone=UTC prints +00).
    end = len(text) - 3 if with_zone and text[-3:] == "+00" else len(text) if not with_zone else 0
    if (end == 19 or 21 <= end <= 26 and text[19] == ".") and text[16:17] == ":" and text[4:5] == "-":
        base = _MINUTES.get(text[:16])
        if base is None:
            if len(_MINUTES) >= 4096:
                _MINUTES.clear()
            base = _MINUTES[text[:16]] = (_days(text[:10], False) * 1440 + int(text[11:13]) * 60
                                          + int(text[14:16])) * 60_000_000
        us = base + int(text[17:19]) * 1_000_000
        return us + int(text[20:end].ljust(6, "0")) if end > 19 else us
    if text[-1] == "y":
        if text == "infinity":
            return INT64_MAX
        if text == "-infinity":
            return INT64_MIN
    bc = text.endswith(" BC")
    if bc:
        text = text[:-3]
    date_text, _, time_text = text.partition(" ")
    offset = 0
    if with_zone:
        if time_text.endswith("+00"):  # TimeZone=UTC: always, unless the session has another zone
            time_text = time_text[:-3]
        else:
            sign = max(time_text.rfind("+"), time_text.rfind("-"))
            if sign <= 0:
                raise ValueError(f"no zone offset in {text!r}")
            parts = [int(p) for p in time_text[sign + 1:].split(":")]
            offset = parts[0] * 3600 + (parts[1] * 60 if len(parts) > 1 else 0) + (parts[2] if len(parts) > 2 else 0)
            offset = offset * 1_000_000 * (-1 if time_text[sign] == "-" else 1)
            time_text = time_text[:sign]
    us = _days(date_text, bc) * US_PER_DAY + _time_us(time_text) - offset
    return us if us < INT64_MAX else INT64_MAX  # PostgreSQL counts from 2000: its last years do not fit


def parse_bytea(text: str) -> bytes:
    """bytea_out's hex format ('\\x0a0b'), or the older escape format ('a\\012\\\\')."""
    if text.startswith("\\x"):
        return bytes.fromhex(text[2:])
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        b = text.find("\\", i)
        if b < 0:
            out += text[i:].encode("latin-1")
            break
        out += text[i:b].encode("latin-1")
        if text[b + 1:b + 2] == "\\":
            out.append(0x5C)
            i = b + 2
        else:
            out.append(int(text[b + 1:b + 4], 8))
            i = b + 4
    return bytes(out)


# --- scalar converters --------------------------------------------------------------------------------


def to_text(add: Add, text: str) -> None:
    add(text=text)


def to_int(add: Add, text: str) -> None:
    add(int64=int(text))


def to_double(add: Add, text: str) -> None:
    add(double=float(text))  # float() reads NaN, Infinity and -Infinity


def to_numeric(add: Add, text: str) -> None:
    add(numeric=text)


_BOOLS = {"t": True, "f": False}


def to_bool(add: Add, text: str) -> None:
    add(bool=_BOOLS[text])


def to_bytes(add: Add, text: str) -> None:
    add(bytes=parse_bytea(text))


def to_json(add: Add, text: str) -> None:
    add(json=text)


def to_timestamp(add: Add, text: str) -> None:
    us = parse_timestamp(text)
    if us == INT64_MAX and text[-1] != "y":
        add(text=text)  # after 294247-01-10 04:00:54.775807: beyond int64 microseconds since 1970
    else:
        add(timestamp_us=us)


def to_timestamptz(add: Add, text: str) -> None:
    us = parse_timestamp(text, True)
    if us == INT64_MAX and text[-1] != "y":
        add(text=text)
    else:
        add(timestamptz_us=us)


def to_date(add: Add, text: str) -> None:
    add(date_days=parse_date(text))


def to_time(add: Add, text: str) -> None:
    add(time_us=parse_time(text))


SCALARS: dict[int, ValueConverter] = {
    16: to_bool,
    17: to_bytes,
    20: to_int,
    21: to_int,
    23: to_int,
    700: to_double,
    701: to_double,
    1700: to_numeric,
    114: to_json,
    3802: to_json,
    1114: to_timestamp,
    1184: to_timestamptz,
    1082: to_date,
    1083: to_time,
}
_CANNOT_FAIL = {to_text, to_numeric, to_json}


def _guarded(convert: ValueConverter, name: str) -> ValueConverter:
    """Text that does not parse as its type is sent as text (logged) instead of stopping the stream.
    (Every converter parses before it appends, so a failure appends nothing.)"""

    def guarded(add: Add, text: str) -> None:
        try:
            convert(add, text)
        except (ValueError, KeyError, IndexError) as exc:
            log.warning("%s value does not parse (%s); sending its text: %.80r", name, exc, text)
            add(text=text)

    return guarded


# --- containers ---------------------------------------------------------------------------------------


def _identity(text: str) -> str:
    return text


def _fill_array(add: Add, items: list[object], elem: ValueConverter) -> None:
    elements = add().array.elements
    elements_add = elements.add
    for item in items:
        if item is None:
            elements_add(null=True)
        elif isinstance(item, list):
            _fill_array(elements_add, item, elem)
        else:
            elem(elements_add, item)  # type: ignore[arg-type]


def _empty_array(add: Add) -> None:
    add().array.SetInParent()


def array_converter(elem: ValueConverter, delim: str = ",") -> ValueConverter:
    def convert(add: Add, text: str) -> None:
        try:
            items = parse_array(text, delim, _identity)
        except PgTextError as exc:
            log.warning("array value does not parse (%s); sending its text: %.80r", exc, text)
            add(text=text)
            return
        if items:
            _fill_array(add, items, elem)
        else:
            _empty_array(add)

    return convert


def vector_converter(elem: ValueConverter) -> ValueConverter:
    def convert(add: Add, text: str) -> None:
        items: list[object] = parse_vector(text, _identity)
        if items:
            _fill_array(add, items, elem)
        else:
            _empty_array(add)

    return convert


# --- per type and per relation ------------------------------------------------------------------------


def _fast_decoder(decode: Callable[[bytes], str]) -> Callable[[bytes], str]:
    """partial(bytes.decode, encoding='utf-8') -> bytes.decode (the same, without the keyword's cost)."""
    if isinstance(decode, functools.partial) and decode.func is bytes.decode and not decode.args \
            and set(decode.keywords) == {"encoding"}:
        try:
            if codecs.lookup(decode.keywords["encoding"]).name == "utf-8":
                return bytes.decode
        except LookupError:
            pass
    return decode


class RelationTyping:
    """What a relation's rows need: one converter per column, and the Column metadata."""

    __slots__ = ("relation", "converters", "columns", "key_mask", "decode")

    def __init__(self, relation: RelationInfo, converters: tuple[ValueConverter, ...],
                 columns: tuple[Column, ...]) -> None:
        self.relation = relation
        self.converters = converters
        self.columns = columns
        self.key_mask = tuple(c.is_key for c in relation.columns)
        self.decode = _fast_decoder(relation.text_decoder)


class TypedCatalog:
    """Value converters and type names by type OID, on top of a TypeCatalog (which knows the types).

    `schema_of(oid)` names the schema of a type that is not built in, so type names of user types come out
    schema-qualified ("public.mood"); without it they are bare. Not thread-safe.
    """

    def __init__(self, types: TypeCatalog, schema_of: SchemaOf | None = None) -> None:
        self.types = types
        self.schema_of = schema_of
        self._converters: dict[int, ValueConverter] = {}
        self._names: dict[int, str] = {}
        self._relations: dict[int, RelationTyping] = {}

    def relation(self, rel: RelationInfo) -> RelationTyping:
        """The typing of a relation, computed once per RelationInfo (a changed relation is a new one)."""
        typing = self._relations.get(rel.relation_id)
        if typing is None or typing.relation is not rel:
            for column in rel.columns:  # user types may have been renamed or changed since: look again
                if column.type_oid not in BUILTIN:
                    self._names.pop(column.type_oid, None)
                    self._converters.pop(column.type_oid, None)
            typing = RelationTyping(
                rel,
                tuple(self.converter(c.type_oid) for c in rel.columns),
                tuple(Column(name=c.name, type_oid=c.type_oid, type_name=self.type_name(c.type_oid),
                             type_modifier=c.type_modifier, is_key=c.is_key) for c in rel.columns),
            )
            self._relations[rel.relation_id] = typing
        return typing

    def converter(self, type_oid: int) -> ValueConverter:
        conv = self._converters.get(type_oid)
        if conv is None:
            conv = self._build(type_oid, ())
        return conv

    def type_name(self, type_oid: int) -> str:
        name = self._names.get(type_oid)
        if name is None:
            info = self.types.info(type_oid)
            name = info.name if info is not None else str(type_oid)
            if info is not None and type_oid not in BUILTIN and self.schema_of is not None:
                schema = self.schema_of(type_oid)
                if schema and schema != "pg_catalog":
                    name = f"{schema}.{name}"
            self._names[type_oid] = name
        return name

    def _build(self, oid: int, path: tuple[int, ...]) -> ValueConverter:
        conv = self._converters.get(oid)
        if conv is not None:
            return conv
        if oid in path:  # PostgreSQL forbids recursive types; never loop on a broken catalog
            return to_text
        conv = self._make(oid, (*path, oid))
        self._converters[oid] = conv
        return conv

    def _make(self, oid: int, path: tuple[int, ...]) -> ValueConverter:
        info = self.types.info(oid)
        if info is None:
            return to_text
        if info.typtype == "d":
            return self._build(info.base, path) if info.base else to_text
        if info.elem:
            elem = self._build(info.elem, path)
            if elem not in _CANNOT_FAIL:  # one element's failure must not leave half an array appended
                elem = _guarded(elem, self.type_name(info.elem))
            if info.vector:
                return vector_converter(elem)
            elem_info = self.types.info(info.elem)
            return array_converter(elem, elem_info.delim if elem_info is not None else ",")
        return SCALARS.get(oid, to_text)
