"""walstream.v1 events from the internal event model: the shared encoder and the per-subscriber filter.

Each ChangeEvent is encoded once (Event proto, its wire size, the relations it refers to) and the same
`V1Item` goes to every subscriber that wants it. A subscriber's `V1Adapter` filters by table globs,
operation and the transaction_boundaries / logical_messages switches. BEGIN is sent just before the first
event of a transaction that the subscriber receives and COMMIT only after such a BEGIN, so a transaction
filtered out completely sends nothing (and holds nothing back in the slot).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ... import native
from ..._proto import tags
from ..._proto import walstream_v1_pb2 as pb
from ...events.change import PG_EPOCH_US, ChangeEvent, Op, RelationInfo, TxnInfo
from ...events.replay import RowRecord
from ...events.run import ChangeRun
from ...source.messages import TRUNCATE_CASCADE, TRUNCATE_RESTART_IDENTITY, TupleData
from ..acks import RunPayload
from . import wire
from .typed import TypedCatalog

if TYPE_CHECKING:
    from ...snapshot.copytext import CopyChunk, Key

DEFAULT_MAX_EVENTS, MAX_EVENTS = 1000, 10_000
DEFAULT_MAX_BYTES, MAX_BYTES = 1 << 20, 4 << 20
MAX_DELAY_MS = 10_000

# Prefix of the watermark messages of snapshot backfills (walstream.snapshot): never sent to clients.
WATERMARK_PREFIX = "walstream.snapshot"

ROW_OPS = {pb.INSERT: Op.INSERT, pb.UPDATE: Op.UPDATE, pb.DELETE: Op.DELETE, pb.TRUNCATE: Op.TRUNCATE}
# The same names (SNAPSHOT too, once it exists).
_OPS = {op: pb.Operation.Name(pb.Operation.Value(op.value)) for op in Op}  # Event(op=) takes the name too
_IDENTITY = {"d": pb.DEFAULT, "n": pb.NOTHING, "f": pb.FULL, "i": pb.INDEX}
_OLD_ROW = {"K": pb.OLD_ROW_KEY, "O": pb.OLD_ROW_FULL}


class V1Item:
    """One event as sent to subscribers: its bytes inside a Batch (field tag, length, the encoded Event),
    its op and lsn, and the relations it needs. A piece of a snapshot chunk holds `count` such events of one
    op, lsn and relation back to back (Encoder.snapshot_chunk): queued, batched and counted as one."""

    __slots__ = ("data", "op", "lsn", "relations", "size", "count")
    private = False  # True: never handed to another client (walstream.delivery.acks)

    def __init__(self, data: bytes, op: int, lsn: int, relations: tuple[RelationInfo, ...] = (),
                 count: int = 1) -> None:
        self.data = data
        self.op = op
        self.lsn = lsn
        self.relations = relations
        self.size = len(data)
        self.count = count

    @classmethod
    def of(cls, event: pb.Event, relations: tuple[RelationInfo, ...] = ()) -> V1Item:
        return cls(wire.field(BATCH_EVENTS, event.SerializeToString()), event.op, event.lsn, relations)

    @property
    def event(self) -> pb.Event:
        """The Event message (decoded again: for tests and logs, not the hot path)."""
        return pb.Batch.FromString(self.data).events[0]  # data is one Batch.events field


class V1Run(RunPayload):
    """Rows lo..hi-1 of a chunk of a ChangeRun written in one C call (Encoder.run_items): their framed
    Batch.events fields back to back in `data`, row i's at data[offsets[i]:offsets[i + 1]]. The hub queues
    the whole chunk as one message and records a delivery per row (lsns); the batcher sends it whole or cut
    (split) where a batch is full."""

    __slots__ = ("data", "offsets", "lsns", "run", "first", "relations", "lo", "hi", "size", "op")

    def __init__(self, data: bytes, offsets: memoryview, lsns: list[int], run: ChangeRun, first: int,
                 relations: tuple[RelationInfo, ...], lo: int = 0, hi: int = -1) -> None:
        self.data, self.offsets, self.lsns, self.run, self.first = data, offsets, lsns, run, first
        self.op = _OP_VALUE[run.op]
        self.relations = relations
        self.lo, self.hi = lo, hi if hi >= 0 else len(lsns)
        self.size = offsets[self.hi] - offsets[lo]

    @property
    def count(self) -> int:
        return self.hi - self.lo

    def unit(self, index: int) -> tuple[V1Item, RowRecord]:
        """Row lo + index alone, with its record: what a client it is handed to gets (acks.adopt_orphans)."""
        i, o = self.lo + index, self.offsets
        item = V1Item(self.data[o[i]:o[i + 1]], self.op, self.lsns[i], self.relations)
        return item, self.run.record(self.first + i)

    def fit(self, rows: int, budget: int) -> int:
        """How many of the first `rows` rows fit in `budget` bytes (none when the budget is negative)."""
        o, lo = self.offsets, self.lo
        return max(0, bisect_right(o, o[lo] + budget, lo, lo + min(rows, self.hi - lo) + 1) - 1 - lo)

    def split(self, n: int) -> tuple[V1Run, V1Run]:
        """(its first n rows, the rest): views of the same bytes."""
        cut = self.lo + n
        return (V1Run(self.data, self.offsets, self.lsns, self.run, self.first, self.relations, self.lo, cut),
                V1Run(self.data, self.offsets, self.lsns, self.run, self.first, self.relations, cut, self.hi))

    def bytes(self) -> bytes:
        if self.lo == 0 and self.hi == len(self.lsns):
            return self.data
        return self.data[self.offsets[self.lo]:self.offsets[self.hi]]


BATCH_EVENTS = tags.BATCH_EVENTS
BATCH_RELATIONS = tags.BATCH_RELATIONS
# One-byte tags of the Event fields written by hand below (walstream._proto.tags, generated from the .proto).
_EVENT = bytes((tags.BATCH_EVENTS,))
_LSN, _XID, _COMMIT_LSN, _COMMIT_TIME, _ORDINAL, _NEW, _OLD, _OLD_ROW_TAG = (bytes((t,)) for t in (
    tags.EVENT_LSN, tags.EVENT_XID, tags.EVENT_COMMIT_LSN, tags.EVENT_COMMIT_TIME_US, tags.EVENT_ORDINAL,
    tags.EVENT_NEW, tags.EVENT_OLD, tags.EVENT_OLD_ROW))


# --- subscriptions ------------------------------------------------------------------------------------


class InvalidSubscription(ValueError):
    """The message names the field: '<field>: <what is wrong and what is accepted>'."""


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S)


@dataclass(frozen=True)
class TablePattern:
    schema: re.Pattern[str]
    table: re.Pattern[str]

    @classmethod
    def parse(cls, text: str, field: str) -> TablePattern:
        accepted = "use 'schema.table' or 'table' (schema public), with * and ? as wildcards"
        if not text:
            raise InvalidSubscription(f"{field}: empty pattern; {accepted}")
        parts = text.split(".")
        if len(parts) > 2 or not all(parts):
            raise InvalidSubscription(f"{field}: {text!r} is not a table pattern; {accepted}")
        schema, table = parts if len(parts) == 2 else ("public", parts[0])
        return cls(_glob(schema), _glob(table))

    def matches(self, schema: str, table: str) -> bool:
        return self.schema.fullmatch(schema) is not None and self.table.fullmatch(table) is not None


@dataclass(frozen=True)
class Subscription:
    """A validated pb.Subscription."""

    include: tuple[TablePattern, ...] = ()
    exclude: tuple[TablePattern, ...] = ()
    ops: frozenset[Op] = frozenset(ROW_OPS.values())
    transaction_boundaries: bool = False
    logical_messages: bool = False
    max_events: int = DEFAULT_MAX_EVENTS
    max_bytes: int = DEFAULT_MAX_BYTES
    max_delay_ms: int = 0
    client_name: str = ""

    @classmethod
    def parse(cls, sub: pb.Subscription) -> Subscription:
        include = tuple(TablePattern.parse(p, f"include_tables[{i}]") for i, p in enumerate(sub.include_tables))
        exclude = tuple(TablePattern.parse(p, f"exclude_tables[{i}]") for i, p in enumerate(sub.exclude_tables))
        ops: set[Op] = set()
        for i, value in enumerate(sub.operations):
            op = ROW_OPS.get(value)
            if op is None:
                name = pb.Operation.Name(value) if value in pb.Operation.values() else str(value)
                raise InvalidSubscription(
                    f"operations[{i}]: {name} is not a row operation; use INSERT, UPDATE, DELETE or TRUNCATE "
                    "(BEGIN/COMMIT come with transaction_boundaries, MESSAGE with logical_messages)")
            ops.add(op)
        limits = sub.batch
        return cls(
            include, exclude, frozenset(ops) if ops else frozenset(ROW_OPS.values()),
            sub.transaction_boundaries, sub.logical_messages,
            _limit(limits.max_events, "batch.max_events", DEFAULT_MAX_EVENTS, MAX_EVENTS, "events"),
            _limit(limits.max_bytes, "batch.max_bytes", DEFAULT_MAX_BYTES, MAX_BYTES, "bytes"),
            _limit(limits.max_delay_ms, "batch.max_delay_ms", 0, MAX_DELAY_MS, "milliseconds"),
            sub.client_name,
        )

    def wants_table(self, schema: str, table: str) -> bool:
        if self.include and not any(p.matches(schema, table) for p in self.include):
            return False
        return not any(p.matches(schema, table) for p in self.exclude)


def _limit(value: int, field: str, default: int, maximum: int, unit: str) -> int:
    if value > maximum:
        raise InvalidSubscription(f"{field}: {value} is above the maximum; use 1 to {maximum} {unit}, "
                                  f"or 0 for the default ({default})")
    return value or default


def same_relation(a: RelationInfo, b: RelationInfo) -> bool:
    """Whether two versions of a relation look the same to a client (PostgreSQL resends a Relation message
    after any invalidation of its cache entry, often with nothing changed)."""
    return a is b or (a.relation_id == b.relation_id and a.schema == b.schema and a.table == b.table
                      and a.replica_identity == b.replica_identity and a.columns == b.columns)


# --- the shared encoder -------------------------------------------------------------------------------


class Encoder:
    """Builds each event's V1Item once, for every subscriber, and each relation's proto once.

    Row events (the hot path) are written as wire bytes by walstream.delivery.v1.wire; the rest (BEGIN,
    COMMIT, TRUNCATE, MESSAGE) are built as messages and serialised.
    """

    def __init__(self, typed: TypedCatalog) -> None:
        self.typed = typed
        self._event: ChangeEvent | None = None
        self._item: V1Item | None = None
        self._partial: dict[tuple[int, ...], V1Item] = {}  # TRUNCATE items cut down to some relations
        self._begin: tuple[TxnInfo | None, V1Item | None] = (None, None)
        self._relations: dict[int, tuple[RelationInfo, bytes]] = {}
        self._rows: dict[int, wire.RowEncoder] = {}
        self._txn: tuple[TxnInfo | None, bytes] = (None, b"")
        self._run: tuple[ChangeRun | None, list[tuple[int, V1Item | V1Run, int]]] = (None, [])
        accelerated = native.plain_run()
        self._encode_plain_run = accelerated[1] if accelerated is not None else None
        self._snapshot_events = native.snapshot_writer()  # the C snapshot_chunk, or None
        self._native_txn_fields = native.txn_fields()  # one per transaction: most of a one-row one's encoding

    def item(self, event: ChangeEvent) -> V1Item:
        if self._event is not event:
            self._item, self._event = self._build(event), event
            self._partial = {}
        assert self._item is not None
        return self._item

    def truncate_item(self, event: ChangeEvent, relations: tuple[RelationInfo, ...]) -> V1Item:
        """A TRUNCATE naming only some of the tables it truncated (the ones a subscriber wants)."""
        full = self.item(event)
        key = tuple(r.relation_id for r in relations)
        item = self._partial.get(key)
        if item is None:
            proto = full.event
            del proto.truncate.relation_ids[:]
            proto.truncate.relation_ids.extend(key)
            item = self._partial[key] = V1Item.of(proto, relations)
        return item

    def begin_item(self, txn: TxnInfo) -> V1Item:
        if self._begin[0] is not txn:
            proto = pb.Event(op=pb.BEGIN, lsn=txn.commit_lsn, xid=txn.xid, commit_lsn=txn.commit_lsn,
                             commit_time_us=txn.commit_ts + PG_EPOCH_US, ordinal=0)
            self._begin = (txn, V1Item.of(proto))
        item = self._begin[1]
        assert item is not None
        return item

    def relation_bytes(self, rel: RelationInfo) -> bytes:
        """The relation's metadata as one Batch.relations field, built once per version of the relation."""
        cached = self._relations.get(rel.relation_id)
        if cached is None or not same_relation(cached[0], rel):
            proto = pb.Relation(relation_id=rel.relation_id, schema=rel.schema, table=rel.table,
                                replica_identity=_IDENTITY.get(rel.replica_identity, pb.REPLICA_IDENTITY_UNSPECIFIED),
                                columns=self.typed.relation(rel).columns)
            cached = self._relations[rel.relation_id] = (rel, wire.field(BATCH_RELATIONS, proto.SerializeToString()))
        return cached[1]

    def _row_encoder(self, rel: RelationInfo) -> wire.RowEncoder:
        rows = self._rows.get(rel.relation_id)
        if rows is None or rows.typing.relation is not rel:
            typing = self.typed.relation(rel)
            rows = self._rows[rel.relation_id] = wire.RowEncoder(typing, utf8=typing.decode is bytes.decode)
        return rows

    def _txn_fields(self, txn: TxnInfo) -> bytes:
        """Event fields 3-5 (xid, commit_lsn, commit_time_us), the same for every event of a transaction."""
        if self._txn[0] is not txn:
            commit_time = txn.commit_ts + PG_EPOCH_US
            write = self._native_txn_fields
            fields = write(txn.xid, txn.commit_lsn, commit_time) if write is not None else None
            if fields is not None:
                self._txn = (txn, fields)
                return fields
            self._txn = (txn, b"".join((
                _XID + wire.varint(txn.xid) if txn.xid else b"",
                _COMMIT_LSN + wire.varint(txn.commit_lsn) if txn.commit_lsn else b"",
                _COMMIT_TIME + wire.varint(commit_time) if commit_time else b"")))
        return self._txn[1]

    def run_items(self, run: ChangeRun) -> list[tuple[int, V1Item | V1Run, int]]:
        """A run of plain changes as (lsn, message, row of the run): chunks of rows written in one C call each
        (V1Run), and a V1Item of _row_item for a row the C writer leaves to Python (it gives the same bytes
        or raises the same error). Built once for every subscriber."""
        if self._run[0] is run:
            return self._run[1]
        rel, txn = run.relation, run.txn
        rows = self._row_encoder(rel)
        encode = self._encode_plain_run
        out: list[tuple[int, V1Item | V1Run, int]] = []
        i, n, lsns, raws = 0, len(run), run.lsns, run.raws
        relations = (rel,)
        while i < n:
            done = 0
            if encode is not None and rows.native_insert is not None:
                data, offsets, done = encode(raws, lsns, i, n, _OP_FIELD[run.op], self._txn_fields(txn),
                                             run.first_ordinal + i, rows.relation_field, rows.kinds, rows.encoders)
                if done:
                    chunk = lsns if i == 0 and done == n else lsns[i:i + done]
                    out.append((chunk[-1], V1Run(data, memoryview(offsets).cast("Q"), chunk, run, i, relations), i))
                    i += done
            if i < n:
                event = run.event(i)
                out.append((event.lsn, self._row_item(event, rel, txn), i))
                i += 1
        self._run = (run, out)
        return out
    def _snapshot_head(self, lsn: int, txn: TxnInfo) -> bytes:
        """Event fields 1-5 of every SNAPSHOT event at (lsn, txn)."""
        return b"".join((_OP_FIELD[Op.SNAPSHOT], _LSN + wire.varint(lsn) if lsn else b"", self._txn_fields(txn)))

    def snapshot_chunk(self, lsn: int, txn: TxnInfo, rel: RelationInfo, chunk: CopyChunk, cancelled: set[Key],
                       first: int, max_events: int, max_bytes: int) -> tuple[list[V1Item], int]:
        """SNAPSHOT events of a chunk's rows whose key is not in `cancelled`, ordinals first.., packed into
        pieces of at most max_events events and max_bytes bytes (a larger event alone): (pieces, rows left
        out). The C writer makes them straight from the COPY text; this Python path is its reference and
        the fallback for a chunk holding a value it leaves to Python (the bytes are the same either way)."""
        rows = self._row_encoder(rel)
        head = self._snapshot_head(lsn, txn)
        op = _OP_VALUE[Op.SNAPSHOT]
        write = self._snapshot_events
        if write is not None and rows.native is not None and len(rows.kinds) == chunk.width:
            out = write(chunk.data, chunk.columns, chunk.width, cancelled or None, head, rows.relation_field, first,
                        rows.kinds, rows.encoders, max_events, max_bytes)
            if out is not None:
                pieces, counts, superseded = out
                return [V1Item(p, op, lsn, (rel,), n) for p, n in zip(pieces, counts, strict=True)], superseded
        cells = chunk.rows
        if cancelled:
            cells = [row for row, key in zip(cells, chunk.keys, strict=True) if key not in cancelled]
        items = self.snapshot_items(lsn, txn, [(rel, row) for row in cells], first)
        return pack(items, max_events, max_bytes), chunk.count - len(cells)

    def snapshot_items(self, lsn: int, txn: TxnInfo, rows: Sequence[tuple[RelationInfo, TupleData]],
                       first: int = 1) -> list[V1Item]:
        """SNAPSHOT events of a chunk's rows at a high watermark (lsn, txn), ordinals first..: the bytes
        _row_item writes for Event(op=SNAPSHOT, new=row), without an event object per row."""
        varint = wire.varint
        head = self._snapshot_head(lsn, txn)
        op = _OP_VALUE[Op.SNAPSHOT]
        items: list[V1Item] = []
        append = items.append
        last: RelationInfo | None = None
        encoder = rels = None
        for ordinal, (rel, cells) in enumerate(rows, first):
            if rel is not last:
                encoder, rels, last = self._row_encoder(rel), (rel,), rel
            assert encoder is not None and rels is not None
            row = encoder.row(cells)
            body = b"".join((head, _ORDINAL, varint(ordinal), encoder.relation_field, _NEW, varint(len(row)), row))
            append(V1Item(_EVENT + varint(len(body)) + body, op, lsn, rels))
        return items

    def _build(self, event: ChangeEvent) -> V1Item:
        op, txn, rel = event.op, event.txn, event.relation
        if rel is not None and txn is not None:
            return self._row_item(event, rel, txn)
        if txn is not None:
            proto = pb.Event(op=_OPS[op], lsn=event.lsn, ordinal=event.ordinal, xid=txn.xid,
                             commit_lsn=txn.commit_lsn, commit_time_us=txn.commit_ts + PG_EPOCH_US)
        else:
            proto = pb.Event(op=_OPS[op], lsn=event.lsn, ordinal=event.ordinal)
        relations: tuple[RelationInfo, ...] = ()
        if op is Op.TRUNCATE:
            relations = event.truncated
            options = event.truncate_options
            proto.truncate.relation_ids.extend(r.relation_id for r in relations)
            proto.truncate.cascade = bool(options & TRUNCATE_CASCADE)
            proto.truncate.restart_identity = bool(options & TRUNCATE_RESTART_IDENTITY)
        elif op is Op.MESSAGE:
            proto.message.prefix = event.message_prefix
            proto.message.content = event.message_content
            proto.message.transactional = event.message_transactional
        elif op is Op.COMMIT:
            # pgoutput sends Commit at the transaction's end LSN: unlike the commit LSN (which BEGIN carries)
            # no event sent before it has that LSN, so acking a batch that ends with COMMIT acks all of it.
            proto.lsn = proto.end_lsn = event.end_lsn
        return V1Item.of(proto, relations)

    def _row_item(self, event: ChangeEvent, rel: RelationInfo, txn: TxnInfo) -> V1Item:
        """INSERT, UPDATE, DELETE as wire bytes: the fields of Event in field order, defaults left out."""
        rows = self._row_encoder(rel)
        varint, lsn = wire.varint, event.lsn
        op = event.op
        if rows.native_insert is not None and (op is Op.INSERT or op is Op.UPDATE) and event.new is not None \
                and event.old is None:  # a plain change: op, position, relation and new row only
            data = rows.native_insert(_OP_FIELD[op], lsn, self._txn_fields(txn), event.ordinal,
                                      rows.relation_field, event.new, rows.kinds, rows.encoders)
            if data is not None:  # else a value the Python path writes (wire.RowEncoder.row)
                return V1Item(data, _OP_VALUE[op], lsn, (rel,))
        parts = [_OP_FIELD[event.op], _LSN + varint(lsn) if lsn else b"", self._txn_fields(txn),
                 _ORDINAL + varint(event.ordinal) if event.ordinal else b"", rows.relation_field]
        if event.new is not None:
            row = rows.row(event.new)
            parts.append(_NEW + varint(len(row)) + row)
        old_kind = event.old_kind
        if event.old is not None and old_kind is not None:
            row = rows.row(event.old, key_only=old_kind != "O")
            parts.append(_OLD + varint(len(row)) + row)
            old_row = _OLD_ROW.get(old_kind, pb.OLD_ROW_NONE)
            if old_row:
                parts.append(_OLD_ROW_TAG + varint(old_row))
        body = b"".join(parts)
        return V1Item(_EVENT + varint(len(body)) + body, _OP_VALUE[event.op], lsn, (rel,))


