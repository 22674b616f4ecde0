"""Frozen, validated configuration. Everything the user typed is checked here, at the boundary."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import ConfigError
from .ops import security
from .sinks.spec import SinkSpec
from .source.failover import check_permanent

# PostgreSQL's rule for replication slot names (ReplicationSlotValidateName).
_SLOT_RE = re.compile(r"^[a-z0-9_]{1,63}$")
MAX_IDENTIFIER = 63


def validate_slot_name(name: str) -> str:
    if not _SLOT_RE.match(name):
        raise ConfigError(
            f"invalid slot name {name!r}: use 1-63 characters, only lower-case letters, digits and underscore"
        )
    return name


def validate_publication_name(name: str) -> str:
    # Publications are ordinary identifiers; any non-empty name up to 63 bytes can exist (quoted).
    if not name or len(name.encode()) > MAX_IDENTIFIER or "\x00" in name:
        raise ConfigError(f"invalid publication name {name!r}: use a non-empty name of at most 63 bytes")
    return name


def validate_port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise ConfigError(f"invalid port {port}: use 0-65535 (0 picks a free port)")
    return port


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}


def parse_size(text: str) -> int:
    """A size like PostgreSQL's: 512MB, 1GB, 64kB, 1024 (bytes); units are powers of 1024."""
    match = _SIZE_RE.match(text)
    if not match:
        raise ConfigError(f"invalid size {text!r}: use a number and a unit, e.g. 512MB or 1GB "
                          "(units: B, kB, MB, GB, TB; 0 turns the warning off)")
    return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])


@dataclass(frozen=True)
class StartConfig:
    """What `walstream start` runs with."""

    connection: str
    publication: str
    slot: str
    host: str = "0.0.0.0"
    port: int = 50051
    temporary: bool = True
    # A failover slot (PostgreSQL 17+), synchronized to standbys: docs/reliability.md, "Primary failover".
    failover: bool = False
    # Per-client queue of events waiting to be sent; reading from PostgreSQL pauses when any is full.
    client_queue_size: int = 10_000
    # Events delivered but not yet acknowledged, over all clients; reading pauses at this bound, which
    # also bounds the memory held to replay them to the next client.
    max_unacked: int = 20_000
    # The same bound in bytes (each delivery counted as the memory it holds: delivery/hub.py HELD_PER_BYTE).
    max_unacked_bytes: int = 256 * 1024**2
    # Seconds a graceful shutdown waits for clients to acknowledge what they were sent.
    shutdown_grace: float = 3.0
    # Seconds between status updates to PostgreSQL when nothing changed (PostgreSQL's own default is 10).
    status_interval: float = 10.0
    # Security (docs/security.md): TLS files (PEM paths), mutual TLS, a bearer token, and limits per server.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    auth_token: str | None = field(default=None, repr=False)  # a secret: kept out of repr() and logs
    max_clients: int = security.DEFAULT_MAX_CLIENTS
    max_recv_message_size: int = security.DEFAULT_MAX_RECV_MESSAGE_SIZE
    # Operations (docs/operations.md): Prometheus metrics (off unless a port is given; the host defaults to
    # the gRPC host) and the retained-WAL warning (bytes; 0: off).
    metrics_port: int | None = None
    metrics_host: str | None = None
    retained_wal_warning: int = 1024**3
    # Export a snapshot when creating the slot and hold it for the first CONSISTENT snapshot subscriber
    # (docs/api.md#consistent).
    snapshot_consistent: bool = False
    # Broker sinks (docs/sinks.md): each is one more consumer under the ack contract.
    sinks: tuple[SinkSpec, ...] = ()

    def __post_init__(self) -> None:
        validate_slot_name(self.slot)
        validate_publication_name(self.publication)
        validate_port(self.port)
        check_permanent(self.failover, self.temporary)
        if not self.host:
            raise ConfigError("invalid host '': give an address to listen on, e.g. 0.0.0.0 or 127.0.0.1")
        for name in ("client_queue_size", "max_unacked", "max_unacked_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"invalid {name} {getattr(self, name)}: must be at least 1")
        security.check_tls(self.tls_cert, self.tls_key, self.tls_client_ca)
        if self.auth_token is not None:
            security.check_token(self.auth_token, "the configuration")
        security.check_limits(self.max_clients, self.max_recv_message_size)
        if self.metrics_port is not None:
            validate_port(self.metrics_port)
        if self.metrics_host == "":
            raise ConfigError("invalid metrics host '': give an address to listen on, e.g. 127.0.0.1")
        if self.metrics_host is not None and self.metrics_port is None:
            raise ConfigError(f"--metrics-host {self.metrics_host} needs --metrics-port: "
                              "metrics are off without a port")
        if self.retained_wal_warning < 0:
            raise ConfigError(f"invalid retained WAL warning {self.retained_wal_warning}: use 0 (off) or more bytes")
