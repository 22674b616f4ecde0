"""The Kafka sink (confluent-kafka, i.e. librdkafka): an idempotent producer with acks=all.

librdkafka is the best-kept Kafka client there is for Python (the C library behind most non-Java clients);
with enable.idempotence it never reorders or duplicates within one producer session, and a delivery report
arrives only once every in-sync replica has the record. Topic per table (--kafka-topic), key = the row's
replica identity key as JSON (the default murmur2 partitioner keeps one row's changes in one partition,
in order). Topics come from the broker's auto-creation or the operator.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from . import BrokerUnavailable, SinkError
from .body import Record
from .naming import KAFKA_COMMIT_TOPIC, kafka_topic
from .spec import SinkSpec

try:
    import confluent_kafka
    from confluent_kafka import KafkaError, KafkaException

    AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the installed extras
    AVAILABLE = False

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1_000_000  # librdkafka's default message.max.bytes; brokers take 1 MiB by default
CONNECT_TIMEOUT = 3.0
LINGER_MS = 5  # librdkafka fills batches (up to batch.size, 1 MB) meanwhile; a few ms is all it needs


class _LibrdkafkaLog:
    """librdkafka's own log (a line per failed connection attempt, 20 a second while a broker is down) at
    debug level: the runner logs what the operator needs, once per lost broker."""

    def log(self, level: int, fmt: str, *args: object) -> None:
        log.debug(fmt, *args)


class KafkaSink:
    def __init__(self, spec: SinkSpec) -> None:
        if not AVAILABLE:
            raise SinkError(f"--sink {spec.name} needs the Kafka client: pip install 'walstream[sinks]'")
        self.spec = spec
        self.name = spec.name
        self.duplicates = 0  # not knowable for Kafka (at least once): kept for the shared metrics
        self._producer: Any = None
        self._poller: threading.Thread | None = None
        self._running = False
        self._topics: dict[tuple[str, str], str] = {}
        self._fatal: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reports: list[tuple[asyncio.Future[None], Any, Record]] = []  # delivery reports of one poll

    @property
    def max_message_size(self) -> int:
        return MAX_MESSAGE_BYTES

    async def open(self) -> None:
        if self._fatal is not None:
            raise SinkError(f"sink {self.name}: {self._fatal}")
        if self._producer is None:
            timeout_ms = max(1000, int(self.spec.ack_timeout * 1000) - 500)  # reports fail before we give up
            self._producer = confluent_kafka.Producer({
                "bootstrap.servers": ",".join(self.spec.servers), "client.id": "walstream",
                "enable.idempotence": True, "acks": "all", "linger.ms": LINGER_MS,
                "message.max.bytes": MAX_MESSAGE_BYTES, "message.timeout.ms": timeout_ms,
                "socket.connection.setup.timeout.ms": int(CONNECT_TIMEOUT * 1000),
                "reconnect.backoff.max.ms": 2000, "error_cb": self._on_error, "logger": _LibrdkafkaLog()})
            self._running = True
            self._loop = asyncio.get_running_loop()
            self._poller = threading.Thread(target=self._poll, name=f"walstream {self.name}", daemon=True)
            self._poller.start()
        try:
            await asyncio.to_thread(self._producer.list_topics, timeout=CONNECT_TIMEOUT)
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot reach the brokers: {exc.args[0].str() if exc.args else exc}") from None

    def _poll(self) -> None:
        """librdkafka calls delivery reports from poll(): a thread of its own collects those of one poll and
        hands them to the event loop in one call (a wake-up per report would cost more than the report)."""
        producer, loop = self._producer, self._loop
        assert loop is not None
        while self._running:
            producer.poll(0.05)
            if self._reports:
                reports, self._reports = self._reports, []
                loop.call_soon_threadsafe(self._settle_all, reports)

    async def send(self, record: Record) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self._loop.create_future()  # type: ignore[union-attr]
        try:
            topic = self._topic(record)
        except ValueError as exc:
            raise SinkError(f"sink {self.name}: {exc}") from None

        def delivered(err: Any, _msg: Any) -> None:  # in the poll thread
            self._reports.append((future, err, record))

        try:
            self._producer.produce(topic, record.value, record.key, headers=record.headers, on_delivery=delivered)
        except BufferError:
            raise BrokerUnavailable("librdkafka's queue is full") from None
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                raise SinkError(f"sink {self.name}: the {record.describe()} is {record.size} bytes, over "
                                f"message.max.bytes ({MAX_MESSAGE_BYTES})") from None
            raise BrokerUnavailable(f"produce failed: {err.str() if err is not None else exc}") from None
        return future

    def _topic(self, record: Record) -> str:
        key = (record.schema, record.table)
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = (kafka_topic(self.spec.kafka_topic, record.schema, record.table)
                                         if record.table else KAFKA_COMMIT_TOPIC)
        return topic

    def _settle_all(self, reports: list[tuple[asyncio.Future[None], Any, Record]]) -> None:
        for future, err, record in reports:
            self._settle(future, err, record)

    def _settle(self, future: asyncio.Future[None], err: Any, record: Record) -> None:
        if future.done():
            return  # abandoned after a timeout: the sink publishes it again (at least once)
        if err is None:
            future.set_result(None)
        elif err.code() in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD) or err.fatal():
            future.set_exception(SinkError(f"sink {self.name}: Kafka refused the {record.describe()} "
                                           f"({record.size} bytes): {err.str()}; walstream stops here (the slot "
                                           "keeps the change): raise the topic's max.message.bytes, or exclude "
                                           "the table from the publication"))
        else:
            future.set_exception(BrokerUnavailable(f"delivery failed: {err.str()}"))

    def _on_error(self, err: Any) -> None:
        if err.fatal():
            self._fatal = err.str()
        log.debug("sink %s: %s", self.name, err.str())

    async def close(self) -> None:
        if self._producer is not None:
            self._running = False
            if self._poller is not None:
                await asyncio.to_thread(self._poller.join)
            await asyncio.to_thread(self._producer.flush, 2.0)
            self._producer = None
