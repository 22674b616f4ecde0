"""walstream start --sink nats://...: a real nats-server with JetStream, read back by an independent client.

Proof: a pgbench workload streamed through the sink replays into the same tables PostgreSQL has, each
change exactly once in the stream; after kill -9 of walstream, after the broker is killed and restarted
mid-stream, and with the broker down at start. Oversized changes stop walstream with a clear error and
the slot keeps them.
"""

from __future__ import annotations

import asyncio
import base64
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import nats
import orjson
import pytest
from brokers import NatsServer
from sinkcheck import (
    PGBENCH_KEYS,
    Message,
    apply_to_database,
    confirmed_flush,
    pgbench_init,
    pgbench_replica,
    replay,
    run_pgbench,
    snapshot,
    wait_pgbench,
)
from support import WalstreamProcess, wait_until, walstream_env

from walstream._proto import walstream_v1_pb2 as pb
from walstream._proto import walstream_v1_pb2_grpc
from walstream.client import Client, SinkStatus
from walstream.pgcluster import free_port

if TYPE_CHECKING:
    from conftest import TestDB

pytestmark = pytest.mark.slow  # on PostgreSQL 15 and 18 (the `pg` fixture, tests/conftest.py)

STREAM = "WALSTREAM"


async def _read_stream(url: str, stream: str = STREAM) -> list[Message]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            return []
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            raw = await js.get_msg(stream, seq)
            out.append(Message(dict(raw.headers or {}), orjson.loads(raw.data or b"{}"), str(raw.subject)))
        return out
    finally:
        await nc.close()


def read_stream(url: str) -> list[Message]:
    return asyncio.run(_read_stream(url))


def stream_count(url: str) -> int:
    async def count() -> int:
        nc = await nats.connect(url)
        try:
            return int((await nc.jetstream().stream_info(STREAM)).state.messages)
        except nats.js.errors.NotFoundError:
            return 0
        finally:
            await nc.close()
    return asyncio.run(count())


@pytest.fixture
def nats_server(tmp_path: Path):
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


def _walstream(db: TestDB, url: str, tmp_path: Path, *extra: str) -> WalstreamProcess:
    return WalstreamProcess(db.dsn, "pub", db.slot, temporary=False, log_dir=tmp_path,
                            extra=("--sink", url, *extra))


def _all_stored(db: TestDB, url: str, end_lsn: int, expected: int | None = None) -> bool:
    """The slot confirmed the end of the workload: every change of it is acknowledged by the broker."""
    return confirmed_flush(db, db.slot) >= end_lsn and (expected is None or stream_count(url) >= expected)


def _check(db: TestDB, url: str, initial: dict[str, Counter[str]]) -> list[Message]:
    messages = read_stream(url)
    positions = Counter(m.position for m in messages)
    dups = [p for p, n in positions.items() if n > 1]
    assert not dups, f"{len(dups)} changes are in the stream more than once, e.g. {dups[:3]}"
    ids = Counter(m.headers["Nats-Msg-Id"] for m in messages)
    assert max(ids.values()) == 1
    assert replay(initial, messages, PGBENCH_KEYS) == snapshot(db), "the stream does not replay into the tables"
    return messages


