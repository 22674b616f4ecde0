"""`walstream start`: the replication pipeline and the gRPC server in one asyncio process.

Shutdown (SIGINT/SIGTERM) has two stages: first stop taking clients and new transactions while clients
acknowledge what they were sent (up to the grace period); then end client streams with UNAVAILABLE, send
the final status update and close replication (a temporary slot is dropped with it).
"""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc

from . import native
from .config import StartConfig
from .delivery import auth
from .delivery.acks import AckTracker
from .delivery.hub import Hub
from .delivery.seed import service as seed_service
from .delivery.v1 import service as v1_service
from .delivery.v1.adapter import Encoder
from .delivery.v1.service import ServerStatus, WalstreamServicer
from .delivery.v1.typed import TypedCatalog
from .errors import ConfigError
from .events.values import TypeCatalog
from .ops import security
from .ops.operations import Operations
from .session import Pipeline
from .sinks.attach import Sinks
from .snapshot.runner import SnapshotService
from .source import dsn as dsnlib
from .source.type_lookup import TypeLookup

log = logging.getLogger(__name__)


def run_start(config: StartConfig) -> int:
    return asyncio.run(serve(config))


async def serve(config: StartConfig, ready: asyncio.Event | None = None) -> int:
    hub = Hub(AckTracker(), config.client_queue_size, config.max_unacked, config.max_unacked_bytes)
    type_lookup = TypeLookup(config.connection)
    types = TypeCatalog()  # user types are added by the pipeline, fetched off the event loop
    pipeline = Pipeline(config, dsnlib.replication_dsn(config.connection), hub, types, type_lookup.fetch)
    ops = Operations(config, hub, pipeline)  # health, reflection, slot monitor, metrics
    sinks = Sinks.connect(config, hub, types, pipeline.type_schemas.get)  # broker sinks: clients from the start

    # The guard checks the token and the client limit before any servicer code runs (delivery/auth.py).
    server = grpc.aio.server(interceptors=[auth.Guard(config.auth_token, config.max_clients)],
                             options=auth.server_options(config))
    seed_service.add_to_server(seed_service.SeedService(hub), server)
    status = ServerStatus(hub, pipeline, config.slot, config.temporary, config.connection)
    encoder = Encoder(TypedCatalog(types, pipeline.type_schemas.get))
    snapshots = SnapshotService(config.connection, config.publication, config.slot, config.temporary, hub, encoder,
                                pipeline, types)
    watch_held = None
    if config.snapshot_consistent:
        pipeline.on_export = snapshots.held.take
        watch_held = asyncio.create_task(snapshots.watch_held())
    v1 = WalstreamServicer(hub, encoder, status, snapshots)
    v1_service.add_to_server(v1, server)
    address = f"{config.host}:{config.port}"
    try:
        port = auth.add_port(server, address, config)
    except RuntimeError:
        port = 0
    if not port:
        raise ConfigError(f"cannot listen on {address}: the address is in use or not available here")
    await ops.install(server, v1)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    runner = asyncio.create_task(sinks.run_with(pipeline.run()))
    ops.start()
    # The slot is created before any client can connect. A standby (the slot is held by another process)
    # serves at once: health says NOT_SERVING, and its clients receive nothing until it takes over.
    await asyncio.wait({runner, asyncio.create_task(pipeline.first_attempt.wait())},
                       return_when=asyncio.FIRST_COMPLETED)
    if runner.done():
        await ops.close()
        runner.result()  # a fatal error before streaming: raise it
        return 0
    await server.start()
    log.info("listening on %s:%d (slot %s, %s, publication %s)", config.host, port, config.slot,
             "temporary" if config.temporary else "permanent", config.publication)
    tls, client_certs = config.tls_cert is not None, config.tls_client_ca is not None
    log.info("hot path: %s", native.description())
    log.info("gRPC: %s", security.describe(tls, client_certs, config.auth_token is not None, config.max_clients))
    for warning in security.startup_warnings(config.host, tls, client_certs, config.auth_token):
        log.warning("%s", warning)
    if ready is not None:
        ready.set()

    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if runner in done:
        stopper.cancel()
        await ops.close()
        await server.stop(0)
        runner.result()  # fatal: raise to the CLI
        return 1
    log.info("shutting down: waiting up to %.1f s for clients to acknowledge", config.shutdown_grace)
    await ops.shutting_down()  # health NOT_SERVING first: load balancers stop sending clients here
    hub.accepting = False
    pipeline.stopping.set()
    failure: BaseException | None = None
    try:
        await runner
    except Exception as exc:  # noqa: BLE001 (re-raised below, once the server is down)
        failure = exc
    hub.close()
    await server.stop(1.0)
    status.close()
    if watch_held is not None:
        watch_held.cancel()
    snapshots.held.release()
    type_lookup.close()
    await ops.close()
    if failure is not None:
        log.error("the replication stream failed while shutting down")
        raise failure  # the CLI reports it and exits non-zero: a failed shutdown is not a clean one
    log.info("stopped")
    return 0
