"""walstream.v1.Walstream: batched, typed, transactional streaming (Subscribe) and Status.

A thin layer over the hub: each subscriber gets a V1Adapter (walstream.delivery.v1.adapter) that picks and
encodes its events; this module turns the subscriber's queue into Batches and its acks into hub acks (the
contract of walstream.delivery.acks, shared with the seed API).

Batching: a batch is sent when it holds max_events events or max_bytes bytes, or when nothing more is
queued: at once when the replication stream has run dry (max_delay_ms 0: the reader added nothing in two
turns of the event loop), else after waiting up to max_delay_ms for more. Relation metadata goes in the
first batch that needs it, and again after the relation changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol, cast

import grpc
from google.protobuf.message import DecodeError

from ... import __version__
from ..._proto import tags, walstream_v1_pb2_grpc
from ..._proto import walstream_v1_pb2 as pb
from ...events.change import RelationInfo
from ...sinks.attach import status_of as sink_status
from ...source import catalog
from ..hub import Client, Hub, finish_requests
from .adapter import Encoder, InvalidSubscription, Subscription, V1Adapter, V1Item, V1Run, same_relation
from .wire import field

if TYPE_CHECKING:
    from ...snapshot.runner import Plan, SnapshotService

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[pb.SubscribeRequest, pb.SubscribeResponse]
IDLE_TURNS = 2  # turns of the event loop without new events after which the replication stream is dry
MID_TRANSACTION_WAIT = 0.005  # seconds a batch waits for more of a transaction it holds part of


class BackfillFailed(Exception):
    """A subscriber's snapshot stopped: the call ends with this gRPC status code (name) and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Progress(Protocol):
    """walstream.snapshot.window.ProgressItem: a SubscribeResponse.progress, or the error ending the call."""

    data: bytes
    error: tuple[str, str] | None


