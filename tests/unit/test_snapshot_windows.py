"""A client's watermark windows when the next chunk is read ahead (snapshot/window.py ClientBackfill.windows):
the runner queues window k+1 while window k waits for its high watermark, and H(k) and L(k+1) arrive in
one transaction. Each change counts against the window open at its place in the stream only; a dropped
window's watermark is ignored and holds nothing up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from test_v1wire import relation  # type: ignore[import-not-found]  # a sibling test module

from walstream._proto import walstream_v1_pb2 as pb
from walstream.delivery.acks import DeliveryGroup
from walstream.delivery.v1.adapter import WATERMARK_PREFIX, Encoder, V1Item
from walstream.delivery.v1.typed import TypedCatalog
from walstream.events.change import ChangeEvent, Op, RelationInfo, TxnInfo
from walstream.events.values import TypeCatalog
from walstream.snapshot.copytext import CopyChunk
from walstream.snapshot.reader import Snapshot
from walstream.snapshot.window import Chunk, ClientBackfill, Window
from walstream.source.messages import Cell


class _History:
    """No transaction decoded before the windows: the visibility guard has nothing to check."""

    def __init__(self) -> None:
        self.recent_xids: Sequence[int] = ()
        self.xids_begun = 0


def _mark(content: bytes, lsn: int, txn: TxnInfo) -> ChangeEvent:
    return ChangeEvent(Op.MESSAGE, lsn, txn, 1, message_prefix=WATERMARK_PREFIX, message_content=content,
                       message_transactional=True)


def _insert(rel: RelationInfo, key: bytes, lsn: int) -> ChangeEvent:
    return ChangeEvent(Op.INSERT, lsn, TxnInfo(500 + lsn, lsn, 0), 1, rel, new=(Cell("t", key), Cell("t", b"new")))


def _keys(deliveries: list[tuple[int, object]]) -> list[str]:
    assert len(deliveries) == 1
    group = deliveries[0][1]
    assert isinstance(group, DeliveryGroup)
    items: list[V1Item] = list(group.items)
    return [e.new.values[0].text for e in pb.Batch.FromString(b"".join(i.data for i in items)).events]


def test_windows_read_ahead_take_each_change_in_stream_order() -> None:
    async def run() -> None:
        rel = relation((25, True), (25, False))
        backfill = ClientBackfill(Encoder(TypedCatalog(TypeCatalog())), _History())
        first, second, dropped = (Window("bf/run", seq, rel.relation_id, ("c0",)) for seq in (1, 2, 3))
        snapshot = Snapshot.parse("1:1:")
        first.chunk = Chunk(rel, CopyChunk(b"1\tv\t1\n2\tv\t2\n3\tv\t3\n", 3, 2), snapshot)
        second.chunk = Chunk(rel, CopyChunk(b"4\tv\t4\n5\tv\t5\n6\tv\t6\n", 3, 2), snapshot)
        backfill.windows.extend([first, second])  # the second read ahead, its L to come with the first's H
        txn = TxnInfo(900, 100, 0)

        assert backfill.on_watermark(_mark(first.low, 10, TxnInfo(800, 10, 0))) == []
        backfill.on_delivered(_insert(rel, b"2", 20))  # in the first window
        rows = backfill.on_watermark(_mark(first.high, 100, txn))  # H(1) and L(2): one transaction
        assert _keys(rows) == ["1", "3"] and first.outcome.result().superseded == 1
        assert backfill.window is second and not second.opened
        assert backfill.on_watermark(_mark(second.low, 100, txn)) == [] and second.opened
        backfill.on_delivered(_insert(rel, b"5", 120))  # in the second window
        backfill.windows.append(dropped)  # a third, read ahead and then dropped: the second is read again
        backfill.drop(dropped)
        assert backfill.on_watermark(_mark(dropped.low, 130, TxnInfo(901, 130, 0))) == []  # ignored
        rows = backfill.on_watermark(_mark(second.high, 140, TxnInfo(902, 140, 0)))
        assert _keys(rows) == ["4", "6"] and second.outcome.result().superseded == 1
        assert backfill.window is None

    asyncio.run(run())


def test_a_change_between_two_windows_cancels_nothing() -> None:
    async def run() -> None:
        rel = relation((25, True), (25, False))
        backfill = ClientBackfill(Encoder(TypedCatalog(TypeCatalog())), _History())
        first, second = (Window("bf/run", seq, rel.relation_id, ("c0",)) for seq in (1, 2))
        first.chunk = Chunk(rel, CopyChunk(b"1\tv\t1\n", 3, 2), Snapshot.parse("1:1:"))
        second.chunk = Chunk(rel, CopyChunk(b"2\tv\t2\n", 3, 2), Snapshot.parse("1:1:"))
        backfill.windows.extend([first, second])
        backfill.on_watermark(_mark(first.low, 10, TxnInfo(800, 10, 0)))
        assert _keys(backfill.on_watermark(_mark(first.high, 20, TxnInfo(801, 20, 0)))) == ["1"]
        backfill.on_delivered(_insert(rel, b"2", 30))  # after H(1), before L(2): no window is open
        backfill.on_watermark(_mark(second.low, 40, TxnInfo(802, 40, 0)))
        assert _keys(backfill.on_watermark(_mark(second.high, 50, TxnInfo(803, 50, 0)))) == ["2"]

    asyncio.run(run())
