"""Runs of plain changes (events/run.py: INSERTs, UPDATEs without an old row) against the per-message path, the
reference: the C run writer gives the bytes Encoder.item gives row by row; the C run scanner takes exactly the
messages the Python decoder decodes as plain changes; and
through the whole delivery side (assembler, hub, ack ledger, v1 batcher) a stream fed as runs gives the same
batches, the same ack outcomes and the same messages handed to the next client as the stream fed message by
message in pure Python, truncated and corrupted Inserts included.

Skipped where the accelerator was not built; under CI=true a missing build fails instead (CI tests both).
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_native_rows import CELL_KIND, COLUMN  # type: ignore[import-not-found]  # a sibling test module
from test_replay import GOLDEN, Tagged  # type: ignore[import-not-found]
from test_v1wire import relation  # type: ignore[import-not-found]

from walstream import native
from walstream._proto import walstream_v1_pb2 as pb
from walstream.delivery.acks import AckTracker
from walstream.delivery.hub import Client, Hub
from walstream.delivery.v1.adapter import Encoder, Subscription, V1Adapter, V1Item, V1Run
from walstream.delivery.v1.service import _Batcher
from walstream.delivery.v1.typed import TypedCatalog
from walstream.errors import ProtocolError
from walstream.events.assembler import Assembler
from walstream.events.change import ChangeEvent, Op, TxnInfo
from walstream.events.run import ChangeRun
from walstream.events.text import text_decoder
from walstream.events.values import TypeCatalog
from walstream.source import messages as m
from walstream.source.decoder import decode_message, insert_decoder, plain_insert


@pytest.fixture(autouse=True)
def built() -> None:
    if "native" not in native.available_implementations():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the native accelerator did not build: {native._import_error}")
        pytest.skip(f"the native accelerator is not built here: {native._import_error}")


def _tuple(cells: Sequence[tuple[str, bytes | None]]) -> bytes:
    out = struct.pack(">H", len(cells))
    for kind, data in cells:
        out += kind.encode() if data is None else kind.encode() + struct.pack(">i", len(data)) + data
    return out


def insert_message(cells: Sequence[tuple[str, bytes | None]], relid: int = 16385, op: bytes = b"I") -> bytes:
    """An Insert, or with op=b"U" an Update without an old row: both plain changes."""
    return op + struct.pack(">I", relid) + b"N" + _tuple(cells)


def update_with_old(cells: Sequence[tuple[str, bytes | None]], relid: int = 16385) -> bytes:
    """An Update that sends the old key ('K'): never part of a run."""
    return b"U" + struct.pack(">I", relid) + b"K" + _tuple(cells) + b"N" + _tuple(cells)


def _python_outcome(msg: bytes) -> tuple[int, str] | None:
    """(relation id, kind) if the Python decoder takes msg as a plain change (an Insert, an Update without an
    old row), else None (it decodes something else or raises)."""
    try:
        got = decode_message(msg)
    except ProtocolError:
        return None
    if isinstance(got, m.Insert) or (isinstance(got, m.Update) and got.old is None):
        return got.relation_id, type(got).__name__
    return None


# --- the C pieces against the reference --------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(COLUMN, CELL_KIND, st.booleans()), min_size=1, max_size=8),
       st.integers(1, 5), st.booleans(), st.integers(0, 2**64 - 1), st.integers(0, 2**40), st.sampled_from("IU"))
def test_a_run_is_written_as_the_events_row_by_row(columns: list[tuple[tuple[int, str], str, bool]], rows: int,
                                                   utf8: bool, lsn: int, ordinal: int, kind: str) -> None:
    rel = relation(*((oid, key) for (oid, _), _, key in columns), encoding="utf-8" if utf8 else "latin-1")
    raws = [insert_message([(cell, f"{text}{r}".encode() if cell == "t" else None)
                            for (_, text), cell, _ in columns], op=kind.encode()) for r in range(rows)]
    lsns = [(lsn + r * 40) % 2**64 for r in range(rows)]
    txn = TxnInfo(7, lsns[-1], 5)
    run = ChangeRun(Op.INSERT if kind == "I" else Op.UPDATE, rel, txn, ordinal, lsns, raws)
    with native.using("python"):
        encoder = Encoder(TypedCatalog(TypeCatalog()))
        want = [encoder.item(run.event(i)).data for i in range(rows)]
    with native.using("native"):
        items = Encoder(TypedCatalog(TypeCatalog())).run_items(run)
    got: list[bytes] = []
    for item_lsn, item, row in items:
        if isinstance(item, V1Run):
            assert item.lsns == lsns[row:row + item.count] and item_lsn == item.lsns[-1]
            units = [item.unit(i) for i in range(item.count)]
            assert b"".join(u.data for u, _ in units) == item.bytes()
            assert [r.raw for _, r in units] == raws[row:row + item.count]
            got.extend(u.data for u, _ in units)
        else:
            assert item_lsn == lsns[row]
            got.append(item.data)
    assert got == want


def test_the_golden_inserts_are_written_by_c() -> None:
    """Not all rows fall back: the golden stream's plain rows come out of the run writer."""
    runs: list[ChangeRun] = []

    class Runs:
        def begin(self, xid: int, commit_lsn: int) -> None:
            return None

        def publish(self, event: ChangeEvent, txn: Any, raw: bytes = b"") -> None:
            pass

        def publish_run(self, run: ChangeRun, txn: Any) -> None:
            runs.append(run)

        def commit(self, txn: Any, end_lsn: int) -> None:
            pass

    with native.using("native"):
        feed_runs(Runs(), golden(), burst=64)
        encoder = Encoder(TypedCatalog(TypeCatalog()))
        written = sum(i.count for r in runs for _, i, _ in encoder.run_items(r) if isinstance(i, V1Run))
    assert written > 5


