"""`walstream start`: the replication pipeline and the gRPC server in one asyncio process.

Shutdown (SIGINT/SIGTERM) has two stages: first stop taking clients and new transactions while clients
acknowledge what they were sent (up to the grace period); then end client streams with UNAVAILABLE, send
the final status update and close replication (a temporary slot is dropped with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping

import grpc
import psycopg2
import psycopg2.extensions

from . import dsn as dsnlib
from ._proto import plugin_pb2_grpc
from .config import StartConfig
from .delivery.acks import AckTracker
from .delivery.hub import Hub
from .delivery.seed_service import SeedService
from .errors import ConfigError, SourceError
from .pipeline import Pipeline
from .processing.values import Lookup, TypeCatalog, TypeInfo, catalog_lookup
from .replication import catalog

log = logging.getLogger(__name__)


def run_start(config: StartConfig) -> int:
    return asyncio.run(serve(config))


def _type_lookup(conn_str: str) -> Lookup:
    """User-defined types are looked up over a plain connection, opened on first use and again if lost."""
    held: list[psycopg2.extensions.connection] = []

    def lookup(oids: list[int]) -> Mapping[int, TypeInfo]:
        try:
            if not held:
                held.append(catalog.connect(conn_str))
            return catalog_lookup(held[0])(oids)
        except psycopg2.Error as exc:
            if held:
                held.pop().close()
            raise SourceError(f"cannot look up column types: {catalog.first_line(exc)}") from None

    return lookup


async def serve(config: StartConfig, ready: asyncio.Event | None = None) -> int:
    hub = Hub(AckTracker(), config.client_queue_size, config.max_unacked)
    types = TypeCatalog(lookup=_type_lookup(config.connection))
    pipeline = Pipeline(config, dsnlib.replication_dsn(config.connection), hub, types)

    server = grpc.aio.server()
    plugin_pb2_grpc.add_PluginServiceServicer_to_server(SeedService(hub), server)  # type: ignore[no-untyped-call]
    address = f"{config.host}:{config.port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        raise ConfigError(f"cannot listen on {address}: the address is in use or not available here")

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    runner = asyncio.create_task(pipeline.run())
    # The slot is created before any client can connect.
    await asyncio.wait({runner, asyncio.create_task(pipeline.first_attempt.wait())},
                       return_when=asyncio.FIRST_COMPLETED)
    if runner.done():
        runner.result()  # a fatal error before streaming: raise it
        return 0
    await server.start()
    log.info("listening on %s:%d (slot %s, %s, publication %s)", config.host, port, config.slot,
             "temporary" if config.temporary else "permanent", config.publication)
    if ready is not None:
        ready.set()

    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if runner in done:
        stopper.cancel()
        await server.stop(0)
        runner.result()  # fatal: raise to the CLI
        return 1
    log.info("shutting down: waiting up to %.1f s for clients to acknowledge", config.shutdown_grace)
    hub.accepting = False
    pipeline.stopping.set()
    with contextlib.suppress(Exception):
        await runner
    hub.close()
    await server.stop(1.0)
    log.info("stopped")
    return 0
