"""walstream.v1 rows written straight to protobuf wire bytes, from the column text pgoutput sends.

The hot path of the batched API. Building a `Value` message per column and serialising the `Event` costs
about three times as much as writing the bytes: a row of five columns is a handful of byte strings joined
once. The message classes (walstream.delivery.v1.typed) remain the reference: for every scalar kind the bytes
written here are exactly what upb serialises for the same Value (tests/unit/test_v1wire.py checks that), and
every type without an encoder here - arrays, bytea, user types, text in a non-UTF-8 server encoding - goes
through the message classes column by column.

Wire format (protobuf encoding): a field is its tag (field number << 3 | wire type) then a varint, or a
length-delimited payload; sint fields are zigzag-encoded; proto3 leaves out fields holding their default,
except members of a oneof (a Value's kind), which are always written. The tags come from walstream._proto.tags,
generated from the .proto (the C accelerator's _tags.h is the same table); all are one byte.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

from ... import native
from ..._proto import tags
from ...events.text import undecodable
from ...source.messages import COLUMN_NULL, COLUMN_TEXT, COLUMN_UNCHANGED_TOAST, TupleData
from .typed import INT64_MAX, RelationTyping, ValueConverter, parse_date, parse_time, parse_timestamp, to_value

log = logging.getLogger(__name__)

ValueEncoder = Callable[[bytes], bytes]  # raw column text -> one framed Row.values element


def varint(value: int) -> bytes:
    """An unsigned varint (negative int64s as their 64-bit two's complement, as protobuf does)."""
    if value < 16384:
        if value >= 0:
            return _SMALL[value]
        value += 1 << 64
    out = b""
    while value >= 16384:  # 14 bits at a time from tables: LSNs take two look-ups, not five loop turns
        out += _CONTINUED[value & 16383]
        value >>= 14
    return out + _SMALL[value]


def _varint_slow(value: int) -> bytes:
    out = bytearray()
    while value > 127:
        out.append(value & 127 | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [_varint_slow(i) for i in range(16384)]  # whole varints of 0..16383
_CONTINUED = [bytes((i & 127 | 128, i >> 7 | 128)) for i in range(16384)]  # 14 bits with more to follow


def zigzag64(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: tag byte(s), length, payload."""
    return varint(tag) + varint(len(payload)) + payload


# --- one Value, framed as an element of Row.values (field 1) --------------------------------------------

ROW_VALUE = bytes((tags.ROW_VALUES,))  # the tag of one element of Row.values
NULL = bytes((tags.ROW_VALUES, 2, tags.VALUE_NULL, 1))  # Value(null=True)
UNCHANGED_TOAST = bytes((tags.ROW_VALUES, 2, tags.VALUE_UNCHANGED_TOAST, 1))  # Value(unchanged_toast=True)
UNSET = bytes((tags.ROW_VALUES, 0))  # Value() (a non-key column of an OLD_ROW_KEY row)


def _framed(value: bytes) -> bytes:
    return ROW_VALUE + _SMALL[len(value)] + value if len(value) < 16384 else ROW_VALUE + varint(len(value)) + value


def _string_encoder(tag: int) -> ValueEncoder:
    """A string kind (numeric, text, json): the bytes as they are (UTF-8 from a UTF-8 server)."""
    tag_byte = bytes((tag,))
    heads = [ROW_VALUE + bytes((n + 2, tag, n)) for n in range(126)]  # a value of fewer than 126 bytes

    def encode(data: bytes) -> bytes:
        n = len(data)
        if n < 126:
            return heads[n] + data
        return _framed(tag_byte + varint(n) + data)

    return encode


def _sint64_encoder(tag: int, parse: Callable[[bytes], int]) -> ValueEncoder:
    tag_byte = bytes((tag,))
    small = [_framed(tag_byte + _SMALL[z]) for z in range(128)]

    def encode(data: bytes) -> bytes:
        n = parse(data)
        z = (n << 1) ^ (n >> 63)
        if z < 128:
            return small[z]
        v = tag_byte + (_SMALL[z] if z < 16384 else varint(z))
        return ROW_VALUE + _SMALL[len(v)] + v

    return encode


def _cached(encode: ValueEncoder, size: int = 512) -> ValueEncoder:
    """Dates and times repeat within a load (now(), one business day): parse each distinct text once."""
    cache: dict[bytes, bytes] = {}

    def cached(data: bytes) -> bytes:
        out = cache.get(data)
        if out is None:
            if len(cache) >= size:
                cache.clear()
            out = cache[data] = encode(data)
        return out

    return cached


def _timestamp_us(data: bytes, with_tz: bool = False) -> int:
    us = parse_timestamp(data.decode("ascii"), with_tz)
    if us == INT64_MAX and data[-1:] != b"y":
        raise ValueError("beyond int64 microseconds")  # the message path sends it as text
    return us


def _timestamptz_us(data: bytes) -> int:
    return _timestamp_us(data, True)


def _date_days(data: bytes) -> int:
    return parse_date(data.decode("ascii"))


def _time_us(data: bytes) -> int:
    return parse_time(data.decode("ascii"))


_DOUBLE = struct.Struct("<d").pack
_BOOL = {b"t": bytes((tags.ROW_VALUES, 2, tags.VALUE_BOOL, 1)), b"f": bytes((tags.ROW_VALUES, 2, tags.VALUE_BOOL, 0))}
_DOUBLE_HEAD = bytes((tags.ROW_VALUES, 9, tags.VALUE_DOUBLE))
_DATE_TAG = bytes((tags.VALUE_DATE_DAYS,))


def _double(data: bytes) -> bytes:
    return _DOUBLE_HEAD + _DOUBLE(float(data))  # float() reads NaN, Infinity and -Infinity


def _bool(data: bytes) -> bytes:
    return _BOOL[data]


def _date(data: bytes) -> bytes:
    days = parse_date(data.decode("ascii"))
    z = (days << 1) ^ (days >> 31)  # sint32
    return _framed(_DATE_TAG + varint(z & 0xFFFFFFFF))


# Type OID -> encoder; the kinds as in typed.SCALARS. Text-like kinds only when the server sends UTF-8.
_ASCII_ENCODERS: dict[int, ValueEncoder] = {
    16: _bool,
    20: _sint64_encoder(tags.VALUE_INT64, int), 21: _sint64_encoder(tags.VALUE_INT64, int),
    23: _sint64_encoder(tags.VALUE_INT64, int),
    700: _double, 701: _double,
    1700: _string_encoder(tags.VALUE_NUMERIC),
    1114: _cached(_sint64_encoder(tags.VALUE_TIMESTAMP_US, _timestamp_us)),
    1184: _cached(_sint64_encoder(tags.VALUE_TIMESTAMPTZ_US, _timestamptz_us)),
    1082: _cached(_date),
    1083: _sint64_encoder(tags.VALUE_TIME_US, _time_us),
}
_UTF8_ENCODERS: dict[int, ValueEncoder] = {
    25: _string_encoder(tags.VALUE_TEXT), 1043: _string_encoder(tags.VALUE_TEXT),
    1042: _string_encoder(tags.VALUE_TEXT), 19: _string_encoder(tags.VALUE_TEXT),
    114: _string_encoder(tags.VALUE_JSON), 3802: _string_encoder(tags.VALUE_JSON),
}


def value_encoder(type_oid: int, utf8: bool) -> ValueEncoder | None:
    """The byte encoder of a column type, or None: use its ValueConverter."""
    encoder = _ASCII_ENCODERS.get(type_oid)
    if encoder is None and utf8:
        encoder = _UTF8_ENCODERS.get(type_oid)
    return encoder


# --- rows ---------------------------------------------------------------------------------------------


class RowEncoder:
    """A relation's rows -> Row message bytes (unframed), one encoder per column."""

    __slots__ = ("typing", "encoders", "relation_field", "native", "native_insert", "kinds")

    def __init__(self, typing: RelationTyping, utf8: bool) -> None:
        self.typing = typing
        relation_id = typing.relation.relation_id
        self.relation_field = varint(tags.EVENT_RELATION_ID) + varint(relation_id) if relation_id else b""
        columns = typing.relation.columns
        self.encoders: tuple[ValueEncoder, ...] = tuple(
            value_encoder(c.type_oid, utf8) or self._slow_encoder(typing.converters[i])
            for i, c in enumerate(columns))
        # The C accelerator (walstream.native) writes whole rows; None from it means: this row in Python.
        accelerated = native.row_encoder(utf8)
        self.native = accelerated[0] if accelerated else None
        self.native_insert = accelerated[1] if accelerated else None  # adapter.Encoder._row_item's INSERT
        self.kinds = bytes(accelerated[2].get(c.type_oid, 0) for c in columns) if accelerated else b""

    def _slow_encoder(self, convert: ValueConverter) -> ValueEncoder:
        decode = self.typing.decode

        def encode(data: bytes) -> bytes:
            return _framed(to_value(convert, decode(data)).SerializeToString())

        return encode

    def _fallback(self, index: int, data: bytes, exc: Exception) -> bytes:
        """Text that does not parse as its type (which pgoutput should never send): its Value from the
        converter where that takes it (a timestamp beyond int64 microseconds), else the text, logged."""
        typing = self.typing
        if isinstance(exc, UnicodeDecodeError):  # only a SQL_ASCII database lets such bytes in
            rel = typing.relation
            text = undecodable(rel.schema, rel.table, typing.columns[index].name, data)
        else:
            text = typing.decode(data)
        try:
            return _framed(to_value(typing.converters[index], text).SerializeToString())
        except (ValueError, KeyError, IndexError):
            log.warning("%s value does not parse (%s); sending its text: %.80r", typing.columns[index].type_name,
                        exc, text)
            utf8 = text.encode()
            return _framed(field(tags.VALUE_TEXT, utf8))

    def row(self, cells: TupleData, key_only: bool = False) -> bytes:
        if self.native is not None and not key_only:
            out = self.native(cells, self.kinds, self.encoders)
            if out is not None:
                return out
        parts: list[bytes] = []
        append, encoders = parts.append, self.encoders
        key_mask = self.typing.key_mask
        i = 0
        for kind, data in cells:
            if key_only and not key_mask[i]:
                append(UNSET)
            elif kind == COLUMN_TEXT:
                try:
                    append(encoders[i](data))  # type: ignore[arg-type]
                except (ValueError, KeyError, IndexError, UnicodeDecodeError) as exc:
                    append(self._fallback(i, data, exc))  # type: ignore[arg-type]
            elif kind == COLUMN_NULL:
                append(NULL)
            elif kind == COLUMN_UNCHANGED_TOAST:
                append(UNCHANGED_TOAST)
            else:  # binary values are never requested: walstream streams in text mode
                rel = self.typing.relation
                raise ValueError(f"unexpected column kind {kind!r} in {rel.schema}.{rel.table}")
            i += 1
        return b"".join(parts)
