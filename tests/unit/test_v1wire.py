"""walstream.delivery.v1.wire: the bytes it writes are exactly what the message classes serialise.

The message path (each column's converter in walstream.delivery.v1.typed, upb) is the reference: every value,
row and event written as bytes is compared with the same thing built as messages and serialised.
"""

from __future__ import annotations

import logging
import random
from functools import partial
from typing import Any

import pytest

from walstream._proto import walstream_v1_pb2 as pb
from walstream.delivery.v1.adapter import Encoder, V1Item
from walstream.delivery.v1.typed import TypedCatalog, to_value
from walstream.delivery.v1.wire import RowEncoder, varint, zigzag64
from walstream.events.change import PG_EPOCH_US, ChangeEvent, Op, RelationInfo, TxnInfo
from walstream.events.values import TypeCatalog
from walstream.source.messages import Cell, RelationColumn

# (type oid, text) as pgoutput sends them; the kinds with a byte encoder first, then some without.
VALUES = [
    (21, "-32768"), (23, "2147483647"), (23, "0"), (23, "63"), (23, "64"), (23, "-64"), (23, "-65"),
    (20, "-9223372036854775808"), (20, "9223372036854775807"), (20, "9007199254740993"), (20, "8191"),
    (20, "8192"), (20, "1234567890123"),
    (701, "1.5"), (701, "1e-07"), (700, "3.4028235e+38"), (701, "Infinity"), (701, "-Infinity"), (701, "NaN"),
    (700, "-0"), (701, "0"),
    (1700, "12345678901234567890.000000000001"), (1700, "NaN"), (1700, "-Infinity"), (1700, "0.01"),
    (16, "t"), (16, "f"),
    (25, "héllo ✓ 日本"), (1043, ""), (25, "x" * 125), (25, "y" * 126), (25, "z" * 200), (25, "w" * 20000),
    (1042, "pad  "), (19, "name"),
    (114, '{"a": 1, "a": 2}'), (3802, '{"k": [1, 2.50]}'), (3802, '{"big": "' + "b" * 300 + '"}'),
    (1114, "2024-01-02 03:04:05"), (1114, "2024-01-02 03:04:05.678901"), (1114, "1969-12-31 23:59:59.999999"),
    (1114, "0001-12-31 23:00:00 BC"), (1114, "infinity"), (1114, "-infinity"),
    (1114, "294276-12-31 23:59:59.999999"),  # beyond int64 microseconds since 1970: text
    (1184, "2024-01-02 03:04:05+00"), (1184, "2024-01-02 03:04:05.25+00"), (1184, "2024-01-02 03:04:05-05:30"),
    (1184, "1883-11-18 12:00:00-04:56:02"), (1184, "infinity"), (1184, "-infinity"), (1184, "1970-01-01 00:00:00+00"),
    (1184, "294276-12-31 23:59:59+00"),
    (1082, "1970-01-01"), (1082, "1969-12-31"), (1082, "2024-02-29"), (1082, "0001-01-01 BC"),
    (1082, "infinity"), (1082, "-infinity"), (1082, "5874897-12-31"),
    (1083, "00:00:00"), (1083, "23:59:59.999999"), (1083, "24:00:00"),
    # No byte encoder: through the message classes.
    (17, "\\x00ff10"), (1007, "{1,NULL,3}"), (1007, "{}"), (1009, '{"a b",NULL}'), (2950, "a0eebc99-9c0b-4ef8-bb6d"),
    (1186, "1 day 02:00:00"), (22, "1 2 3"),
]
# Not what the type says: the message path sends the text, logged.
BAD = [(23, "x1"), (16, "yes"), (1184, "yesterday"), (1082, "2024-13"), (701, "one"), (1083, "noon")]


def relation(*columns: tuple[int, bool], encoding: str = "utf-8") -> RelationInfo:
    cols = tuple(RelationColumn(int(key), f"c{i}", oid, -1) for i, (oid, key) in enumerate(columns))
    return RelationInfo(16385, "public", "t", "d", cols, tuple(str for _ in cols),
                        tuple(i for i, c in enumerate(cols) if c.is_key), partial(bytes.decode, encoding=encoding))


@pytest.fixture
def typed() -> TypedCatalog:
    return TypedCatalog(TypeCatalog())


def reference_row(typed: TypedCatalog, rel: RelationInfo, cells: tuple[Cell, ...], key_only: bool = False) -> bytes:
    """The row built as messages, a Value per column from the column's converter (text that does not parse
    as its type: a text Value)."""
    typing = typed.relation(rel)
    row = pb.Row()
    for i, (kind, data) in enumerate(cells):
        if key_only and not typing.key_mask[i]:
            row.values.add()
        elif kind == "n":
            row.values.add(null=True)
        elif kind == "u":
            row.values.add(unchanged_toast=True)
        else:
            assert data is not None
            text = typing.decode(data)
            try:
                row.values.append(to_value(typing.converters[i], text))
            except (ValueError, KeyError, IndexError):
                row.values.add(text=text)
    return row.SerializeToString()


@pytest.mark.parametrize(("oid", "text"), VALUES + BAD)
def test_each_value_is_what_upb_writes(typed: TypedCatalog, oid: int, text: str) -> None:
    rel = relation((oid, False))
    cells = (Cell("t", text.encode()),)
    assert RowEncoder(typed.relation(rel), utf8=True).row(cells) == reference_row(typed, rel, cells)