def test_updates_without_an_old_row_make_runs_of_their_own() -> None:
    """bulk()'s Updates: a run of 5, the one with the old key alone (per message), a run of 3 of another table;
    the Inserts around them runs of Inserts."""
    runs: list[ChangeRun] = []
    singles: list[ChangeEvent] = []

    class Runs:
        def begin(self, xid: int, commit_lsn: int) -> None:
            return None

        def publish(self, event: ChangeEvent, txn: Any, raw: bytes = b"") -> None:
            singles.append(event)

        def publish_run(self, run: ChangeRun, txn: Any) -> None:
            runs.append(run)

        def commit(self, txn: Any, end_lsn: int) -> None:
            pass

    with native.using("native"):
        feed_runs(Runs(), bulk(), burst=256)
    updates = [(len(r), r.relation.relation_id) for r in runs if r.op is Op.UPDATE]
    assert updates == [(5, 16385), (3, 16386)]
    assert [e.old_kind for e in singles if e.op is Op.UPDATE] == ["K"]
    assert all(r.op is Op.INSERT for r in runs if r.raws[0][0] == 0x49)
    assert [e.new for e in runs[[r.op for r in runs].index(Op.UPDATE)].events()] == [
        decode_message(raw).new for raw in runs[[r.op for r in runs].index(Op.UPDATE)].raws]  # type: ignore[union-attr]


def _corrupted(data: st.DataObject) -> bytes:
    cells = [("t", b"42"), ("t", "é".encode() * 3), ("n", None), ("t", b"12.50")]
    relid = data.draw(st.sampled_from([16385, 16386]))
    kind = data.draw(st.sampled_from(["I", "U", "K"]))
    msg = bytearray(update_with_old(cells, relid) if kind == "K" else insert_message(cells, relid, kind.encode()))
    cut = data.draw(st.integers(0, len(msg)))
    for pos, value in data.draw(st.lists(st.tuples(st.integers(0, len(msg) - 1), st.integers(0, 255)),
                                         max_size=2)):
        msg[pos] = value
    return bytes(msg[:cut]) if data.draw(st.booleans()) else bytes(msg)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_the_run_scanner_takes_exactly_what_the_decoder_takes(data: st.DataObject) -> None:
    msgs = [_corrupted(data) for _ in range(data.draw(st.integers(1, 5)))]
    with native.using("native"):
        accelerated = native.plain_run()
    assert accelerated is not None
    run_length = accelerated[0]
    for start in range(len(msgs)):
        relid, n = run_length(msgs, start)
        outcomes = [_python_outcome(m) for m in msgs[start:]]
        want = 0
        while want < len(outcomes) and outcomes[want] is not None and outcomes[want] == outcomes[0]:
            want += 1
        assert n == want
        if n:
            assert outcomes[0] is not None and outcomes[0][0] == relid
    assert run_length(msgs, len(msgs)) == (0, 0)
    assert run_length(msgs, -1) == (0, 0)


