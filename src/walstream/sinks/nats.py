"""The NATS JetStream sink (nats-py): async publish with Nats-Msg-Id, so JetStream drops re-publishes.

Stream: --nats-stream (default WALSTREAM), created if absent with subjects walstream.>, file storage and a
10-minute duplicate window (JetStream's default is 2 minutes; the window must outlast the longest restart
for re-published changes to be dropped). An existing stream is used as it is.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

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
        self._outstanding: set[asyncio.Future[None]] = set()  # published, not yet acknowledged
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
                self._nc = await asyncio.wait_for(nats.connect(
                    [f"nats://{s}" for s in self.spec.servers], name="walstream", connect_timeout=CONNECT_TIMEOUT,
                    allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                    error_cb=self._on_error, disconnected_cb=self._on_disconnect, reconnected_cb=self._on_reconnect),
                    CONNECT_TIMEOUT * 2)
            except (OSError, asyncio.TimeoutError, nats.errors.Error) as exc:
                self._nc = None
                raise BrokerUnavailable(f"cannot connect: {exc or type(exc).__name__}") from None
            self._js = self._nc.jetstream(timeout=CONNECT_TIMEOUT,
                                          publish_async_max_pending=self.spec.max_in_flight * 2)
        if not self._nc.is_connected:
            raise BrokerUnavailable("the connection is down (reconnecting)")
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
        headers = dict(record.headers)
        headers["Nats-Msg-Id"] = record.msg_id
        try:
            inner = await self._js.publish_async(self._subject(record), record.value, headers=headers)
        except nats.errors.MaxPayloadError:
            raise SinkError(f"sink {self.name}: the {record.describe()} is over the server's max_payload "
                            f"({self.max_message_size} bytes)") from None
        except (nats.errors.Error, OSError) as exc:
            raise BrokerUnavailable(f"publish failed: {exc or type(exc).__name__}") from None
        outer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        inner.add_done_callback(lambda done: self._settle(outer, done, record))
        outer.add_done_callback(lambda done: inner.cancel() if done.cancelled() else None)
        outer.add_done_callback(self._outstanding.discard)
        self._outstanding.add(outer)
        return outer

    def _subject(self, record: Record) -> str:
        key = (record.schema, record.table)
        subject = self._subjects.get(key)
        if subject is None:
            subject = self._subjects[key] = (nats_subject(record.schema, record.table) if record.table
                                             else NATS_COMMIT_SUBJECT)
        return subject

    def _settle(self, outer: asyncio.Future[None], inner: asyncio.Future[Any], record: Record) -> None:
        if outer.done():
            return
        if inner.cancelled():
            outer.cancel()
            return
        exc = inner.exception()
        if exc is None:
            if inner.result().duplicate:
                self.duplicates += 1
            outer.set_result(None)
        elif isinstance(exc, nats.js.errors.APIError) and exc.err_code == MSG_TOO_LARGE:
            outer.set_exception(SinkError(f"sink {self.name}: the {record.describe()} is {record.size} bytes, "
                                          f"over the stream's maximum message size: {exc.description}"))
        elif isinstance(exc, nats.js.errors.APIError) and exc.code not in (None, 503):
            outer.set_exception(SinkError(f"sink {self.name}: JetStream refused the {record.describe()}: "
                                          f"{exc.description}"))
        else:  # no responders (stream missing, JetStream restarting), a 503: retried
            outer.set_exception(BrokerUnavailable(f"{type(exc).__name__}: {exc}"))

    async def close(self) -> None:
        if self._nc is not None:
            nc, self._nc = self._nc, None
            self._closing = True
            try:
                await asyncio.wait_for(nc.close(), 2.0)
            except (asyncio.TimeoutError, nats.errors.Error, OSError):
                pass

    async def _on_error(self, exc: Exception) -> None:
        log.debug("sink %s: %s", self.name, exc)

    async def _on_disconnect(self) -> None:
        # PubAcks for what is in flight will never come: fail it now rather than after --sink-ack-timeout.
        for future in list(self._outstanding):
            if not future.done():
                future.set_exception(BrokerUnavailable("connection lost"))
        if not self._closing:
            log.warning("sink %s: connection lost; reconnecting", self.name)

    async def _on_reconnect(self) -> None:
        log.info("sink %s: reconnected", self.name)
