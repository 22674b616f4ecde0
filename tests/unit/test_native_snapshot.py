"""A snapshot chunk written in C straight from its COPY text (walstream._native._snapchunk.c) against the
pure-Python reference (copytext.parse_rows, Encoder.snapshot_items, adapter.pack): the same pieces, counts
and cancelled rows on golden buffers (escapes, NULLs, every value kind) and generated ones, and the same
outcome (a row count, or the same CopyFormatError) on truncated and corrupted buffers, never a crash.

Skipped where the accelerator was not built; under CI=true a missing build fails instead (CI tests both).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_native_rows import COLUMN  # type: ignore[import-not-found]  # a sibling test module
from test_v1wire import BAD, VALUES, reference_row, relation  # type: ignore[import-not-found]

from walstream import native
from walstream._proto import walstream_v1_pb2 as pb
from walstream.delivery.v1.adapter import Encoder, V1Item, pack
from walstream.delivery.v1.typed import TypedCatalog
from walstream.events.change import RelationInfo, TxnInfo
from walstream.events.values import TypeCatalog
from walstream.snapshot.copytext import CopyChunk, CopyFormatError, parse_rows
from walstream.source.messages import Cell

LSN, TXN = 0x1_6B37_4D48, TxnInfo(7777, 0x1_6B37_4D48, 123456)


@pytest.fixture(autouse=True)
def built() -> None:
    if "native" not in native.available_implementations():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the native accelerator did not build: {native._import_error}")
        pytest.skip(f"the native accelerator is not built here: {native._import_error}")


def both(make: Callable[[], object]) -> tuple[object, object]:
    with native.using("python"):
        python = make()
    with native.using("native"):
        compiled = make()
    return python, compiled


def escape(value: bytes | None) -> bytes:
    """A value as COPY text writes it (docs: sql-copy "Text Format")."""
    if value is None:
        return b"\\N"
    return (value.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
            .replace(b"\b", b"\\b").replace(b"\f", b"\\f").replace(b"\v", b"\\v"))


def copy_text(rows: list[list[bytes | None]]) -> bytes:
    return b"".join(b"\t".join(escape(v) for v in row) + b"\n" for row in rows)


def written_in_c(rel: RelationInfo, chunk: CopyChunk) -> bool:
    """Whether the C writer takes the chunk itself (else the chunk goes down the Python path)."""
    with native.using("native"):
        writer = native.snapshot_writer()
        rows = Encoder(TypedCatalog(TypeCatalog()))._row_encoder(rel)
    assert writer is not None
    return writer(chunk.data, chunk.columns, chunk.width, None, b"\x08\x07", b"", 1, rows.kinds, rows.encoders, 10,
                  1000) is not None


def chunk_events(rel: RelationInfo, chunk: CopyChunk, cancelled: set[tuple[bytes | None, ...]], first: int = 1,
                 limits: tuple[int, int] = (1000, 1 << 20)) -> tuple[list[tuple[bytes, int]], int]:
    encoder = Encoder(TypedCatalog(TypeCatalog()))
    items, superseded = encoder.snapshot_chunk(LSN, TXN, rel, chunk, cancelled, first, *limits)
    assert all(i.op == pb.SNAPSHOT and i.lsn == LSN and i.relations == (rel,) for i in items)
    return [(i.data, i.count) for i in items], superseded


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])  # text kinds written in C, or by Python from C
def test_every_kind_escapes_and_nulls_give_the_same_pieces(encoding: str) -> None:
    # Those of the value table that C writes itself (the others: test_each_value_gives_the_same_events).
    values = [(oid, text) for oid, text in VALUES if written_in_c(relation((oid, False), encoding=encoding),
                                                                  CopyChunk(text.encode() + b"\t1\n", 2, 1))]
    assert len(values) > len(VALUES) * 3 // 4
    rel = relation((20, True), *((oid, False) for oid, _ in values), (25, False), encoding=encoding)
    tricky = b"tab\there\nnew \\ back\rret\bb\ff\vv \\N inside \x01"
    rows: list[list[bytes | None]] = []
    for r in range(6):
        row: list[bytes | None] = [str(r).encode()]
        row += [None if (r + i) % 5 == 0 else text.encode() for i, (_, text) in enumerate(values)]
        row.append(tricky)
        rows.append(row + [row[0]])  # the key again, as the chunk query writes it
    data = copy_text(rows)
    width = len(rows[0]) - 1

    def make() -> tuple[list[tuple[bytes, int]], int]:
        chunk = CopyChunk(data, width + 1, width)
        return chunk_events(rel, chunk, {(b"2",), (b"99",)}, limits=(4, 1 << 20))

    python, compiled = both(make)
    assert python == compiled
    assert written_in_c(rel, CopyChunk(data, width + 1, width))
    pieces, superseded = chunk_events(rel, CopyChunk(data, width + 1, width), {(b"2",), (b"99",)}, limits=(4, 1 << 20))
    assert superseded == 1 and [n for _, n in pieces] == [4, 1]
    # The events are what Event(op=SNAPSHOT, new=row) holds, ordinals 1.. over the rows sent.
    events = pb.Batch.FromString(b"".join(p for p, _ in pieces)).events
    typed = TypedCatalog(TypeCatalog())
    sent = [row for row in rows if row[0] != b"2"]
    assert [e.ordinal for e in events] == [1, 2, 3, 4, 5]
    for event, row in zip(events, sent, strict=True):
        assert (event.op, event.lsn, event.xid, event.commit_lsn, event.relation_id) == (pb.SNAPSHOT, LSN, 7777, LSN,
                                                                                       16385)
        cells = tuple(Cell("n", None) if v is None else Cell("t", v) for v in row[:width])
        assert event.new.SerializeToString() == reference_row(typed, rel, cells)
    assert events[0].new.values[-1].text.encode(encoding) == tricky


@pytest.mark.parametrize(("oid", "text"), VALUES + BAD)
def test_each_value_gives_the_same_events(oid: int, text: str) -> None:
    """Every value of the table, alone in a chunk: C writes it, or leaves the chunk to Python (a value its
    encoder rejects: beyond int64 microseconds, not what the type says), with the same bytes either way."""
    rel = relation((oid, False), (25, False))
    data = copy_text([[text.encode(), None], [text.encode(), b"x"], [None, None]])
    python, compiled = both(lambda: chunk_events(rel, CopyChunk(data, 2, 2), set()))
    assert python == compiled


def test_the_python_path_is_the_per_row_reference() -> None:
    """snapshot_chunk's Python path: snapshot_items over parse_rows' cells, packed."""
    rel = relation((20, True), (25, False))
    data = copy_text([[b"1", b"a"], [b"2", None], [b"3", b"c\\d"]])
    cells = parse_rows(data, 2)
    with native.using("python"):
        encoder = Encoder(TypedCatalog(TypeCatalog()))
        items = encoder.snapshot_items(LSN, TXN, [(rel, c) for c in cells], 5)
        chunk = CopyChunk(data, 2, 2)
        pieces, superseded = encoder.snapshot_chunk(LSN, TXN, rel, chunk, set(), 5, 2, 1 << 20)
    assert superseded == 0
    assert [(p.data, p.count) for p in pieces] == [(items[0].data + items[1].data, 2), (items[2].data, 1)]


def test_pieces_respect_both_limits() -> None:
    items = [V1Item(bytes([2, n]) + b"x" * n, pb.SNAPSHOT, 9) for n in (3, 3, 10, 1, 1, 1)]
    pieces = pack(items, 3, 12)
    assert [p.count for p in pieces] == [2, 1, 3]  # 5+5 bytes, then 12 (alone: over the room left), then 3+3+3
    assert b"".join(p.data for p in pieces) == b"".join(i.data for i in items)
    assert [p.size for p in pieces] == [10, 12, 9]


_KEY = st.one_of(st.integers(-(2**63), 2**63 - 1).map(lambda n: str(n).encode()),
                 st.binary(min_size=0, max_size=6))
_RAW = st.one_of(st.binary(max_size=12), st.sampled_from([b"\\", b"\\N", b"N", b"\t\n", b"\\x41", b"\\101"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(COLUMN, st.booleans()), min_size=0, max_size=8),
       st.lists(st.tuples(_KEY, st.binary(max_size=8), _RAW, st.integers(0, 2**31)), min_size=0, max_size=12),
       st.integers(1, 2**40), st.integers(1, 5), st.integers(1, 400), st.integers(1, 2))
def test_generated_chunks_are_byte_equal(columns: list[tuple[tuple[int, str], bool]],
                                         keys: list[tuple[bytes, bytes, bytes, int]], first: int, piece_events: int,
                                         piece_bytes: int, nkeys: int) -> None:
    """Generated values of every kind (NULL or not), any bytes in a text column, and a text column whose
    COPY text is raw: any escape sequence, well-formed or not (a lone backslash, \\x without digits...)."""
    rel = relation(*((oid, False) for (oid, _), _ in columns), (25, False), (25, False))
    rows: list[list[bytes | None]] = []
    raws: list[bytes] = []
    for n, (key, any_bytes, raw, seed) in enumerate(keys):
        row: list[bytes | None] = []
        for i, ((_, text), null) in enumerate(columns):
            row.append(None if null and (seed >> i) & 1 else text.encode())
        row += [any_bytes, b"RAW", key, str(n).encode()][:2 + nkeys]
        rows.append(row)
        raws.append(raw.replace(b"\t", b" ").replace(b"\n", b" "))
    data = b"".join(line.replace(b"RAW", raw, 1) + b"\n" for line, raw in zip(copy_text(rows).splitlines(), raws,
                                                                            strict=True))
    width = len(columns) + 2
    cancelled = {tuple(r[width:]) for r in rows[::3]}

    def make() -> tuple[list[tuple[bytes, int]], int]:
        chunk = CopyChunk(data, width + nkeys, width)
        assert chunk.count == len(rows)
        return chunk_events(rel, chunk, cancelled, first, (piece_events, piece_bytes))

    python, compiled = both(make)
    assert python == compiled


def _outcome(data: bytes, columns: int) -> tuple[str, object]:
    try:
        chunk = CopyChunk(data, columns, columns - 1)
        rel = relation((25, False), (20, False), (1700, False))
        return "chunk", (chunk.count, chunk.last_key(), chunk_events(rel, chunk, {(b"2",)}))
    except (CopyFormatError, UnicodeDecodeError) as exc:  # the latter: bytes no UTF-8 server sends, in an int
        return type(exc).__name__, str(exc)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_truncated_and_corrupted_buffers_give_the_same_outcome(data: st.DataObject) -> None:
    good = bytearray(copy_text([[b"a\tb\\c", b"1", b"12.50", b"1"], [None, b"-7", b"NaN", b"2"],
                                [b"\xc3\xa9\n", b"x", b"1e5", b"3"]]))
    cut = data.draw(st.integers(0, len(good)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(good) - 1),
                                         st.sampled_from([9, 10, 92, ord("N"), ord("x"), ord("7"), 0, 255])),
                               max_size=3))
    for pos, value in flips:
        good[pos] = value
    buf = bytes(good[:cut]) if data.draw(st.booleans()) else bytes(good)
    python, compiled = both(lambda: _outcome(buf, 4))
    assert python == compiled


def test_malformed_buffers_raise_the_clear_error_either_way() -> None:
    for impl in native.available_implementations():
        with native.using(impl), pytest.raises(CopyFormatError, match="COPY row 2 has 1 columns, expected 2"):
            CopyChunk(b"1\t2\n3\n", 2, 1)
        with native.using(impl):
            assert CopyChunk(b"1\t2\n3\t4", 2, 1).count == 2  # a last row without its newline still counts
            assert CopyChunk(b"", 2, 1).count == 0


def test_a_value_left_to_python_sends_the_whole_chunk_there() -> None:
    """An int column holding text that does not parse (never from PostgreSQL): C returns None and the
    Python path writes it as text, logged, the same either way."""
    rel = relation((23, True))
    data = copy_text([[b"1", b"1"], [b"x1", b"2"]])
    python, compiled = both(lambda: chunk_events(rel, CopyChunk(data, 2, 1), set()))
    assert python == compiled
    with native.using("native"):
        chunk = CopyChunk(data, 2, 1)
        writer = native.snapshot_writer()
        assert writer is not None
        encoder = Encoder(TypedCatalog(TypeCatalog()))
        rows = encoder._row_encoder(rel)
        assert writer(chunk.data, 2, 1, None, b"\x08\x07", b"", 1, rows.kinds, rows.encoders, 10, 1000) is None