def test_bad_arguments_raise_and_never_crash() -> None:
    from walstream._native import _rowenc

    msg = insert_message([("t", b"1")])
    args: list[Any] = [[msg], [16], 0, 1, b"\x08\x01", b"", 1, b"", bytes([_rowenc.K_SINT64]), (None,)]
    data, offsets, done = _rowenc.encode_plain_run(*args)
    assert done == 1 and len(offsets) == 16
    for i, bad in [(0, (msg,)), (1, [-1]), (3, 2), (2, -1), (9, ()), (8, "x")]:
        wrong = list(args)
        wrong[i] = bad
        with pytest.raises((TypeError, ValueError, OverflowError)):
            _rowenc.encode_plain_run(*wrong)
    assert _rowenc.encode_plain_run([b"I"], [16], 0, 1, *args[4:])[2] == 0  # malformed: Python's turn
    with pytest.raises(TypeError):
        _rowenc.plain_run_length((msg,), 0)  # type: ignore[arg-type]
    assert _rowenc.plain_run_length([msg, "not bytes", msg], 0)[1] == 1  # type: ignore[list-item]


# --- the delivery side, fed as runs and message by message ---------------------------------------------

Message = tuple[int, bytes]


def golden() -> list[Message]:
    out = []
    for line in (GOLDEN / "pgoutput_v1.jsonl").read_text().splitlines()[1:]:
        row = json.loads(line)
        if not row["in_stream"]:
            out.append((int(row["seq"]) * 16, bytes.fromhex(row["hex"])))
    return out


def bulk(transactions: int = 3, rows: int = 40, bad: bytes | None = None) -> list[Message]:
    """Transactions of Inserts into two tables (a Relation each first), Updates in the middle of one."""
    def rel(relid: int, name: bytes) -> bytes:
        cols = [(1, b"id", 20), (0, b"v", 25), (0, b"n", 1700)]
        return (b"R" + struct.pack(">I", relid) + b"public\0" + name + b"\0d" + struct.pack(">H", len(cols))
                + b"".join(bytes((k,)) + c + b"\0" + struct.pack(">Ii", oid, -1) for k, c, oid in cols))

    out: list[Message] = [(0, rel(16385, b"a")), (0, rel(16386, b"b"))]
    lsn = 1000
    for t in range(transactions):
        commit = lsn + rows * 100 + 50
        out.append((commit, b"B" + struct.pack(">QqI", commit, 5, 700 + t)))
        for r in range(rows):
            lsn += 10
            relid = 16385 if r % 17 < 12 else 16386
            out.append((lsn, insert_message([("t", str(r).encode()), ("t", f"row {r}".encode()),
                                             ("n", None) if r % 5 == 0 else ("t", b"1.50")], relid)))
            if t == 1 and r == 20:  # Updates: a run of 5, one with the old key (alone), a run of 3 of table b
                for k in range(9):
                    cells = [("t", str(k).encode()), ("u", None) if k == 2 else ("t", f"upd {k}".encode()),
                             ("n", None) if k == 4 else ("t", b"2.25")]
                    upd = (update_with_old(cells) if k == 5 else
                           insert_message(cells, 16385 if k < 5 else 16386, op=b"U"))
                    out.append((lsn + 1 + k, upd))
            if bad is not None and t == 2 and r == 25:
                out.append((lsn + 2, bad))
        out.append((commit, b"C\0" + struct.pack(">QQq", commit, commit + 8, 5)))
        lsn = commit + 100
    return out