_OP_VALUE = {op: pb.Operation.Value(name) for op, name in _OPS.items()}
_OP_FIELD = {op: bytes((tags.EVENT_OP,)) + wire.varint(value) for op, value in _OP_VALUE.items()}


def pack(items: Sequence[V1Item], max_events: int, max_bytes: int) -> list[V1Item]:
    """One-event items of one op, lsn and relation packed into pieces of at most max_events events and
    max_bytes bytes (an item larger than that alone), in order: what the C snapshot writer makes."""
    pieces: list[V1Item] = []
    parts: list[bytes] = []
    size = 0
    for item in items:
        if parts and (len(parts) >= max_events or size + item.size > max_bytes):
            pieces.append(V1Item(b"".join(parts), item.op, item.lsn, item.relations, len(parts)))
            parts, size = [], 0
        parts.append(item.data)
        size += item.size
    if parts:
        last = items[-1]
        pieces.append(V1Item(b"".join(parts), last.op, last.lsn, last.relations, len(parts)))
    return pieces


# --- one subscriber -----------------------------------------------------------------------------------


class Backfill(Protocol):
    """walstream.snapshot.window.ClientBackfill, as this adapter sees it."""

    def on_watermark(self, event: ChangeEvent) -> list[tuple[int, object]]: ...
    def on_delivered(self, event: ChangeEvent) -> None: ...
    def commit_ordinal(self, txn: TxnInfo | None) -> int | None: ...


