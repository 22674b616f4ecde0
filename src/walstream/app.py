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
from . import security
from ._proto import plugin_pb2_grpc
from .config import StartConfig
from .delivery import auth, v1_service
from .delivery.acks import AckTracker
from .delivery.hub import Hub
from .delivery.seed_service import SeedService
from .delivery.v1_adapter import Encoder
from .delivery.v1_service import ServerStatus, WalstreamServicer
from .errors import ConfigError, SourceError
from .operations import Operations
from .pipeline import Pipeline
from .processing.typed import TypedCatalog
from .processing.values import TypeCatalog, TypeInfo, catalog_lookup
from .replication import catalog
from .snapshot.runner import SnapshotService

log = logging.getLogger(__name__)


def run_start(config: StartConfig) -> int:
    return asyncio.run(serve(config))


class _CatalogConnection:
    """A plain connection for type look-ups, opened on first use and again if lost."""

    def __init__(self, conn_str: str) -> None:
        self.conn_str = conn_str
        self.held: list[psycopg2.extensions.connection] = []

    def lookup(self, oids: list[int]) -> Mapping[int, TypeInfo]:
        """User-defined types (a TypeCatalog Lookup)."""
        try:
            return catalog_lookup(self._conn())(oids)
        except psycopg2.Error as exc:
            self._drop()
            raise SourceError(f"cannot look up column types: {catalog.first_line(exc)}") from None

    def schema_of(self, type_oid: int) -> str | None:
        """The schema of a type, for walstream.v1 type names; None if it cannot be read."""
        try:
            with self._conn().cursor() as cur:
                cur.execute("SELECT n.nspname::text FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n "
                            "ON n.oid = t.typnamespace WHERE t.oid = %s", (type_oid,))
                row = cur.fetchone()
            return str(row[0]) if row else None
        except (psycopg2.Error, SourceError) as exc:
            self._drop()
            log.warning("cannot look up the schema of type %d: %s", type_oid, catalog.first_line(exc))
            return None

    def _conn(self) -> psycopg2.extensions.connection:
        if not self.held:
            self.held.append(catalog.connect(self.conn_str))
        return self.held[0]

    def _drop(self) -> None:
        if self.held:
            self.held.pop().close()


async def serve(config: StartConfig, ready: asyncio.Event | None = None) -> int:
    hub = Hub(AckTracker(), config.client_queue_size, config.max_unacked)
    catalog_conn = _CatalogConnection(config.connection)
    types = TypeCatalog(lookup=catalog_conn.lookup)
    pipeline = Pipeline(config, dsnlib.replication_dsn(config.connection), hub, types)
    ops = Operations(config, hub, pipeline)  # health, reflection, slot monitor, metrics

    # The guard checks the token and the client limit before any servicer code runs (delivery/auth.py).
    server = grpc.aio.server(interceptors=[auth.Guard(config.auth_token, config.max_clients)],
                             options=auth.server_options(config))
    plugin_pb2_grpc.add_PluginServiceServicer_to_server(SeedService(hub), server)  # type: ignore[no-untyped-call]
    status = ServerStatus(hub, pipeline, config.slot, config.temporary, config.connection)
    encoder = Encoder(TypedCatalog(types, catalog_conn.schema_of))
    snapshots = SnapshotService(config.connection, config.publication, config.slot, config.temporary, hub, encoder,
                                pipeline, types)
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

    runner = asyncio.create_task(pipeline.run())
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
    with contextlib.suppress(Exception):
        await runner
    hub.close()
    await server.stop(1.0)
    status.close()
    await ops.close()
    log.info("stopped")
    return 0