def test_pgbench_through_nats_replays_identically(testdb: TestDB, nats_server: NatsServer, tmp_path: Path) -> None:
    pgbench_init(testdb, "pub")
    initial = snapshot(testdb)
    with _walstream(testdb, nats_server.url, tmp_path) as ws:
        ws.wait_log("streaming slot")
        # A gRPC client beside the sink: `walstream tail --format json` prints the objects the sink publishes.
        tail = subprocess.Popen([sys.executable, "-m", "walstream", "tail", "--server", ws.addr, "--format", "json"],
                                stdout=subprocess.PIPE, env=walstream_env())
        assert tail.stdout is not None
        lines: list[bytes] = []
        reader = threading.Thread(target=lambda: lines.extend(tail.stdout or ()), daemon=True)
        reader.start()  # tail acknowledges what it printed: it must not block on a full pipe
        try:
            ws.wait_log("connected", count=2)  # the sink and tail
            wait_pgbench(run_pgbench(testdb, 4, 150))  # 600 transactions, 2400 changes
            end = testdb.wal_lsn()
            wait_until("the slot to confirm the workload", lambda: _all_stored(testdb, nats_server.url, end), 120,
                       ws.log)
            printed = [orjson.loads(line) for line in lines[:2400]]
        finally:
            tail.terminate()
            tail.wait(10)
        assert ws.stop() == 0
    messages = _check(testdb, nats_server.url, initial)
    assert len(messages) == 2400
    with pgbench_replica(testdb) as replica:  # and into a second database, as SQL: identical tables
        assert snapshot(replica) == initial
        apply_to_database(replica, messages, PGBENCH_KEYS)
        assert snapshot(replica) == snapshot(testdb)
    assert [m.body for m in messages] == printed  # the same objects, in the same order
    first = next(m for m in messages if m.body["table"] == "pgbench_accounts")
    assert first.where == "walstream.public.pgbench_accounts"
    assert first.headers["op"] == "UPDATE" and first.headers["Nats-Msg-Id"].startswith(f"{testdb.slot}:")
    assert set(first.body) >= {"op", "schema", "table", "lsn", "commit_lsn", "ordinal", "xid", "commit_time",
                               "new", "old"}


def test_kill9_walstream_mid_stream_no_loss_no_duplicates(testdb: TestDB, nats_server: NatsServer,
                                                          tmp_path: Path) -> None:
    pgbench_init(testdb, "pub")
    initial = snapshot(testdb)
    first = _walstream(testdb, nats_server.url, tmp_path).start()
    first.wait_log("streaming slot")
    bench = run_pgbench(testdb, 2, 1000)  # 2000 transactions, 8000 changes
    wait_until("changes in the stream", lambda: stream_count(nats_server.url) >= 1500, 120, first.log)
    first.kill()  # SIGKILL: no shutdown, acknowledgements in flight are lost
    acked_before = confirmed_flush(testdb, testdb.slot)
    second = _walstream(testdb, nats_server.url, tmp_path).start()
    try:
        wait_pgbench(bench)
        end = testdb.wal_lsn()
        wait_until("the slot to confirm the workload", lambda: _all_stored(testdb, nats_server.url, end), 180,
                   second.log)
        assert second.stop() == 0
    finally:
        second.kill()
    messages = _check(testdb, nats_server.url, initial)
    assert len(messages) == 8000
    assert acked_before < end
    # The restart published again what the slot had not confirmed; JetStream dropped those (Nats-Msg-Id).
    dropped = re.search(r"(\d+) duplicates dropped by the broker", second.log())
    assert dropped is not None and int(dropped.group(1)) > 0, second.log()[-3000:]


def test_broker_lost_mid_stream_and_down_at_start(testdb: TestDB, tmp_path: Path) -> None:
    pgbench_init(testdb, "pub")
    initial = snapshot(testdb)
    server = NatsServer(tmp_path / "nats")  # not started: walstream waits for it
    with _walstream(testdb, server.url, tmp_path) as ws:
        ws.wait_log("cannot connect")
        bench = run_pgbench(testdb, 2, 600)  # 1200 transactions, 4800 changes
        time.sleep(0)  # the workload runs while the broker is still down
        server.start()
        try:
            wait_until("changes in the stream", lambda: stream_count(server.url) >= 1000, 120, ws.log)
            server.kill()  # lost mid-stream: no shutdown, nothing flushed
            ws.wait_log("connection lost")
            server.start()  # the same port and store
            wait_pgbench(bench)
            end = testdb.wal_lsn()
            wait_until("the slot to confirm the workload", lambda: _all_stored(testdb, server.url, end), 180, ws.log)
            assert ws.stop() == 0
            messages = _check(testdb, server.url, initial)
            assert len(messages) == 4800
        finally:
            server.stop()


