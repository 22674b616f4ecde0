"""The glue between the sinks and the core, in one place: connect one hub client per --sink before the
pipeline reads anything, run the sinks beside the pipeline, stop walstream on a fatal sink error, and
expose their numbers to metrics and Status. Everything else in walstream.sinks knows nothing of app.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ..config import StartConfig
from ..delivery.hub import Client, Hub
from ..delivery.v1.typed import TypedCatalog
from ..events.values import TypeCatalog
from . import Sink
from .body import BodyBuilder
from .runner import SinkAdapter, SinkRunner, SinkStats
from .spec import SinkSpec

log = logging.getLogger(__name__)


def make_sink(spec: SinkSpec) -> Sink:
    if spec.kind == "nats":
        from .nats import NatsSink

        return NatsSink(spec)
    from .kafka import KafkaSink

    return KafkaSink(spec)


class Sinks:
    """The sinks of one `walstream start`."""

    def __init__(self, runners: list[SinkRunner]) -> None:
        self.runners = runners

    @classmethod
    def connect(cls, config: StartConfig, hub: Hub, types: TypeCatalog,
                schema_of: Callable[[int], str | None]) -> Sinks:
        """One hub client per sink, connected now: the slot never passes a change a sink has not stored."""
        runners = []
        for spec in config.sinks:
            sink = make_sink(spec)
            stats = SinkStats(spec.name)
            adapter = SinkAdapter(spec.name, stats, spec.transactions)
            adapter.sink = sink  # type: ignore[attr-defined]  # read by the metrics
            client = hub.connect(adapter, "(sink)")
            assert client is not None  # the hub takes clients until shutdown
            builder = BodyBuilder(TypedCatalog(types, schema_of), spec.format, config.slot)
            runners.append(SinkRunner(hub, client, sink, builder, spec.max_in_flight, spec.ack_timeout, stats))
            log.info("sink %s: %s records, stream/topic %s", spec.name, spec.format,
                     spec.nats_stream if spec.kind == "nats" else spec.kafka_topic)
        return cls(runners)

    async def run_with(self, main: Coroutine[Any, Any, None]) -> None:
        """Run `main` (the pipeline) with the sinks beside it. A fatal sink error stops main and is raised;
        when main ends, the sinks stop (what they had not stored is re-published by the next start)."""
        main_task = asyncio.ensure_future(main)
        tasks = [asyncio.ensure_future(r.run()) for r in self.runners]
        try:
            while True:
                done, _ = await asyncio.wait({main_task, *tasks}, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    if task in done and not task.cancelled() and task.exception() is not None:
                        main_task.cancel()
                        with contextlib.suppress(BaseException):
                            await main_task
                        raise task.exception()  # type: ignore[misc]
                if main_task in done:
                    main_task.result()
                    return
                tasks = [t for t in tasks if t not in done]
        finally:
            if not main_task.done():  # this task was cancelled: so is the pipeline
                main_task.cancel()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            for runner in self.runners:
                await runner.sink.close()
                stats = runner.stats
                log.info("sink %s stopped: %d published, %d acknowledged, %d retries, %d duplicates dropped by "
                         "the broker, %d unacknowledged (published again by the next start)", stats.name,
                         stats.published, stats.acked, stats.retries, getattr(runner.sink, "duplicates", 0),
                         len(runner.pending) + len(runner.client.queue))


def _sinks(clients: Sequence[Client]) -> Iterator[tuple[SinkStats, Any]]:
    for client in clients:
        stats = getattr(client.adapter, "sink_stats", None)
        if stats is not None:
            yield stats, client


def metric_families(clients: Sequence[Client]) -> Iterator[Metric]:
    """walstream_sink_* by sink URL (docs/sinks.md)."""
    now_us = time.time() * 1e6
    families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
        "published": CounterMetricFamily("walstream_sink_published", "records published to the broker, "
                                         "re-publishes included", labels=("sink",)),
        "acked": CounterMetricFamily("walstream_sink_acked", "records the broker acknowledged (stored)",
                                     labels=("sink",)),
        "retries": CounterMetricFamily("walstream_sink_retries", "times the broker was lost (or an ack timed "
                                       "out) and the sink started over", labels=("sink",)),
        "duplicates": CounterMetricFamily("walstream_sink_duplicates", "re-published records the broker "
                                          "already had (JetStream's Nats-Msg-Id; 0 for Kafka)", labels=("sink",)),
        "in_flight": GaugeMetricFamily("walstream_sink_in_flight", "records published and not yet acknowledged",
                                       labels=("sink",)),
        "queued": GaugeMetricFamily("walstream_sink_queued", "changes waiting for the sink", labels=("sink",)),
        "connected": GaugeMetricFamily("walstream_sink_connected", "1 while the broker is reachable",
                                       labels=("sink",)),
        "lag": GaugeMetricFamily("walstream_sink_lag_seconds", "age (by commit time) of the oldest change not yet "
                                 "acknowledged by the broker; 0 when none is waiting", labels=("sink",)),
    }
    for stats, client in _sinks(clients):
        label = (stats.name,)
        families["published"].add_metric(label, stats.published)
        families["acked"].add_metric(label, stats.acked)
        families["retries"].add_metric(label, stats.retries)
        families["duplicates"].add_metric(label, getattr(client.adapter.sink, "duplicates", 0))
        families["in_flight"].add_metric(label, stats.in_flight)
        families["queued"].add_metric(label, len(client.queue))
        families["connected"].add_metric(label, 1 if stats.connected else 0)
        oldest = stats.oldest_pending_commit_time_us
        families["lag"].add_metric(label, max(0.0, (now_us - oldest) / 1e6) if oldest else 0.0)
    yield from families.values()


def status_of(clients: Sequence[Client]) -> list[dict[str, Any]]:
    """One entry per sink for the Status answer."""
    return [dict(url=stats.name, connected=stats.connected, published=stats.published, acked=stats.acked,
                 retries=stats.retries, in_flight=stats.in_flight, queued=len(client.queue))
            for stats, client in _sinks(clients)]
