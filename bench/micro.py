"""In-process micro-benchmark of the hot path: µs per row per stage, pure Python vs native side by side.

Generated pgoutput Insert messages (the shapes of bench/workloads.py) go through the stages the session
loop runs for each row: decode (decoder.plain_insert), assemble (Assembler.insert -> ChangeEvent), v1 encode
(the batched API's Event bytes, Encoder.item) and seed JSON (ChangeEvent.json_bytes); and, native only, the
three v1 stages at once as runs of 256 Inserts (Assembler.plain_run -> Encoder.run_items, events/run.py).
No PostgreSQL, no gRPC: this measures the CPU walstream spends per row, so a change to the hot path is
measured before and after.

`--txns N` adds the whole server side for transactions of `--txn-rows` rows (1: the `small` workload): the
session loop (session.Pipeline) reads Begin, Insert(s), Commit from a scripted source, through the assembler,
the hub, the ack ledger and a walstream.v1 subscriber's batcher, which a client task drains and acks batch by
batch, as bench/clients.py does (its parse of each batch is timed apart and left out), per implementation.

    .venv/bin/python bench/micro.py [--rows 20000] [--repeat 5] [--txns 20000 --txn-rows 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import time
from collections.abc import Callable
from typing import Any

from walstream import native
from walstream._proto import walstream_v1_pb2 as pb
from walstream.config import StartConfig
from walstream.delivery.acks import AckTracker
from walstream.delivery.hub import Hub
from walstream.delivery.v1.adapter import Encoder, Subscription, V1Adapter
from walstream.delivery.v1.service import _Batcher
from walstream.delivery.v1.typed import TypedCatalog
from walstream.events.assembler import Assembler
from walstream.events.change import ChangeEvent
from walstream.events.text import text_decoder
from walstream.events.values import TypeCatalog
from walstream.session import Pipeline
from walstream.source.base import StreamInfo
from walstream.source.decoder import decode_message, insert_decoder, plain_insert

# (name, columns as (name, type oid, key), one row's column texts for row g)
SHAPES: dict[str, tuple[list[tuple[str, int, bool]], Callable[[int], list[str]]]] = {
    "bulk": ([("id", 20, True), ("account", 23, False), ("amount", 1700, False), ("label", 25, False),
              ("created", 1184, False)],
             lambda g: [str(g), str(g % 1000), f"{(g % 100000) / 100.0:.2f}", f"label-{g}",
                        "2026-12-04 20:10:11.123456+00"]),
    "wide": ([("id", 20, True), ("doc", 3802, False), ("body", 25, False)],
             lambda g: [str(g), f'{{"id": {g}, "tags": ["a", "b", {g % 10}], "name": "customer {g}", "score": 1.5, '
                        '"active": true, "address": {"zip": "00042", "city": "City 42"}}',
                        "0123456789abcdef" * 64]),
    "lat": ([("id", 20, True), ("t_ns", 20, False), ("note", 25, False)],
            lambda g: [str(g), str(1_700_000_000_000_000_000 + g), "x"]),
}
RELID = 16385


def _cstr(s: str) -> bytes:
    return s.encode() + b"\0"


def relation_message(columns: list[tuple[str, int, bool]]) -> bytes:
    out = b"R" + struct.pack(">I", RELID) + _cstr("public") + _cstr("t") + b"d" + struct.pack(">H", len(columns))
    for name, oid, key in columns:
        out += bytes((int(key),)) + _cstr(name) + struct.pack(">Ii", oid, -1)
    return out


def insert_message(texts: list[str]) -> bytes:
    out = b"I" + struct.pack(">I", RELID) + b"N" + struct.pack(">H", len(texts))
    for t in texts:
        data = t.encode()
        out += b"t" + struct.pack(">i", len(data)) + data
    return out


class _Sink:
    def __init__(self) -> None:
        self.events: list[ChangeEvent] = []

    def begin(self, xid: int, commit_lsn: int) -> Any:
        return None

    def publish(self, event: ChangeEvent, txn: Any, raw: bytes = b"") -> None:
        self.events.append(event)

    def commit(self, txn: Any, end_lsn: int) -> None:
        pass


class _RunSink(_Sink):
    def __init__(self, encode: Callable[[Any], object]) -> None:
        super().__init__()
        self.encode = encode

    def publish_run(self, run: Any, txn: Any) -> None:
        self.encode(run)


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(shape: str, rows: int, repeat: int) -> dict[str, float]:
    columns, texts = SHAPES[shape]
    msgs = [insert_message(texts(g)) for g in range(1, rows + 1)]
    sink = _Sink()
    asm = Assembler(sink, TypeCatalog(), text_decoder("utf-8"))
    asm.handle(decode_message(b"B" + struct.pack(">QqI", 1 << 32, 0, 1000)), 1 << 32)
    asm.handle(decode_message(relation_message(columns)), 1 << 32)
    decoded = [plain_insert(m) for m in msgs]
    lsn = 1 << 32

    def decode(impl: str) -> Callable[[], None]:
        with native.using(impl):
            plain = insert_decoder()

        def run() -> None:
            for m in msgs:
                plain(m)
        return run

    def assemble() -> None:
        sink.events.clear()
        insert = asm.insert
        for row in decoded:
            assert row is not None
            insert(row[0], row[1], lsn)

    assemble()
    events = list(sink.events)

    def v1(impl: str) -> Callable[[], None]:
        def run() -> None:
            encoder = Encoder(TypedCatalog(TypeCatalog()))  # a fresh encoder: no memo across runs
            item = encoder.item
            for e in events:
                item(e)
        return run

    def seed() -> None:
        for e in events:
            e.json_bytes()

    def runs() -> None:
        """decode + assemble + v1 encode at once, as runs of 256 Inserts (events/run.py): the native path."""
        encoder = Encoder(TypedCatalog(TypeCatalog()))
        run_sink = _RunSink(encoder.run_items)
        run_asm = Assembler(run_sink, TypeCatalog(), text_decoder("utf-8"))
        run_asm.handle(decode_message(b"B" + struct.pack(">QqI", 1 << 32, 0, 1000)), 1 << 32)
        run_asm.handle(decode_message(relation_message(columns)), 1 << 32)
        accelerated = native.plain_run()
        assert accelerated is not None
        plain = insert_decoder()
        for i in range(0, len(msgs), 256):
            run_asm.plain_run(lsns[i:i + 256], msgs[i:i + 256], accelerated[0], plain)

    lsns = [lsn] * len(msgs)

    us = 1e6 / rows
    result: dict[str, float] = {}
    for impl in native.available_implementations():
        result[f"decode ({impl})"] = _best(decode(impl), repeat) * us
    result["assemble"] = _best(assemble, repeat) * us
    for impl in native.available_implementations():
        with native.using(impl):
            result[f"v1 encode ({impl})"] = _best(v1(impl), repeat) * us
    result["seed json"] = _best(seed, repeat) * us
    if "native" in native.available_implementations():
        with native.using("native"):
            result["v1 runs, decode to Event (native)"] = _best(runs, repeat) * us
    return result


class _ScriptedSource:
    """A replication stream that has every message of the workload ready (session.Source)."""

    def __init__(self, messages: list[tuple[int, bytes]], wal_end: int) -> None:
        self.messages, self.next, self.wal_end = messages, 0, wal_end
        self.reply_requested = False
        self._r, self._w = os.pipe()

    async def open(self) -> StreamInfo:
        return StreamInfo(150000, 3, "utf-8", True, 0, 60.0)

    def read(self) -> tuple[int, bytes] | None:
        i = self.next
        if i < len(self.messages):
            self.next = i + 1
            return self.messages[i]
        return None

    def fileno(self) -> int:
        return self._r

    def send_status(self, write_lsn: int, flush_lsn: int) -> None:
        pass

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


def transaction_messages(shape: str, txns: int, rows: int) -> tuple[list[tuple[int, bytes]], int]:
    """(lsn, message) of `txns` transactions of `rows` Inserts each, as the walsender sends them, and the end
    LSN of the last. A timestamptz column holds each transaction's own time, as now() would."""
    columns, texts = SHAPES[shape]
    stamps = [i for i, (_, oid, _) in enumerate(columns) if oid == 1184]
    out = [(0, relation_message(columns))]
    lsn, row = 1 << 32, 1
    for xid in range(1000, 1000 + txns):
        final = lsn + 0x40 * (rows + 1)
        out.append((lsn, b"B" + struct.pack(">QqI", final, 800_000_000_000_000 + xid, xid)))
        for i in range(rows):
            cells = texts(row)
            for c in stamps:
                cells[c] = f"2026-12-04 20:{xid // 60 % 60:02}:{xid % 60:02}.{xid % 999983:06}+00"
            out.append((lsn + 0x40 * (i + 1), insert_message(cells)))
            row += 1
        out.append((final, b"C" + struct.pack(">bQQq", 0, final, final + 0x30, 800_000_000_000_000 + xid)))
        lsn = final + 0x30
    return out, lsn


