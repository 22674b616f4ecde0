"""Begin and Commit straight from their bytes (Assembler.boundary, the session loop's path for them) against
the decoded messages through Assembler.handle (the reference): the same events, transaction records and
errors, on the golden streams and on truncated and corrupted messages; and no BEGIN event is made for a sink
that says nobody takes one (Hub.begin_events)."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_replay import GOLDEN  # type: ignore[import-not-found]  # a sibling test module

from walstream.errors import WalstreamError
from walstream.events.assembler import Assembler
from walstream.events.change import ChangeEvent, Op
from walstream.events.text import text_decoder
from walstream.events.values import TypeCatalog
from walstream.source.decoder import decode_message


class Journal:
    """Every call the assembler makes on its sink, in order."""

    def __init__(self, begin_events: bool = True) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.begin_events = begin_events

    def begin(self, xid: int, commit_lsn: int) -> int:
        self.calls.append(("begin", xid, commit_lsn))
        return sum(1 for c in self.calls if c[0] == "begin")  # the transaction's record: its number

    def publish(self, event: ChangeEvent, txn: Any, raw: bytes = b"") -> None:
        # Relations by id: each assembler makes its own RelationInfo (their converters compare by identity).
        fields: list[Any] = list(event)
        fields[4] = event.relation.relation_id if event.relation is not None else None
        fields[8] = tuple(r.relation_id for r in event.truncated)
        self.calls.append(("publish", tuple(fields), txn, raw))

    def commit(self, txn: Any, end_lsn: int) -> None:
        self.calls.append(("commit", txn, end_lsn))


def run(messages: list[tuple[int, bytes]], raw_path: bool, begin_events: bool = True) -> list[tuple[Any, ...]]:
    """The sink's calls, ending with the error that stopped the stream (its type and text), if any."""
    sink = Journal(begin_events)
    assembler = Assembler(sink, TypeCatalog(), text_decoder("utf-8"))
    try:
        for lsn, data in messages:
            if not (raw_path and assembler.boundary(data)):
                assembler.handle(decode_message(data), lsn, data)
    except WalstreamError as exc:
        sink.calls.append(("error", type(exc).__name__, str(exc)))
    return sink.calls


def golden(version: int) -> list[tuple[int, bytes]]:
    out = []
    for line in (GOLDEN / f"pgoutput_v{version}.jsonl").read_text().splitlines()[1:]:
        row = json.loads(line)
        if not row["in_stream"]:
            out.append((int(row["seq"]) * 16, bytes.fromhex(row["hex"])))
    return out


@pytest.mark.parametrize("version", [1])
def test_the_golden_stream_gives_the_same_calls(version: int) -> None:
    messages = golden(version)
    assert sum(1 for _, data in messages if data[:1] in (b"B", b"C")) > 4
    calls = run(messages, raw_path=True)
    assert calls == run(messages, raw_path=False)
    assert not any(c[0] == "error" for c in calls)


def test_no_begin_event_for_a_sink_that_takes_none() -> None:
    messages = golden(1)
    full, lean = run(messages, raw_path=True), run(messages, raw_path=True, begin_events=False)
    begins = [c for c in full if c[0] == "publish" and c[1][0] is Op.BEGIN]
    assert begins
    assert lean == [c for c in full if c not in begins]


def _begin(final_lsn: int, xid: int) -> bytes:
    return b"B" + struct.pack(">QqI", final_lsn, 800_000_000_000_000, xid)


def _commit(commit_lsn: int, end_lsn: int) -> bytes:
    return b"C" + struct.pack(">bQQq", 0, commit_lsn, end_lsn, 800_000_000_000_000)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_truncated_and_corrupted_boundaries_give_the_same_outcome(data: st.DataObject) -> None:
    """Begins and Commits cut short, lengthened, with bytes changed (a zero final LSN, a Commit that does not
    match, one without a Begin, a Begin inside a transaction, a transaction older than the last): the
    raw path does what the decoder and handle() do, errors included."""
    stream = [_begin(0x2000, 7), _commit(0x2000, 0x2030), _begin(0x3000, 8), _commit(0x3000, 0x3030),
              _begin(0x1000, 9), _commit(0x1000, 0x1030)]
    messages = []
    for msg in stream:
        buf = bytearray(msg)
        for pos, value in data.draw(st.lists(st.tuples(st.integers(0, len(buf) - 1), st.integers(0, 255)),
                                             max_size=2)):
            buf[pos] = value
        how = data.draw(st.sampled_from(["as is", "as is", "cut", "longer", "dropped"]))
        if how == "cut":
            buf = buf[:data.draw(st.integers(1, len(buf) - 1))]
        elif how == "longer":
            buf += b"\0"
        if how != "dropped":
            messages.append((0x100, bytes(buf)))
    assert run(messages, raw_path=True) == run(messages, raw_path=False)


def test_the_adapters_that_say_they_take_no_begin_send_nothing_for_one() -> None:
    """Hub.begin_events trusts takes_begin = False: each such adapter's expand() of a BEGIN is empty."""
    from walstream.delivery.acks import AckTracker
    from walstream.delivery.hub import Hub
    from walstream.delivery.seed.service import SeedAdapter
    from walstream.delivery.v1.adapter import Encoder, Subscription, V1Adapter
    from walstream.delivery.v1.typed import TypedCatalog
    from walstream.events.change import TxnInfo
    from walstream.sinks.runner import SinkAdapter, SinkStats

    v1 = Subscription(transaction_boundaries=True, logical_messages=True)
    adapters: list[Any] = [SeedAdapter(), SinkAdapter("s", SinkStats("s"), transactions=True),
                V1Adapter(Encoder(TypedCatalog(TypeCatalog())), v1)]
    begin = ChangeEvent(Op.BEGIN, 0x100, TxnInfo(7, 0x100, 0), 0)
    hub = Hub(AckTracker(), 10, 10)
    for adapter in adapters:
        assert adapter.takes_begin is False
        assert list(adapter.expand(begin)) == []
        client = hub.connect(adapter, "test")
        assert client is not None and hub.begin_events is False

    class Other:
        api = "other"

        def expand(self, event: ChangeEvent) -> list[tuple[int, object]]:
            return [(event.lsn, event)]

        def size(self, message: object) -> int:
            return 1

    other = hub.connect(Other(), "test")
    assert other is not None and hub.begin_events is True
    hub.disconnect(other)
    assert hub.begin_events is False