class V1Adapter:
    """The hub adapter of one walstream.v1 subscriber: which events it gets, as (lsn, V1Item)."""

    api = "v1"
    takes_begin = False  # expand() of a BEGIN is empty: BEGIN goes out with the first event sent of it

    def __init__(self, encoder: Encoder, sub: Subscription) -> None:
        self.encoder = encoder
        self.sub = sub
        self.backfill: Backfill | None = None  # set while this subscriber's snapshot runs
        self._tables: dict[tuple[str, str], bool] = {}
        self._begun: TxnInfo | None = None  # the transaction whose BEGIN this subscriber was sent
        self._last: tuple[RelationInfo | None, bool] = (None, False)  # the last relation wants() saw

    def wants(self, rel: RelationInfo) -> bool:
        if rel is self._last[0]:  # runs of changes to one table: no look-up
            return self._last[1]
        key = (rel.schema, rel.table)
        wanted = self._tables.get(key)
        if wanted is None:
            wanted = self._tables[key] = self.sub.wants_table(rel.schema, rel.table)
        self._last = (rel, wanted)
        return wanted

    @staticmethod
    def size(message: object) -> int:
        return message.size  # type: ignore[attr-defined, no-any-return]  # a V1Item

    def expand(self, event: ChangeEvent) -> Sequence[tuple[int, object]]:
        op, sub = event.op, self.sub
        if op is Op.BEGIN:
            return ()  # sent with the first event of the transaction this subscriber gets
        backfill = self.backfill
        if op is Op.COMMIT:
            ordinal = backfill.commit_ordinal(event.txn) if backfill is not None else None
            if self._begun is None or self._begun is not event.txn:
                return ()
            self._begun = None
            item = self.encoder.item(event)
            if ordinal is not None:  # after this subscriber's snapshot rows, numbered 1..ordinal-1
                proto = item.event
                proto.ordinal = ordinal
                item = V1Item.of(proto)
            return ((event.end_lsn, item),)
        if op is Op.MESSAGE:
            if event.message_prefix == WATERMARK_PREFIX:
                return self._watermark(event, backfill)
            if not sub.logical_messages:
                return ()
            item = self.encoder.item(event)
        elif op not in sub.ops:
            return ()
        elif op is Op.TRUNCATE:
            wanted = tuple(r for r in event.truncated if self.wants(r))
            if not wanted:
                return ()
            item = (self.encoder.item(event) if len(wanted) == len(event.truncated)
                    else self.encoder.truncate_item(event, wanted))
        else:
            rel = event.relation
            if rel is None or not self.wants(rel):
                return ()
            item = self.encoder.item(event)
        if backfill is not None and op is not Op.MESSAGE:
            backfill.on_delivered(event)
        txn = event.txn
        if sub.transaction_boundaries and txn is not None and self._begun is not txn:
            self._begun = txn
            return ((txn.commit_lsn, self.encoder.begin_item(txn)), (event.lsn, item))
        return ((event.lsn, item),)

    def expand_run(self, run: ChangeRun) -> Sequence[tuple[int, object, int]] | None:
        """expand() of every event of a run of plain changes at once (Hub.publish_run); None while a snapshot runs
        (its backfill follows each delivered change): then the run comes event by event."""
        if self.backfill is not None:
            return None
        sub = self.sub
        if run.op not in sub.ops or not self.wants(run.relation):
            return ()
        items = self.encoder.run_items(run)
        txn = run.txn
        if sub.transaction_boundaries and self._begun is not txn:
            self._begun = txn
            return [(txn.commit_lsn, self.encoder.begin_item(txn), 0), *items]
        return items

    def _watermark(self, event: ChangeEvent, backfill: Backfill | None) -> Sequence[tuple[int, object]]:
        """A snapshot watermark: hidden; at this subscriber's high watermark, its chunk's rows."""
        if backfill is None:
            return ()
        rows: list[tuple[int, object]] = list(backfill.on_watermark(event))
        txn = event.txn
        if rows and self.sub.transaction_boundaries and txn is not None and self._begun is not txn:
            self._begun = txn
            rows.insert(0, (txn.commit_lsn, self.encoder.begin_item(txn)))
        return rows
