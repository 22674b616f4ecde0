"""One sink as a consumer of the hub: take changes from its queue, publish them with a bounded window of
unacknowledged records, and acknowledge them to the hub in delivery order, only up to the longest prefix
the broker has acknowledged (the ack contract: walstream.delivery.acks).

Faults: a broker that is down, drops the connection or does not acknowledge within --sink-ack-timeout makes
the runner cancel what is in flight, wait (capped exponential backoff), reconnect and publish the
unacknowledged records again, in order. Nothing is acknowledged to the hub in between, so the slot holds
them; JetStream drops the re-published ones it already stored (same Nats-Msg-Id), Kafka may keep both
copies (at least once). Memory is bounded by the window plus the hub's per-client queue (reading from
PostgreSQL pauses when the queue is full).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import cast

from ..delivery.hub import Client, Hub
from ..events.change import ChangeEvent, Op, RelationInfo, TxnInfo
from . import BrokerUnavailable, Sink, SinkError
from .body import BodyBuilder, Record

log = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_CAP = 0.2, 10.0
HEADERS_ALLOWANCE = 4096  # more than the headers but `relation` take (names are at most 63 bytes)


@dataclass
class SinkStats:
    """Counters and gauges of one sink, read by walstream.sinks.attach at scrape and Status time."""

    name: str
    published: int = 0  # records sent to the broker (re-publishes included)
    acked: int = 0  # records the broker acknowledged and the hub was told of
    retries: int = 0  # times the sink lost the broker (or an ack timed out) and started over
    in_flight: int = 0  # records published, not yet acknowledged
    connected: bool = False
    acked_commit_time_us: int = 0  # commit time of the newest record acknowledged
    oldest_pending_commit_time_us: int = 0  # commit time of the oldest record not acknowledged (0: none)


class _Entry:
    __slots__ = ("lsn", "record", "future", "sent_at")

    def __init__(self, lsn: int, record: Record) -> None:
        self.lsn = lsn
        self.record = record
        self.future: asyncio.Future[None] | None = None
        self.sent_at = 0.0


class SinkRunner:
    def __init__(self, hub: Hub, client: Client, sink: Sink, builder: BodyBuilder, max_in_flight: int,
                 ack_timeout: float, stats: SinkStats) -> None:
        self.hub, self.client, self.sink, self.builder = hub, client, sink, builder
        self.max_in_flight, self.ack_timeout, self.stats = max_in_flight, ack_timeout, stats
        self.pending: deque[_Entry] = deque()  # published (or to re-publish), oldest first
        self._failed: BaseException | None = None  # a future in the window failed
        self._backoff = BACKOFF_FIRST

    async def run(self) -> None:
        """Until the hub closes the client; raises SinkError (fatal) and never returns on a lost broker."""
        while True:
            try:
                await self.sink.open()
                self.stats.connected = True
                await self._republish()
                if await self._stream():
                    return
            except BrokerUnavailable as exc:
                self.stats.connected = False
                self.stats.retries += 1
                self._abandon_in_flight()
                log.warning("sink %s: %s; %d records unacknowledged, publishing them again in %.1f s",
                            self.sink.name, exc, len(self.pending), self._backoff)
                await asyncio.sleep(self._backoff)
                self._backoff = min(BACKOFF_CAP, self._backoff * 2)

    # -- publishing ------------------------------------------------------------------------------------

    async def _publish(self, entry: _Entry) -> None:
        record = entry.record
        limit = self.sink.max_message_size
        # The headers other than `relation` are short: count them only for a record near the limit.
        near = len(record.value) + len(record.key or b"") + len(record.headers.get("relation", "")) + HEADERS_ALLOWANCE
        if near > limit and record.size > limit:
            raise SinkError(f"sink {self.sink.name}: the {record.describe()} is {record.size} bytes, over the "
                            f"broker's limit of {limit} bytes; walstream stops here (the slot keeps the change): "
                            "raise the broker's maximum message size, or exclude the table from the publication")
        future = await self.sink.send(record)
        entry.future, entry.sent_at = future, time.monotonic()
        future.add_done_callback(self._on_done)
        self.stats.published += 1

    def _on_done(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None and self._failed is None:
            self._failed = future.exception()

    async def _republish(self) -> None:
        self._failed = None
        for entry in self.pending:
            await self._publish(entry)
        self.stats.in_flight = len(self.pending)

    def _abandon_in_flight(self) -> None:
        for entry in self.pending:
            if entry.future is not None and not entry.future.done():
                entry.future.cancel()
            entry.future = None
        self._failed = None
        self.stats.in_flight = len(self.pending)

    def _records(self, payloads: list[object]) -> list[_Entry]:
        build = self.builder.record
        entries = []
        for payload in payloads:
            event, rel, changes = cast("tuple[ChangeEvent, RelationInfo | None, int]", payload)  # SinkAdapter's
            if rel is None:  # a transaction's COMMIT record, acknowledged by its end LSN
                entries.append(_Entry(event.end_lsn, self.builder.commit_record(event, changes)))
            else:
                entries.append(_Entry(event.lsn, build(event, rel)))
        return entries

    # -- the loop --------------------------------------------------------------------------------------

    async def _stream(self) -> bool:
        """Publish and acknowledge until the hub closes the client (True) or the broker fails (raises).

        The queue is only ever taken through one next_batch() at a time, so records go out in queue order."""
        client, pending = self.client, self.pending
        batch_task: asyncio.Task[list[object] | None] | None = None
        try:
            while True:
                room = self.max_in_flight - len(pending)
                if room > 0 and batch_task is None:
                    batch_task = asyncio.ensure_future(client.next_batch(room))
                wait: set[asyncio.Future[object]] = set()
                if batch_task is not None:
                    wait.add(batch_task)  # type: ignore[arg-type]
                timeout: float | None = None
                if pending:
                    head = pending[0]
                    assert head.future is not None
                    wait.add(head.future)  # type: ignore[arg-type]
                    timeout = head.sent_at + self.ack_timeout - time.monotonic()
                    if timeout <= 0:
                        raise BrokerUnavailable(f"no acknowledgement within {self.ack_timeout:g} s")
                await asyncio.wait(wait, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if batch_task is not None and batch_task.done():
                    batch, batch_task = batch_task.result(), None
                    if batch is None:
                        return True
                    await self._send_new(batch)
                self._acknowledge()
        finally:
            if batch_task is not None:
                batch_task.cancel()

    async def _send_new(self, payloads: list[object]) -> None:
        for entry in self._records(payloads):
            self.pending.append(entry)
            await self._publish(entry)
        self.stats.in_flight = len(self.pending)
        self._acknowledge()

    def _acknowledge(self) -> None:
        """Tell the hub of the acknowledged prefix, in delivery order; raise on a failed record.

        One hub ack covers every delivery up to the first one with its LSN, so a run of records the broker
        stored costs one ack, plus one per further record sharing the run's last LSN (a TRUNCATE's tables)."""
        pending, stats = self.pending, self.stats
        last: _Entry | None = None
        same = 0  # records at the end of the run with last's LSN
        while pending:
            future = pending[0].future
            if future is None or not future.done():
                break
            if future.cancelled() or future.exception() is not None:
                self._ack_run(last, same)
                raise _failure(future, pending[0].record)
            entry = pending.popleft()
            same = same + 1 if last is not None and entry.lsn == last.lsn else 1
            last = entry
            stats.acked += 1
        self._ack_run(last, same)
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed if isinstance(failed, SinkError | BrokerUnavailable) else BrokerUnavailable(str(failed))
        stats.in_flight = len(pending)
        stats.oldest_pending_commit_time_us = pending[0].record.commit_time_us if pending else 0

    def _ack_run(self, last: _Entry | None, same: int) -> None:
        if last is None:
            return
        for _ in range(same):
            if not self.hub.ack(self.client, last.lsn):
                raise SinkError(f"sink {self.sink.name}: the hub refused the acknowledgement of the "
                                f"{last.record.describe()} (a bug: please report it)")
        self.stats.acked_commit_time_us = last.record.commit_time_us
        self._backoff = BACKOFF_FIRST


def _failure(future: asyncio.Future[None], record: Record) -> BaseException:
    if future.cancelled():
        return BrokerUnavailable(f"the publish of the {record.describe()} was cancelled")
    exc = future.exception()
    assert exc is not None
    if isinstance(exc, SinkError | BrokerUnavailable):
        return exc
    return BrokerUnavailable(f"{type(exc).__name__}: {exc}")


class SinkAdapter:
    """The hub adapter of a sink: one message per row change, one per table of a TRUNCATE, each as
    (event, relation, 0) and acknowledged by the change's LSN. With `transactions`, also one COMMIT record
    per transaction that had any, as (event, None, number of records), acknowledged by its end LSN. BEGIN
    and logical messages are not published (every record carries xid, commit_lsn and ordinal)."""

    takes_begin = False  # expand() of a BEGIN is empty (Hub.begin_events)

    def __init__(self, name: str, stats: SinkStats, transactions: bool = False) -> None:
        self.api = f"sink {name}"
        self.sink_stats = stats
        self.transactions = transactions
        self._txn: TxnInfo | None = None  # the transaction the count is of
        self._count = 0

    @staticmethod
    def size(message: object) -> int:
        """The row data the change holds (its record is encoded from it when published)."""
        event = message[0]  # type: ignore[index]
        size = 0
        for cells in (event.new, event.old):
            if cells:
                for _, data in cells:
                    if data:
                        size += len(data)
        return size

    def expand(self, event: ChangeEvent) -> tuple[tuple[int, object], ...]:
        rel, txn = event.relation, event.txn
        if rel is not None and txn is not None:
            out: tuple[tuple[int, object], ...] = ((event.lsn, (event, rel, 0)),)
        elif event.truncated:
            out = tuple((event.lsn, (event, r, 0)) for r in event.truncated)
        elif event.op is Op.COMMIT and self.transactions and txn is not None and txn is self._txn and self._count:
            count, self._txn, self._count = self._count, None, 0
            return ((event.end_lsn, (event, None, count)),)
        else:
            return ()
        if txn is not self._txn:
            self._txn, self._count = txn, 0
        self._count += len(out)
        return out
