"""The seed API's ServerMessage bytes (delivery/seed/service.py writes them by hand) against protobuf's own
serialisation of the same message, for every operation and the edge values proto3 leaves out."""

from __future__ import annotations

import pytest

from walstream._proto import plugin_pb2, tags
from walstream.delivery.seed.service import server_message

EVENTS = {"insert": (plugin_pb2.InsertEvent, tags.PLUGIN_SERVER_MESSAGE_INSERT),
          "update": (plugin_pb2.UpdateEvent, tags.PLUGIN_SERVER_MESSAGE_UPDATE),
          "delete": (plugin_pb2.DeleteEvent, tags.PLUGIN_SERVER_MESSAGE_DELETE)}
CASES = [
    (0x16B3748, "public", "orders", b'{"id":1}'),
    (0, "public", "orders", b'{"id":1}'),  # a zero LSN is left out
    ((1 << 64) - 1, "s", "t", b"{}"),
    (1, "sch\u00e9ma", "t\u00e4ble \U0001f600", "{\"note\":\"\u00e9\"}".encode()),
    (42, "public", "wide", b'{"x":"' + b"y" * 70_000 + b'"}'),  # lengths of three varint bytes
    (42, "", "", b""),  # empty strings are left out
]


@pytest.mark.parametrize("op", sorted(EVENTS))
@pytest.mark.parametrize(("lsn", "schema", "table", "payload"), CASES)
def test_row_messages_are_what_protobuf_writes(op: str, lsn: int, schema: str, table: str, payload: bytes) -> None:
    event_type, field = EVENTS[op]
    expected = plugin_pb2.ServerMessage()
    getattr(expected, op).CopyFrom(event_type(pg_lsn=lsn, schema=schema, table=table, json_payload=payload.decode()))
    assert server_message(field, lsn, schema, table, payload) == expected.SerializeToString()


@pytest.mark.parametrize(("lsn", "schema", "table", "payload"), CASES)
def test_truncate_messages_are_what_protobuf_writes(lsn: int, schema: str, table: str, payload: bytes) -> None:
    expected = plugin_pb2.ServerMessage(truncate=plugin_pb2.TruncateEvent(pg_lsn=lsn, schema=schema, table=table))
    assert server_message(tags.PLUGIN_SERVER_MESSAGE_TRUNCATE, lsn, schema, table, None) == \
        expected.SerializeToString()


def test_the_four_event_messages_number_their_fields_alike() -> None:
    """server_message writes every kind with InsertEvent's tags."""
    for kind in ("UPDATE", "DELETE", "TRUNCATE"):
        for field in ("PG_LSN", "SCHEMA", "TABLE"):
            assert getattr(tags, f"PLUGIN_{kind}_EVENT_{field}") == getattr(tags, f"PLUGIN_INSERT_EVENT_{field}")
    assert tags.PLUGIN_UPDATE_EVENT_JSON_PAYLOAD == tags.PLUGIN_DELETE_EVENT_JSON_PAYLOAD == \
        tags.PLUGIN_INSERT_EVENT_JSON_PAYLOAD
