"""Operations' pure pieces: sizes, the CLI options, the pipeline's raw counters and the collector over them,
the retained-WAL warning, and health following the pipeline's state. No PostgreSQL, no network."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import psycopg2
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client import CollectorRegistry, generate_latest

from walstream.cli import main as cli
from walstream.config import StartConfig, parse_size
from walstream.delivery.acks import AckTracker
from walstream.delivery.hub import Hub
from walstream.errors import ConfigError
from walstream.events.change import Op
from walstream.events.values import TypeCatalog
from walstream.ops.health import API_SERVICES, Health
from walstream.ops.metrics import WalstreamCollector
from walstream.session import Pipeline
from walstream.source import messages as m
from walstream.source.catalog import SlotState
from walstream.source.messages import Cell, RelationColumn
from walstream.source.slot_monitor import SlotMonitor, format_size

CONN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
MB = 1024 * 1024


# -- sizes and options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "size"), [("1GB", 1024**3), ("512MB", 512 * MB), ("64kB", 65536),
                                            ("64KB", 65536), ("1024", 1024), ("1.5 GB", 3 * 512 * MB),
                                            ("0", 0), ("2tb", 2 * 1024**4), ("7B", 7)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GB", "1XB", "-1GB", "1 G", "one"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match=f"invalid size {text!r}: use a number and a unit"):
        parse_size(text)


def test_operations_options(monkeypatch: pytest.MonkeyPatch) -> None:
    args = cli.build_parser().parse_args(["start", "p", "s"])
    assert (args.metrics_port, args.metrics_host, args.retained_wal_warning) == (None, None, 1024**3)
    args = cli.build_parser().parse_args(["start", "p", "s", "--metrics-port", "9187", "--metrics-host", "::1",
                                          "--retained-wal-warning", "512MB"])
    assert (args.metrics_port, args.metrics_host, args.retained_wal_warning) == (9187, "::1", 512 * MB)


def test_bad_retained_wal_warning_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--connection", CONN, "start", "p", "s", "--retained-wal-warning", "1XB"])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == ("walstream: error: argument --retained-wal-warning: invalid size '1XB': use a number and a "
                   "unit, e.g. 512MB or 1GB (units: B, kB, MB, GB, TB; 0 turns the warning off) "
                   "(see `walstream start --help`)\n")


def test_bad_metrics_port(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--connection", CONN, "start", "p", "s", "--metrics-port", "http"])
    assert code == 2
    assert capsys.readouterr().err == ("walstream: error: argument --metrics-port: invalid port 'http': use a "
                                       "number 0-65535 (see `walstream start --help`)\n")
    with pytest.raises(ConfigError, match="invalid port 70000: use 0-65535"):
        StartConfig(CONN, "p", "s", metrics_port=70000)
    with pytest.raises(ConfigError, match="--metrics-host 127.0.0.1 needs --metrics-port"):
        StartConfig(CONN, "p", "s", metrics_host="127.0.0.1")


# -- the pipeline's counters and the collector ----------------------------------------------------------


def pipeline() -> Pipeline:
    hub = Hub(AckTracker(), 10, 10)
    return Pipeline(StartConfig(CONN, "p", "s"), CONN, hub, TypeCatalog())


def test_the_assembler_counts_changes_as_it_passes_them_on() -> None:
    p = pipeline()
    a = p.assembler
    columns = (RelationColumn(1, "id", 23, -1),)
    a.handle(m.Relation(None, 16384, "public", "t", "d", columns), 0)
    a.handle(m.Relation(None, 16390, "s", "u", "d", columns), 0)
    a.handle(m.Begin(0x1000, 789_000_000_000_000, 7), 0)  # 789e6 s after 2000-01-01
    cells = (Cell("t", b"1"),)
    a.handle(m.Insert(None, 16384, cells), 0x900)
    a.handle(m.Insert(None, 16384, cells), 0x910)
    a.handle(m.Update(None, 16384, None, None, cells), 0x920)
    a.handle(m.Delete(None, 16390, "K", cells), 0x930)
    a.handle(m.Truncate(None, 0, (16384, 16390)), 0x940)
    a.handle(m.Commit(0, 0x1000, 0x1008, 789_000_000_000_000), 0)
    a.connection_restarted()
    a.handle(m.Begin(0x1000, 789_000_000_000_000, 7), 0)  # sent again after a reconnect: not counted again
    a.handle(m.Insert(None, 16384, cells), 0x900)
    a.handle(m.Commit(0, 0x1000, 0x1008, 789_000_000_000_000), 0)
    assert {op.value: dict(c) for op, c in a.changes.items()} == {
        "INSERT": {16384: 2}, "UPDATE": {16384: 1}, "DELETE": {16390: 1}, "TRUNCATE": {16384: 1, 16390: 1}}
    assert a.last_commit_ts == 789_000_000_000_000
    text = exposition(WalstreamCollector(p.hub, p, FakeMonitor(None)))  # type: ignore[arg-type]
    assert "walstream_last_commit_timestamp_seconds 1.7356848e+09" in text.splitlines()  # 789e6 s after 2000


class FakeMonitor:
    errors = 0

    def __init__(self, state: SlotState | None, over: bool = False) -> None:
        self.sample = SimpleNamespace(state=state, over_limit=over)

    def latest(self, max_age: float) -> Any:
        return self.sample


def exposition(collector: WalstreamCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_collector_reads_the_counters_at_scrape_time() -> None:
    p = pipeline()
    p.assembler.relations[16384] = SimpleNamespace(schema="public", table="t")  # type: ignore[assignment]
    p.assembler.relations[16390] = SimpleNamespace(schema="s", table="u")  # type: ignore[assignment]
    changes = p.assembler.changes
    changes[Op.INSERT].update({16384: 10, 99: 4})
    changes[Op.UPDATE][16384] = 2
    changes[Op.DELETE][16390] = 1
    changes[Op.TRUNCATE][16390] = 1
    p.bytes_read, p.reconnects, p.status_updates_sent = 1234, 2, 17
    p.hub.acks_received, p.hub.acks_rejected = 15, 1
    p.hub.tracker.confirmed_lsn = 0x5000
    state = SlotState(wal_lsn=0x9000, exists=True, confirmed_flush_lsn=0x5000, restart_lsn=0x1000,
                      wal_status="reserved", safe_wal_size=None)
    text = exposition(WalstreamCollector(p.hub, p, FakeMonitor(state, over=True)))  # type: ignore[arg-type]
    for line in ('walstream_changes_total{op="insert",table="public.t"} 10.0',
                 'walstream_changes_total{op="update",table="public.t"} 2.0',
                 'walstream_changes_total{op="delete",table="s.u"} 1.0',
                 'walstream_changes_total{op="truncate",table="s.u"} 1.0',
                 'walstream_changes_total{op="insert",table="99"} 4.0',  # a relation it was never told of
                 "walstream_received_bytes_total 1234.0", "walstream_reconnects_total 2.0",
                 "walstream_status_updates_total 17.0", "walstream_acks_received_total 15.0",
                 "walstream_acks_rejected_total 1.0", "walstream_clients 0.0", "walstream_queued_messages 0.0",
                 "walstream_confirmed_lsn 20480.0", "walstream_lag_bytes 16384.0",
                 "walstream_slot_retained_wal_bytes 32768.0", "walstream_slot_retained_wal_warning 1.0",
                 "walstream_batches_sent_total 0.0", "walstream_streaming 0.0"):
        assert line in text.splitlines(), line
    assert "walstream_lag_seconds" not in text  # no transaction read yet
    assert "walstream_slot_safe_wal_size_bytes" not in text


def test_collector_without_postgres_leaves_out_the_slot() -> None:
    p = pipeline()
    text = exposition(WalstreamCollector(p.hub, p, FakeMonitor(None)))  # type: ignore[arg-type]
    assert "walstream_lag_bytes" not in text
    assert "walstream_clients 0.0" in text


# -- the retained-WAL warning ---------------------------------------------------------------------------


def state(retained: int, safe: int | None = None, status: str = "reserved") -> SlotState:
    return SlotState(wal_lsn=100 * MB, exists=True, confirmed_flush_lsn=100 * MB, restart_lsn=100 * MB - retained,
                     wal_status=status, safe_wal_size=safe)


def test_warning_on_crossing_then_quiet_then_recovered(caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, "walstream.source.slot_monitor")
    monitor = SlotMonitor(CONN, "s", warn_bytes=MB)
    assert not monitor._check(state(MB - 1))
    assert monitor._check(state(2 * MB))
    assert monitor._check(state(3 * MB))  # still over: warned once
    assert [r.getMessage() for r in caplog.records] == [
        "replication slot s: retained WAL 2.0 MB is over --retained-wal-warning 1.0 MB; clients must acknowledge "
        "to release it"]
    assert not monitor._check(state(0))
    assert caplog.records[-1].getMessage() == ("replication slot s retains 0 bytes of WAL again, under the "
                                              "warning size 1.0 MB")


def test_warning_near_invalidation_and_status(caplog: pytest.LogCaptureFixture) -> None:
    monitor = SlotMonitor(CONN, "s", warn_bytes=64 * MB)
    assert monitor._check(state(MB, safe=10 * MB, status="unreserved"))
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "replication slot s: wal_status is unreserved (its WAL is past max_slot_wal_keep_size and may be removed "
        "at the next checkpoint)",
        "replication slot s: only 10.0 MB of WAL can still be written before max_slot_wal_keep_size invalidates "
        "it (--retained-wal-warning 64.0 MB); clients must acknowledge to release it"]
    assert not SlotMonitor(CONN, "s", warn_bytes=0)._check(state(100 * MB))  # 0: off


def test_unreachable_postgres_is_counted_not_raised() -> None:
    def refuse(conn_str: str) -> Any:
        raise psycopg2.OperationalError("connection refused")

    monitor = SlotMonitor(CONN, "s", MB, connect=refuse)
    assert monitor.latest().state is None  # type: ignore[union-attr]
    assert monitor.errors == 1
    assert monitor.latest() is monitor.last  # younger than a second: not asked again
    assert monitor.errors == 1


def test_format_size() -> None:
    assert [format_size(n) for n in (0, 1023, 1536, 5 * MB, 3 * 1024**3, 2 * 1024**4)] == [
        "0 bytes", "1023 bytes", "1.5 kB", "5.0 MB", "3.0 GB", "2.0 TB"]


# -- health ---------------------------------------------------------------------------------------------


def test_health_follows_the_pipeline_state() -> None:
    async def statuses(health: Health) -> set[int]:
        got = set()
        for service in ("", *API_SERVICES):
            response = await health.servicer.Check(health_pb2.HealthCheckRequest(service=service), None)
            got.add(response.status)
        return got

    async def scenario() -> list[set[int]]:
        health = Health()
        await health._apply()
        seen = [await statuses(health)]
        for state in ("streaming", "reconnecting", "streaming", "standby", "streaming"):
            health.on_state(state)
            await asyncio.sleep(0.01)
            seen.append(await statuses(health))
        health.on_state("reconnecting")
        health.on_state("streaming")  # quick changes: the last one wins
        await asyncio.sleep(0.01)
        seen.append(await statuses(health))
        await health.shutdown()
        health.on_state("streaming")  # ignored after shutdown
        await asyncio.sleep(0.01)
        seen.append(await statuses(health))
        return seen

    serving, not_serving = {health_pb2.HealthCheckResponse.SERVING}, {health_pb2.HealthCheckResponse.NOT_SERVING}
    assert asyncio.run(scenario()) == [not_serving, serving, not_serving, serving, not_serving, serving, serving,
                                       not_serving]
