"""Durable broker sinks (`walstream start --sink URL`): NATS JetStream and Kafka. docs/sinks.md.

A sink is one more consumer of the hub under the ack contract (walstream.delivery.acks): it acknowledges a
change to the hub only once the broker has durably stored it, in delivery order, so the slot's confirmed
position never passes a change the broker does not have. This module is the one interface the runner
(walstream.sinks.runner) drives; nats.py and kafka.py implement it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from ..errors import WalstreamError

if TYPE_CHECKING:  # body.py imports the encoders; config.py imports this package's spec.py
    from .body import Record


class SinkError(WalstreamError):
    """A sink cannot go on without the operator: a message over the broker's size limit, a broker that
    refuses the stream's configuration, a missing client library. walstream stops; the slot keeps the
    change (nothing is skipped), so a restart after the fix delivers it."""


class BrokerUnavailable(Exception):
    """The broker is unreachable or did not acknowledge in time: retried with backoff, nothing is lost."""


class Sink(Protocol):
    name: str  # the URL without credentials, for logs and metrics

    @property
    def max_message_size(self) -> int:
        """The largest record (value, key and headers) the broker takes."""
        ...

    async def open(self) -> None:
        """Connect (or check the connection is back) and make sure the destination exists.
        Raises BrokerUnavailable (retried) or SinkError (fatal)."""
        ...

    async def send(self, record: Record) -> asyncio.Future[None]:
        """Start publishing one record; the future completes once the broker durably acknowledged it,
        or fails with BrokerUnavailable (retried) or SinkError (fatal). Records are sent in order."""
        ...

    async def close(self) -> None: ...
