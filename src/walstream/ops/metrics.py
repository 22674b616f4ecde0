"""Prometheus metrics (`walstream start --metrics-port`), read at scrape time.

The hot path keeps plain ints and dicts (Pipeline's counters, the hub's clients and queues, the ack
tracker's positions); this module's collector turns them into metric families only when Prometheus asks,
so reading the stream never calls into prometheus_client. The HTTP server runs in its own thread, so a
scrape that samples the slot on PostgreSQL (walstream.source.slot_monitor) never blocks the event loop.
Metric names and meanings: docs/operations.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ..delivery.hub import Hub
from ..delivery.v1.service import WalstreamServicer
from ..errors import ConfigError
from ..events.change import PG_EPOCH_US
from ..session import Pipeline
from ..sinks.attach import metric_families as sink_metric_families
from ..source.slot_monitor import SlotMonitor

SAMPLE_MAX_AGE = 1.0  # seconds: a scrape reuses a slot sample younger than this


class WalstreamCollector(Collector):
    def __init__(self, hub: Hub, pipeline: Pipeline, monitor: SlotMonitor,
                 v1: WalstreamServicer | None = None) -> None:
        self.hub, self.pipeline, self.monitor, self.v1 = hub, pipeline, monitor, v1

    def describe(self) -> list[Metric]:
        return []  # registering must not sample PostgreSQL

    def _snapshots(self) -> Iterator[Metric]:
        snapshots = self.v1.snapshots if self.v1 is not None else None
        yield _gauge("walstream_snapshots_running", "walstream.v1 snapshots (backfills) running",
                     len(snapshots.running) if snapshots is not None else 0)
        for name, help_text, attr in (
                ("walstream_snapshot_rows", "SNAPSHOT rows sent to clients", "rows"),
                ("walstream_snapshot_chunks", "snapshot chunks delivered", "chunks"),
                ("walstream_snapshot_superseded", "chunk rows not sent: a change to the key was sent in the window",
                 "superseded"),
                ("walstream_snapshot_retries", "snapshot chunks read again (visibility guard, schema change)",
                 "retries")):
            family = CounterMetricFamily(name, help_text, labels=["table"])
            if snapshots is not None:
                for table, value in list(getattr(snapshots.counters, attr).items()):
                    family.add_metric([table], value)
            yield family

    def collect(self) -> Iterator[Metric]:
        hub, pipeline, tracker = self.hub, self.pipeline, self.hub.tracker
        yield self._changes()
        yield _counter("walstream_received_bytes", "pgoutput bytes read from the replication slot",
                       pipeline.bytes_read)
        yield _counter("walstream_batches_sent", "walstream.v1 Batches sent to clients",
                       self.v1.batches_sent if self.v1 is not None else 0)
        yield _counter("walstream_acks_received", "acknowledgements received from clients (both APIs)",
                       hub.acks_received)
        yield _counter("walstream_acks_rejected", "acknowledgements that matched nothing, and client messages "
                       "other than acks, ignored", hub.acks_rejected)
        yield _counter("walstream_reconnects", "replication connections re-established after one was lost",
                       pipeline.reconnects)
        yield _counter("walstream_status_updates", "standby status updates sent to PostgreSQL",
                       pipeline.status_updates_sent)
        yield from self._snapshots()
        clients = list(hub.clients)  # copied: the event loop's thread may change the list meanwhile
        yield _gauge("walstream_clients", "connected gRPC clients (both APIs)", len(clients))
        yield _gauge("walstream_queued_messages", "messages queued for clients, not yet sent",
                     sum(len(c.queue) for c in clients))
        yield _gauge("walstream_unacked_messages", "messages sent (or queued) and not yet acknowledged",
                     tracker.outstanding)
        yield _gauge("walstream_unacked_bytes", "memory held by those messages, as counted against "
                     "--max-unacked-bytes", tracker.outstanding_bytes)
        yield _gauge("walstream_confirmed_lsn", "the slot's confirmed position as walstream has it (an LSN as a "
                     "number)", tracker.confirmed_lsn)
        yield _gauge("walstream_written_lsn", "how far walstream has read the stream (an LSN as a number)",
                     max(pipeline.written_lsn, tracker.confirmed_lsn))
        yield _gauge("walstream_streaming", "1 while the replication connection is up and streaming (health "
                     "SERVING), else 0", 1 if pipeline.streaming else 0)
        commit_ts = pipeline.assembler.last_commit_ts
        if commit_ts is not None:
            commit_time = (commit_ts + PG_EPOCH_US) / 1e6
            yield _gauge("walstream_last_commit_timestamp_seconds", "commit time (per PostgreSQL) of the newest "
                         "transaction read", commit_time)
            yield _gauge("walstream_lag_seconds", "seconds since the commit time of the newest transaction read",
                         max(0.0, time.time() - commit_time))
        yield from sink_metric_families(clients)
        yield from self._slot()

    def _changes(self) -> Metric:
        family = CounterMetricFamily("walstream_changes", "row changes read from the slot, by operation and "
                                     "table (a TRUNCATE counts once per table)", labels=("op", "table"))
        assembler = self.pipeline.assembler
        relations = dict(assembler.relations)  # copied: the event loop's thread may change them meanwhile
        totals: dict[tuple[str, str], int] = {}
        for kind, counts in assembler.changes.items():
            for relid, count in dict(counts).items():
                rel = relations.get(relid)
                table = f"{rel.schema}.{rel.table}" if rel is not None else str(relid)
                key = (kind.value.lower(), table)
                totals[key] = totals.get(key, 0) + count  # a re-created table has a new id
        for (op, table), count in sorted(totals.items()):
            family.add_metric((op, table), count)
        return family

    def _slot(self) -> Iterator[Metric]:
        sample = self.monitor.latest(SAMPLE_MAX_AGE)
        yield _counter("walstream_slot_sample_errors", "samples of the slot on PostgreSQL that failed",
                       self.monitor.errors)
        state = sample.state if sample is not None else None
        if state is None or not state.exists:
            return
        if state.lag_bytes is not None:
            yield _gauge("walstream_lag_bytes", "the server's WAL position minus the slot's confirmed_flush_lsn",
                         state.lag_bytes)
        if state.confirmed_flush_lsn is not None:
            yield _gauge("walstream_slot_confirmed_flush_lsn", "the slot's confirmed_flush_lsn on PostgreSQL "
                         "(an LSN as a number)", state.confirmed_flush_lsn)
        if state.retained_bytes is not None:
            yield _gauge("walstream_slot_retained_wal_bytes", "WAL PostgreSQL keeps for the slot (the server's "
                         "WAL position minus restart_lsn)", state.retained_bytes)
        if state.safe_wal_size is not None:
            yield _gauge("walstream_slot_safe_wal_size_bytes", "WAL that can still be written before "
                         "max_slot_wal_keep_size invalidates the slot", state.safe_wal_size)
        yield _gauge("walstream_slot_retained_wal_warning", "1 while retained WAL is at or over "
                     "--retained-wal-warning (or the slot is that close to invalidation)",
                     1 if sample is not None and sample.over_limit else 0)


def _counter(name: str, doc: str, value: float) -> Metric:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> Metric:
    return GaugeMetricFamily(name, doc, value=value)


class MetricsServer:
    """The /metrics HTTP endpoint on its own registry (not prometheus_client's global one)."""

    def __init__(self, collector: WalstreamCollector, host: str, port: int) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(collector)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        try:
            self._httpd: WSGIServer
            self._httpd, _ = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {reason} (choose another --metrics-port "
                              "or --metrics-host)") from None
        self.port: int = self._httpd.server_port

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
