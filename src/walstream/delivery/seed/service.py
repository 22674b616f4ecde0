"""plugin.PluginService: the seed contract. One JSON event per gRPC message; clients ack with ClientAck.

A thin adapter over the internal event model: inserts, updates and deletes become one message each, a
TRUNCATE one message per truncated table (all with the TRUNCATE's LSN); transaction boundaries and logical
decoding messages have no form in this API and are not sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import grpc

from ..._proto import plugin_pb2, plugin_pb2_grpc
from ...events.change import ChangeEvent, Op
from ..hub import Client, Hub, finish_requests


class SeedAdapter:
    api = "seed"

    def expand(self, event: ChangeEvent) -> Sequence[tuple[int, object]]:
        return _expand_once(event)

    @staticmethod
    def size(message: object) -> int:
        return message.ByteSize()  # type: ignore[attr-defined, no-any-return]  # a plugin_pb2.ServerMessage


# Every client expands the same event in turn: build its messages once and share them.
_last: tuple[ChangeEvent | None, Sequence[tuple[int, object]]] = (None, ())


def _expand_once(event: ChangeEvent) -> Sequence[tuple[int, object]]:
    global _last
    if _last[0] is not event:
        _last = (event, _build(event))
    return _last[1]


_ServerMessage = plugin_pb2.ServerMessage
_ROW_FIELDS = {Op.INSERT: "insert", Op.UPDATE: "update", Op.DELETE: "delete"}


def _build(event: ChangeEvent) -> Sequence[tuple[int, object]]:
    op, rel, lsn = event.op, event.relation, event.lsn
    if rel is not None:
        name = _ROW_FIELDS.get(op)
        if name is not None:
            # Filled in place: three times cheaper than building the event and copying it into the message.
            message = _ServerMessage()
            row = getattr(message, name)
            row.pg_lsn = lsn
            row.schema = rel.schema
            row.table = rel.table
            row.json_payload = event.json_bytes()  # UTF-8 JSON: a string field takes the bytes as they are
            return ((lsn, message),)
    if op is Op.TRUNCATE:
        return tuple(
            (lsn, plugin_pb2.ServerMessage(truncate=plugin_pb2.TruncateEvent(
                pg_lsn=lsn, schema=t.schema, table=t.table)))
            for t in event.truncated
        )
    return ()


class SeedService(plugin_pb2_grpc.PluginServiceServicer):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def Session(  # noqa: N802 (name fixed by the proto)
        self,
        request_iterator: AsyncIterator[plugin_pb2.ClientMessage],
        context: grpc.aio.ServicerContext[plugin_pb2.ClientMessage, plugin_pb2.ServerMessage],
    ) -> AsyncIterator[plugin_pb2.ServerMessage]:
        client = self.hub.connect(SeedAdapter(), context.peer())
        if client is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "walstream is shutting down")
            return
        acks = asyncio.ensure_future(self._read_acks(request_iterator, client))
        try:
            while True:
                batch_task = asyncio.ensure_future(client.next_batch())
                done, _ = await asyncio.wait({batch_task, acks}, return_when=asyncio.FIRST_COMPLETED)
                if batch_task not in done:
                    # The client half-closed its side: it is finished; end the call normally.
                    batch_task.cancel()
                    await finish_requests(acks, context)
                    return
                batch = batch_task.result()
                if batch is None:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "walstream is shutting down")
                    return
                for message in batch:
                    yield message  # type: ignore[misc]
        finally:
            acks.cancel()
            self.hub.disconnect(client)

    async def _read_acks(self, requests: AsyncIterator[plugin_pb2.ClientMessage], client: Client) -> None:
        async for request in requests:
            if request.WhichOneof("msg") != "ack":
                self.hub.reject(client, "a message without an ack")
                continue
            self.hub.ack(client, request.ack.pg_lsn)
