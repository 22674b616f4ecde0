"""plugin.PluginService: the seed contract. One JSON event per gRPC message; clients ack with ClientAck.

A thin adapter over the internal event model: inserts, updates and deletes become one message each, a
TRUNCATE one message per truncated table (all with the TRUNCATE's LSN); transaction boundaries and logical
decoding messages have no form in this API and are not sent.

Each ServerMessage is written as its wire bytes (tags from walstream._proto.tags) and sent as they are, as the
v1 service does: building the message object and serialising it cost more per event than the bytes.
tests/unit/test_seed_wire.py checks the bytes against protobuf's own serialisation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import grpc

from ..._proto import plugin_pb2, tags
from ...events.change import ChangeEvent, Op
from ..hub import Client, Hub, finish_requests
from ..v1.wire import varint


class SeedAdapter:
    api = "seed"
    takes_begin = False  # expand() of a BEGIN is empty: the seed API has no transaction events (Hub.begin_events)

    def expand(self, event: ChangeEvent) -> Sequence[tuple[int, object]]:
        return _expand_once(event)

    @staticmethod
    def size(message: object) -> int:
        return len(message)  # type: ignore[arg-type]  # a ServerMessage's bytes


# Every client expands the same event in turn: build its messages once and share them.
_last: tuple[ChangeEvent | None, Sequence[tuple[int, object]]] = (None, ())


def _expand_once(event: ChangeEvent) -> Sequence[tuple[int, object]]:
    global _last
    if _last[0] is not event:
        _last = (event, _build(event))
    return _last[1]


# ServerMessage's field of each operation. InsertEvent, UpdateEvent, DeleteEvent and TruncateEvent number
# their fields alike (pg_lsn 1, schema 2, table 3, json_payload 4); tests/unit/test_seed_wire.py checks it.
_ROW_FIELDS = {Op.INSERT: tags.PLUGIN_SERVER_MESSAGE_INSERT, Op.UPDATE: tags.PLUGIN_SERVER_MESSAGE_UPDATE,
               Op.DELETE: tags.PLUGIN_SERVER_MESSAGE_DELETE}
_LSN = bytes((tags.PLUGIN_INSERT_EVENT_PG_LSN,))
_SCHEMA, _TABLE, _PAYLOAD = (bytes((t,)) for t in (tags.PLUGIN_INSERT_EVENT_SCHEMA, tags.PLUGIN_INSERT_EVENT_TABLE,
                                                   tags.PLUGIN_INSERT_EVENT_JSON_PAYLOAD))
_names: dict[tuple[str, str], bytes] = {}  # (schema, table) -> their two fields, encoded once


def _name_fields(schema: str, table: str) -> bytes:
    fields = _names.get((schema, table))
    if fields is None:
        s, t = schema.encode(), table.encode()
        if len(_names) >= 4096:
            _names.clear()
        fields = _names[(schema, table)] = b"".join((
            _SCHEMA + varint(len(s)) + s if s else b"", _TABLE + varint(len(t)) + t if t else b""))
    return fields


def server_message(field: int, lsn: int, schema: str, table: str, payload: bytes | None) -> bytes:
    """ServerMessage{field: XxxEvent{pg_lsn, schema, table[, json_payload]}} as protobuf serialises it
    (proto3 leaves out empty strings and a zero LSN)."""
    body = b"".join((_LSN + varint(lsn) if lsn else b"", _name_fields(schema, table),
                     _PAYLOAD + varint(len(payload)) + payload if payload else b""))
    return bytes((field,)) + varint(len(body)) + body


def _build(event: ChangeEvent) -> Sequence[tuple[int, object]]:
    op, rel, lsn = event.op, event.relation, event.lsn
    if rel is not None:
        field = _ROW_FIELDS.get(op)
        if field is not None:
            # json_bytes() is UTF-8 JSON: the string field takes the bytes as they are.
            return ((lsn, server_message(field, lsn, rel.schema, rel.table, event.json_bytes())),)
    if op is Op.TRUNCATE:
        return tuple((lsn, server_message(tags.PLUGIN_SERVER_MESSAGE_TRUNCATE, lsn, t.schema, t.table, None))
                     for t in event.truncated)
    return ()


def add_to_server(servicer: SeedService, server: grpc.aio.Server) -> None:
    """Register the service. Like the generated add_PluginServiceServicer_to_server, except that Session's
    responses are bytes already (a ServerMessage each), sent as they are."""
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.Session, request_deserializer=plugin_pb2.ClientMessage.FromString, response_serializer=None)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("plugin.PluginService",
                                                                          {"Session": handler}),))


class SeedService:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def Session(  # noqa: N802 (name fixed by the proto)
        self,
        request_iterator: AsyncIterator[plugin_pb2.ClientMessage],
        context: grpc.aio.ServicerContext[plugin_pb2.ClientMessage, bytes],
    ) -> AsyncIterator[bytes]:
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
