"""The pure pieces of walstream.snapshot: COPY text parsing, snapshot visibility, resume tokens, requests."""

from __future__ import annotations

import pytest

from walstream._proto import walstream_v1_pb2 as pb
from walstream.client.core import Session
from walstream.delivery.acks import AckTracker, ClientLedger, DeliveryGroup
from walstream.delivery.v1.adapter import InvalidSubscription, Subscription, V1Item
from walstream.snapshot import token
from walstream.snapshot.copytext import CopyFormatError, parse_rows, unescape
from walstream.snapshot.reader import Snapshot
from walstream.snapshot.request import CHUNK_TARGET_BYTES, FIRST_CHUNK_ROWS, SnapshotSpec
from walstream.source.messages import Cell


def test_copy_text_rows_become_pgoutput_cells():
    data = b"1\tplain\t\\N\n2\ttab\\there\\nnew line \\\\ back\t\n"
    rows = parse_rows(data, 3)
    assert rows == [
        (Cell("t", b"1"), Cell("t", b"plain"), Cell("n", None)),
        (Cell("t", b"2"), Cell("t", b"tab\there\nnew line \\ back"), Cell("t", b"")),
    ]
    assert unescape(b"\\101\\x42\\b\\f\\r\\v") == b"AB\b\f\r\v"
    assert parse_rows(b"", 2) == []
    with pytest.raises(CopyFormatError, match="row 1 has 2 columns, expected 3"):
        parse_rows(b"a\tb\n", 3)


def test_snapshot_visibility_follows_pg_visible_in_snapshot():
    snap = Snapshot.parse("727:730:728")
    assert not snap.invisible(700)  # before xmin: committed and visible
    assert not snap.invisible(727 + 2)  # between, not in xip
    assert snap.invisible(728)  # in xip
    assert snap.invisible(730) and snap.invisible(731)  # at or after xmax (the empty-xip case of the brief)
    assert Snapshot.parse("727:727:").invisible(727)
    # 64-bit snapshot values against 32-bit xids, across wraparound.
    epoch = 5 << 32
    wrapped = Snapshot.parse(f"{epoch + 0xFFFFFFF0}:{epoch + (1 << 32) + 5}:")
    assert wrapped.invisible(6) and not wrapped.invisible(3) and not wrapped.invisible(0xFFFFFFF5)


def test_resume_tokens_round_trip_and_are_refused_for_another_stream():
    position = token.Position("bf1", "req", ("public.a", "public.b"), ("42", "x"), ("99", "z"))
    raw = token.encode(position, "sys/db/slot/permanent")
    assert token.decode(raw, "sys/db/slot/permanent", "req") == position
    with pytest.raises(token.TokenRefused, match="belongs to another stream") as refused:
        token.decode(raw, "sys/db/slot/temporary/abc/0", "req")
    assert not refused.value.malformed
    with pytest.raises(token.TokenRefused, match="different snapshot.tables"):
        token.decode(raw, "sys/db/slot/permanent", "other")
    with pytest.raises(token.TokenRefused, match="damaged"):
        token.decode(raw[:-1] + bytes([raw[-1] ^ 1]), "sys/db/slot/permanent", "req")
    with pytest.raises(token.TokenRefused, match="not a walstream resume token"):
        token.decode(b"garbage", "sys/db/slot/permanent", "req")


def test_chunks_are_sized_by_the_last_ones_row_width():
    chosen = SnapshotSpec.parse(pb.SnapshotRequest())
    assert chosen.next_chunk_rows(20_000) == FIRST_CHUNK_ROWS  # nothing read yet
    assert chosen.next_chunk_rows(500) == 500
    assert chosen.next_chunk_rows(20_000, 1000, 100 * 1000) == 20_000  # 100-byte rows: the most
    assert chosen.next_chunk_rows(20_000, 1000, 4096 * 1000) == CHUNK_TARGET_BYTES // 4096  # 2,048 rows of 4 kB
    assert chosen.next_chunk_rows(20_000, 1000, 1000 * CHUNK_TARGET_BYTES) == 1  # rows over the target: one
    asked = SnapshotSpec.parse(pb.SnapshotRequest(chunk_rows=300))
    assert asked.next_chunk_rows(20_000) == asked.next_chunk_rows(20_000, 10, 1 << 30) == 300  # as asked


