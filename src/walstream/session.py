"""The session loop: replication stream -> decoder -> assembler -> hub, plus status updates and reconnects.

Two positions are kept apart, as in pg_recvlogical: `written` is how far walstream has read the stream,
`confirmed` (the AckTracker's) is what clients have acknowledged; only `confirmed` is reported as flushed.

The counters here (bytes_read, reconnects, status_updates_sent; the assembler counts changes) are plain
ints read by walstream.ops.metrics at scrape time: the read loop never calls into a metrics library.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from . import native
from .config import StartConfig
from .delivery.hub import HELD_FIXED, HELD_PER_BYTE, Hub
from .errors import SlotInUseError, WalstreamError
from .events.assembler import Assembler
from .events.text import text_decoder
from .events.values import TypeCatalog, TypeInfo
from .lsn import format_lsn
from .source.base import OpenSource, Source, StreamInfo
from .source.decoder import decode_message, insert_decoder
from .source.messages import Relation
from .source.stream import ReplicationStream
from .threads import in_daemon_thread
from .timeouts import within

log = logging.getLogger(__name__)

# States, as the state observer (on_state) sees them.
STARTING, STREAMING, STANDBY, RECONNECTING, STOPPED = "starting", "streaming", "standby", "reconnecting", "stopped"

STANDBY_RETRY = 2.0  # seconds between attempts to take a slot held by another process
BACKOFF_FIRST, BACKOFF_CAP = 0.5, 30.0
MIN_STATUS_GAP = 0.2  # seconds; a moved confirmed position is reported at most this often
PAUSED_KEEPALIVE = 1.0  # seconds between status updates while not reading (keeps the walsender alive)
YIELD_EVERY = 256  # messages read before letting the gRPC side run


# Reads user-defined types and their schemas from the catalog (blocking: run in a worker thread).
FetchTypes = Callable[[list[int]], tuple[Mapping[int, TypeInfo], Mapping[int, str]]]


class Pipeline:
    def __init__(self, config: StartConfig, dsn: str, hub: Hub, types: TypeCatalog,
                 fetch_types: FetchTypes | None = None, open_source: OpenSource | None = None) -> None:
        self.config = config
        self.dsn = dsn
        self.hub = hub
        self.types = types
        self.fetch_types = fetch_types
        # Set by walstream.snapshot (start --snapshot-consistent): takes the snapshot exported when the slot
        # is created on the first connection.
        self.on_export: Callable[[str, int], None] | None = None
        self.open_source: OpenSource = open_source or (lambda create: ReplicationStream(
            dsn, config.slot, config.publication, config.temporary, create=create, failover=config.failover,
            export=None if self._opened_once else self.on_export))
        self.type_schemas: dict[int, str] = {}  # filled with the types fetched: the v1 type names' schemas
        self.assembler = Assembler(hub, types, text_decoder("utf-8"))
        self.stopping = _StopEvent(self._wake_reader)  # set() also ends the reader's wait for data
        self._reader_wait: asyncio.Future[None] | None = None
        # An ack that moves the confirmed position ends an idle wait for data: it is reported within
        # MIN_STATUS_GAP, not at the next status interval.
        hub.on_confirmed = lambda lsn: self._wake_reader()
        self.first_attempt = asyncio.Event()  # the slot exists (or is held elsewhere) or start failed
        self.state = STARTING
        self.on_state: Callable[[str], None] = lambda state: None  # called on every change of state
        self.streaming = False
        self.written_lsn = 0
        self.server_version = 0  # PostgreSQL's server_version_num and the pgoutput protocol, once streaming
        self.pgoutput_version = 0
        self.status_interval = config.status_interval
        self._sent_flush = -1
        self._last_status = 0.0
        self._opened_once = False
        self._held: tuple[int, bytes] | None = None  # read while paused, not yet handled
        self._slot_seen = False  # the permanent slot is known to exist: never create it again
        self._standby_holder: int | None = -1  # the PID last logged as holding the slot
        # Counters for the metrics.
        self.bytes_read = 0
        self.reconnects = 0
        self.status_updates_sent = 0

    async def run(self) -> None:
        """Stream until stopped; reconnect with capped exponential backoff; raise on fatal errors."""
        failures = 0
        try:
            while not self.stopping.is_set():
                # A permanent slot is created at most once, and never after it was seen to exist.
                create = not (self._opened_once or self._slot_seen)
                stream = self.open_source(create)
                try:
                    opened = await self._open(stream)
                except SlotInUseError as exc:
                    self._slot_seen = True
                    self._set_state(STANDBY)
                    self.first_attempt.set()
                    if exc.pid != self._standby_holder:  # once per holder, not every retry
                        self._standby_holder = exc.pid
                        log.warning("%s (standby: retrying every %.0f s)", exc, STANDBY_RETRY)
                    await self._sleep(STANDBY_RETRY)
                    continue
                except WalstreamError as exc:
                    # Before the first success only a standby retries (its setup has been proven).
                    if not exc.retryable or not (self._opened_once or self._slot_seen):
                        raise
                    self._set_state(RECONNECTING)
                    failures += 1
                    delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (failures - 1))
                    log.warning("reconnect attempt %d failed: %s; next try in %.1f s", failures, exc, delay)
                    await self._sleep(delay)
                    continue
                if opened is None:
                    break  # stopping: the attempt is abandoned (it closes itself if it still succeeds)
                info = opened
                self._on_open(info.created_slot, info.encoding, info.proto_version, info.server_version)
                # Report well inside wal_sender_timeout even when no keepalive asks for it: the walsender
                # ends a stream that has been silent for that long.
                if info.sender_timeout > 0:
                    self.status_interval = min(self.config.status_interval, max(1.0, info.sender_timeout / 4))
                failures = 0
                try:
                    await self._pump(stream)
                except WalstreamError as exc:
                    if not exc.retryable:
                        raise
                    log.warning("%s; reconnecting", exc)
                finally:
                    self.streaming = False
                    stream.close()
                if not self.stopping.is_set():
                    self._set_state(RECONNECTING)
                    await self._sleep(BACKOFF_FIRST)
        finally:
            self._set_state(STOPPED)
            self.first_attempt.set()

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.on_state(state)

    def _on_open(self, created: bool, encoding: str, proto: int, server_version: int) -> None:
        self.assembler.text_decoder = text_decoder(encoding)
        if self._opened_once:
            if created and self.config.temporary:
                log.warning("the temporary slot %s was lost with the connection and created again: changes "
                            "committed in between were not captured (use --temporary false to keep them)",
                            self.config.slot)
                self.assembler.slot_recreated()
            else:
                self.assembler.connection_restarted()
            self.reconnects += 1
        self._opened_once = True
        self._standby_holder = -1
        self.server_version, self.pgoutput_version = server_version, proto
        self._held = None  # it came on the old connection: PostgreSQL sends it again
        self._sent_flush = -1
        self.streaming = True
        self._set_state(STREAMING)
        self.first_attempt.set()
        log.info("streaming slot %s (pgoutput protocol %d, PostgreSQL %d)", self.config.slot, proto,
                 server_version)

    async def _open(self, stream: Source) -> StreamInfo | None:
        """stream.open(), or None if walstream is asked to stop first: an unreachable host can hold a
        connection attempt for the whole connect_timeout, longer than the shutdown grace."""
        opening = asyncio.ensure_future(stream.open())
        stop = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({opening, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if opening.done():
            return opening.result()
        opening.cancel()
        return None

    async def ensure_types(self, oids: list[int]) -> None:
        """Read the user-defined types among these that are not known yet, in a worker thread: the event loop
        (the clients, Status, health) goes on meanwhile; the caller waits, as what it decodes next needs
        them (the stream for a Relation message, a snapshot for its chunk)."""
        missing = self.types.missing(oids)
        if missing and self.fetch_types is not None:
            fetch = self.fetch_types
            infos, schemas = await in_daemon_thread(lambda: fetch(missing), "walstream-type-lookup")
            self.types.add(infos, missing)
            self.type_schemas.update(schemas)

    async def _sleep(self, seconds: float) -> None:
        try:
            await within(self.stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    # -- the loop -------------------------------------------------------------------------------------

    async def _pump(self, stream: Source) -> None:
        hub, assembler, tracker = self.hub, self.assembler, self.hub.tracker
        handle, insert, read, boundary = assembler.handle, assembler.insert, stream.read, assembler.boundary
        plain_insert = insert_decoder()  # the C accelerator's when it is active (walstream.native)
        # With the accelerator, the Inserts and Updates of a read burst go to the assembler as runs (events/run.py).
        runs = native.plain_run()
        run_length = runs[0] if runs is not None else None
        run_lsns: list[int] = []
        run_raws: list[bytes] = []
        room = room_bytes = run_bytes = 0

        def flush_run() -> None:
            nonlocal run_lsns, run_raws
            lsns, raws, run_lsns, run_raws = run_lsns, run_raws, [], []
            if len(raws) > 1:
                assert run_length is not None
                assembler.plain_run(lsns, raws, run_length, plain_insert)
                return
            lsn, raw = lsns[0], raws[0]  # one change: the per-message path costs less than a run
            if (row := plain_insert(raw)) is not None:
                insert(row[0], row[1], lsn, raw)
            else:
                handle(decode_message(raw), lsn, raw)  # raises the decoder's error

        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            if self.stopping.is_set():
                # Graceful stop: finish the transaction being read, then wait for acks, within the grace.
                deadline = deadline or time.monotonic() + self.config.shutdown_grace
                if not assembler.in_transaction or time.monotonic() >= deadline:
                    break
            if not hub.can_accept():
                hub.capacity.clear()
                if not hub.can_accept():
                    self._read_ahead(stream)
                    hub.wake()
                    await self._wait(hub.capacity.wait(), PAUSED_KEEPALIVE)
                    self._status(stream, force=time.monotonic() - self._last_status >= PAUSED_KEEPALIVE)
                    continue
            msg: tuple[int, bytes] | None = None
            size = 0
            drained = False
            for _ in range(YIELD_EVERY):
                if self._held is not None:
                    msg, self._held = self._held, None
                else:
                    msg = read()
                if msg is None:
                    drained = True
                    break
                lsn, data = msg
                if lsn > self.written_lsn:
                    self.written_lsn = lsn
                size += len(data)
                if data[0] == 0x49 or (data[0] == 0x55 and run_length is not None):  # an Insert (or Update)
                    if run_length is not None:
                        if not run_raws:  # what the run may hold before the bounds are checked again
                            room, room_bytes = hub.room()
                            run_bytes = 0
                        run_lsns.append(lsn)
                        run_raws.append(data)
                        run_bytes += HELD_PER_BYTE * len(data) + HELD_FIXED  # as Hub.publish will count it
                        if len(run_raws) >= room or run_bytes >= room_bytes:
                            break
                        continue
                    if (row := plain_insert(data)) is not None:  # no message object
                        insert(row[0], row[1], lsn, data)
                        if not hub.can_accept():
                            break
                        continue
                if run_raws:
                    flush_run()
                if not boundary(data):  # a Begin or Commit goes without a message object
                    decoded = decode_message(data)
                    if type(decoded) is Relation and self.fetch_types is not None:
                        await self.ensure_types([c.type_oid for c in decoded.columns])
                    handle(decoded, lsn, data)
                if not hub.can_accept():
                    break
            if run_raws:
                flush_run()
            self.bytes_read += size
            if drained:
                self._follow_wal_end(stream)
                self._status(stream)
                hub.wake()
                await self._wait_readable(loop, stream.fileno(), self._until_next_status())
            else:
                self._status(stream)
                hub.wake()  # the clients' senders run while this task yields
                await asyncio.sleep(0)
        hub.wake()
        await self._drain_acks(deadline or time.monotonic() + self.config.shutdown_grace)
        self._status(stream, force=True)
        log.info("replication closed at confirmed position %s", format_lsn(tracker.confirmed_lsn))

    def _read_ahead(self, stream: Source) -> None:
        """Paused: read past keepalives, holding back the first data message until a client can take it.

        So a quiet slot still follows the server's WAL end while no client is connected; PostgreSQL's fast
        shutdown waits for every walsender's client to confirm that position.
        """
        if self._held is None and not self.assembler.in_transaction:
            self._held = stream.read()
            if self._held is None:
                self._follow_wal_end(stream)

    def _follow_wal_end(self, stream: Source) -> None:
        """The stream is drained: with nothing open or pending, the server's WAL end is confirmed."""
        if not self.assembler.in_transaction and self.hub.tracker.idle_advance(stream.wal_end):
            self.written_lsn = max(self.written_lsn, self.hub.tracker.confirmed_lsn)

    async def _drain_acks(self, deadline: float) -> None:
        tracker = self.hub.tracker
        while tracker.outstanding and self.hub.clients and time.monotonic() < deadline:
            self.hub.capacity.clear()
            await self._wait(self.hub.capacity.wait(), deadline - time.monotonic())

    def _status(self, stream: Source, force: bool = False) -> None:
        now = time.monotonic()
        confirmed = self.hub.tracker.confirmed_lsn
        since = now - self._last_status
        if (force or stream.reply_requested or since >= self.status_interval
                or (confirmed != self._sent_flush and since >= MIN_STATUS_GAP)):
            stream.send_status(max(self.written_lsn, confirmed), confirmed)
            self._sent_flush, self._last_status = confirmed, now
            self.status_updates_sent += 1

    def _until_next_status(self) -> float:
        since = time.monotonic() - self._last_status
        if self.hub.tracker.confirmed_lsn != self._sent_flush:
            return max(0.0, MIN_STATUS_GAP - since)
        return max(0.05, min(1.0, self.status_interval - since))

    @staticmethod
    async def _wait(awaitable: object, timeout: float) -> None:
        try:
            await within(awaitable, max(0.0, timeout))  # type: ignore[arg-type]
        except asyncio.TimeoutError:
            pass

    async def _wait_readable(self, loop: asyncio.AbstractEventLoop, fd: int, timeout: float) -> None:
        """Until the replication socket has data, the timeout passes, or stopping is set."""
        ready: asyncio.Future[None] = loop.create_future()
        self._reader_wait = ready
        loop.add_reader(fd, self._wake_reader)
        try:
            await within(ready, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            loop.remove_reader(fd)
            self._reader_wait = None

    def _wake_reader(self) -> None:
        ready = self._reader_wait
        if ready is not None and not ready.done():
            ready.set_result(None)


class _StopEvent(asyncio.Event):
    """An asyncio.Event that also calls a function when set (the pipeline's stop wakes its idle reader
    at once, instead of at the end of its wait for data, up to a second later)."""

    def __init__(self, on_set: Callable[[], None]) -> None:
        super().__init__()
        self._on_set = on_set

    def set(self) -> None:
        super().set()
        self._on_set()
