"""Decode pgoutput messages (protocol versions 1-4) into the frozen types of walstream.source.messages.

The layouts are those written by PostgreSQL's src/backend/replication/logical/proto.c. Every read is
bounds-checked; anything that does not match raises DecodeError with one line naming the message type,
the byte offset (the type byte is offset 0) and what was expected there. No other exception escapes.

Inside a streamed block (between Stream Start and Stream Stop) pgoutput prefixes Relation, Type, Insert,
Update, Delete, Truncate and Message with the xid of the (sub)transaction that made the change. For Message
it does so whenever it is streaming, whatever the transactional flag (pgoutput.c passes the xid, proto.c
writes it when valid); non-transactional messages are in practice never sent inside a block.
`StreamDecoder` tracks the blocks so callers need not pass `in_stream`.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from typing import Any, TypeVar

from walstream import native
from walstream.errors import DecodeError
from walstream.source.messages import COLUMN_BINARY, COLUMN_TEXT, Cell, PgoutputMessage, TupleData

from . import messages as m

__all__ = ["StreamDecoder", "decode_message", "describe"]

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_I32 = struct.Struct("!i")
_U32X2 = struct.Struct("!II")
_ATTR_TYPE = struct.Struct("!Ii")  # atttypid, atttypmod
_MSG_HEAD = struct.Struct("!BQ")  # flags, lsn

_NAMES: dict[int, str] = {ord(k): v for k, v in {
    "B": "Begin", "C": "Commit", "O": "Origin", "R": "Relation", "Y": "Type", "I": "Insert", "U": "Update",
    "D": "Delete", "T": "Truncate", "M": "Message", "S": "Stream Start", "E": "Stream Stop",
    "c": "Stream Commit", "A": "Stream Abort", "b": "Begin Prepare", "P": "Prepare", "K": "Commit Prepared",
    "r": "Rollback Prepared", "p": "Stream Prepare",
}.items()}
_OUTSIDE_STREAM_ONLY = frozenset(b"BCbPKrcAp")  # pgoutput asserts !in_streaming before sending these

_new_tuple = tuple.__new__  # a Cell built without NamedTuple's Python-level __new__ costs half as much
_NULL_CELL = Cell(m.COLUMN_NULL, None)
_UNCHANGED_CELL = Cell(m.COLUMN_UNCHANGED_TOAST, None)
_T, _B, _N, _U, _MARK_N = b"tbnuN"
_object_new = object.__new__
_BEGIN = struct.Struct("!QqI")  # final_lsn, commit_ts, xid
_COMMIT = struct.Struct("!BQQq")  # flags, commit_lsn, end_lsn, commit_ts
BEGIN_SIZE, COMMIT_SIZE = 1 + _BEGIN.size, 1 + _COMMIT.size  # a well-formed Begin and Commit, type byte included
read_begin, read_commit = _BEGIN.unpack_from, _COMMIT.unpack_from  # (buf, 1): fields as decode_message reads them


_M = TypeVar("_M")


def _slots_builder(cls: type[_M]) -> Callable[..., _M]:
    """cls(*values) for a frozen slots dataclass of 3 or 4 fields, set through its slots' descriptors: about
    twice as fast as its generated __init__ (which goes through object.__setattr__ for every field)."""
    setters = [getattr(cls, f.name).__set__ for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    if len(setters) == 3:
        set0, set1, set2 = setters

        def build3(a: object, b: object, c: object) -> _M:
            obj: _M = _object_new(cls)
            set0(obj, a)
            set1(obj, b)
            set2(obj, c)
            return obj
        return build3
    set0, set1, set2, set3 = setters

    def build4(a: object, b: object, c: object, d: object) -> _M:
        obj: _M = _object_new(cls)
        set0(obj, a)
        set1(obj, b)
        set2(obj, c)
        set3(obj, d)
        return obj
    return build4


_new_insert = _slots_builder(m.Insert)
_new_begin = _slots_builder(m.Begin)
_new_commit = _slots_builder(m.Commit)


def _show(byte: int) -> str:
    return f"'{chr(byte)}'" if 0x20 < byte < 0x7F else f"0x{byte:02x}"


def _error(kind: int, pos: int, expected: str, got: str) -> DecodeError:
    name = _NAMES.get(kind, "message")
    return DecodeError(f"pgoutput {name} at offset {pos}: expected {expected}, got {got}")


def _short(buf: bytes, pos: int, need: int, what: str) -> DecodeError:
    have = len(buf) - pos
    return _error(buf[0], pos, what, "end of data" if have <= 0 else f"only {have} of its {need} bytes")


def _bad_length(buf: bytes, pos: int, length: int, what: str) -> DecodeError:
    """An int32 length at pos that is negative or runs past the end of the message."""
    if length < 0:
        return _error(buf[0], pos, f"{what} length >= 0", str(length))
    return _error(buf[0], pos + 4, f"{length} bytes of {what} data", f"only {len(buf) - pos - 4}")


def _end(buf: bytes, pos: int) -> None:
    if pos != len(buf):
        raise _error(buf[0], pos, "end of message", f"{len(buf) - pos} trailing byte(s)")


def _cstring(buf: bytes, pos: int, what: str) -> tuple[str, int]:
    nul = buf.find(b"\0", pos)
    if nul < 0:
        got = "end of data" if pos >= len(buf) else "no NUL before end of data"
        raise _error(buf[0], pos, f"NUL-terminated {what}", got)
    try:
        return buf[pos:nul].decode(), nul + 1
    except UnicodeDecodeError as exc:
        bad = pos + exc.start
        raise _error(buf[0], bad, f"UTF-8 {what}", f"invalid byte 0x{buf[bad]:02x}") from None


class _Fixed:
    """Fixed-size fields after the type byte, optionally ended by one NUL-terminated string.

    Fields named in `nonzero` must not be 0 (InvalidXLogRecPtr): proto.c's own readers reject that too.
    """

    __slots__ = ("fields", "nonzero", "size", "struct", "tail")

    def __init__(self, spec: str, tail: str | None = None, nonzero: tuple[str, ...] = ()) -> None:
        self.fields: list[tuple[int, int, str]] = []  # (offset, width, label)
        pos, codes = 1, "!"
        for field in spec.split():  # "Q:final_lsn" = uint64 final_lsn
            code, name = field.split(":")
            width = struct.calcsize("!" + code)
            kind = {"B": "uint8", "I": "uint32", "Q": "uint64", "q": "int64"}[code]
            self.fields.append((pos, width, f"{kind} {name}"))
            pos, codes = pos + width, codes + code
        self.struct = struct.Struct(codes)
        self.size, self.tail = pos, tail
        self.nonzero = [(i, f) for i, f in enumerate(self.fields) if f[2].split()[1] in nonzero]

    def read(self, buf: bytes) -> tuple[Any, ...]:
        if len(buf) < self.size:
            for pos, width, label in self.fields:
                if pos + width > len(buf):
                    raise _short(buf, pos, width, label)
        values: tuple[Any, ...] = self.struct.unpack_from(buf, 1)
        for i, (pos, _, label) in self.nonzero:
            if not values[i]:
                raise _error(buf[0], pos, f"a valid (non-zero) {label}", "0")
        if self.tail is None:
            _end(buf, self.size)
            return values
        text, end = _cstring(buf, self.size, self.tail)
        _end(buf, end)
        return (*values, text)


_COMMIT_SPEC = "B:flags Q:commit_lsn Q:end_lsn q:commit_ts"
_PREPARE_SPEC = "Q:prepare_lsn Q:end_lsn q:prepare_ts I:xid"
# type byte -> (layout, constructor) for every message without tuples or an optional xid
_FIXED: dict[int, tuple[_Fixed, Callable[..., PgoutputMessage]]] = {ord(k): v for k, v in {
    "B": (_Fixed("Q:final_lsn q:commit_ts I:xid", nonzero=("final_lsn",)), m.Begin),
    "C": (_Fixed(_COMMIT_SPEC), m.Commit),
    "O": (_Fixed("Q:origin_lsn", tail="origin name"), m.Origin),
    "c": (_Fixed("I:xid " + _COMMIT_SPEC), m.StreamCommit),
    "b": (_Fixed(_PREPARE_SPEC, "gid", ("prepare_lsn", "end_lsn")), m.BeginPrepare),
    "P": (_Fixed("B:flags " + _PREPARE_SPEC, "gid", ("prepare_lsn", "end_lsn")), m.Prepare),
    "p": (_Fixed("B:flags " + _PREPARE_SPEC, "gid", ("prepare_lsn", "end_lsn")), m.StreamPrepare),
    "K": (_Fixed("B:flags Q:commit_lsn Q:end_lsn q:commit_ts I:xid", "gid", ("commit_lsn", "end_lsn")),
          m.CommitPrepared),
    "r": (_Fixed("B:flags Q:prepare_end_lsn Q:rollback_end_lsn q:prepare_ts q:rollback_ts I:xid", "gid",
                 ("prepare_end_lsn", "rollback_end_lsn")), m.RollbackPrepared),
}.items()}
_STREAM_START = _Fixed("I:xid B:first_segment")
_STREAM_STOP = _Fixed("")
_STREAM_ABORT = _Fixed("I:xid I:subxid")
_STREAM_ABORT_PARALLEL = _Fixed("I:xid I:subxid Q:abort_lsn q:abort_ts")  # protocol 4, streaming=parallel


def _xid_and_oid(buf: bytes, in_stream: bool, what: str) -> tuple[int | None, int, int]:
    """The streaming xid (if in_stream) and the relation/type oid after the type byte, and the next offset."""
    if in_stream:
        if len(buf) < 9:
            raise _short(buf, 1, 4, "uint32 xid") if len(buf) < 5 else _short(buf, 5, 4, f"uint32 {what}")
        xid, oid = _U32X2.unpack_from(buf, 1)
        return xid, oid, 9
    if len(buf) < 5:
        raise _short(buf, 1, 4, f"uint32 {what}")
    return None, _U32.unpack_from(buf, 1)[0], 5


def _marker(buf: bytes, pos: int, allowed: bytes, expected: str) -> int:
    if pos >= len(buf):
        raise _error(buf[0], pos, expected, "end of data")
    marker = buf[pos]
    if marker not in allowed:
        raise _error(buf[0], pos, expected, _show(marker))
    return marker


def _tuple(buf: bytes, pos: int) -> tuple[TupleData, int]:
    n = len(buf)
    if pos + 2 > n:
        raise _short(buf, pos, 2, "uint16 column count")
    (natts,) = _U16.unpack_from(buf, pos)
    pos += 2
    cells: list[Cell] = []
    append, unpack_length, new_tuple, cell = cells.append, _I32.unpack_from, _new_tuple, Cell  # hot loop: locals
    t, b, null, unchanged = _T, _B, _NULL_CELL, _UNCHANGED_CELL
    try:
        for _ in range(natts):
            kind = buf[pos]
            if kind == t or kind == b:
                (length,) = unpack_length(buf, pos + 1)
                start = pos + 5
                end = start + length
                if length < 0 or end > n:
                    raise _bad_length(buf, pos + 1, length, f"column {len(cells) + 1}")
                append(new_tuple(cell, (COLUMN_TEXT if kind == t else COLUMN_BINARY, buf[start:end])))
                pos = end
            elif kind == _N:
                append(null)
                pos += 1
            elif kind == _U:
                append(unchanged)
                pos += 1
            else:
                raise _error(buf[0], pos, "column kind 'n', 'u', 't' or 'b'", _show(kind))
    except IndexError:
        raise _error(buf[0], pos, f"kind of column {len(cells) + 1} of {natts}", "end of data") from None
    except struct.error:
        raise _short(buf, pos + 1, 4, "int32 column length") from None
    return tuple(cells), pos


def _relation(buf: bytes, in_stream: bool) -> m.Relation:
    xid, relid, pos = _xid_and_oid(buf, in_stream, "relation_id")
    namespace, pos = _cstring(buf, pos, "namespace")
    name, pos = _cstring(buf, pos, "relation name")
    identity = chr(_marker(buf, pos, b"dnfi", "replica identity 'd', 'n', 'f' or 'i'"))
    if pos + 3 > len(buf):
        raise _short(buf, pos + 1, 2, "uint16 column count")
    (natts,) = _U16.unpack_from(buf, pos + 1)
    pos += 3
    columns: list[m.RelationColumn] = []
    for i in range(1, natts + 1):
        if pos >= len(buf):
            raise _error(buf[0], pos, f"flags of column {i} of {natts}", "end of data")
        flags = buf[pos]
        column, pos = _cstring(buf, pos + 1, f"name of column {i}")
        if pos + 8 > len(buf):
            raise _short(buf, pos, 4, f"uint32 type oid of column {i}") if pos + 4 > len(buf) else \
                _short(buf, pos + 4, 4, f"int32 type modifier of column {i}")
        type_oid, type_modifier = _ATTR_TYPE.unpack_from(buf, pos)
        pos += 8
        columns.append(m.RelationColumn(flags, column, type_oid, type_modifier))
    _end(buf, pos)
    return m.Relation(xid, relid, namespace or "pg_catalog", name, identity, tuple(columns))


def _type(buf: bytes, in_stream: bool) -> m.Type:
    xid, type_oid, pos = _xid_and_oid(buf, in_stream, "type oid")
    namespace, pos = _cstring(buf, pos, "namespace")
    name, pos = _cstring(buf, pos, "type name")
    _end(buf, pos)
    return m.Type(xid, type_oid, namespace or "pg_catalog", name)


def _insert(buf: bytes, in_stream: bool) -> m.Insert:
    xid, relid, pos = _xid_and_oid(buf, in_stream, "relation_id")
    _marker(buf, pos, b"N", "tuple marker 'N'")
    new, pos = _tuple(buf, pos + 1)
    _end(buf, pos)
    return m.Insert(xid, relid, new)


def _update(buf: bytes, in_stream: bool) -> m.Update:
    xid, relid, pos = _xid_and_oid(buf, in_stream, "relation_id")
    marker = _marker(buf, pos, b"KON", "tuple marker 'K', 'O' or 'N'")
    old_kind, old = None, None
    if marker != _MARK_N:
        old_kind = chr(marker)
        old, pos = _tuple(buf, pos + 1)
        _marker(buf, pos, b"N", "tuple marker 'N'")
    new, pos = _tuple(buf, pos + 1)
    _end(buf, pos)
    return m.Update(xid, relid, old_kind, old, new)


def _delete(buf: bytes, in_stream: bool) -> m.Delete:
    xid, relid, pos = _xid_and_oid(buf, in_stream, "relation_id")
    marker = _marker(buf, pos, b"KO", "tuple marker 'K' or 'O'")
    old, pos = _tuple(buf, pos + 1)
    _end(buf, pos)
    return m.Delete(xid, relid, chr(marker), old)


def _stream_xid(buf: bytes, in_stream: bool) -> tuple[int | None, int]:
    if not in_stream:
        return None, 1
    if len(buf) < 5:
        raise _short(buf, 1, 4, "uint32 xid")
    return _U32.unpack_from(buf, 1)[0], 5


def _truncate(buf: bytes, in_stream: bool) -> m.Truncate:
    xid, pos = _stream_xid(buf, in_stream)
    if pos + 5 > len(buf):
        raise _short(buf, pos, 4, "int32 relation count") if pos + 4 > len(buf) else \
            _short(buf, pos + 4, 1, "uint8 options")
    (count,) = _I32.unpack_from(buf, pos)
    if count < 0:
        raise _error(buf[0], pos, "a relation count >= 0", str(count))
    options = buf[pos + 4]
    pos += 5
    if pos + 4 * count > len(buf):
        have = (len(buf) - pos) // 4
        raise _short(buf, pos + 4 * have, 4, f"uint32 relation_id {have + 1} of {count}")
    relids = struct.unpack_from(f"!{count}I", buf, pos)
    _end(buf, pos + 4 * count)
    return m.Truncate(xid, options, relids)


def _message(buf: bytes, in_stream: bool) -> m.Message:
    xid, pos = _stream_xid(buf, in_stream)
    if pos + 9 > len(buf):
        raise _short(buf, pos, 1, "uint8 flags") if pos >= len(buf) else _short(buf, pos + 1, 8, "uint64 lsn")
    flags, lsn = _MSG_HEAD.unpack_from(buf, pos)
    prefix, pos = _cstring(buf, pos + 9, "prefix")
    if pos + 4 > len(buf):
        raise _short(buf, pos, 4, "int32 content length")
    (size,) = _I32.unpack_from(buf, pos)
    pos += 4
    if size < 0 or pos + size > len(buf):
        raise _bad_length(buf, pos - 4, size, "content")
    _end(buf, pos + size)
    return m.Message(xid, bool(flags & 1), lsn, prefix, buf[pos:pos + size])


_WITH_XID: dict[int, Callable[[bytes, bool], PgoutputMessage]] = {
    ord("R"): _relation, ord("Y"): _type, ord("I"): _insert, ord("U"): _update, ord("D"): _delete,
    ord("T"): _truncate, ord("M"): _message,
}


def plain_insert(buf: bytes) -> tuple[int, TupleData] | None:
    """An Insert outside a streamed block (its 'I', relation id, 'N', new tuple) as (relation id, new tuple);
    None for any other message. The one message there is per inserted row: the session loop takes it this
    way, without an Insert object (same checks and errors as _insert)."""
    if len(buf) > 7 and buf[0] == 0x49 and buf[5] == 0x4E:
        new, pos = _tuple(buf, 6)
        if pos != len(buf):
            _end(buf, pos)
        return _U32.unpack_from(buf, 1)[0], new
    return None


def insert_decoder() -> Callable[[bytes], tuple[int, TupleData] | None]:
    """plain_insert, from the C accelerator when it is active (walstream.native): the same result, and for
    anything but a well-formed Insert it calls plain_insert itself (the same None or the same error)."""
    accelerated = native.insert_decoder()
    if accelerated is None:
        return plain_insert
    configure, decode = accelerated
    configure(Cell, _NULL_CELL, _UNCHANGED_CELL, plain_insert)
    return decode


def decode_message(data: bytes | memoryview, *, in_stream: bool = False,
                   parallel_abort: bool = False) -> PgoutputMessage:
    """Decode one pgoutput message (the payload of one XLogData).

    in_stream: the message sits between Stream Start and Stream Stop, so changes carry a leading xid.
    parallel_abort: protocol 4 with streaming = parallel, so Stream Abort carries abort_lsn and abort_ts.
    """
    buf = data if type(data) is bytes else bytes(data)
    if not buf:
        raise DecodeError("pgoutput message at offset 0: expected a message type byte, got end of data")
    kind = buf[0]
    if kind == 0x49 and not in_stream:
        row = plain_insert(buf)
        if row is not None:
            return _new_insert(None, row[0], row[1])
    if kind == 0x42 and len(buf) == BEGIN_SIZE:  # 'B', as _FIXED's Begin reads it
        final_lsn, commit_ts, xid = _BEGIN.unpack_from(buf, 1)
        if final_lsn:
            return _new_begin(final_lsn, commit_ts, xid)
    elif kind == 0x43 and len(buf) == COMMIT_SIZE:  # 'C', as _FIXED's Commit reads it
        return _new_commit(*_COMMIT.unpack_from(buf, 1))
    change = _WITH_XID.get(kind)
    if change is not None:
        return change(buf, in_stream)
    fixed = _FIXED.get(kind)
    if fixed is not None:
        return fixed[1](*fixed[0].read(buf))
    if kind == 0x53:  # 'S'
        xid, first = _STREAM_START.read(buf)
        if first > 1:
            raise _error(kind, 5, "first_segment 0 or 1", str(first))
        return m.StreamStart(xid, first == 1)
    if kind == 0x45:  # 'E'
        _STREAM_STOP.read(buf)
        return m.StreamStop()
    if kind == 0x41:  # 'A'
        if parallel_abort:
            return m.StreamAbort(*_STREAM_ABORT_PARALLEL.read(buf))
        xid, subxid = _STREAM_ABORT.read(buf)
        return m.StreamAbort(xid, subxid, None, None)
    raise _error(kind, 0, "a message type byte (one of BCOYRIUDTMSEcAbPKrp)", f"unknown type {_show(kind)}")


class StreamDecoder:
    """Decodes one replication stream's messages in order, tracking Stream Start / Stream Stop blocks."""

    __slots__ = ("in_stream", "parallel_abort", "stream_xid")

    def __init__(self, *, parallel_abort: bool = False) -> None:
        self.parallel_abort = parallel_abort
        self.in_stream = False
        self.stream_xid: int | None = None  # top-level xid of the open streamed block

    def reset(self) -> None:
        """Forget any open block, e.g. after reconnecting (the server resends from a transaction start)."""
        self.in_stream, self.stream_xid = False, None

    def decode(self, data: bytes | memoryview) -> PgoutputMessage:
        buf = data if type(data) is bytes else bytes(data)
        if self.in_stream and buf and (buf[0] in _OUTSIDE_STREAM_ONLY or buf[0] == 0x53):  # 'S'
            raise _error(buf[0], 0, f"Stream Stop to close the streamed block of xid {self.stream_xid}",
                         f"{_NAMES[buf[0]]} inside that block")
        msg = decode_message(buf, in_stream=self.in_stream, parallel_abort=self.parallel_abort)
        if type(msg) is m.StreamStart:
            self.in_stream, self.stream_xid = True, msg.xid
        elif type(msg) is m.StreamStop:
            if not self.in_stream:
                raise _error(buf[0], 0, "Stream Start before it", "Stream Stop outside a streamed block")
            self.in_stream, self.stream_xid = False, None
        return msg


def describe(msg: PgoutputMessage) -> dict[str, Any]:
    """A JSON-ready dict of a message for logs and golden files: text cells as str, other bytes as hex."""
    out: dict[str, Any] = {"type": type(msg).__name__}
    for field in dataclasses.fields(msg):
        out[field.name] = _jsonable(getattr(msg, field.name))
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Cell):
        if value.data is None:
            return [value.kind]
        if value.kind == COLUMN_TEXT:
            return [value.kind, value.data.decode(errors="backslashreplace")]
        return [value.kind, value.data.hex()]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, m.RelationColumn):
        return dataclasses.asdict(value)
    return value
