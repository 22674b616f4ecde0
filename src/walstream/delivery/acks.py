"""The acknowledgement contract, in one place. Every delivery API records what it sends and what its
clients acknowledge here, and the slot's confirmed position is derived from nothing else.

- A *delivery* is one message sent to one client, carrying an LSN. Deliveries of one client form a queue in
  the order they were sent.
- A client's ack of LSN L acknowledges the oldest unacknowledged delivery to that client whose LSN is L, and
  every delivery to that client before it. LSNs repeat (COPY, multi-row inserts, multi-table TRUNCATE) and
  go backwards across transactions (decoding is in commit order), so acks are matched by position in the
  client's queue, never by comparing LSNs. An ack matching no pending delivery is rejected: it moves nothing.
- A transaction is done when its commit has been read and every delivery of it has been acknowledged by the
  client it went to. The confirmed position is the end LSN of the newest transaction that is done and has
  only done transactions before it. It never goes backwards.
- When a client leaves while others stay, its pending deliveries are forgotten (they stop holding the slot).
  When the last client leaves, its pending deliveries are kept and handed, in order, to the next client:
  as they were if it uses the same API, else re-expanded from their events into the new client's API
  (then an event of which only part was acknowledged, such as one table of a seed TRUNCATE, goes whole).
  A delivery whose payload is marked `private` (a snapshot row, meant for the client that asked for it) is
  never handed to another client: it is dropped there and stops holding the slot.
- With nothing pending and no transaction open, the confirmed position may move to the server's WAL end
  (idle_advance), so a slot on quiet tables does not hold WAL.
- Each delivery carries a size (the memory it holds until acknowledged); `outstanding_bytes` sums them, so
  the reader can bound memory by bytes as well as by count.
- A run of rows (the INSERTs of one transaction read in one burst, events/run.py) goes to a client as one
  message, a `RunPayload`, but is recorded as one delivery per row, each with its own LSN: acks of a run are
  per LSN like any others (an ack inside a run acknowledges that row and those before it). When the last
  client leaves, each unacknowledged row of a run is handed on as its own message.
- A delivery may hold several messages that share its LSN (a `DeliveryGroup`: the rows of one snapshot
  chunk): one ack of that LSN acknowledges all of them. `outstanding` counts messages, so the count bound
  means the same either way. An ack of the LSN of the group acknowledged last, once nothing pending has
  that LSN, is a repeat (a client acking each row of the chunk): accepted, it moves nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

P = TypeVar("P")  # what a delivery carries for replay (the API's ready-to-send message)
Expand = Callable[[object], Sequence[tuple[int, P]]]  # event -> (lsn, message) in a client's API


class DeliveryGroup:
    """Messages sharing one LSN that a client acknowledges together, recorded as one delivery (the rows of
    a snapshot chunk): the hub queues `items` one by one and records the group once."""

    __slots__ = ("items", "size", "count")
    private = True  # its messages were made for one client (see the module's docstring)

    def __init__(self, items: Sequence[Any], size: int, count: int | None = None) -> None:
        self.items = items
        self.size = size
        self.count = len(items) if count is None else count  # messages: an item may hold several (V1Item.count)


class RunPayload:
    """A message holding the rows of a run: recorded as one delivery per row (deliver_run), the delivery's
    event being the row's index in the payload. `unit(index)` gives that row alone as (message, event), for
    a client the row is handed to."""

    __slots__ = ()
    private = False

    def unit(self, index: int) -> tuple[Any, object]:
        raise NotImplementedError


@dataclass(slots=True, eq=False)
class TxnRecord:
    xid: int
    commit_lsn: int
    end_lsn: int | None = None  # set when the commit is read
    outstanding: int = 0  # deliveries of this transaction not yet acknowledged


@dataclass(slots=True, eq=False)
class Delivery(Generic[P]):
    lsn: int
    txn: TxnRecord | None
    payload: P
    event: object = None  # the event the payload was made from, to re-express it in another API
    size: int = 0
    units: int = 1  # messages it holds (a DeliveryGroup: several)


COMPACT_AT = 4096  # acknowledged entries kept at the front of a ledger's lists before they are dropped


@dataclass(eq=False)
class ClientLedger(Generic[P]):
    """One client's unacknowledged deliveries, oldest first: entry i of each list, from `head` on.

    Parallel lists rather than an object per delivery: recording a delivery is four appends, and an ack
    finds its entry with list.index (both in C), which is most of what a busy stream costs here.
    Acknowledged entries lose their message and event at once, and are dropped from the front once there are
    COMPACT_AT of them and they are at least half the lists.
    """

    name: str
    api: str = ""
    lsns: list[int] = field(default_factory=list)
    txns: list[TxnRecord | None] = field(default_factory=list)
    payloads: list[P] = field(default_factory=list)
    events: list[object] = field(default_factory=list)  # what each was made from (events/replay.py)
    sizes: list[int] = field(default_factory=list)
    units: list[int] = field(default_factory=list)
    head: int = 0
    acked: int = 0
    rejected: int = 0
    repeated: int = 0  # repeated acks of the last acknowledged group (accepted, moving nothing)
    group_lsn: int = -1  # the LSN of the DeliveryGroup acknowledged last

    @property
    def pending_count(self) -> int:
        return len(self.lsns) - self.head

    @property
    def pending(self) -> list[Delivery[P]]:
        """The unacknowledged deliveries, oldest first (a copy)."""
        h = self.head
        return [Delivery(lsn, txn, payload, event, size, units) for lsn, txn, payload, event, size, units
                in zip(self.lsns[h:], self.txns[h:], self.payloads[h:], self.events[h:], self.sizes[h:],
                       self.units[h:], strict=True)]

    def clear(self) -> None:
        for entries in self._lists():
            entries.clear()
        self.head = 0

    def _lists(self) -> tuple[list[Any], ...]:
        return self.lsns, self.txns, self.payloads, self.events, self.sizes, self.units

    def _drop_acknowledged(self) -> None:
        h = self.head
        for entries in self._lists():
            del entries[:h]
        self.head = 0


class AckTracker(Generic[P]):
    def __init__(self, confirmed_lsn: int = 0) -> None:
        self.confirmed_lsn = confirmed_lsn
        self._txns: deque[TxnRecord] = deque()  # transactions not yet confirmed, in commit order
        self._orphans: list[Delivery[P]] = []
        self._orphans_api = ""
        self.outstanding = 0  # pending deliveries over all clients (and orphans)
        self.outstanding_bytes = 0  # their sizes

    # -- the stream side ------------------------------------------------------------------------------

    def begin(self, xid: int, commit_lsn: int) -> TxnRecord:
        txn = TxnRecord(xid, commit_lsn)
        self._txns.append(txn)
        return txn

    def commit(self, txn: TxnRecord, end_lsn: int) -> bool:
        txn.end_lsn = end_lsn
        return self._advance()

    def deliver(self, client: ClientLedger[P], lsn: int, txn: TxnRecord | None, payload: P,
                event: object = None, size: int = 0, units: int = 1) -> None:
        client.lsns.append(lsn)
        client.txns.append(txn)
        client.payloads.append(payload)
        client.events.append(event)
        client.sizes.append(size)
        client.units.append(units)
        if txn is not None:
            txn.outstanding += 1
        self.outstanding += units
        self.outstanding_bytes += size

    def deliver_run(self, client: ClientLedger[P], lsns: Sequence[int], txn: TxnRecord | None, payload: P,
                    size: int) -> None:
        """One delivery per row of a RunPayload (lsns: the rows' LSNs), its size spread over them."""
        n = len(lsns)
        client.lsns.extend(lsns)
        client.txns.extend([txn] * n)
        client.payloads.extend([payload] * n)
        client.events.extend(range(n))
        per = size // n
        sizes = [per] * n
        sizes[-1] += size - per * n
        client.sizes.extend(sizes)
        client.units.extend([1] * n)
        if txn is not None:
            txn.outstanding += n
        self.outstanding += n
        self.outstanding_bytes += size

    def idle_advance(self, wal_end: int) -> bool:
        """Nothing open or pending: everything up to the server's WAL end is confirmed. A pending delivery
        outside any transaction (a non-transactional logical message) holds it like a transaction does."""
        if self._txns or self._orphans or self.outstanding or wal_end <= self.confirmed_lsn:
            return False
        self.confirmed_lsn = wal_end
        return True

    @property
    def open_transactions(self) -> int:
        return len(self._txns)

    @property
    def in_transaction(self) -> bool:
        """A transaction has begun and its commit has not been read yet."""
        txns = self._txns
        return bool(txns) and txns[-1].end_lsn is None

    # -- the client side ------------------------------------------------------------------------------

    def ack(self, client: ClientLedger[P], lsn: int) -> int:
        """Acknowledge per the contract above; returns how many deliveries it covered (0 = rejected,
        -1 = a repeated ack of the group acknowledged last)."""
        head = client.head
        try:
            end = client.lsns.index(lsn, head) + 1
        except ValueError:
            if lsn == client.group_lsn:
                client.repeated += 1
                return -1
            client.rejected += 1
            return 0
        count = end - head
        txns = client.txns
        first = txns[head]
        if first is not None and first is txns[end - 1]:
            first.outstanding -= count  # one transaction's deliveries are contiguous: all of them are first's
        else:  # one delivery each for one-row transactions: a plain loop costs less than counting them first
            for txn in txns[head:end]:
                if txn is not None:
                    txn.outstanding -= 1
        self.outstanding_bytes -= sum(client.sizes[head:end])
        units = sum(client.units[head:end])
        if units != count:  # a group among them
            client.group_lsn = next(client.lsns[i] for i in range(end - 1, head - 1, -1) if client.units[i] != 1)
        # Drop the acknowledged messages and events now (the entries themselves go at the next compaction):
        # kept until then, 4,096 acknowledged 1 MB rows would hold 8 GB.
        nothing = [None] * count
        client.payloads[head:end] = nothing  # type: ignore[assignment]
        client.events[head:end] = nothing
        client.head = end
        if end >= COMPACT_AT and end * 2 >= len(txns):
            client._drop_acknowledged()
        self.outstanding -= units
        client.acked += units
        self._advance()
        return count

    def client_left(self, client: ClientLedger[P], last: bool) -> None:
        if last:
            self._orphans.extend(client.pending)
            self._orphans_api = client.api
        else:
            for txn in client.txns[client.head:]:
                if txn is not None:
                    txn.outstanding -= 1
            self.outstanding -= sum(client.units[client.head:])
            self.outstanding_bytes -= sum(client.sizes[client.head:])
            self._advance()
        client.clear()

    def adopt_orphans(self, client: ClientLedger[P], expand: Expand[P],
                      size: Callable[[P], int] = lambda payload: 0) -> list[P]:
        """Hand what the last client left unacknowledged to a new client; returns the payloads to resend.

        `expand` turns an event into the new client's messages; it is used when the APIs differ (and may
        return nothing, e.g. for an event the new client filters out: then it stops holding the slot).
        `size` gives the size of such a message.
        """
        orphans, self._orphans = self._orphans, []
        same_api = client.api == self._orphans_api
        resend: list[P] = []
        previous: object = None
        for old in orphans:
            if isinstance(old.payload, RunPayload):  # one row of a run: on its own from here
                assert isinstance(old.event, int)
                old.payload, old.event = old.payload.unit(old.event)
            self.outstanding -= old.units
            self.outstanding_bytes -= old.size
            if old.txn is not None:
                old.txn.outstanding -= 1
            if getattr(old.payload, "private", False):
                continue
            if same_api or old.event is None:
                self.deliver(client, old.lsn, old.txn, old.payload, old.event, old.size, old.units)
                resend.append(old.payload)
            elif old.event is not previous:
                previous = old.event
                for lsn, payload in expand(old.event):
                    self.deliver(client, lsn, old.txn, payload, old.event, size(payload))
                    resend.append(payload)
        self._advance()
        return resend

    @property
    def has_orphans(self) -> bool:
        return bool(self._orphans)

    # -- internals ------------------------------------------------------------------------------------

    def _advance(self) -> bool:
        moved = False
        txns = self._txns
        while txns and txns[0].end_lsn is not None and txns[0].outstanding == 0:
            end = txns.popleft().end_lsn
            assert end is not None
            if end > self.confirmed_lsn:
                self.confirmed_lsn = end
                moved = True
        return moved