def feed_messages(sink: Any, stream: list[Message]) -> Assembler:
    """The session loop's per-message path (decoder.plain_insert, the pure-Python reference)."""
    assembler = Assembler(sink, TypeCatalog(), text_decoder("utf-8"))
    for lsn, data in stream:
        if data[0] == 0x49 and (row := plain_insert(data)) is not None:
            assembler.insert(row[0], row[1], lsn, data)
        else:
            assembler.handle(decode_message(data), lsn, data)
    return assembler


def feed_runs(sink: Any, stream: list[Message], burst: int) -> Assembler:
    """The session loop with the accelerator: the Inserts of each burst of messages go as runs."""
    assembler = Assembler(sink, TypeCatalog(), text_decoder("utf-8"))
    accelerated = native.plain_run()
    assert accelerated is not None
    decode = insert_decoder()
    lsns: list[int] = []
    raws: list[bytes] = []
    for i, (lsn, data) in enumerate(stream):
        if data[0] in (0x49, 0x55):  # Inserts and Updates, as the session loop collects them
            lsns.append(lsn)
            raws.append(data)
        else:
            if raws:
                assembler.plain_run(lsns, raws, accelerated[0], decode)
                lsns, raws = [], []
            assembler.handle(decode_message(data), lsn, data)
        if raws and (i + 1) % burst == 0:
            assembler.plain_run(lsns, raws, accelerated[0], decode)
            lsns, raws = [], []
    if raws:
        assembler.plain_run(lsns, raws, accelerated[0], decode)
    return assembler


class Delivered:
    """A hub with one v1 subscriber, and its batches."""

    def __init__(self, sub: Subscription) -> None:
        self.encoder = Encoder(TypedCatalog(TypeCatalog()))
        self.hub = Hub(AckTracker(), 100_000, 100_000)
        client = self.hub.connect(V1Adapter(self.encoder, sub), "test")
        assert client is not None
        self.client: Client = client
        self.sub = sub

    # the assembler's sink
    def begin(self, xid: int, commit_lsn: int) -> Any:
        return self.hub.begin(xid, commit_lsn)

    def publish(self, event: ChangeEvent, txn: Any, raw: bytes = b"") -> None:
        self.hub.publish(event, txn, raw)

    def publish_run(self, run: ChangeRun, txn: Any) -> None:
        self.hub.publish_run(run, txn)

    def commit(self, txn: Any, end_lsn: int) -> None:
        self.hub.commit(txn, end_lsn)

    def batches(self) -> list[bytes]:
        async def drain() -> list[bytes]:
            batcher = _Batcher(self.hub, self.client, self.encoder, self.sub)
            acks: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            out = []
            while self.client.queue or batcher.carry:
                batch = await batcher.next(acks)
                assert batch is not None
                out.append(batch)
            return out
        return asyncio.run(drain())

    def state(self) -> tuple[int, int, int, list[int]]:
        ledger, tracker = self.client.ledger, self.hub.tracker
        return tracker.outstanding, tracker.outstanding_bytes > 0, tracker.confirmed_lsn, ledger.lsns[ledger.head:]


SUBSCRIPTIONS = [
    Subscription(max_events=7),
    Subscription(max_events=1000, max_bytes=600, transaction_boundaries=True),  # cut by bytes inside runs
    Subscription(max_events=3, ops=frozenset({Op.INSERT, Op.UPDATE}), transaction_boundaries=True),
    Subscription(max_bytes=30),  # every row over the bound: one a batch
]


def both_ways(stream: list[Message], sub: Subscription, burst: int,
              then: Callable[[Delivered], object] = lambda d: None) -> tuple[Any, Any]:
    with native.using("python"):
        reference = Delivered(sub)
        feed_messages(reference, stream)
        want = (reference.batches(), then(reference))
    with native.using("native"):
        runs = Delivered(sub)
        feed_runs(runs, stream, burst)
        assert any(isinstance(p, V1Run) for p in runs.client.ledger.payloads)  # the run path was taken
        got = (runs.batches(), then(runs))
    return want, got