class _Batcher:
    """One subscriber's queue -> batches within its limits, with the relations it has not been sent."""

    def __init__(self, hub: Hub, client: Client, encoder: Encoder, sub: Subscription) -> None:
        self.hub, self.client, self.encoder, self.sub = hub, client, encoder, sub
        self.carry: deque[object] = deque()  # taken from the queue, not sent yet
        self.sent: dict[int, RelationInfo] = {}  # relation_id -> the version this subscriber has
        self.closed = False  # the hub closed this client
        self._size = 0  # encoded bytes of the batch being filled
        self._events = 0  # events in it (a snapshot piece or a V1Run is one item of several events)
        # The version of each relation the batch's events use, sent before or in it: a batch holds one
        # version per relation (a snapshot chunk read before an ALTER TABLE can follow changes made after).
        self._using: dict[int, RelationInfo] = {}

    async def next(self, acks: asyncio.Future[None]) -> bytes | None:
        """The next batch; None once the call should end (half-closed by the client, or closed by the hub
        with nothing left to send)."""
        sub = self.sub
        batch: list[V1Item | V1Run] = []
        rels: dict[int, RelationInfo] = {}
        self._size = self._events = 0
        self._using = {}
        full = self._fill(batch, rels)
        while not batch:
            if self.carry and not isinstance(self.carry[0], V1Item):
                return self._progress(self.carry.popleft())
            if self.closed or acks.done():
                return None
            self.carry.extend(await self._take(sub.max_events, acks, None))
            full = self._fill(batch, rels)
        if sub.max_delay_ms == 0:
            # Flush as soon as the reader stops adding: it gets two turns of the event loop (one for a
            # replication socket that just became readable to wake it) to add more. Inside a transaction
            # the rest of it is on its way (PostgreSQL sends a transaction whole, once committed): a
            # socket that ran dry there means only that the walsender was not scheduled, so wait up to
            # MID_TRANSACTION_WAIT for more instead of sending many small batches.
            idle = 0
            mid_transaction_deadline = 0.0
            while not full and not self.closed:
                if idle >= IDLE_TURNS:
                    if not self.hub.tracker.in_transaction or acks.done():
                        break
                    now = time.monotonic()
                    mid_transaction_deadline = mid_transaction_deadline or now + MID_TRANSACTION_WAIT
                    if now >= mid_transaction_deadline:
                        break
                    took = await self._take(sub.max_events - self._events, acks, mid_transaction_deadline - now)
                    self.carry.extend(took)
                    full, idle = self._fill(batch, rels), 0 if took else idle
                    continue
                await asyncio.sleep(0)
                if self.client.queue:
                    full, idle = self._fill(batch, rels), 0
                else:
                    idle += 1
        else:
            deadline = time.monotonic() + sub.max_delay_ms / 1000
            while not full and not self.closed and not acks.done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.carry.extend(await self._take(sub.max_events - self._events, acks, remaining))
                full = self._fill(batch, rels)
        if len(batch) > 1 and batch[-1].op == pb.BEGIN:
            self.carry.appendleft(batch.pop())  # a BEGIN goes with its transaction's first event
            self._events -= 1
        self.sent.update(rels)
        # A SubscribeResponse holding a Batch, written as bytes: every item is already an encoded
        # Batch.events field, so the batch is one join (building messages would copy each event twice).
        parts = [self.encoder.relation_bytes(r) for r in rels.values()]
        parts.extend([i.data if type(i) is V1Item else i.bytes() for i in batch])  # type: ignore[union-attr]
        return field(tags.SUBSCRIBE_RESPONSE_BATCH, b"".join(parts))

    def _fill(self, batch: list[V1Item | V1Run], rels: dict[int, RelationInfo]) -> bool:
        """Move what is already queued into the batch, without waiting; True when the batch is full. A V1Run
        goes in whole or, where the batch fills up inside it, cut there (its rest stays first in line)."""
        sub, carry, queue, sent, using = self.sub, self.carry, self.client.queue, self.sent, self._using
        took = full = False
        while self._events < sub.max_events:
            if carry:
                item = carry.popleft()
            elif queue:
                item = queue.popleft()
                took = True
            else:
                break
            if not isinstance(item, (V1Item, V1Run)):  # a snapshot progress (walstream.snapshot): sent alone
                carry.appendleft(item)
                full = True
                break
            cost = item.size
            new: list[RelationInfo] = []
            for rel in item.relations:
                used = using.get(rel.relation_id)
                if used is not None and used is not rel and not same_relation(used, rel):
                    full = True  # another version of a relation this batch uses: next batch
                    break
                have = rels.get(rel.relation_id) or sent.get(rel.relation_id)
                if have is rel:
                    using[rel.relation_id] = rel
                    continue
                if have is not None and same_relation(have, rel):
                    sent[rel.relation_id] = using[rel.relation_id] = rel
                    continue
                new.append(rel)
                cost += len(self.encoder.relation_bytes(rel))
            if full:
                carry.appendleft(item)
                break
            count = item.count
            if type(item) is V1Run:
                extra = cost - item.size  # the relation metadata it brings
                count = item.count
                rows = item.fit(sub.max_events - self._events, sub.max_bytes - self._size - extra)
                if rows == 0:
                    if batch:
                        carry.appendleft(item)
                        full = True
                        break
                    rows = 1  # an empty batch takes one row whatever its size
                if rows < count:
                    item, rest = item.split(rows)
                    carry.appendleft(rest)
                    cost, count = extra + item.size, rows
                    full = True
            elif batch and (self._size + cost > sub.max_bytes or self._events + item.count > sub.max_events):
                carry.appendleft(item)
                full = True
                break
            batch.append(item)
            self._size += cost
            self._events += count
            for rel in new:
                rels[rel.relation_id] = using[rel.relation_id] = rel
            if full:
                break
        if took:
            self.hub.capacity.set()  # the queue has room again: the reader may be waiting for it
        return full or self._events >= sub.max_events

    @staticmethod
    def _progress(item: object) -> bytes:
        progress = cast("_Progress", item)
        if progress.error is not None:
            raise BackfillFailed(*progress.error)
        return progress.data

    async def _take(self, limit: int, acks: asyncio.Future[None], timeout: float | None) -> list[object]:
        """Queued messages, waiting up to timeout (None: no limit) for the first; [] if none came."""
        task = asyncio.ensure_future(self.client.next_batch(limit))
        waiting: set[asyncio.Future[object]] = {task, acks}  # type: ignore[arg-type]
        await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()  # safe: next_batch takes messages only after its wait is over
            return []
        got = task.result()
        if got is None:
            self.closed = True
            return []
        return got


