"""gRPC health checking (grpc.health.v1) and server reflection, so load balancers and grpcurl work.

Health follows the pipeline: "" (the whole server) and each API's service name are SERVING only while the
replication connection is up and streaming; NOT_SERVING while starting, reconnecting, waiting as a standby
for a slot another process holds, and from the start of a shutdown on.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from .._proto import plugin_pb2, walstream_v1_pb2
from ..session import STREAMING

log = logging.getLogger(__name__)

API_SERVICES = (
    plugin_pb2.DESCRIPTOR.services_by_name["PluginService"].full_name,
    walstream_v1_pb2.DESCRIPTOR.services_by_name["Walstream"].full_name,
)
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    def __init__(self) -> None:
        self.servicer = health_aio.HealthServicer()
        self._wanted = NOT_SERVING
        self._applied: int | None = None
        self._applying: asyncio.Task[None] | None = None

    async def install(self, server: grpc.aio.Server) -> None:
        """Add health and reflection to the server (before it starts), everything NOT_SERVING."""
        await self._apply()
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        reflection.enable_server_reflection((*API_SERVICES, HEALTH_SERVICE, reflection.SERVICE_NAME), server)

    def on_state(self, state: str) -> None:
        """The pipeline's state observer (called on the event loop)."""
        wanted = SERVING if state == STREAMING else NOT_SERVING
        if wanted == self._wanted:
            return
        self._wanted = wanted
        log.debug("health: %s (%s)", health_pb2.HealthCheckResponse.ServingStatus.Name(wanted), state)
        if self._applying is None or self._applying.done():
            self._applying = asyncio.get_running_loop().create_task(self._apply())

    async def _apply(self) -> None:
        # One task applies the newest wanted status until it sticks, so quick changes never land out of order.
        while self._applied != self._wanted:
            wanted = self._wanted
            for service in ("", *API_SERVICES):
                await self.servicer.set(service, wanted)
            self._applied = wanted

    async def shutdown(self) -> None:
        """NOT_SERVING for good (later state changes are ignored)."""
        self._wanted = NOT_SERVING
        await self.servicer.enter_graceful_shutdown()
