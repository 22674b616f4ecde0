"""The benchmark's client processes, each run as `python bench/clients.py MODE '<json config>'`.

Minimal raw gRPC clients (the generated message classes and a bare channel, not walstream's client library),
so the benchmark measures the server. Each process imports everything and opens its channel first, prints
`ready`, then waits for one line of JSON on stdin (the PIDs to account CPU for) before it subscribes; it
prints its result as one line of JSON on stdout.

Modes:
  batched   walstream.v1 Subscribe: parses every Batch (upb decodes every field of every event), reads each
            event's op and lsn, counts rows and acks each batch's last lsn.
  seed      plugin.PluginService Session: one event per message; parses each json_payload with orjson and
            acks (every `ack_every`-th event and the last; an ack covers every event sent before it).
  ceiling   a bare grpc.aio server of plugin.PluginService that streams N copies of one prepared message:
            what grpcio itself allows for one event per message on this machine (use with `seed`).
  writer    inserts rows carrying time.time_ns() at a fixed rate (the latency workload).
  latency   batched or seed client that records receive time minus the row's timestamp.
  slow      a deliberately slow batched or seed client (the memory workload).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import grpc  # noqa: E402
import orjson  # noqa: E402
from procstat import cpu_seconds  # noqa: E402

from walstream._proto import plugin_pb2 as seed_pb  # noqa: E402
from walstream._proto import walstream_v1_pb2 as v1_pb  # noqa: E402

CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]
ROW_OPS = frozenset({v1_pb.INSERT, v1_pb.UPDATE, v1_pb.DELETE})


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _handshake() -> dict[str, Any]:
    print("ready", flush=True)
    line = sys.stdin.readline()
    return json.loads(line) if line.strip() else {}


def _cpus(pids: dict[str, int]) -> dict[str, float | None]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


class _Acks:
    """The request side of a bidirectional call: a first message, then whatever is put, until None."""

    def __init__(self, first: Any) -> None:
        self.first = first
        self.q: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def __iter__(self) -> Iterator[Any]:
        if self.first is not None:
            yield self.first
        while True:
            item = self.q.get()
            if item is None:
                return
            yield item

    def put(self, item: Any) -> None:
        self.q.put(item)


def _subscription(cfg: dict[str, Any]) -> v1_pb.SubscribeRequest:
    sub = v1_pb.Subscription(client_name=cfg.get("name", "bench"))
    sub.batch.max_events = cfg.get("max_events", 0)
    sub.batch.max_bytes = cfg.get("max_bytes", 0)
    sub.batch.max_delay_ms = cfg.get("max_delay_ms", 0)
    return v1_pb.SubscribeRequest(subscription=sub)


def _v1_call(channel: grpc.Channel) -> Any:
    return channel.stream_stream("/walstream.v1.Walstream/Subscribe",
                                 request_serializer=v1_pb.SubscribeRequest.SerializeToString,
                                 response_deserializer=v1_pb.SubscribeResponse.FromString)


def _seed_call(channel: grpc.Channel) -> Any:
    return channel.stream_stream("/plugin.PluginService/Session",
                                 request_serializer=seed_pb.ClientMessage.SerializeToString,
                                 response_deserializer=seed_pb.ServerMessage.FromString)


def _finish(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


# --- drains -------------------------------------------------------------------------------------------


def run_batched(cfg: dict[str, Any]) -> None:
    expected = cfg["rows"]
    channel = grpc.insecure_channel(cfg["addr"], options=CHANNEL_OPTIONS)
    call = _v1_call(channel)
    acks = _Acks(_subscription(cfg))
    pids = _handshake()
    grpc.channel_ready_future(channel).result(timeout=30)
    cpu0, my0 = _cpus(pids), own_cpu()
    t0 = time.perf_counter()
    rows = batches = events = 0
    t_first = None
    relations = {}
    responses = call(iter(acks))
    for response in responses:
        batch = response.batch
        if t_first is None:
            t_first = time.perf_counter()
        for rel in batch.relations:
            relations[rel.relation_id] = rel
        evs = batch.events
        last = 0
        for ev in evs:
            if ev.op in ROW_OPS:
                rows += 1
            last = ev.lsn
        events += len(evs)
        batches += 1
        if evs:
            acks.put(v1_pb.SubscribeRequest(ack=v1_pb.Ack(lsn=last)))
        if rows >= expected:
            break
    t1 = time.perf_counter()
    cpu1, my1 = _cpus(pids), own_cpu()
    acks.put(None)
    responses.cancel()
    channel.close()
    _finish({"rows": rows, "events": events, "batches": batches, "seconds": t1 - t0,
             "first_seconds": (t_first or t1) - t0, "cpu0": cpu0, "cpu1": cpu1, "client_cpu": my1 - my0})


def run_seed(cfg: dict[str, Any]) -> None:
    expected, every = cfg["rows"], max(1, cfg.get("ack_every", 1))
    channel = grpc.insecure_channel(cfg["addr"], options=CHANNEL_OPTIONS)
    call = _seed_call(channel)
    acks = _Acks(None)
    loads, ack_msg, ack = orjson.loads, seed_pb.ClientMessage, seed_pb.ClientAck
    pids = _handshake()
    grpc.channel_ready_future(channel).result(timeout=30)
    cpu0, my0 = _cpus(pids), own_cpu()
    t0 = time.perf_counter()
    rows = 0
    t_first = None
    responses = call(iter(acks))
    for msg in responses:
        kind = msg.WhichOneof("msg")
        ev = getattr(msg, kind)
        if kind != "truncate":
            loads(ev.json_payload)
            rows += 1
        if rows % every == 0 or rows >= expected:
            acks.put(ack_msg(ack=ack(pg_lsn=ev.pg_lsn)))
        if t_first is None:
            t_first = time.perf_counter()
        if rows >= expected:
            break
    t1 = time.perf_counter()
    cpu1, my1 = _cpus(pids), own_cpu()
    acks.put(None)
    responses.cancel()
    channel.close()
    _finish({"rows": rows, "events": rows, "seconds": t1 - t0, "first_seconds": (t_first or t1) - t0,
             "cpu0": cpu0, "cpu1": cpu1, "client_cpu": my1 - my0})


# --- grpcio's own ceiling -----------------------------------------------------------------------------


def run_ceiling(cfg: dict[str, Any]) -> None:
    """A bare server: N copies of one InsertEvent as big as a bulk row's, acks read and dropped."""
    from walstream._proto import plugin_pb2_grpc

    payload = cfg.get("payload") or json.dumps(
        {"id": 123456, "account": 456, "amount": 234.56, "label": "label-123456",
         "created": "2024-01-02T03:04:05.678901+00:00"}, separators=(",", ":"))
    message = seed_pb.ServerMessage(insert=seed_pb.InsertEvent(pg_lsn=0x1234567, schema="public", table="bulk",
                                                               json_payload=payload))

    class Servicer(plugin_pb2_grpc.PluginServiceServicer):
        async def Session(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
            async def drain() -> None:
                async for _ in request_iterator:
                    pass

            reader = asyncio.ensure_future(drain())
            try:
                for _ in range(cfg["rows"]):
                    yield message
                await reader
            finally:
                reader.cancel()

    async def serve() -> None:
        server = grpc.aio.server()
        plugin_pb2_grpc.add_PluginServiceServicer_to_server(Servicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(json.dumps({"port": port}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # until told to stop
        await server.stop(0)

    asyncio.run(serve())


# --- latency --------------------------------------------------------------------------------------------


def run_writer(cfg: dict[str, Any]) -> None:
    """`count` single-row transactions at `rate` per second, each carrying time.time_ns() before it runs."""
    import psycopg2

    conn = psycopg2.connect(cfg["dsn"])
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(f"SET synchronous_commit = {cfg['synchronous_commit']}")
    sql = "INSERT INTO lat (t_ns, note) VALUES (%s, 'latency')"
    for _ in range(cfg.get("warmup", 50)):  # relation and type look-ups happen on the first rows
        cur.execute(sql, (0,))
    _handshake()
    time.sleep(0.5)
    rate, count = cfg["rate"], cfg["count"]
    commits = []
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t = time.time_ns()
        cur.execute(sql, (t,))
        commits.append(time.time_ns() - t)
    elapsed = time.perf_counter() - start
    conn.close()
    commits.sort()
    _finish({"count": count, "seconds": elapsed, "rate": count / elapsed,
             "commit_ms_p50": commits[len(commits) // 2] / 1e6,
             "commit_ms_p99": commits[min(len(commits) - 1, int(len(commits) * 0.99))] / 1e6})


def run_latency(cfg: dict[str, Any]) -> None:
    """Receive `count` timestamped rows (rows with t_ns 0 are warm-up); report receive minus timestamp."""
    count, api = cfg["count"], cfg["api"]
    channel = grpc.insecure_channel(cfg["addr"], options=CHANNEL_OPTIONS)
    lat: list[int] = []
    if api == "batched":
        acks = _Acks(_subscription(cfg))
        responses = _v1_call(channel)(iter(acks))
        print("ready", flush=True)
        column = None
        for response in responses:
            now = time.time_ns()
            batch = response.batch
            for rel in batch.relations:
                if rel.table == "lat":
                    column = [c.name for c in rel.columns].index("t_ns")
            last = 0
            for ev in batch.events:
                last = ev.lsn
                if ev.op == v1_pb.INSERT and column is not None:
                    t = ev.new.values[column].int64
                    if t:
                        lat.append(now - t)
            if batch.events:
                acks.put(v1_pb.SubscribeRequest(ack=v1_pb.Ack(lsn=last)))
            if len(lat) >= count:
                break
    else:
        acks = _Acks(None)
        responses = _seed_call(channel)(iter(acks))
        print("ready", flush=True)
        for msg in responses:
            now = time.time_ns()
            ev = msg.insert
            t = orjson.loads(ev.json_payload)["t_ns"]
            if t:
                lat.append(now - t)
            acks.put(seed_pb.ClientMessage(ack=seed_pb.ClientAck(pg_lsn=ev.pg_lsn)))
            if len(lat) >= count:
                break
    acks.put(None)
    responses.cancel()
    channel.close()
    lat.sort()
    n = len(lat)

    def pct(p: float) -> float:
        return lat[min(n - 1, int(n * p))] / 1e6 if n else float("nan")

    _finish({"count": n, "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99), "max_ms": pct(1.0)})


# --- a deliberately slow client -------------------------------------------------------------------------


def run_slow(cfg: dict[str, Any]) -> None:
    """Handle `rate` rows per second (sleeping in between), ack what was handled, stop after `seconds`.
    With `hold_acks`, take everything as fast as it comes and acknowledge nothing: walstream then holds
    --max-unacked events (the most it ever holds) and stops reading."""
    rate, seconds, api, hold = cfg["rate"], cfg["seconds"], cfg["api"], cfg.get("hold_acks", False)
    if hold:
        rate = 1e12
    channel = grpc.insecure_channel(cfg["addr"], options=CHANNEL_OPTIONS)
    _handshake()
    rows = 0
    start = time.perf_counter()
    if api == "batched":
        acks = _Acks(_subscription(cfg))
        responses = _v1_call(channel)(iter(acks))
    else:
        acks = _Acks(None)
        responses = _seed_call(channel)(iter(acks))
    timer = threading.Timer(seconds, responses.cancel)  # also when the backlog runs out first
    timer.start()
    try:
        if api == "batched":
            for response in responses:
                evs = response.batch.events
                rows += len(evs)
                delay = start + rows / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                if evs and not hold:
                    acks.put(v1_pb.SubscribeRequest(ack=v1_pb.Ack(lsn=evs[-1].lsn)))
        else:
            for msg in responses:
                rows += 1
                if rows % 100 == 0:
                    delay = start + rows / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    if not hold:
                        acks.put(seed_pb.ClientMessage(ack=seed_pb.ClientAck(pg_lsn=msg.insert.pg_lsn)))
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
            raise
    timer.cancel()
    acks.put(None)
    channel.close()
    _finish({"rows": rows, "seconds": time.perf_counter() - start})


MODES = {"batched": run_batched, "seed": run_seed, "ceiling": run_ceiling, "writer": run_writer,
         "latency": run_latency, "slow": run_slow}


def main() -> None:
    MODES[sys.argv[1]](json.loads(sys.argv[2]))


if __name__ == "__main__":
    main()
