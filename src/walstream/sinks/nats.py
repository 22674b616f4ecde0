"""The NATS JetStream sink (nats-py): async publish with Nats-Msg-Id, so JetStream drops re-publishes.

Stream: --nats-stream (default WALSTREAM), created if absent with subjects walstream.>, file storage and a
10-minute duplicate window (JetStream's default is 2 minutes; the window must outlast the longest restart
for re-published changes to be dropped). An existing stream is used as it is.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from ..timeouts import within
from . import BrokerUnavailable, SinkError
from .body import Record
from .naming import NATS_COMMIT_SUBJECT, NATS_PREFIX, nats_subject
from .spec import SinkSpec

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.js.api import StorageType, StreamConfig

    AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the installed extras
    AVAILABLE = False

log = logging.getLogger(__name__)

DUPLICATE_WINDOW = 600.0  # seconds
NO_RESPONDERS = "503"
MSG_TOO_LARGE = 10054  # JetStream's JSStreamMessageExceedsMaximumErr
CONNECT_TIMEOUT = 2


class NatsSink:
    def __init__(self, spec: SinkSpec) -> None:
        if not AVAILABLE:
            raise SinkError(f"--sink {spec.name} needs the NATS client: pip install 'walstream[sinks]'")
        self.spec = spec
        self.name = spec.name
        self.duplicates = 0  # PubAcks saying JetStream already had the message (re-publishes after a crash)
        self._nc: Any = None
        self._js: Any = None
        self._stream_max = 0
        self._reply_prefix = ""  # PubAcks come to <prefix><sequence number>
        self._seq = 0
        self._waiting: dict[int, tuple[asyncio.Future[None], Record]] = {}  # published, PubAck not yet in
        self._closing = False
        self._subjects: dict[tuple[str, str], str] = {}

    @property
    def max_message_size(self) -> int:
        payload = int(self._nc.max_payload) if self._nc is not None else 1 << 20
        return min(payload, self._stream_max) if self._stream_max > 0 else payload

    async def open(self) -> None:
        if self._nc is None:
            try:
                # nats-py retries a first connection for ever when reconnects are allowed: bound it here, the
                # runner retries with its backoff and logs each failure.
                self._nc = await within(nats.connect(
                    [f"nats://{s}" for s in self.spec.servers], name="walstream", connect_timeout=CONNECT_TIMEOUT,
                    allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                    skip_subject_validation=True,  # subjects are escaped by naming.nats_subject
                    error_cb=self._on_error, disconnected_cb=self._on_disconnect, reconnected_cb=self._on_reconnect),
                    CONNECT_TIMEOUT * 2)
            except (OSError, asyncio.TimeoutError, nats.errors.Error) as exc:
                self._nc = None
                raise BrokerUnavailable(f"cannot connect: {exc or type(exc).__name__}") from None
            self._js = self._nc.jetstream(timeout=CONNECT_TIMEOUT)
            self._reply_prefix = self._nc.new_inbox() + "."
            await self._nc.subscribe(self._reply_prefix + "*", cb=self._on_reply)  # renewed by reconnects
        if not self._nc.is_connected:
            raise BrokerUnavailable("the connection is down (reconnecting)")
        self._fail_waiting(None)  # the runner publishes them again; a late PubAck finds nothing to settle
        await self._ensure_stream()

    async def _ensure_stream(self) -> None:
        name = self.spec.nats_stream
        try:
            try:
                info = await self._js.stream_info(name)
            except nats.js.errors.NotFoundError:
                info = await self._js.add_stream(StreamConfig(
                    name=name, subjects=[f"{NATS_PREFIX}.>"], storage=StorageType.FILE,
                    duplicate_window=DUPLICATE_WINDOW))
                log.info("sink %s: created JetStream stream %s (subjects %s.>)", self.name, name, NATS_PREFIX)
        except nats.js.errors.ServiceUnavailableError as exc:
            raise BrokerUnavailable(f"JetStream is not available: {exc.description}") from None
        except nats.js.errors.APIError as exc:
            raise SinkError(f"sink {self.name}: JetStream refused stream {name}: {exc.description}") from None
        except (asyncio.TimeoutError, nats.errors.Error) as exc:
            raise BrokerUnavailable(f"no JetStream answer: {exc or type(exc).__name__}") from None
        self._stream_max = int(info.config.max_msg_size or 0)

    async def send(self, record: Record) -> asyncio.Future[None]:
        """Publish with a reply subject of this sink's own (prefix + a sequence number) and settle the
        future from the PubAck: the same protocol as nats-py's publish_async, at a fraction of its cost
        per message (no semaphore, random token or PubAck dataclass for each)."""
        headers = dict(record.headers)
        headers["Nats-Msg-Id"] = record.msg_id
        self._seq += 1
        seq = self._seq
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[seq] = (future, record)
        try:
            await self._nc.publish(self._subject(record), record.value, reply=f"{self._reply_prefix}{seq}",
                                   headers=headers)
        except nats.errors.MaxPayloadError:
            del self._waiting[seq]
            raise SinkError(f"sink {self.name}: the {record.describe()} is over the server's max_payload "
                            f"({self.max_message_size} bytes)") from None
        except (nats.errors.Error, OSError) as exc:
            del self._waiting[seq]
            raise BrokerUnavailable(f"publish failed: {exc or type(exc).__name__}") from None
        return future

    def _subject(self, record: Record) -> str:
        key = (record.schema, record.table)
        subject = self._subjects.get(key)
        if subject is None:
            subject = self._subjects[key] = (nats_subject(record.schema, record.table) if record.table
                                             else NATS_COMMIT_SUBJECT)
        return subject

    async def _on_reply(self, msg: Any) -> None:
        waiting = self._waiting.pop(int(msg.subject[len(self._reply_prefix):]), None)
        if waiting is None:
            return  # abandoned (published again since)
        future, record = waiting
        if future.done():
            return
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:  # stream missing, JetStream restarting
            future.set_exception(BrokerUnavailable("no JetStream stream answered (no responders)"))
            return
        try:
            ack = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            future.set_exception(BrokerUnavailable(f"unreadable PubAck {msg.data[:200]!r}"))
            return
        error = ack.get("error")
        if error is None:
            if ack.get("duplicate"):
                self.duplicates += 1
            future.set_result(None)
            return
        code, err_code, description = error.get("code"), error.get("err_code"), error.get("description", "")
        if err_code == MSG_TOO_LARGE:
            future.set_exception(SinkError(f"sink {self.name}: the {record.describe()} is {record.size} bytes, "
                                           f"over the stream's maximum message size: {description}"))
        elif code not in (None, 503):
            future.set_exception(SinkError(f"sink {self.name}: JetStream refused the {record.describe()}: "
                                           f"{description}"))
        else:
            future.set_exception(BrokerUnavailable(f"JetStream: {description or code}"))

    def _fail_waiting(self, exc: BaseException | None) -> None:
        """Settle every future still waiting for a PubAck: with exc, or cancelled (None)."""
        waiting, self._waiting = self._waiting, {}
        for future, _ in waiting.values():
            if not future.done():
                if exc is None:
                    future.cancel()
                else:
                    future.set_exception(exc)

    async def close(self) -> None:
        if self._nc is not None:
            nc, self._nc = self._nc, None
            self._closing = True
            try:
                await within(nc.close(), 2.0)
            except (asyncio.TimeoutError, nats.errors.Error, OSError):
                pass

    async def _on_error(self, exc: Exception) -> None:
        log.debug("sink %s: %s", self.name, exc)

    async def _on_disconnect(self) -> None:
        # PubAcks for what is in flight will never come: fail it now rather than after --sink-ack-timeout.
        self._fail_waiting(BrokerUnavailable("connection lost"))
        if not self._closing:
            log.warning("sink %s: connection lost; reconnecting", self.name)

    async def _on_reconnect(self) -> None:
        log.info("sink %s: reconnected", self.name)
