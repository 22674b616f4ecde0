"""`--sink URL` and the sink options, validated at the boundary (no broker library is imported here)."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ConfigError
from .naming import DEFAULT_KAFKA_TOPIC, check_kafka_template

FORMATS = ("json", "protobuf")
KINDS = {"nats": 4222, "kafka": 9092}
DEFAULT_NATS_STREAM = "WALSTREAM"
DEFAULT_MAX_IN_FLIGHT = 1000
DEFAULT_ACK_TIMEOUT = 10.0
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")  # JetStream: no '.', '*', '>', whitespace, path separators


@dataclass(frozen=True)
class SinkSpec:
    kind: str  # "nats" or "kafka"
    servers: tuple[str, ...]  # host:port, at least one
    format: str = "json"
    nats_stream: str = DEFAULT_NATS_STREAM
    kafka_topic: str = DEFAULT_KAFKA_TOPIC
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT  # records published and not yet acknowledged by the broker
    ack_timeout: float = DEFAULT_ACK_TIMEOUT  # seconds without the oldest ack before the sink re-publishes
    transactions: bool = False  # also a COMMIT record per transaction (walstream.commit)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"invalid sink kind {self.kind!r}: use nats:// or kafka://")
        if not self.servers:
            raise ConfigError(f"invalid {self.kind} sink: give at least one host:port")
        if self.format not in FORMATS:
            raise ConfigError(f"invalid --sink-format {self.format!r}: use json or protobuf")
        if not _STREAM_NAME.match(self.nats_stream):
            raise ConfigError(f"invalid --nats-stream {self.nats_stream!r}: use 1-255 letters, digits, '_' or '-'")
        try:
            check_kafka_template(self.kafka_topic)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.max_in_flight < 1:
            raise ConfigError(f"invalid --sink-max-in-flight {self.max_in_flight}: must be at least 1")
        if not self.ack_timeout > 0:
            raise ConfigError(f"invalid --sink-ack-timeout {self.ack_timeout}: must be more than 0 seconds")

    @property
    def name(self) -> str:
        return f"{self.kind}://{','.join(self.servers)}"


def parse_url(url: str) -> tuple[str, tuple[str, ...]]:
    """nats://host:port or kafka://host:port[,host:port...] -> (kind, servers). Ports default to 4222/9092."""
    accepted = "use nats://HOST:PORT or kafka://HOST:PORT[,HOST:PORT...]"
    parts = urlsplit(url)
    kind = parts.scheme.lower()
    if kind not in KINDS:
        raise ConfigError(f"invalid --sink {url!r}: unknown scheme {parts.scheme or '(none)'!r}; {accepted}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ConfigError(f"invalid --sink {url!r}: only hosts and ports are accepted; {accepted}")
    servers = []
    for item in parts.netloc.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep:
            host, port = item.strip(), str(KINDS[kind])
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"invalid --sink {url!r}: {item!r} is not HOST:PORT; {accepted}")
        servers.append(f"{host}:{int(port)}")
    return kind, tuple(servers)


def add_arguments(start: argparse.ArgumentParser) -> None:
    """The sink options of `walstream start` (docs/sinks.md)."""
    start.add_argument("--sink", action="append", default=[], metavar="URL",
                       help="also publish every change to a broker, acknowledged to PostgreSQL only once stored: "
                       "nats://HOST:PORT (JetStream) or kafka://HOST:PORT[,HOST:PORT] (repeatable)")
    start.add_argument("--sink-format", choices=FORMATS, default="json", type=str.lower,
                       help="message body: json (as `walstream tail --format json`) or protobuf "
                       "(walstream.v1.Event) [default: json]")
    start.add_argument("--nats-stream", default=DEFAULT_NATS_STREAM, metavar="NAME",
                       help="JetStream stream, created with subjects walstream.> if absent [default: %(default)s]")
    start.add_argument("--kafka-topic", default=DEFAULT_KAFKA_TOPIC, metavar="TEMPLATE",
                       help="topic per table, with {schema} and {table} [default: %(default)s]")
    start.add_argument("--sink-max-in-flight", type=int, default=DEFAULT_MAX_IN_FLIGHT, metavar="N",
                       help="records a sink publishes ahead of the broker's acks [default: %(default)s]")
    start.add_argument("--sink-transactions", action="store_true",
                       help="also publish a COMMIT record per transaction to walstream.commit, with the number of "
                       "its records in the `changes` header")
    start.add_argument("--sink-ack-timeout", type=float, default=DEFAULT_ACK_TIMEOUT, metavar="SECONDS",
                       help="wait this long for a broker ack before re-publishing [default: %(default)s]")


def from_arguments(args: argparse.Namespace) -> tuple[SinkSpec, ...]:
    specs = []
    for url in args.sink:
        kind, servers = parse_url(url)
        specs.append(SinkSpec(kind, servers, args.sink_format, args.nats_stream, args.kafka_topic,
                              args.sink_max_in_flight, args.sink_ack_timeout, args.sink_transactions))
    return tuple(specs)
