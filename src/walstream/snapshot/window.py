"""One client's watermark windows: which chunk rows survive, and the visibility guard (DBLog, extended).

Per chunk the runner emits a low watermark L, reads the chunk, attaches it here, then emits a high
watermark H. This client's adapter reports, in stream order, the watermarks and every change it delivers
to the client. Between L and H every delivered change to the chunk's table cancels the chunk row with the
same key (INSERT and UPDATE: the new key; UPDATE and DELETE: the old key), a TRUNCATE of the table cancels
all of them. At H the survivors become SNAPSHOT events at H's position: H's lsn, commit_lsn and xid,
ordinals 1..n, one transaction for this client only.

Visibility guard: a transaction whose commit precedes L in the WAL can still be invisible to the chunk's
snapshot (it has written its commit record but not yet left the ProcArray, e.g. waiting for a synchronous
standby). Its change was streamed before L, so the stale chunk row would survive and overwrite it. At H
every transaction decoded before L is checked against the chunk's pg_current_snapshot(); if one is not
visible the chunk is dropped and read again once it is.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from ..delivery.acks import DeliveryGroup
from ..delivery.v1.adapter import Encoder, V1Item
from ..events.change import ChangeEvent, Op, RelationInfo, TxnInfo
from ..source.messages import COLUMN_UNCHANGED_TOAST, TupleData
from .copytext import CopyChunk, Key
from .reader import Snapshot

log = logging.getLogger(__name__)


class History(Protocol):
    """walstream.events.assembler.Assembler: the xids of the latest transactions begun, in order."""

    recent_xids: Sequence[int]
    xids_begun: int


class ProgressItem:
    """A SubscribeResponse.progress, queued after its chunk's rows; not a delivery (never acknowledged).
    With `error` set, the call ends with that gRPC status code name and message instead."""

    __slots__ = ("data", "error")

    def __init__(self, data: bytes, error: tuple[str, str] | None = None) -> None:
        self.data = data
        self.error = error


@dataclass
class Outcome:
    sent: int = 0
    superseded: int = 0
    position: int = 0  # H's lsn
    retry: str = ""  # why the chunk must be read again ("" = delivered)
    completed: int = 0  # rows completed with TOASTed values from the chunk (included in sent)
    wait_for: list[int] = field(default_factory=list)  # xids to wait for before reading it again
    seq: int = 0  # the chunk's number (in logs)


@dataclass
class Chunk:
    """What the runner read, attached before it emits H."""

    relation: RelationInfo
    copy: CopyChunk
    snapshot: Snapshot


class Window:
    def __init__(self, backfill_id: str, seq: int, relation_id: int, key_names: tuple[str, ...]) -> None:
        self.seq = seq
        self.low = orjson.dumps({"bf": backfill_id, "seq": seq, "k": "L"})
        self.high = orjson.dumps({"bf": backfill_id, "seq": seq, "k": "H"})
        self.relation_id = relation_id
        self.key_names = key_names
        self.opened = False
        self.mark = 0  # History.xids_begun when L was decoded (L's own transaction included)
        self.cancelled: set[Key] = set()
        # Keys whose latest change in the window left TOASTed columns out: (relation, that row with what
        # earlier changes in the window told, the key the row had when the window opened).
        self.incomplete: dict[Key, tuple[RelationInfo, TupleData, Key]] = {}
        self.truncated = False
        self.unkeyed = ""  # a change in the window whose key could not be read: why
        self.chunk: Chunk | None = None
        self.outcome: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()


class ClientBackfill:
    """The adapter-side half of one client's backfill (the runner drives the other half)."""

    def __init__(self, encoder: Encoder, history: History, guard: bool = True,
                 limits: tuple[int, int] = (1000, 1 << 20)) -> None:
        self.encoder = encoder
        self.history = history
        self.guard = guard
        self.limits = limits  # the client's batch limits (events, bytes): a chunk's pieces fit in one batch
        # The runner's windows in the order of their watermarks in the WAL (it emits them from one connection,
        # each committed before the next): the first is the one the stream is in or comes to next. A chunk
        # read ahead adds its window while the one before still waits for its high watermark.
        self.windows: deque[Window] = deque()
        self._key_index: dict[tuple[int, tuple[str, ...]], tuple[RelationInfo, tuple[int, ...] | None]] = {}
        self.commit_ordinals: dict[int, tuple[TxnInfo, int]] = {}  # id(txn) -> (txn, COMMIT's ordinal)

    @property
    def window(self) -> Window | None:
        return self.windows[0] if self.windows else None

    def drop(self, window: Window) -> None:
        """A window whose high watermark will not be emitted (its chunk is read again, or had no rows)."""
        if window in self.windows:
            self.windows.remove(window)

    # -- from the adapter, in stream order ------------------------------------------------------------

    def on_watermark(self, event: ChangeEvent) -> list[tuple[int, object]]:
        window = self.window
        content = event.message_content
        if window is None or event.txn is None:
            return []
        if content == window.low:
            window.opened = True
            window.mark = self.history.xids_begun
            return []
        if content != window.high:
            return []  # another backfill's, an old one replayed, or a dropped window's
        self.windows.popleft()
        outcome = self._close(window, event)
        if not window.outcome.done():
            window.outcome.set_result(outcome[0])
        return outcome[1]

    def on_delivered(self, event: ChangeEvent) -> None:
        """A change this client is being sent (only those: a change it filters out cancels nothing)."""
        window = self.window
        if window is None or not window.opened:
            return
        if event.op is Op.TRUNCATE:
            if any(r.relation_id == window.relation_id for r in event.truncated):
                window.truncated = True
                window.incomplete.clear()
            return
        rel = event.relation
        if rel is None or rel.relation_id != window.relation_id:
            return
        index = self._indexes(rel, window.key_names)
        if index is None:
            window.unkeyed = f"a change to {rel.schema}.{rel.table} no longer has key column(s) " \
                             f"{', '.join(window.key_names)}"
            return
        keys: list[Key | None] = []
        for cells in (event.new, event.old):
            if cells is None:
                keys.append(None)
                continue
            key = tuple(cells[i].data if cells[i].kind == "t" else None for i in index)
            if None in key:
                keys.append(None)
                if cells is event.new and event.old is not None:
                    continue  # an unchanged TOASTed key column in the new row: the old row names it
                window.unkeyed = f"a change to {rel.schema}.{rel.table} did not carry its key"
                continue
            keys.append(key)
            window.cancelled.add(key)
        self._track_incomplete(window, event, rel, keys[0], keys[1])

    @staticmethod
    def _track_incomplete(window: Window, event: ChangeEvent, rel: RelationInfo, new_key: Key | None,
                          old_key: Key | None) -> None:
        """An UPDATE that left TOASTed columns out supersedes the chunk row, yet the client may never have
        had those values: remember it, to send the row completed from the chunk at the high watermark."""
        source = old_key if old_key is not None else new_key
        prior = window.incomplete.pop(source, None) if source is not None else None
        cells = event.new
        if event.op is Op.DELETE or cells is None or new_key is None or source is None:
            return
        if not any(c.kind == COLUMN_UNCHANGED_TOAST for c in cells):
            return  # the change carries the whole row
        origin = source
        if prior is not None and prior[0].names == rel.names:
            cells = tuple(p if c.kind == COLUMN_UNCHANGED_TOAST else c for c, p in zip(cells, prior[1], strict=True))
            origin = prior[2]
        window.incomplete[new_key] = (rel, cells, origin)

    def piece_limits(self, rel: RelationInfo) -> tuple[int, int]:
        """Events and bytes per piece of a chunk (Encoder.snapshot_chunk): one piece fits in one of this
        client's batches, with the relation's metadata if the batch has to carry it."""
        max_events, max_bytes = self.limits
        return max_events, max(1, max_bytes - len(self.encoder.relation_bytes(rel)))

    # -- internals -------------------------------------------------------------------------------------

    def _indexes(self, rel: RelationInfo, names: tuple[str, ...]) -> tuple[int, ...] | None:
        cached = self._key_index.get((rel.relation_id, names))
        if cached is not None and cached[0] is rel:
            return cached[1]
        positions = {n: i for i, n in enumerate(rel.names)}
        found = tuple(positions[n] for n in names if n in positions)
        index = found if len(found) == len(names) else None
        self._key_index[(rel.relation_id, names)] = (rel, index)
        return index

    def invisible_before(self, window: Window, snapshot: Snapshot, exclude: int) -> list[int]:
        """Transactions decoded before the window opened that the chunk's snapshot does not see."""
        history = self.history
        recent = list(history.recent_xids)
        after_mark = history.xids_begun - window.mark  # begun since L (not "before the window")
        before = recent[:max(0, len(recent) - after_mark)]
        return [x for x in before if x != exclude and snapshot.invisible(x)]

    def _close(self, window: Window, high: ChangeEvent) -> tuple[Outcome, list[tuple[int, object]]]:
        chunk = window.chunk
        txn = high.txn
        assert txn is not None
        if not window.opened or chunk is None:
            return Outcome(retry="the low watermark was not seen before the high one"), []
        if window.unkeyed:
            return Outcome(retry=window.unkeyed), []
        if self.guard:
            invisible = self.invisible_before(window, chunk.snapshot, txn.xid)
            if invisible:
                return Outcome(retry=f"transaction(s) {', '.join(map(str, invisible))} committed before the "
                                     "window but not visible to the chunk's snapshot", wait_for=invisible), []
        lsn, rel, copy = high.lsn, chunk.relation, chunk.copy
        completed = self._completed(window, chunk)
        items: list[V1Item] = []
        if window.truncated:
            superseded = copy.count
        elif completed:  # rare: survivors and completed rows in Python, one item per row
            cancelled = window.cancelled
            survivors = [(rel, row) for row, key in zip(copy.rows, copy.keys, strict=True) if key not in cancelled]
            items = self.encoder.snapshot_items(lsn, txn, survivors + completed)
            superseded = copy.count - len(survivors)
        else:
            items, superseded = self.encoder.snapshot_chunk(lsn, txn, rel, copy, window.cancelled, 1,
                                                            *self.piece_limits(rel))
        sent = sum(i.count for i in items)
        deliveries: list[tuple[int, object]] = []
        if items:
            # One delivery for the whole chunk: the rows share H's lsn, one ack acknowledges them all, and
            # they go to this client only (a DeliveryGroup is never handed to another client).
            deliveries.append((lsn, DeliveryGroup(items, sum(i.size for i in items), sent)))
            self.commit_ordinals[id(txn)] = (txn, sent + 1)
        return Outcome(sent, superseded, lsn, completed=len(completed)), deliveries

    @staticmethod
    def _completed(window: Window, chunk: Chunk) -> list[tuple[RelationInfo, TupleData]]:
        """Rows of keys whose latest change in the window left TOASTed columns out, those columns taken from
        the chunk: no change in the window carried them, so they held the chunk's value all through it."""
        if not window.incomplete or window.truncated:
            return []
        by_key = dict(zip(chunk.copy.keys, chunk.copy.rows, strict=True))
        names = chunk.relation.names
        rows = []
        for rel, cells, origin in window.incomplete.values():
            row = by_key.get(origin)
            if row is None or rel.names != names:
                continue  # not in this chunk (sent whole by its own chunk, or before), or the columns changed
            rows.append((rel, tuple(r if c.kind == COLUMN_UNCHANGED_TOAST else c
                                    for c, r in zip(cells, row, strict=True))))
        return rows

    def commit_ordinal(self, txn: TxnInfo | None) -> int | None:
        """The ordinal of COMMIT in a watermark transaction this client got rows in (they renumber it)."""
        if not self.commit_ordinals or txn is None:
            return None
        found = self.commit_ordinals.pop(id(txn), None)
        return found[1] if found is not None and found[0] is txn else None
