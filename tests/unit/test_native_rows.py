"""The native Row encoder (walstream._native._rowenc) against the pure-Python reference (delivery/v1/wire.py):
the same bytes on the golden pgoutput streams and on generated rows of the built-in types, and for input it
does not handle (bad text, wrong shapes, raising encoders) a None that sends the row down the Python path,
never a crash.

Skipped where the accelerator was not built; under CI=true a missing build fails instead (CI tests both).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_replay import GOLDEN, Recorder, feed  # type: ignore[import-not-found]  # a sibling test module
from test_v1wire import BAD, VALUES, reference_row, relation  # type: ignore[import-not-found]

from walstream import native
from walstream._proto import walstream_v1_pb2 as pb
from walstream.delivery.v1.adapter import Encoder
from walstream.delivery.v1.typed import TypedCatalog
from walstream.delivery.v1.wire import RowEncoder
from walstream.errors import ProtocolError
from walstream.events.change import ChangeEvent, Op, TxnInfo
from walstream.events.values import TypeCatalog
from walstream.source.decoder import decode_message, insert_decoder, plain_insert
from walstream.source.messages import Cell


@pytest.fixture(autouse=True)
def built() -> None:
    if "native" not in native.available_implementations():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the native accelerator did not build: {native._import_error}")
        pytest.skip(f"the native accelerator is not built here: {native._import_error}")


def both(make: Callable[[], bytes | list[bytes]]) -> tuple[object, object]:
    with native.using("python"):
        python = make()
    with native.using("native"):
        compiled = make()
    return python, compiled


def test_the_golden_stream_gives_the_same_event_bytes() -> None:
    rec = Recorder()
    feed(rec)  # protocol 1: the streams of 2 and 3 hold streamed blocks the assembler does not take
    events = [e for e, _ in rec.published]

    def encode() -> list[bytes]:
        encoder = Encoder(TypedCatalog(TypeCatalog()))
        return [encoder.item(e).data for e in events]

    python, compiled = both(encode)
    assert python == compiled
    assert len(events) > 10


def test_the_native_encoder_writes_the_golden_rows_itself() -> None:
    """Not everything falls back: the golden rows of plain types come out of C, not the Python path."""
    rec = Recorder()
    feed(rec)
    typed = TypedCatalog(TypeCatalog())
    written = 0
    with native.using("native"):
        for event, _ in rec.published:
            if event.relation is not None and event.new is not None:
                rows = RowEncoder(typed.relation(event.relation), utf8=True)
                assert rows.native is not None
                written += rows.native(event.new, rows.kinds, rows.encoders) is not None
    assert written > 0


@pytest.mark.parametrize(("oid", "text"), VALUES + BAD)
def test_each_value_is_what_upb_writes(oid: int, text: str) -> None:
    typed = TypedCatalog(TypeCatalog())
    rel = relation((oid, True), (23, False))
    cells = (Cell("t", text.encode()), Cell("t", b"7"))
    with native.using("native"):
        got = RowEncoder(typed.relation(rel), utf8=True).row(cells)
    assert got == reference_row(typed, rel, cells)


# Generated rows: per type, texts as PostgreSQL writes them plus texts it never writes (the fallback).
_INT = st.integers(-(2**63), 2**63 - 1).map(str)
_ODD_INT = st.sampled_from(["", "-", " 1", "1 ", "+5", "1_000", "9223372036854775808", "-9223372036854775809",
                            "99999999999999999999", "٣", "0x10", "--1", "-0", "00012"])
_NUMERIC = st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str) | st.sampled_from(
    ["NaN", "Infinity", "-Infinity"])
_TEXT = st.text(max_size=300)
_BOOL = st.sampled_from(["t", "f", "true", "", "T"])
_JSON = st.sampled_from(['{"a": 1}', "[]", "null", '"' + "x" * 200 + '"'])
_TS = st.sampled_from(["2024-01-02 03:04:05.25+00", "infinity", "1883-11-18 12:00:00-04:56:02", "yesterday"])
COLUMN = st.one_of(
    st.tuples(st.sampled_from([20, 21, 23]), _INT | _ODD_INT),
    st.tuples(st.just(1700), _NUMERIC),
    st.tuples(st.sampled_from([25, 1043, 1042, 19]), _TEXT),
    st.tuples(st.just(16), _BOOL),
    st.tuples(st.sampled_from([114, 3802]), _JSON),
    st.tuples(st.just(1184), _TS),
    st.tuples(st.sampled_from([701, 1082, 1007, 17]), st.sampled_from(["1.5", "2024-02-29", "{1,NULL}", "\\x00"])),
)
CELL_KIND = st.sampled_from(["t", "t", "t", "n", "u"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(COLUMN, CELL_KIND, st.booleans()), min_size=1, max_size=12), st.booleans(),
       st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**40))
def test_generated_rows_are_byte_equal(columns: list[tuple[tuple[int, str], str, bool]], utf8: bool, lsn: int,
                                       xid: int, ordinal: int) -> None:
    rel = relation(*((oid, key) for (oid, _), _, key in columns))
    cells = tuple(Cell(kind, text.encode() if kind == "t" else None) for (_, text), kind, _ in columns)

    event = ChangeEvent(Op.INSERT, lsn, TxnInfo(xid, lsn, -5), ordinal, rel, new=cells)

    def encode() -> list[bytes]:
        rows = RowEncoder(TypedCatalog(TypeCatalog()).relation(rel), utf8=utf8)
        # and the whole INSERT event (native: one call writes it, adapter.Encoder._row_item)
        return [rows.row(cells), rows.row(cells, key_only=True), Encoder(TypedCatalog(TypeCatalog())).item(event).data]

    python, compiled = both(encode)
    assert python == compiled


def _insert(*texts: bytes) -> bytes:
    out = b"I" + struct.pack(">I", 16385) + b"N" + struct.pack(">H", len(texts))
    for t in texts:
        out += b"t" + struct.pack(">i", len(t)) + t
    return out


def _outcome(msg: bytes) -> tuple[str, object]:
    """What the Insert fast path + Row encoding make of a message: its bytes, or the error it raises."""
    try:
        row = insert_decoder()(msg)
        if row is None:
            return "none", None
        assert all(type(c) is Cell for c in row[1])
        rows = RowEncoder(TypedCatalog(TypeCatalog()).relation(relation((20, True), (25, False), (1700, False))),
                          utf8=True)
        return "row", rows.row(row[1])
    except (ProtocolError, ValueError, IndexError) as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_truncated_and_corrupted_messages_give_the_same_outcome(data: st.DataObject) -> None:
    msg = bytearray(_insert(b"42", "é".encode() * 3, b"12.50"))
    if data.draw(st.booleans()):  # a NULL and an unchanged TOAST column in place of the last two
        msg = bytearray(msg[:msg.index(b"t", 10)]) + b"nu"  # (the 'N' tuple's first column ends before it)
    cut = data.draw(st.integers(0, len(msg)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(msg) - 1), st.integers(0, 255)), max_size=3))
    for pos, value in flips:
        msg[pos] = value
    corrupted = bytes(msg[:cut]) if data.draw(st.booleans()) else bytes(msg)
    python, compiled = both(lambda: [repr(_outcome(corrupted)).encode()])
    assert python == compiled


def test_golden_inserts_decode_to_equal_cells() -> None:
    lines = (GOLDEN / "pgoutput_v1.jsonl").read_text().splitlines()[1:]
    messages = [bytes.fromhex(json.loads(line)["hex"]) for line in lines]
    with native.using("native"):
        decode = insert_decoder()
    assert decode is not plain_insert
    inserts = 0
    for msg in messages:
        got, want = decode(msg), plain_insert(msg)
        assert got == want
        if want is not None:
            inserts += 1
            assert all(type(c) is Cell for c in got[1])  # type: ignore[index]
            assert want == (decode_message(msg).relation_id, decode_message(msg).new)  # type: ignore[union-attr]
    assert inserts > 5


def test_bad_shapes_fall_back_and_never_crash() -> None:
    from walstream._native import _rowenc

    ok = (Cell("t", b"1"),)

    def raising(data: bytes) -> bytes:
        raise ValueError("no")

    assert _rowenc.encode_row(ok, bytes([_rowenc.K_SINT64]), (None,)) == b"\x0a\x02\x20\x02"
    for cells, kinds, slow in [
        (ok, b"", ()),  # column count differs
        (ok, bytes([_rowenc.K_SINT64]) * 2, (None, None)),
        ((("t",),), bytes([_rowenc.K_SINT64]), (None,)),  # not a (kind, data) pair
        ((("tt", b"1"),), bytes([_rowenc.K_SINT64]), (None,)),
        ((("b", b"1"),), bytes([_rowenc.K_SINT64]), (None,)),  # binary: Python raises its error
        ((("t", "1"),), bytes([_rowenc.K_SINT64]), (None,)),  # str, not bytes
        (ok, bytes([99]), (None,)),  # unknown kind code
        (ok, bytes([_rowenc.K_SLOW]), (raising,)),  # the Python encoder raised: the Python path reports it
        (ok, bytes([_rowenc.K_SLOW]), (lambda data: "not bytes",)),
        (ok, bytes([_rowenc.K_SLOW]), (None,)),  # not callable
    ]:
        assert _rowenc.encode_row(cells, kinds, slow) is None  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _rowenc.encode_row([Cell("t", b"1")], b"\x01", (None,))  # type: ignore[arg-type]


def test_the_environment_setting_is_checked() -> None:
    assert native._choose("0") == ("python", "")
    assert native._choose(None) == ("native", "")
    assert native._choose("1") == ("native", "")
    impl, problem = native._choose("yes")
    assert impl == "python" and "WALSTREAM_NATIVE must be 0" in problem and "'yes'" in problem


# Timestamps: C reads the form PostgreSQL writes with DateStyle=ISO and TimeZone=UTC; any other text goes
# to the column's Python encoder. Near misses of that form are generated too.
_STAMP = st.builds(
    lambda y, mo, d, h, mi, s, frac: f"{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}" + (f".{frac}" if frac else ""),
    st.integers(0, 9999), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99),
    st.integers(0, 99), st.one_of(st.just(""), st.from_regex(r"[0-9]{1,6}", fullmatch=True)))
_STAMP_TEXT = st.one_of(
    _STAMP,
    st.builds(lambda t, pos, ch: t[:pos] + ch + t[pos + 1:], _STAMP, st.integers(0, 26),
              st.sampled_from(["", "x", " ", "+", "-", "_", ".", ":", "0", "٣", "1234567"])),
    st.sampled_from(["infinity", "-infinity", "0001-01-01 00:00:00 BC", "12345-01-01 00:00:00",
                     "2024-01-02 03:04:05.1234567", "2024-01-02 03:04:05.", "2024-01-02T03:04:05"]))


@settings(max_examples=500, deadline=None)
@given(_STAMP_TEXT, st.sampled_from(["", "+00", "-05:30", "+00:00", "+0"]), st.booleans())
def test_timestamps_are_byte_equal(text: str, zone: str, with_zone: bool) -> None:
    oid = 1184 if with_zone else 1114
    value = text + (zone if with_zone else "")
    rel = relation((oid, False), (23, True))
    cells = (Cell("t", value.encode()), Cell("t", b"7"))

    def encode() -> list[bytes]:
        return [RowEncoder(TypedCatalog(TypeCatalog()).relation(rel), utf8=True).row(cells)]

    python, compiled = both(encode)
    assert python == compiled


@pytest.mark.parametrize(("oid", "text", "us"), [
    (1114, "2024-01-02 03:04:05", 1704164645_000000), (1114, "1969-12-31 23:59:59.999999", -1),
    (1184, "2024-01-02 03:04:05.25+00", 1704164645_250000), (1184, "0001-01-01 00:00:00+00", -62135596800_000000),
    (1184, "2000-02-29 00:00:00.000001+00", 951782400_000001),
])
def test_the_usual_timestamps_are_written_in_c(oid: int, text: str, us: int) -> None:
    """The common form does not call the Python encoder (here one that fails), and means what it says."""
    from walstream._native import _rowenc

    def python_encoder(data: bytes) -> bytes:
        raise ValueError("the Python encoder was called")

    kind = _rowenc.K_TIMESTAMPTZ if oid == 1184 else _rowenc.K_TIMESTAMP
    got = _rowenc.encode_row((Cell("t", text.encode()),), bytes([kind]), (python_encoder,))
    assert got is not None
    value = pb.Row.FromString(got).values[0]
    assert value.WhichOneof("kind") == ("timestamptz_us" if oid == 1184 else "timestamp_us")
    assert getattr(value, value.WhichOneof("kind")) == us
    assert _rowenc.encode_row((Cell("t", b"infinity"),), bytes([kind]), (python_encoder,)) is None  # to Python


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.integers(0, 2**32 - 1), st.just(0)), st.one_of(st.integers(0, 2**64 - 1), st.just(0)),
       st.one_of(st.integers(-(2**63), 2**63 - 1), st.just(0), st.just(2**63 - 1)))  # int64, as pgoutput sends it
def test_transaction_fields_are_byte_equal(xid: int, commit_lsn: int, commit_ts: int) -> None:
    """Event fields 3-5 of a transaction (C when it is given 64-bit values, else Python), and its BEGIN."""
    txn = TxnInfo(xid, commit_lsn, commit_ts)

    def encode() -> list[bytes]:
        return [Encoder(TypedCatalog(TypeCatalog()))._txn_fields(txn)]

    python, compiled = both(encode)
    assert python == compiled


def test_transaction_fields_beyond_64_bits_go_to_python() -> None:
    from walstream._native import _rowenc

    assert _rowenc.txn_fields(1, 2, 3) == b"\x18\x01\x20\x02\x28\x03"
    assert _rowenc.txn_fields(0, 0, -1) == b"\x28" + b"\xff" * 9 + b"\x01"
    for args in [(-1, 0, 0), (0, -1, 0), (0, 2**64, 0), (0, 0, 2**63), (0, 0, -(2**63) - 1), ("1", 0, 0)]:
        assert _rowenc.txn_fields(*args) is None  # type: ignore[arg-type]