@pytest.mark.parametrize("sub", SUBSCRIPTIONS)
@pytest.mark.parametrize("burst", [1, 16, 256])
def test_runs_give_the_same_batches_and_ack_outcomes(sub: Subscription, burst: int) -> None:
    stream = bulk()

    def acks(d: Delivered) -> list[object]:
        """Ack a few LSNs (inside runs, a repeat, one never sent), then everything: the tracker each time."""
        lsns = [lsn for lsn, data in stream if data[0] == 0x49]
        outcomes: list[object] = []
        for lsn in (lsns[5], lsns[5], lsns[41], 12345, lsns[-1], stream[-1][0] + 8):
            outcomes.append((d.hub.ack(d.client, lsn), d.state()))
        return outcomes

    want, got = both_ways(stream, sub, burst, acks)
    assert got == want
    assert len(want[0]) > 5


def test_the_golden_stream_gives_the_same_batches() -> None:
    want, got = both_ways(golden(), Subscription(max_events=4, transaction_boundaries=True), 8,
                          lambda d: d.state())
    assert got == want


@pytest.mark.parametrize("api", ["v1", "other"])
def test_what_the_last_client_left_goes_to_the_next_the_same(api: str) -> None:
    """Part of a run acknowledged, the client leaves: the next client (v1, or another API re-expressing the
    rows from their messages) gets the same messages either way, one per row."""
    stream = bulk(transactions=2)
    inserts = [lsn for lsn, data in stream if data[0] == 0x49]

    def next_client(d: Delivered) -> list[object]:
        assert d.hub.ack(d.client, inserts[9])
        d.hub.disconnect(d.client)
        sub = Subscription(max_events=5)
        adapter: Any = V1Adapter(d.encoder, sub) if api == "v1" else Tagged("b")
        second = d.hub.connect(adapter, "second")
        assert second is not None
        resent = [m.data if isinstance(m, V1Item) else m for m in second.queue]
        assert len(resent) == d.hub.tracker.outstanding
        d.hub.ack(second, inserts[20])
        return [resent, d.state()[0], d.hub.tracker.outstanding]

    want, got = both_ways(stream, Subscription(), 256, next_client)
    assert got == want


@pytest.mark.parametrize("bad", [
    b"I\0\0@\x01N\0\x03t\0\0\0\x0242t",  # truncated inside a column
    b"I\0\0@\x01N\0\x01x",  # an unknown column kind
    b"I\0\0@\x01N\0\x01t\xff\xff\xff\xff",  # a negative length

    b"U\0\0@\x01N\0\x03t\0\0\0\x0242t",  # an Update truncated inside a column
])
def test_a_corrupted_change_in_a_run_raises_the_same_error_after_the_same_deliveries(bad: bytes) -> None:
    stream = bulk(bad=bad)
    errors = []
    for name, feed in (("python", lambda d: feed_messages(d, stream)), ("native", lambda d: feed_runs(d, stream, 256))):
        with native.using(name):
            d = Delivered(Subscription(max_events=10_000, max_bytes=1 << 22))
            with pytest.raises(ProtocolError) as exc:
                feed(d)
            errors.append((str(exc.value), d.batches(), d.state()))
    assert errors[0] == errors[1]
    assert pb.SubscribeResponse.FromString(errors[0][1][0]).batch.events  # the rows before it were delivered


def test_a_run_never_takes_more_than_the_fullest_queue_has_room_for() -> None:
    """A client taking a run's events one by one queues each: a run is cut to the room in every queue, as the
    per-message path stops at a full queue."""
    hub = Hub(AckTracker(), 300, 20_000)
    first, second = hub.connect(Tagged("a"), "a"), hub.connect(Tagged("b"), "b")
    assert first is not None and second is not None
    first.queue.extend(range(290))
    second.queue.extend(range(100))
    assert hub.room()[0] == 10
    first.queue.extend(range(50))
    assert hub.room()[0] == 1  # one always goes
    first.queue.clear()
    assert hub.room()[0] == 200