async def _drain(shape: str, txns: int, rows: int) -> tuple[float, float]:
    """(CPU seconds of the server side, CPU seconds the client spent parsing batches)."""
    messages, end = transaction_messages(shape, txns, rows)
    config = StartConfig("host=/nowhere", "pub", "slot")
    hub = Hub(AckTracker(), config.client_queue_size, config.max_unacked, config.max_unacked_bytes)
    source = _ScriptedSource(messages, end)
    pipeline = Pipeline(config, config.connection, hub, TypeCatalog(), open_source=lambda create: source)
    encoder = Encoder(TypedCatalog(TypeCatalog()))
    sub = Subscription()
    client = hub.connect(V1Adapter(encoder, sub), "micro")
    assert client is not None
    batcher = _Batcher(hub, client, encoder, sub)
    acks: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # the client never half-closes
    parse = 0.0
    received = 0
    cpu0 = time.process_time()
    task = asyncio.ensure_future(pipeline.run())
    while received < txns * rows:
        data = await batcher.next(acks)
        assert data is not None
        t0 = time.process_time()
        events = pb.SubscribeResponse.FromString(data).batch.events
        received += len(events)
        last = events[-1].lsn
        parse += time.process_time() - t0
        hub.ack(client, last)
    while hub.tracker.confirmed_lsn < end:  # the last commit confirmed
        await asyncio.sleep(0)
    cpu = time.process_time() - cpu0
    pipeline.stopping.set()
    await task
    return cpu - parse, parse


def measure_transactions(shape: str, txns: int, rows: int, repeat: int) -> dict[str, float]:
    """µs per row of the server side (see the module's docstring), best of `repeat`, per implementation."""
    result: dict[str, float] = {}
    for impl in native.available_implementations():
        with native.using(impl):
            best = min(asyncio.run(_drain(shape, txns, rows))[0] for _ in range(repeat))
        result[f"pipeline ({impl})"] = best * 1e6 / (txns * rows)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--txns", type=int, default=0, help="also the server side for this many transactions")
    parser.add_argument("--txn-rows", type=int, default=1, help="rows in each of those transactions")
    args = parser.parse_args()
    print(f"implementations: {', '.join(native.available_implementations())}; µs per row, best of {args.repeat}")
    for shape in args.shapes.split(","):
        res = measure(shape, args.rows, args.repeat)
        print(f"{shape:6} " + "  ".join(f"{k} {v:6.2f}" for k, v in res.items()))
    if args.txns:
        res = measure_transactions("bulk", args.txns, args.txn_rows, args.repeat)
        print(f"{args.txns} transactions of {args.txn_rows} bulk row(s), server side: "
              + "  ".join(f"{k} {v:6.2f}" for k, v in res.items()))


if __name__ == "__main__":
    main()