def test_oversized_change_stops_with_a_clear_error_and_the_slot_keeps_it(testdb: TestDB, tmp_path: Path) -> None:
    testdb.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)", "CREATE PUBLICATION pub FOR TABLE docs")
    server = NatsServer(tmp_path / "nats", max_payload=16384).start()
    try:
        ws = _walstream(testdb, server.url, tmp_path).start()
        ws.wait_log("streaming slot")
        testdb.execute("INSERT INTO docs VALUES (1, 'small')")
        before_big = testdb.wal_lsn()
        testdb.execute("INSERT INTO docs VALUES (2, repeat('x', 40000))")
        testdb.execute("INSERT INTO docs VALUES (3, 'after')")
        assert ws.proc is not None
        try:
            code = ws.proc.wait(60)
        except subprocess.TimeoutExpired:
            tail = ws.log()[-6000:]
            ws.kill()
            pytest.fail(f"walstream did not stop on the oversized change; its log ends:\n{tail}")
        assert code == 1
        log = ws.log()
        assert "INSERT on public.docs at LSN" in log and "over the broker's limit of 16384 bytes" in log, log[-3000:]
        assert [m.body["new"]["id"] for m in read_stream(server.url)] == [1]
        assert confirmed_flush(testdb, testdb.slot) <= before_big  # the big change is still in the slot
        # The rule's way out: a larger limit, and a restart delivers it and what followed.
        server.stop()
        server.max_payload = 1 << 20
        server.start()
        with _walstream(testdb, server.url, tmp_path) as again:
            end = testdb.wal_lsn()
            wait_until("the rest", lambda: _all_stored(testdb, server.url, end, 3), 60, again.log)
            assert again.stop() == 0
        assert [m.body["new"]["id"] for m in read_stream(server.url)] == [1, 2, 3]
    finally:
        server.stop()


