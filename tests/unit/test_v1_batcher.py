"""The v1 batcher's relation metadata: a batch holds one version of each relation its events use.

A snapshot chunk read before an ALTER TABLE is delivered at its high watermark, which can follow changes
made after the ALTER: events of two versions of one relation then sit next to each other in the queue.
"""

from __future__ import annotations

import asyncio
from functools import partial

from walstream._proto import walstream_v1_pb2 as pb
from walstream.delivery.acks import AckTracker
from walstream.delivery.hub import Client, Hub
from walstream.delivery.v1.adapter import Encoder, Subscription, V1Adapter, V1Item
from walstream.delivery.v1.service import _Batcher
from walstream.delivery.v1.typed import TypedCatalog
from walstream.events.change import RelationInfo
from walstream.events.values import TypeCatalog
from walstream.source.messages import RelationColumn


def relation(*names: str) -> RelationInfo:
    cols = tuple(RelationColumn(1 if i == 0 else 0, name, 25, -1) for i, name in enumerate(names))
    return RelationInfo(16385, "public", "t", "d", cols, tuple(str for _ in cols), (0,),
                        partial(bytes.decode, encoding="utf-8"))


def test_a_batch_never_mixes_two_versions_of_a_relation() -> None:
    async def batches() -> list[pb.SubscribeResponse]:
        encoder = Encoder(TypedCatalog(TypeCatalog()))
        sub = Subscription()
        client = Client("c", V1Adapter(encoder, sub))
        batcher = _Batcher(Hub(AckTracker(), 100, 100), client, encoder, sub)
        old, new = relation("id", "v"), relation("id", "v", "extra")

        def item(rel: RelationInfo) -> V1Item:
            return V1Item.of(pb.Event(op=pb.UPDATE, relation_id=rel.relation_id), (rel,))

        acks: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        client.queue.extend([item(new), item(new)])  # the client gets the new version first
        out = [await batcher.next(acks)]
        client.queue.extend([item(new), item(old), item(old), item(new)])  # then a chunk read before the ALTER
        while client.queue or batcher.carry:
            out.append(await batcher.next(acks))
        return [pb.SubscribeResponse.FromString(data) for data in out if data is not None]

    got = [([len(r.columns) for r in b.batch.relations], len(b.batch.events)) for b in asyncio.run(batches())]
    assert got == [([3], 2), ([], 1), ([2], 2), ([3], 1)]


def test_pieces_of_a_snapshot_chunk_count_as_their_events() -> None:
    """A piece (V1Item of several events) fills a batch by its event count: max_events holds."""
    async def batches() -> list[pb.SubscribeResponse]:
        encoder = Encoder(TypedCatalog(TypeCatalog()))
        sub = Subscription(max_events=5)
        client = Client("c", V1Adapter(encoder, sub))
        batcher = _Batcher(Hub(AckTracker(), 100, 100), client, encoder, sub)
        rel = relation("id", "v")

        def piece(count: int) -> V1Item:
            one = V1Item.of(pb.Event(op=pb.SNAPSHOT, lsn=7, relation_id=rel.relation_id), (rel,))
            return V1Item(one.data * count, pb.SNAPSHOT, 7, (rel,), count)

        acks: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        client.queue.extend([piece(3), piece(3), piece(1), piece(5), piece(1)])
        out = []
        while client.queue or batcher.carry:
            out.append(await batcher.next(acks))
        return [pb.SubscribeResponse.FromString(data) for data in out if data is not None]

    assert [len(b.batch.events) for b in asyncio.run(batches())] == [3, 4, 5, 1]
