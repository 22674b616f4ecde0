"""Fan-out of the event stream to connected clients, with bounded per-client queues for backpressure.

The replication side calls begin/publish/commit; each client's adapter turns an event into the messages of
its API (zero or more, each with the LSN it will be acknowledged by). The reader asks `can_accept()` before
every message: it reads from PostgreSQL only while at least one client is connected, every client's queue
has room, and the unacknowledged deliveries are under both bounds, in number and in bytes. One message is
always let through, so a single change larger than the byte bound still flows (then reading pauses).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError

from ..events.change import ChangeEvent
from ..events.replay import compact, restore
from ..events.run import ChangeRun
from ..lsn import format_lsn
from .acks import AckTracker, ClientLedger, DeliveryGroup, RunPayload, TxnRecord

log = logging.getLogger(__name__)


class Adapter(Protocol):
    api: str

    def expand(self, event: ChangeEvent) -> Sequence[tuple[int, object]]:
        """The messages this API sends for an event, each as (lsn to acknowledge it by, message)."""
        ...

    def size(self, message: object) -> int:
        """The encoded size of one of its messages, in bytes."""
        ...

    # Optional: takes_begin = False, for an API whose expand() of a BEGIN event is always empty (the hub then
    # tells the assembler to make none while every client's adapter says so).
    # Optional: expand_run(run: ChangeRun) -> Sequence[(lsn, message, row)] | None, the messages of a run of
    # plain changes (a RunPayload holds several rows; another message stands for row `row` of the run: a BEGIN for
    # the first), or None: take the run's events one by one with expand().


# Until acknowledged, a delivery holds its encoded message and (shared by every client it went to) the
# pgoutput message it was made from (events/replay.py), about as large again: count each as twice its
# encoded size, plus the fixed cost of the ledger entry and the objects around it.
HELD_PER_BYTE, HELD_FIXED = 2, 200
CLIENT_RECEIVE_LIMIT = 4 * 1024 * 1024  # gRPC clients' default max_receive_message_length


def held(size: int) -> int:
    return HELD_PER_BYTE * size + HELD_FIXED


class Client:
    def __init__(self, name: str, adapter: Adapter) -> None:
        self.name = name
        self.adapter = adapter
        self.ledger: ClientLedger[object] = ClientLedger(name, adapter.api)
        self.queue: deque[object] = deque()
        self.closed = False
        self._wakeup = asyncio.Event()

    def push(self, payload: object) -> None:
        self.queue.append(payload)
        self._wakeup.set()

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()

    def wake(self) -> None:
        self._wakeup.set()

    async def next_batch(self, limit: int = 512) -> list[object] | None:
        """Wait for queued messages; None once the hub has closed this client and its queue is drained."""
        while not self.queue:
            if self.closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        queue = self.queue
        return [queue.popleft() for _ in range(min(limit, len(queue)))]


class Hub:
    def __init__(self, tracker: AckTracker[object], queue_size: int, max_unacked: int,
                 max_unacked_bytes: int = 256 * 1024**2) -> None:
        self.tracker = tracker
        self.queue_size = queue_size
        self.max_unacked = max_unacked
        self.max_unacked_bytes = max_unacked_bytes
        self.clients: list[Client] = []
        self.begin_events = False  # some client's adapter takes BEGIN events (events/assembler.py reads it)
        self.accepting = True
        self.held = False  # reading waits while a CONSISTENT snapshot is copied (walstream.snapshot.consistent)
        self.capacity = asyncio.Event()  # set whenever can_accept() may have become true
        self.acks_rejected = 0
        self.unwoken = False  # publish() queued messages that no sender was woken for yet
        self.acks_received = 0  # every ack, matched or not (read by walstream.ops.metrics)
        self.oversized_sent = 0  # changes whose message exceeds gRPC's default client receive limit
        self._oversized: ChangeEvent | None = None
        self._ids = itertools.count(1)
        self.on_confirmed: Callable[[int], None] = lambda lsn: None

    # -- clients --------------------------------------------------------------------------------------

    def connect(self, adapter: Adapter, peer: str) -> Client | None:
        if not self.accepting:
            return None
        client = Client(f"{adapter.api}#{next(self._ids)} {peer}", adapter)
        self.clients.append(client)
        self._clients_changed()
        if self.tracker.has_orphans:
            before = self.tracker.confirmed_lsn
            adapter = client.adapter
            resent = self.tracker.adopt_orphans(client.ledger, lambda record: adapter.expand(restore(record)),
                                                lambda message: held(adapter.size(message)))
            if self.tracker.confirmed_lsn != before:
                self.on_confirmed(self.tracker.confirmed_lsn)
            for payload in resent:
                client.push(payload)
            log.info("client %s connected; resending %d unacknowledged messages", client.name, len(resent))
        else:
            log.info("client %s connected", client.name)
        self.capacity.set()
        return client

    def disconnect(self, client: Client) -> None:
        if client not in self.clients:
            return
        self.clients.remove(client)
        self._clients_changed()
        last = not self.clients
        pending = client.ledger.pending_count
        self.tracker.client_left(client.ledger, last)
        self._confirmed_maybe_moved()
        log.info("client %s disconnected (%d acked, %d rejected acks, %d unacknowledged%s)", client.name,
                 client.ledger.acked, client.ledger.rejected, pending,
                 ", kept for the next client" if last and pending else "")
        self.capacity.set()

    def ack(self, client: Client, lsn: int) -> bool:
        """Apply a client's ack; one that matches nothing is logged, counted and moves nothing."""
        self.acks_received += 1
        before = self.tracker.confirmed_lsn
        covered = self.tracker.ack(client.ledger, lsn)
        if covered < 0:  # a repeat for a group acknowledged already (acks.py)
            return True
        if covered:
            if self.tracker.confirmed_lsn != before:
                self.on_confirmed(self.tracker.confirmed_lsn)
            self.capacity.set()
            return True
        self.acks_rejected += 1
        log.warning("client %s acked %s, which matches nothing it was sent and not yet acked; "
                    "ignored (the slot does not move)", client.name, format_lsn(lsn))
        return False

    def _clients_changed(self) -> None:
        self.begin_events = any(getattr(c.adapter, "takes_begin", True) for c in self.clients)

    def reject(self, client: Client, what: str) -> None:
        """A client sent something other than an ack where only acks are accepted: count it, log it."""
        client.ledger.rejected += 1
        self.acks_rejected += 1
        log.warning("client %s sent %s; ignored", client.name, what)

    def close(self) -> None:
        """Stop taking clients and end every client stream once its queue is sent."""
        self.accepting = False
        for client in self.clients:
            client.close()

    # -- the stream -----------------------------------------------------------------------------------

    def can_accept(self) -> bool:
        clients = self.clients
        tracker = self.tracker
        if (not clients or self.held or tracker.outstanding >= self.max_unacked
                or tracker.outstanding_bytes >= self.max_unacked_bytes):
            return False
        size = self.queue_size
        for client in clients:  # asked before every message read: a loop, not all() over a generator
            if len(client.queue) >= size:
                return False
        return True

    def room(self) -> tuple[int, int]:
        """How many more changes, and how many more held bytes, the bounds take now: the unacknowledged
        ones per client (each change is a delivery to every client), and the room in every client's queue (a
        client that takes a run's events one by one queues each); at least one change: one always goes."""
        clients, tracker = self.clients, self.tracker
        queued = 0
        for client in clients:  # asked at every run's start (each Insert of one-row transactions): no generator
            if len(client.queue) > queued:
                queued = len(client.queue)
        n = len(clients) or 1
        count = min((self.max_unacked - tracker.outstanding) // n, self.queue_size - queued)
        size = (self.max_unacked_bytes - tracker.outstanding_bytes) // n
        return (count if count > 1 else 1, size if size > 1 else 1)

    def begin(self, xid: int, commit_lsn: int) -> TxnRecord:
        return self.tracker.begin(xid, commit_lsn)

    def publish(self, event: ChangeEvent, txn: TxnRecord | None, raw: bytes = b"") -> None:
        """Queue the event's messages for every client; wake() then lets their senders run. The ledger keeps
        the compact record of the event (events/replay.py), not the event."""
        record = compact(event, raw)
        for client in self.clients:
            self._publish_to(client, event, txn, record)
        self.unwoken = True

    def _publish_to(self, client: Client, event: ChangeEvent, txn: TxnRecord | None, record: object) -> None:
        deliver = self.tracker.deliver
        append, adapter = client.queue.append, client.adapter
        for lsn, payload in adapter.expand(event):
            size = adapter.size(payload)
            if type(payload) is DeliveryGroup:  # one delivery, its messages queued one by one
                items = payload.items
                # Private (never handed to another client): nothing to re-express it from.
                count = payload.count
                deliver(client.ledger, lsn, txn, payload, None, HELD_PER_BYTE * size + HELD_FIXED * count, count)
                client.queue.extend(items)
                if size > CLIENT_RECEIVE_LIMIT:
                    for item in items:
                        if adapter.size(item) > CLIENT_RECEIVE_LIMIT:
                            self._warn_oversized(event, lsn, adapter.size(item))
                continue
            if size > CLIENT_RECEIVE_LIMIT:
                self._warn_oversized(event, lsn, size)
            deliver(client.ledger, lsn, txn, payload, record, HELD_PER_BYTE * size + HELD_FIXED)  # held(), inlined
            append(payload)

    def publish_run(self, run: ChangeRun, txn: TxnRecord | None) -> None:
        """publish() for each event of a run of plain changes, in one go for the adapters that take a run whole
        (expand_run: a RunPayload is queued once and recorded as one delivery per row); the others get the
        run's events one by one."""
        for client in self.clients:
            adapter = client.adapter
            expand_run = getattr(adapter, "expand_run", None)
            messages = expand_run(run) if expand_run is not None else None
            if messages is None:
                for i, event in enumerate(run.events()):
                    self._publish_to(client, event, txn, run.record(i))
                continue
            for lsn, payload, row in messages:
                size = adapter.size(payload)
                if isinstance(payload, RunPayload):
                    lsns = payload.lsns  # type: ignore[attr-defined]
                    self.tracker.deliver_run(client.ledger, lsns, txn, payload,
                                             HELD_PER_BYTE * size + HELD_FIXED * len(lsns))
                    if size > CLIENT_RECEIVE_LIMIT:
                        for i in range(len(lsns)):
                            unit_size = adapter.size(payload.unit(i)[0])
                            if unit_size > CLIENT_RECEIVE_LIMIT:
                                self._warn_oversized(run.event(row + i), lsns[i], unit_size)
                else:  # a row the run's writer left to the per-event path, or a BEGIN
                    if size > CLIENT_RECEIVE_LIMIT:
                        self._warn_oversized(run.event(row), lsn, size)
                    self.tracker.deliver(client.ledger, lsn, txn, payload, run.record(row),
                                         HELD_PER_BYTE * size + HELD_FIXED)
                client.queue.append(payload)
        self.unwoken = True

    def _warn_oversized(self, event: ChangeEvent, lsn: int, size: int) -> None:
        """Once per change: a client with gRPC's default receive limit will fail on this message (it ends
        its call with RESOURCE_EXHAUSTED; the other clients are not held up by it)."""
        if self._oversized is event:
            return
        self._oversized = event
        self.oversized_sent += 1
        rel = event.relation
        table = f"{rel.schema}.{rel.table}" if rel is not None else event.op.value
        log.warning("a %s change of %s at %s is %d bytes, over gRPC's default 4 MiB receive limit: clients must "
                    "raise theirs (grpc.max_receive_message_length; docs/client.md) or they fail on it", event.op.value,
                    table, format_lsn(lsn), size)

    def deliver_group(self, client: Client, lsn: int, group: DeliveryGroup) -> None:
        """Queue messages made for one client outside the stream (a CONSISTENT snapshot's chunk) as one
        delivery, in no transaction, and wake its sender."""
        size = HELD_PER_BYTE * group.size + HELD_FIXED * group.count
        self.tracker.deliver(client.ledger, lsn, None, group, None, size, group.count)
        client.queue.extend(group.items)
        client.wake()

    def release(self) -> None:
        """End a hold: reading goes on."""
        self.held = False
        self.capacity.set()

    def wake(self) -> None:
        """Wake the senders of clients with newly queued messages. The reader calls this before it yields
        to the event loop: one wake-up per burst of messages rather than one per message."""
        if self.unwoken:
            self.unwoken = False
            for client in self.clients:
                client.wake()

    def commit(self, txn: TxnRecord, end_lsn: int) -> None:
        if self.tracker.commit(txn, end_lsn):
            self.on_confirmed(self.tracker.confirmed_lsn)

    def _confirmed_maybe_moved(self) -> None:
        self.on_confirmed(self.tracker.confirmed_lsn)


async def finish_requests(acks: asyncio.Future[None], context: Any) -> None:
    """The client's request stream ended: a half-close ends the call normally; a request that could not
    be parsed ends it with INVALID_ARGUMENT (not grpc's UNKNOWN and a traceback)."""
    try:
        acks.result()
    except DecodeError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request message: {exc}")