def add_to_server(servicer: WalstreamServicer, server: grpc.aio.Server) -> None:
    """Register the service. Like the generated add_WalstreamServicer_to_server, except that Subscribe's
    responses are bytes already (see _Batcher.next), sent as they are."""
    handlers = {
        "Subscribe": grpc.stream_stream_rpc_method_handler(
            servicer.Subscribe, request_deserializer=pb.SubscribeRequest.FromString, response_serializer=None),
        "Status": grpc.unary_unary_rpc_method_handler(
            servicer.Status, request_deserializer=pb.StatusRequest.FromString,
            response_serializer=pb.StatusResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("walstream.v1.Walstream", handlers),))


class StatusSource(Protocol):
    async def __call__(self) -> pb.StatusResponse: ...


class WalstreamServicer(walstream_v1_pb2_grpc.WalstreamServicer):
    def __init__(self, hub: Hub, encoder: Encoder, status: StatusSource,
                 snapshots: SnapshotService | None = None) -> None:
        self.hub = hub
        self.encoder = encoder
        self.status = status
        self.snapshots = snapshots  # None: snapshot requests are refused
        self.batches_sent = 0  # read by walstream.ops.metrics

    async def Subscribe(  # noqa: N802 (name fixed by the proto)
        self, request_iterator: AsyncIterator[pb.SubscribeRequest], context: Context,
    ) -> AsyncIterator[bytes]:
        requests = request_iterator.__aiter__()
        try:
            first: pb.SubscribeRequest | None = await requests.__anext__()
        except StopAsyncIteration:
            first = None
        except DecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request message: {exc}")
            return
        kind = first.WhichOneof("msg") if first is not None else None
        if first is None or kind != "subscription":
            got = "the call ended first" if first is None else f"got {kind or 'an empty message'}"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"subscription: the first message must carry a Subscription ({got})")
            return
        try:
            sub = Subscription.parse(first.subscription)
        except InvalidSubscription as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        plan = None
        if first.subscription.HasField("snapshot"):
            plan = await self._plan_snapshot(sub, first.subscription.snapshot, context)
            if plan is None:
                return
        peer = context.peer() + (f" ({sub.client_name})" if sub.client_name else "")
        adapter = V1Adapter(self.encoder, sub)
        client = self.hub.connect(adapter, peer)
        if client is None:
            if plan is not None:
                plan.close()
            await context.abort(grpc.StatusCode.UNAVAILABLE, "walstream is shutting down")
            return
        acks = asyncio.ensure_future(self._read_acks(requests, client))
        batcher = _Batcher(self.hub, client, self.encoder, sub)
        backfill = self.snapshots.start(plan, client, adapter) if plan is not None and self.snapshots else None
        try:
            while True:
                try:
                    response = await batcher.next(acks)
                except BackfillFailed as exc:
                    await context.abort(getattr(grpc.StatusCode, exc.code), str(exc))
                    return
                if response is None:
                    if acks.done():  # the client's side ended: half-closed, or a request did not parse
                        await finish_requests(acks, context)
                        return
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "walstream is shutting down")
                    return
                self.batches_sent += 1
                yield response
        finally:
            acks.cancel()
            if backfill is not None:
                backfill.cancel()
            self.hub.disconnect(client)

    async def _plan_snapshot(self, sub: Subscription, request: pb.SnapshotRequest,
                             context: Context) -> Plan | None:
        """The client's validated backfill, or None after ending the call with the reason."""
        from ...snapshot.request import SnapshotUnavailable  # noqa: PLC0415 (walstream.snapshot imports this)
        from ...snapshot.token import TokenRefused  # noqa: PLC0415

        if self.snapshots is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "snapshot: not available on this server")
            return None
        try:
            return await self.snapshots.prepare(sub, request)
        except InvalidSubscription as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except TokenRefused as exc:
            code = grpc.StatusCode.INVALID_ARGUMENT if exc.malformed else grpc.StatusCode.FAILED_PRECONDITION
            await context.abort(code, str(exc))
        except SnapshotUnavailable as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return None

    async def _read_acks(self, requests: AsyncIterator[pb.SubscribeRequest], client: Client) -> None:
        async for request in requests:
            if request.WhichOneof("msg") != "ack":
                other = "another subscription" if request.HasField("subscription") else "an empty message"
                self.hub.reject(client, f"{other} after its subscription")
                continue
            self.hub.ack(client, request.ack.lsn)

    async def Status(  # noqa: N802 (name fixed by the proto)
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext[pb.StatusRequest, pb.StatusResponse],
    ) -> pb.StatusResponse:
        response = await self.status()
        if self.snapshots is not None:
            response.snapshots.extend(self.snapshots.status())
        return response


