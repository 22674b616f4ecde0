"""The same WAL streamed by walstream on each hot path (the C accelerator, and WALSTREAM_NATIVE=0): every
walstream.v1 Event, every Relation and every seed ServerMessage is the same bytes.

A slot per hot path and API is created before the workload, so every process decodes identical WAL, and each
client is alone on its walstream from the start (a client that connects to a walstream already streaming
gets only what comes after it). The bytes are compared
as they come off the wire (raw gRPC responses split into their fields), not parsed and re-serialised, so a
difference in how either path frames a message shows. Batch boundaries may differ; events may not.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support import WalstreamProcess, until_none

from walstream import native
from walstream._proto import plugin_pb2
from walstream._proto import walstream_v1_pb2 as pb

TYPES = {  # column type -> a value (SQL); the columns of `t`, with the native kinds and some of the others
    "int2": "-7", "int4": "2147483647", "int8": "-9223372036854775808", "numeric": "'-12.5000'",
    "bool": "true", "text": "E'caf\\u00e9 \"q\" \\\\ \\t'", "varchar(20)": "'v'", "bpchar(3)": "'ab'",
    "name": "'nm'", "json": "'{\"a\": [1, 2.50]}'", "jsonb": "'{\"b\": null}'", "float8": "'-Infinity'",
    "timestamp": "'2024-02-29 03:04:05.678'", "timestamptz": "'1999-12-31 23:59:59.999999+05:30'",
    "date": "'infinity'", "time": "'13:14:15.5'", "bytea": "'\\x00ff'", "int4[]": "'{1,NULL,3}'",
    "uuid": "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "mood": "'sad'",
}
ROWS = 1200  # one transaction's burst, interleaved with another table


def workload(testdb) -> None:
    cols = [f"c{i}" for i in range(len(TYPES))]
    values = ", ".join(TYPES.values())
    with testdb.conn.cursor() as cur:
        cur.execute("BEGIN")
        for i in range(1, ROWS + 1):
            cur.execute(f"INSERT INTO t (id, {', '.join(cols)}) VALUES ({i}, {values})")
            if i % 100 == 0:
                cur.execute(f"INSERT INTO other VALUES ({i}, repeat('x', {i}))")
            if i % 250 == 0:
                cur.execute(f"INSERT INTO t (id) VALUES ({-i})")  # every column NULL
        cur.execute("COMMIT")
    testdb.execute(
        "INSERT INTO t (id, c5) SELECT 5000 + g, 'g' || g FROM generate_series(1, 300) g",  # one statement
        "UPDATE t SET c0 = 1 WHERE id <= 10", "UPDATE t SET id = id + 100000 WHERE id = 11",
        "INSERT INTO toasty VALUES (1, (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g), 0)",
        "UPDATE toasty SET n = 1",  # the big value is not resent: unchanged TOAST
        "DELETE FROM t WHERE id BETWEEN 20 AND 30", "DELETE FROM toasty",
        "SELECT pg_logical_emit_message(true, 'app', 'in a transaction')",
        "TRUNCATE other",
        "INSERT INTO fin VALUES (1)",  # the last change: both clients stop at it
    )


def _fields(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(tag, payload) of each length-delimited field of a message (the only kind Batch and
    SubscribeResponse hold)."""
    i = 0
    while i < len(data):
        tag, i = _varint(data, i)
        assert tag & 7 == 2, f"field {tag >> 3} is not length-delimited"
        size, i = _varint(data, i)
        yield tag, data[i:i + size]
        i += size


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 127) << shift
        shift += 7
        if byte < 128:
            return value, i


def v1_stream(addr: str) -> tuple[list[bytes], list[bytes]]:
    """Every Event and Relation of a walstream.v1 subscription (boundaries and messages on), as raw bytes,
    acking each batch, until the row of `fin`."""
    requests: queue.Queue[pb.SubscribeRequest | None] = queue.Queue()
    requests.put(pb.SubscribeRequest(subscription=pb.Subscription(transaction_boundaries=True,
                                                                   logical_messages=True)))
    events: list[bytes] = []
    relations: list[bytes] = []
    fin_id = 0
    with grpc.insecure_channel(addr) as channel:
        call = channel.stream_stream("/walstream.v1.Walstream/Subscribe",
                                     request_serializer=pb.SubscribeRequest.SerializeToString,
                                     response_deserializer=None)(until_none(requests), timeout=120)
        try:
            for response in call:
                for tag, batch in _fields(response):
                    assert tag >> 3 == 1  # SubscribeResponse.batch
                    last = 0
                    for field, data in _fields(batch):
                        if field >> 3 == 1:
                            relations.append(data)
                            rel = pb.Relation.FromString(data)
                            fin_id = rel.relation_id if rel.table == "fin" else fin_id
                        else:
                            events.append(data)
                            event = pb.Event.FromString(data)
                            last = max(last, event.lsn)
                            if event.op == pb.INSERT and fin_id and event.relation_id == fin_id:
                                return events, relations
                    requests.put(pb.SubscribeRequest(ack=pb.Ack(lsn=last)))
        finally:
            requests.put(None)
            call.cancel()
    raise AssertionError(f"the stream ended after {len(events)} events without the row of fin")


