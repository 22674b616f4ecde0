"""Frozen, validated configuration. Everything the user typed is checked here, at the boundary."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigError

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


@dataclass(frozen=True)
class StartConfig:
    """What `walstream start` runs with."""

    connection: str
    publication: str
    slot: str
    host: str = "0.0.0.0"
    port: int = 50051
    temporary: bool = True
    # Per-client queue of events waiting to be sent; reading from PostgreSQL pauses when any is full.
    client_queue_size: int = 10_000
    # Events delivered but not yet acknowledged, over all clients; reading pauses at this bound, which
    # also bounds the memory held to replay them to the next client.
    max_unacked: int = 20_000
    # Seconds a graceful shutdown waits for clients to acknowledge what they were sent.
    shutdown_grace: float = 3.0
    # Seconds between status updates to PostgreSQL when nothing changed (PostgreSQL's own default is 10).
    status_interval: float = 10.0

    def __post_init__(self) -> None:
        validate_slot_name(self.slot)
        validate_publication_name(self.publication)
        validate_port(self.port)
        if not self.host:
            raise ConfigError("invalid host '': give an address to listen on, e.g. 0.0.0.0 or 127.0.0.1")
        for name in ("client_queue_size", "max_unacked"):
            if getattr(self, name) < 1:
                raise ConfigError(f"invalid {name} {getattr(self, name)}: must be at least 1")
