"""What `walstream start` adds for operators, in one place for app.serve: gRPC health and reflection, the
slot monitor (retained-WAL warning), and the optional Prometheus endpoint. docs/operations.md.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import grpc

from ..config import StartConfig
from ..delivery.hub import Hub
from ..delivery.v1.service import WalstreamServicer
from ..session import Pipeline
from ..source.slot_monitor import SlotMonitor
from .health import Health
from .security import is_loopback

if TYPE_CHECKING:
    from .metrics import MetricsServer

log = logging.getLogger(__name__)


class Operations:
    def __init__(self, config: StartConfig, hub: Hub, pipeline: Pipeline) -> None:
        self.config, self.hub, self.pipeline = config, hub, pipeline
        self.health = Health()
        self.monitor = SlotMonitor(config.connection, config.slot, config.retained_wal_warning)
        self.metrics: MetricsServer | None = None
        self._monitoring: asyncio.Task[None] | None = None

    async def install(self, server: grpc.aio.Server, v1: WalstreamServicer) -> None:
        """Before the gRPC server starts: health (NOT_SERVING until streaming) and reflection, the pipeline's
        state wired to health, and the metrics endpoint (ConfigError if its port cannot be had)."""
        await self.health.install(server)
        self.pipeline.on_state = self.health.on_state
        config = self.config
        if config.metrics_port is not None:
            from .metrics import MetricsServer, WalstreamCollector  # prometheus_client only when asked for

            host = config.metrics_host or config.host
            collector = WalstreamCollector(self.hub, self.pipeline, self.monitor, v1)
            self.metrics = MetricsServer(collector, host, config.metrics_port)
            log.info("metrics on http://%s:%d/metrics", host, self.metrics.port)
            if not is_loopback(host):
                log.warning("the metrics endpoint on %s has neither TLS nor authentication: it shows table names "
                            "and positions to anyone who can reach it (use --metrics-host 127.0.0.1, or a "
                            "network policy)", host)

    def start(self) -> None:
        """The periodic slot check (the retained-WAL warning without any scrape)."""
        self._monitoring = asyncio.get_running_loop().create_task(self.monitor.run())

    async def shutting_down(self) -> None:
        await self.health.shutdown()

    async def close(self) -> None:
        if self._monitoring is not None:
            self._monitoring.cancel()
            await asyncio.wait({self._monitoring})  # unlike suppress(CancelledError), keeps our own cancellation
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.close)
        await asyncio.to_thread(self.monitor.close)  # waits for a sample in progress
