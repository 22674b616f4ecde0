"""walstream's one internal event model. Every delivery API is a thin adapter over these types.

An event's order key is (commit_lsn, ordinal): commit_lsn orders transactions (they are decoded in commit
order) and ordinal numbers the changes inside one, so the pair orders and deduplicates every change even
though change LSNs are neither unique nor monotonic.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import orjson

from ..replication.messages import COLUMN_NULL, COLUMN_TEXT, RelationColumn, TupleData

Converter = Callable[[str], object]


class Op(enum.Enum):
    BEGIN = "BEGIN"
    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    TRUNCATE = "TRUNCATE"
    MESSAGE = "MESSAGE"
    COMMIT = "COMMIT"


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

    def row_object(self, cells: TupleData, key_only: bool = False) -> dict[str, object]:
        """Column name -> value. Unchanged TOAST columns are left out (their value was not sent)."""
        row: dict[str, object] = {}
        columns, converters, decode = self.columns, self.converters, self.text_decoder
        indexes = self.key_indexes if key_only else range(len(cells))
        for i in indexes:
            kind, data = cells[i]
            if kind == COLUMN_TEXT:
                row[columns[i].name] = converters[i](decode(data))  # type: ignore[arg-type]
            elif kind == COLUMN_NULL:
                row[columns[i].name] = None
            elif kind != "u":  # binary values are never requested: walstream streams in text mode
                raise ValueError(f"unexpected column kind {kind!r} in {self.schema}.{self.table}")
        return row


@dataclass(frozen=True, slots=True)
class TxnInfo:
    """What every event of one transaction shares. commit_lsn is Begin's final_lsn (the commit record)."""

    xid: int
    commit_lsn: int
    commit_ts: int  # microseconds since 2000-01-01 UTC


@dataclass(frozen=True)
class ChangeEvent:
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

    @cached_property
    def json_payload(self) -> str:
        """The row as to_jsonb() would give it: new row for insert/update, old row (or its key) for delete."""
        rel = self.relation
        if rel is None:
            return "{}"
        if self.op is Op.DELETE:
            cells, key_only = self.old, self.old_kind != "O"
        else:
            cells, key_only = self.new, False
        if cells is None:
            return "{}"
        return orjson.dumps(rel.row_object(cells, key_only)).decode()