def test_a_repeated_value_comes_from_the_cache_unchanged(typed: TypedCatalog) -> None:
    rel = relation((1184, False), (1082, False))
    rows = RowEncoder(typed.relation(rel), utf8=True)
    for _ in range(2000):  # more than the cache holds: it is cleared and filled again
        stamp = f"2024-01-02 03:04:{random.randrange(60):02d}.{random.randrange(10**6):06d}+00"
        day = f"20{random.randrange(10, 30)}-0{random.randrange(1, 10)}-1{random.randrange(10)}"
        cells = (Cell("t", stamp.encode()), Cell("t", day.encode()))
        assert rows.row(cells) == reference_row(typed, rel, cells)


def test_bad_text_is_sent_as_text_and_logged(typed: TypedCatalog, caplog: pytest.LogCaptureFixture) -> None:
    rel = relation((23, False), (1184, False))
    cells = (Cell("t", b"x1"), Cell("t", b"yesterday"))
    with caplog.at_level(logging.WARNING):
        out = RowEncoder(typed.relation(rel), utf8=True).row(cells)
    assert [v.text for v in pb.Row.FromString(out).values] == ["x1", "yesterday"]
    assert "int4 value does not parse" in caplog.text and "timestamptz value does not parse" in caplog.text


def test_nulls_toast_and_key_only_rows(typed: TypedCatalog) -> None:
    rel = relation((23, True), (25, False), (1700, False), (1114, True))
    rows = RowEncoder(typed.relation(rel), utf8=True)
    cells = (Cell("t", b"1"), Cell("u", None), Cell("n", None), Cell("t", b"1970-01-01 00:00:01"))
    assert rows.row(cells) == reference_row(typed, rel, cells)
    key = (Cell("t", b"7"), Cell("n", None), Cell("n", None), Cell("t", b"2000-01-01 00:00:00"))
    assert rows.row(key, key_only=True) == reference_row(typed, rel, key, key_only=True)
    assert rows.row(()) == b""
    with pytest.raises(ValueError, match="unexpected column kind 'b'"):
        rows.row((Cell("b", b"\x00"), Cell("n", None), Cell("n", None), Cell("n", None)))


def test_a_non_utf8_server_goes_through_the_message_classes(typed: TypedCatalog) -> None:
    rel = relation((25, False), (23, False), encoding="latin-1")
    cells = (Cell("t", "café".encode("latin-1")), Cell("t", b"5"))
    out = RowEncoder(typed.relation(rel), utf8=False).row(cells)
    assert out == reference_row(typed, rel, cells)
    assert pb.Row.FromString(out).values[0].text == "café"


def test_varint_and_zigzag() -> None:
    for n in (1, 127, 128, 16383, 16384, 2**35, 2**63 - 1, 2**64 - 1, -1, -(2**63)):
        assert pb.Ack(lsn=n % 2**64).SerializeToString() == b"\x08" + varint(n)
    for n in (0, -1, 1, 2**62, -(2**63), 2**63 - 1):
        assert pb.Value(int64=n).SerializeToString() == b"\x20" + varint(zigzag64(n))


def _reference_event(typed: TypedCatalog, event: ChangeEvent) -> pb.Event:
    """What the message path built for a row event before the byte encoder."""
    txn, rel = event.txn, event.relation
    assert txn is not None and rel is not None
    op: Any = pb.Operation.Value(event.op.value)
    proto = pb.Event(op=op, lsn=event.lsn, ordinal=event.ordinal, xid=txn.xid,
                     commit_lsn=txn.commit_lsn, commit_time_us=txn.commit_ts + PG_EPOCH_US,
                     relation_id=rel.relation_id)
    if event.new is not None:
        proto.new.ParseFromString(reference_row(typed, rel, event.new))
        proto.new.SetInParent()
    if event.old is not None and event.old_kind is not None:
        proto.old.ParseFromString(reference_row(typed, rel, event.old, key_only=event.old_kind != "O"))
        proto.old.SetInParent()
        proto.old_row = pb.OLD_ROW_FULL if event.old_kind == "O" else pb.OLD_ROW_KEY
    return proto


def test_row_events_are_what_upb_writes(typed: TypedCatalog) -> None:
    rng = random.Random(7)
    rel = relation((20, True), (25, False), (1700, False), (1184, False), (16, False))
    encoder = Encoder(typed)

    def cells() -> tuple[Cell, ...]:
        return (Cell("t", str(rng.randrange(-2**40, 2**40)).encode()),
                rng.choice([Cell("t", ("ü" * rng.randrange(200)).encode()), Cell("n", None), Cell("u", None)]),
                Cell("t", f"{rng.randrange(10**6)}.{rng.randrange(100):02d}".encode()),
                Cell("t", f"20{rng.randrange(10, 40)}-01-02 03:04:05.{rng.randrange(10**6):06d}+00".encode()),
                Cell("t", rng.choice([b"t", b"f"])))

    for i in range(500):
        # commit_ts may be before 2000 (negative) or 0; xid and lsn may be 0 (left out of the bytes).
        txn = TxnInfo(rng.choice([0, 1, rng.randrange(2**32)]), rng.choice([0, rng.randrange(2**64)]),
                      rng.choice([0, -PG_EPOCH_US, rng.randrange(-2**50, 2**50)]))
        op = rng.choice([Op.INSERT, Op.UPDATE, Op.DELETE])
        old_kind = rng.choice(["K", "O"]) if op is Op.DELETE else rng.choice([None, "K", "O"])
        event = ChangeEvent(op, rng.choice([0, rng.randrange(2**64)]), txn, i % 3000 + 1, rel,
                            new=cells() if op is not Op.DELETE else None,
                            old=cells() if old_kind else None, old_kind=old_kind)
        item = encoder.item(event)
        expected = _reference_event(typed, event)
        assert item.data == V1Item.of(expected).data
        assert item.event == expected and item.op == expected.op and item.lsn == event.lsn