# --- Status -------------------------------------------------------------------------------------------


class PipelineView(Protocol):
    streaming: bool
    written_lsn: int
    server_version: int
    pgoutput_version: int


def format_server_version(version: int) -> str:
    """150006 -> '15.6'; 90624 -> '9.6.24'; 0 (not connected yet) -> ''."""
    if not version:
        return ""
    if version >= 100000:
        return f"{version // 10000}.{version % 10000}"
    return f"{version // 10000}.{version // 100 % 100}.{version % 100}"


class ServerStatus:
    """The Status answer: positions from the hub and the pipeline; the server's WAL position over a plain
    connection of its own (opened on first use and again after it was lost), queried off the event loop."""

    def __init__(self, hub: Hub, pipeline: PipelineView, slot: str, temporary: bool, conn_str: str,
                 connect: Callable[[str], catalog.Connection] = catalog.connect) -> None:
        self.hub, self.pipeline, self.slot, self.temporary = hub, pipeline, slot, temporary
        self._side = catalog.SideConnection(conn_str, connect)

    def positions(self) -> tuple[int, int] | None:
        """(the server's WAL position, the slot's confirmed_flush_lsn), or None when PostgreSQL cannot be
        reached."""
        try:
            return self._side.run(lambda conn: catalog.wal_positions(conn, self.slot))
        except catalog.SideQueryFailed as exc:
            log.debug("Status: cannot read the server's WAL position: %s", exc)
            return None

    async def __call__(self) -> pb.StatusResponse:
        positions = await asyncio.to_thread(self.positions)
        pipeline, confirmed = self.pipeline, self.hub.tracker.confirmed_lsn
        if positions is not None:
            confirmed = max(confirmed, positions[1])
        return pb.StatusResponse(
            slot=self.slot,
            temporary=self.temporary,
            confirmed_lsn=confirmed,
            written_lsn=max(pipeline.written_lsn, confirmed),
            lag_bytes=max(0, positions[0] - confirmed) if positions is not None else 0,
            connected_clients=len(self.hub.clients),
            server_version=format_server_version(pipeline.server_version),
            walstream_version=__version__,
            streaming=pipeline.streaming and positions is not None,
            pgoutput_version=pipeline.pgoutput_version,
            sinks=[pb.SinkStatus(**sink) for sink in sink_status(self.hub.clients)],
        )

    def close(self) -> None:
        self._side.close()