def test_snapshot_request_validation():
    spec = SnapshotSpec.parse(pb.SnapshotRequest(tables=["public.o*", "x"]))
    assert spec.wants("public", "orders") and spec.wants("public", "x") and not spec.wants("public", "y")
    assert SnapshotSpec.parse(pb.SnapshotRequest()).wants("any", "table")
    with pytest.raises(InvalidSubscription, match=r"snapshot.tables\[1\]: 'a.b.c' is not a table pattern"):
        SnapshotSpec.parse(pb.SnapshotRequest(tables=["ok", "a.b.c"]))
    assert spec.chunk_size(10_000, 20_000, 1000) == 5000  # a quarter of --max-unacked (events)
    assert spec.chunk_size(10_000, 200_000, 1000) == 20_000  # walstream's most
    assert spec.chunk_size(400, 20_000, 1) == 100  # one row a piece: a quarter of the client queue
    assert spec.chunk_size(400, 20_000, 10) == 1000  # pieces of 10 rows: 100 pieces
    with pytest.raises(InvalidSubscription, match="chunk_rows: 500 is above this server.s maximum; use 1 to 100 "):
        SnapshotSpec.parse(pb.SnapshotRequest(chunk_rows=500)).chunk_size(400, 20_000, 1)
    assert SnapshotSpec.parse(pb.SnapshotRequest(chunk_rows=500)).chunk_size(400, 20_000, 5) == 500
    sub = Subscription.parse(pb.Subscription(include_tables=["public.*"]))
    assert spec.request_hash(sub) == SnapshotSpec.parse(pb.SnapshotRequest(tables=["public.o*", "x"])).request_hash(sub)
    assert spec.request_hash(sub) != SnapshotSpec.parse(pb.SnapshotRequest(tables=["x"])).request_hash(sub)


def test_snapshot_rows_are_never_handed_to_another_client():
    tracker: AckTracker[object] = AckTracker()
    first: ClientLedger[object] = ClientLedger("a", "v1")
    txn = tracker.begin(1, 100)
    change = V1Item(b"c", pb.INSERT, 90)
    rows = DeliveryGroup([V1Item(b"s", pb.SNAPSHOT, 95), V1Item(b"t", pb.SNAPSHOT, 95)], 2)
    tracker.deliver(first, 90, txn, change)
    tracker.deliver(first, 95, txn, rows, size=2, units=2)
    tracker.commit(txn, 110)
    assert tracker.outstanding == 3
    tracker.client_left(first, last=True)
    second: ClientLedger[object] = ClientLedger("b", "v1")
    assert tracker.adopt_orphans(second, lambda event: ()) == [change]
    assert tracker.outstanding == 1
    assert tracker.ack(second, 90) == 1
    assert tracker.confirmed_lsn == 110  # the dropped snapshot rows hold nothing
    assert tracker.outstanding == 0 and tracker.outstanding_bytes == 0


def test_a_chunk_is_one_delivery_acknowledged_by_one_ack():
    tracker: AckTracker[object] = AckTracker()
    client: ClientLedger[object] = ClientLedger("a", "v1")
    txn = tracker.begin(1, 100)
    items = [V1Item(b"s", pb.SNAPSHOT, 95) for _ in range(3)]
    tracker.deliver(client, 90, txn, V1Item(b"c", pb.INSERT, 90), size=10)
    tracker.deliver(client, 95, txn, DeliveryGroup(items, 3), size=30, units=3)
    tracker.deliver(client, 105, txn, V1Item(b"m", pb.COMMIT, 105), size=10)
    tracker.commit(txn, 105)
    assert (tracker.outstanding, tracker.outstanding_bytes) == (5, 50)
    assert tracker.ack(client, 95) == 2  # the change and the whole chunk
    assert (tracker.outstanding, tracker.outstanding_bytes, client.acked) == (1, 10, 4)
    assert tracker.ack(client, 95) == -1 and tracker.ack(client, 95) == -1  # a client acking each row
    assert client.rejected == 0 and client.repeated == 2
    assert tracker.ack(client, 90) == 0 and client.rejected == 1  # anything else matching nothing is rejected
    assert tracker.ack(client, 105) == 1 and tracker.confirmed_lsn == 105


def test_the_client_library_acks_a_chunk_once():
    session = Session()
    session.new_stream()
    events = [pb.Event(op=pb.SNAPSHOT, lsn=95, commit_lsn=100, ordinal=i) for i in (1, 2, 3)]
    first, acks = session.receive(pb.Batch(events=events[:2]))
    second, _ = session.receive(pb.Batch(events=[*events[2:], pb.Event(op=pb.COMMIT, lsn=120, commit_lsn=100,
                                                                           ordinal=4)]))
    assert first is not None and second is not None and acks == []
    assert session.ack(first.changes[0]) == [95]  # the chunk's one Ack
    assert session.ack(first) == []
    assert session.ack(second.changes[0]) == []
    assert session.ack(second) == [120]