def _metrics(port: int) -> dict[str, float]:
    """The walstream_sink_* samples of /metrics by name (one sink: the label is left out)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("walstream_sink_"):
            name_labels, value = line.rsplit(" ", 1)
            samples[name_labels.split("{")[0]] = float(value)
    return samples


def _status(addr: str) -> pb.StatusResponse:
    with grpc.insecure_channel(addr) as channel:
        return walstream_v1_pb2_grpc.WalstreamStub(channel).Status(pb.StatusRequest(), timeout=10)


def test_slow_broker_bounded_memory_metrics_and_protobuf(testdb: TestDB, nats_server: NatsServer,
                                                          tmp_path: Path) -> None:
    """A broker that stops answering (SIGSTOP): the sink keeps at most --sink-max-in-flight records out and
    reading pauses at --client-queue-size; once it answers again every change arrives once."""
    testdb.execute("CREATE TABLE items (id int PRIMARY KEY, note text)", "CREATE PUBLICATION pub FOR TABLE items")
    mport = free_port()
    ws = _walstream(testdb, nats_server.url, tmp_path, "--sink-format", "protobuf", "--client-queue-size", "300",
                    "--sink-max-in-flight", "50", "--sink-ack-timeout", "2", "--metrics-port", str(mport),
                    "--metrics-host", "127.0.0.1")
    with ws:
        ws.wait_log("streaming slot")
        assert nats_server.proc is not None
        nats_server.proc.send_signal(signal.SIGSTOP)
        try:
            for start in range(0, 3000, 100):
                testdb.execute(f"INSERT INTO items SELECT g, 'note ' || g FROM generate_series({start + 1}, "
                               f"{start + 100}) g")
            end = testdb.wal_lsn()
            ws.wait_log("no acknowledgement within 2 s", timeout=30)
            sample = _metrics(mport)
            assert sample["walstream_sink_in_flight"] <= 50
            assert 0 < sample["walstream_sink_queued"] <= 300
            assert sample["walstream_sink_connected"] == 0 and sample["walstream_sink_retries_total"] >= 1
            assert sample["walstream_sink_lag_seconds"] > 0
            assert confirmed_flush(testdb, testdb.slot) < end
            status = _status(ws.addr)
            assert status.connected_clients == 1 and len(status.sinks) == 1
            assert status.sinks[0].url == nats_server.url and not status.sinks[0].connected
            assert status.sinks[0].in_flight <= 50 and status.sinks[0].queued <= 300
        finally:
            nats_server.proc.send_signal(signal.SIGCONT)
        wait_until("the slot to confirm the inserts", lambda: _all_stored(testdb, nats_server.url, end), 120, ws.log)
        sample = _metrics(mport)
        assert sample["walstream_sink_acked_total"] == 3000 and sample["walstream_sink_in_flight"] == 0
        sink = _status(ws.addr).sinks[0]
        assert sink.connected and sink.acked == 3000 and sink.retries >= 1
        with Client(ws.addr) as client:  # the client library's Status has them too
            assert client.status().sinks == (SinkStatus(nats_server.url, True, sink.published, 3000, sink.retries,
                                                         0, 0),)
        assert ws.stop() == 0

    async def read() -> list[tuple[pb.Event, pb.Relation, dict[str, str]]]:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        out = []
        for seq in range(1, (await js.stream_info(STREAM)).state.last_seq + 1):
            raw = await js.get_msg(STREAM, seq)
            headers = dict(raw.headers or {})
            out.append((pb.Event.FromString(raw.data or b""),
                        pb.Relation.FromString(base64.b64decode(headers["relation"])), headers))
        await nc.close()
        return out

    records = asyncio.run(read())
    assert len(records) == 3000
    event, relation, headers = records[0]
    assert headers["content-type"].startswith("application/x-protobuf")
    assert (relation.schema, relation.table, [c.name for c in relation.columns]) == ("public", "items", ["id", "note"])
    assert event.op == pb.INSERT and event.relation_id == relation.relation_id
    assert sorted(e.new.values[0].int64 for e, _, _ in records) == list(range(1, 3001))
    assert Counter(h["Nats-Msg-Id"] for _, _, h in records).most_common(1)[0][1] == 1


def test_transactions_marked_with_commit_records(testdb: TestDB, nats_server: NatsServer, tmp_path: Path) -> None:
    """--sink-transactions: after a transaction's records, one COMMIT record on walstream.commit that says
    how many there were, so a consumer can rebuild whole transactions."""
    testdb.execute("CREATE TABLE a (id int PRIMARY KEY, v text)", "CREATE TABLE b (id int PRIMARY KEY)",
                   "CREATE TABLE unpublished (id int)", "CREATE PUBLICATION pub FOR TABLE a, b")
    with _walstream(testdb, nats_server.url, tmp_path, "--sink-transactions") as ws:
        ws.wait_log("streaming slot")
        testdb.execute("BEGIN; INSERT INTO a VALUES (1, 'x'), (2, 'y'); COMMIT")
        testdb.execute("BEGIN; UPDATE a SET v = 'z' WHERE id = 1; DELETE FROM a WHERE id = 2; "
                       "INSERT INTO b VALUES (7); COMMIT")
        testdb.execute("INSERT INTO unpublished VALUES (1)")  # no records: no COMMIT record either
        testdb.execute("TRUNCATE a, b")
        end = testdb.wal_lsn()
        wait_until("the slot to confirm", lambda: _all_stored(testdb, nats_server.url, end, 10), 60, ws.log)
        assert ws.stop() == 0
    messages = read_stream(nats_server.url)
    ops = [(m.where, m.body["op"], m.headers.get("changes")) for m in messages]
    assert ops == [
        ("walstream.public.a", "INSERT", None), ("walstream.public.a", "INSERT", None),
        ("walstream.commit", "COMMIT", "2"),
        ("walstream.public.a", "UPDATE", None), ("walstream.public.a", "DELETE", None),
        ("walstream.public.b", "INSERT", None), ("walstream.commit", "COMMIT", "3"),
        ("walstream.public.a", "TRUNCATE", None), ("walstream.public.b", "TRUNCATE", None),
        ("walstream.commit", "COMMIT", "2"),
    ]
    for commit in (m for m in messages if m.body["op"] == "COMMIT"):
        same = [m for m in messages if m.headers["commit_lsn"] == commit.headers["commit_lsn"]]
        assert len(same) == int(commit.headers["changes"]) + 1
        assert commit.body["end_lsn"] == commit.headers["end_lsn"] and commit.body["xid"] == int(commit.headers["xid"])
        assert commit.headers["Nats-Msg-Id"].endswith(":commit")
