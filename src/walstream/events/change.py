"""walstream's one internal event model. Every delivery API is a thin adapter over these types.

An event's order key is (commit_lsn, ordinal): commit_lsn orders transactions (they are decoded in commit
order) and ordinal numbers the changes inside one, so the pair orders and deduplicates every change even
though change LSNs are neither unique nor monotonic.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson

from ..source.messages import COLUMN_NULL, COLUMN_TEXT, RelationColumn, TupleData
from . import values
from .text import undecodable

Converter = Callable[[str], object]
_Fragment = orjson.Fragment
_dumps = orjson.dumps


class Op(enum.Enum):
    BEGIN = "BEGIN"
    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    TRUNCATE = "TRUNCATE"
    MESSAGE = "MESSAGE"
    COMMIT = "COMMIT"
    SNAPSHOT = "SNAPSHOT"  # a row copied by a snapshot chunk (walstream.snapshot), never from pgoutput

    # Members are singletons compared by identity: hash them by identity too, in C (Enum's own __hash__
    # is Python code, run on every dict and set look-up of an op on the hot path).
    __hash__ = object.__hash__


def _numeric_bytes(data: bytes) -> object:
    """values.convert_numeric on the raw bytes: NaN, Infinity, -Infinity as strings, else the number as is."""
    if data[-1] in b"Ny":
        return data.decode("ascii")
    return _Fragment(data)


def _byte_converter(conv: Converter, text_decoder: Callable[[bytes], str], utf8: bool) -> Callable[[bytes], object]:
    """The column's converter applied to the raw pgoutput bytes, without the str in between where the result
    is the same: integers and numerics are ASCII digits in every server encoding, and (in UTF-8) jsonb is
    embedded as is and text needs only decoding. Anything else decodes, then converts."""
    if conv is values.convert_int:
        return _Fragment
    if conv is values.convert_numeric:
        return _numeric_bytes
    if utf8 and conv is values.convert_jsonb:
        return _Fragment
    if utf8 and conv is str:
        return bytes.decode  # UTF-8 is bytes.decode's default
    return lambda data: conv(text_decoder(data))


def _is_utf8(text_decoder: Callable[[bytes], str]) -> bool:
    encoding = getattr(text_decoder, "keywords", {}).get("encoding", "")
    return isinstance(encoding, str) and encoding.lower().replace("-", "").replace("_", "") == "utf8"


@dataclass(frozen=True, slots=True)
class RelationInfo:
    relation_id: int
    schema: str
    table: str
    replica_identity: str
    columns: tuple[RelationColumn, ...]
    converters: tuple[Converter, ...]  # one per column: pgoutput text -> to_jsonb-equal value
    key_indexes: tuple[int, ...]  # columns in the replica identity key
    text_decoder: Callable[[bytes], str]
    # Derived: column names, and each converter applied to the raw bytes (see _byte_converter).
    names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    byte_converters: tuple[Callable[[bytes], object], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        utf8 = _is_utf8(self.text_decoder)
        object.__setattr__(self, "names", tuple(c.name for c in self.columns))
        object.__setattr__(self, "byte_converters",
                           tuple(_byte_converter(c, self.text_decoder, utf8) for c in self.converters))

    def row_object(self, cells: TupleData, key_only: bool = False) -> dict[str, object]:
        """Column name -> value. Unchanged TOAST columns are left out (their value was not sent)."""
        row: dict[str, object] = {}
        names, convert = self.names, self.byte_converters
        for i in self.key_indexes if key_only else range(len(cells)):
            kind, data = cells[i]
            if kind == COLUMN_TEXT:
                try:
                    row[names[i]] = convert[i](data)  # type: ignore[arg-type]
                except UnicodeDecodeError:  # only a SQL_ASCII database lets such bytes in
                    row[names[i]] = self.converters[i](undecodable(self.schema, self.table, names[i], data))  # type: ignore[arg-type]
            elif kind == COLUMN_NULL:
                row[names[i]] = None
            elif kind != "u":  # binary values are never requested: walstream streams in text mode
                raise ValueError(f"unexpected column kind {kind!r} in {self.schema}.{self.table}")
        return row


PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01, PostgreSQL's epoch (commit_ts counts from it), in us since 1970


@dataclass(frozen=True, slots=True)
class TxnInfo:
    """What every event of one transaction shares. commit_lsn is Begin's final_lsn (the commit record)."""

    xid: int
    commit_lsn: int
    commit_ts: int  # microseconds since 2000-01-01 UTC


class ChangeEvent(NamedTuple):
    """One event. Immutable; a NamedTuple because one is built for every change and that is what builds
    fastest (the assembler's hot path calls tuple.__new__ with every field, in this order)."""

    op: Op
    lsn: int  # the change's own LSN, as sent in pg_lsn
    txn: TxnInfo | None  # None only for non-transactional logical decoding messages
    ordinal: int  # 1-based position within the transaction (BEGIN is 0)
    relation: RelationInfo | None = None
    new: TupleData | None = None
    old: TupleData | None = None
    old_kind: str | None = None  # 'K' key columns only, 'O' the whole old row
    truncated: tuple[RelationInfo, ...] = ()
    truncate_options: int = 0
    end_lsn: int = 0  # COMMIT only
    message_prefix: str = ""
    message_content: bytes = b""
    message_transactional: bool = False

    def json_bytes(self) -> bytes:
        """The row as to_jsonb() would give it, UTF-8 JSON: new row for insert/update, old row (or its key)
        for delete. Computed on each call: callers that need it more than once keep it."""
        rel = self.relation
        if rel is None:
            return b"{}"
        if self.op is Op.DELETE:
            cells, key_only = self.old, self.old_kind != "O"
        else:
            cells, key_only = self.new, False
        if cells is None:
            return b"{}"
        return _dumps(rel.row_object(cells, key_only))