def seed_stream(addr: str) -> list[bytes]:
    """Every seed ServerMessage as raw bytes, acking each, until the row of `fin`."""
    acks: queue.Queue[plugin_pb2.ClientMessage | None] = queue.Queue()
    out: list[bytes] = []
    with grpc.insecure_channel(addr) as channel:
        call = channel.stream_stream("/plugin.PluginService/Session",
                                     request_serializer=plugin_pb2.ClientMessage.SerializeToString,
                                     response_deserializer=None)(until_none(acks), timeout=120)
        try:
            for data in call:
                out.append(data)
                message = plugin_pb2.ServerMessage.FromString(data)
                row = getattr(message, message.WhichOneof("msg") or "insert")
                acks.put(plugin_pb2.ClientMessage(ack=plugin_pb2.ClientAck(pg_lsn=row.pg_lsn)))
                if message.HasField("insert") and message.insert.table == "fin":
                    return out
        finally:
            acks.put(None)
            call.cancel()
    raise AssertionError(f"the stream ended after {len(out)} messages without the row of fin")


def streamed_by(testdb, slots: dict[str, str], implementation: str,
                log_dir: Path) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(v1 events, v1 relations, seed messages): each API from its own slot by its own walstream. (Both
    clients of one walstream raced: the second to connect missed what the first was sent before it.)"""
    env = {"WALSTREAM_NATIVE": "1" if implementation == "native" else "0"}
    banner = "hot path: native" if implementation == "native" else "hot path: pure Python"
    with WalstreamProcess(testdb.dsn, "pub", slots["v1"], log_dir=log_dir, env=env) as ws:
        ws.wait_log(banner)
        events, relations = v1_stream(ws.addr)
    with WalstreamProcess(testdb.dsn, "pub", slots["seed"], log_dir=log_dir, env=env) as ws:
        ws.wait_log(banner)
        seed = seed_stream(ws.addr)
    return events, relations, seed


@pytest.mark.skipif("native" not in native.available_implementations(), reason="the accelerator is not built")
def test_both_hot_paths_send_the_same_bytes(testdb, tmp_path):
    cols = ", ".join(f"c{i} {t}" for i, t in enumerate(TYPES))
    testdb.execute(
        "CREATE TYPE mood AS ENUM ('happy', 'sad')",
        f"CREATE TABLE t (id int PRIMARY KEY, {cols})",
        "CREATE TABLE other (id int PRIMARY KEY, note text)",
        "CREATE TABLE toasty (id int PRIMARY KEY, big text, n int)",
        "ALTER TABLE toasty ALTER big SET STORAGE EXTERNAL",  # stored out of line even when it compresses
        "CREATE TABLE fin (id int PRIMARY KEY)",
        "CREATE PUBLICATION pub FOR ALL TABLES",
    )
    slots = {impl: {api: f"{testdb.slot}_{impl}_{api}" for api in ("v1", "seed")} for impl in ("native", "python")}
    for by_api in slots.values():
        for slot in by_api.values():
            testdb.execute(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")
    workload(testdb)
    native_events, native_relations, native_seed = streamed_by(testdb, slots["native"], "native", tmp_path)
    python_events, python_relations, python_seed = streamed_by(testdb, slots["python"], "python", tmp_path)
    inserts = sum(1 for e in native_events if pb.Event.FromString(e).op == pb.INSERT)
    assert inserts == ROWS + ROWS // 100 + ROWS // 250 + 300 + 1 + 1  # t, other, NULL rows, the statement, toasty, fin
    assert native_relations == python_relations
    assert len(native_events) == len(python_events)
    for i, (a, b) in enumerate(zip(native_events, python_events, strict=True)):
        assert a == b, f"event {i} differs:\nnative {pb.Event.FromString(a)}\npython {pb.Event.FromString(b)}"
    assert native_seed == python_seed
    assert {plugin_pb2.ServerMessage.FromString(m).WhichOneof("msg") for m in native_seed} == \
        {"insert", "update", "delete", "truncate"}
