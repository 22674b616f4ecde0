"""pgoutput decoder: real PostgreSQL 15 captures (tests/golden, from scripts/capture_golden.py), hand-built
protocol 4 and malformed messages, and a fuzz that must only ever raise DecodeError. No server needed."""

from __future__ import annotations

import functools
import json
import random
import struct
from pathlib import Path
from typing import Any

import pytest

from walstream.errors import DecodeError, ProtocolError
from walstream.lsn import parse_lsn
from walstream.source.decoder import StreamDecoder, decode_message, describe
from walstream.source.messages import (
    COLUMN_BINARY,
    COLUMN_NULL,
    COLUMN_TEXT,
    COLUMN_UNCHANGED_TOAST,
    TRUNCATE_CASCADE,
    TRUNCATE_RESTART_IDENTITY,
    Begin,
    BeginPrepare,
    Cell,
    Commit,
    CommitPrepared,
    Delete,
    Insert,
    Message,
    Origin,
    PgoutputMessage,
    Prepare,
    Relation,
    RollbackPrepared,
    StreamAbort,
    StreamCommit,
    StreamPrepare,
    StreamStart,
    StreamStop,
    Truncate,
    Type,
    Update,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
VERSIONS = (1, 2, 3)


@functools.cache
def golden(version: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with open(GOLDEN / f"pgoutput_v{version}.jsonl") as fh:
        rows = [json.loads(line) for line in fh]
    return rows[0]["meta"], rows[1:]


@functools.cache
def decoded(version: int) -> list[tuple[dict[str, Any], PgoutputMessage]]:
    return [(row, decode_message(bytes.fromhex(row["hex"]), in_stream=row["in_stream"]))
            for row in golden(version)[1]]


def messages(version: int) -> list[PgoutputMessage]:
    return [msg for _, msg in decoded(version)]


def of_type(version: int, cls: type[Any]) -> list[Any]:
    return [msg for msg in messages(version) if type(msg) is cls]


def text(*values: str | None) -> tuple[Cell, ...]:
    """Expected text-format tuple: None is a NULL column."""
    return tuple(Cell(COLUMN_NULL, None) if v is None else Cell(COLUMN_TEXT, v.encode()) for v in values)


def transactions(version: int) -> list[list[Any]]:
    """Begin..Commit (or Begin Prepare..Prepare) runs of non-streamed messages."""
    runs: list[list[Any]] = []
    current: list[Any] | None = None
    for msg in messages(version):
        if isinstance(msg, (Begin, BeginPrepare)):
            current = [msg]
        elif current is not None:
            current.append(msg)
            if isinstance(msg, (Commit, Prepare)):
                runs.append(current)
                current = None
    return runs


def stream_blocks(version: int, xid: int) -> list[list[PgoutputMessage]]:
    blocks: list[list[PgoutputMessage]] = []
    current: list[PgoutputMessage] | None = None
    for msg in messages(version):
        if isinstance(msg, StreamStart):
            current = [msg] if msg.xid == xid else None
        elif current is not None:
            current.append(msg)
            if isinstance(msg, StreamStop):
                blocks.append(current)
                current = None
    return blocks


# ---------------------------------------------------------------------------------------------------------
# Golden captures: byte-exact regression plus what we know independently of the decoder.


@pytest.mark.parametrize("version", VERSIONS)
def test_golden_messages_decode_to_their_recorded_fields(version: int) -> None:
    meta, rows = golden(version)
    assert meta["proto_version"] == version and meta["server_version"].startswith("15")
    for row, msg in decoded(version):
        assert describe(msg) == row["expect"], row["seq"]
        assert type(msg).__name__ == row["expect"]["type"]


@pytest.mark.parametrize("version", VERSIONS)
def test_stream_decoder_tracks_blocks_without_being_told(version: int) -> None:
    decoder = StreamDecoder()
    for row, msg in decoded(version):
        assert decoder.in_stream == row["in_stream"], row["seq"]
        assert decoder.decode(memoryview(bytes.fromhex(row["hex"]))) == msg
    assert not decoder.in_stream


def test_golden_files_cover_every_message_type_postgresql_15_sends() -> None:
    seen = {type(msg) for v in VERSIONS for msg in messages(v)}
    assert seen == {Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate, Message,
                    StreamStart, StreamStop, StreamCommit, StreamAbort,
                    BeginPrepare, Prepare, CommitPrepared, RollbackPrepared, StreamPrepare}


@pytest.mark.parametrize("version", VERSIONS)
def test_changes_carry_an_xid_exactly_inside_streamed_blocks(version: int) -> None:
    for row, msg in decoded(version):
        if isinstance(msg, (Relation, Type, Insert, Update, Delete, Truncate, Message)):
            assert (msg.xid is not None) == row["in_stream"], row["seq"]


@pytest.mark.parametrize("version", VERSIONS)
def test_begin_commit_lsns_timestamps_and_xids(version: int) -> None:
    meta, _ = golden(version)
    low, high = parse_lsn(meta["slot_lsn"]), parse_lsn(meta["end_lsn"])
    runs = [run for run in transactions(version) if isinstance(run[0], Begin)]
    # v2 and v3 also have streamed and prepared transactions, which do not start with Begin
    labels = {1: list(meta["xids"]), 2: ["small"], 3: ["small_binary"]}[version]
    assert [run[0].xid for run in runs] == [meta["xids"][label] for label in labels]
    for run in runs:
        begin, commit = run[0], run[-1]
        assert isinstance(begin, Begin) and isinstance(commit, Commit)
        assert commit.flags == 0
        assert begin.final_lsn == commit.commit_lsn  # both are the commit record's LSN
        assert low < commit.commit_lsn < commit.end_lsn <= high
        assert begin.commit_ts == commit.commit_ts
        if any(isinstance(m, Origin) for m in run):
            assert commit.commit_ts == meta["origin"]["ts"]  # the origin's timestamp replaces the local one
        else:
            assert meta["started_ts"] <= commit.commit_ts <= meta["finished_ts"]
    # the walsender's XLogData header of a Commit starts at the commit record's end
    for row, msg in decoded(version):
        if isinstance(msg, (Commit, StreamCommit)):
            assert parse_lsn(row["wal_start"]) == msg.end_lsn


def test_v1_types_and_relations() -> None:
    meta, rows = golden(1)
    types = {t.type_oid: t for t in of_type(1, Type)}
    assert types[meta["types"]["mood"]] == Type(None, meta["types"]["mood"], "public", "mood")
    # a domain is announced under its own OID but with its base type's name: pg_catalog sent as ""
    assert types[meta["types"]["posint"]] == Type(None, meta["types"]["posint"], "pg_catalog", "int4")
    raw = next(bytes.fromhex(r["hex"]) for r in rows if r["expect"].get("name") == "int4")
    assert raw[5:11] == b"\x00int4\x00"

    rels = {(r.namespace, r.name): r for r in of_type(1, Relation)}
    items = rels["public", "items"]
    assert items.relation_id == meta["relations"]["items"] and items.replica_identity == "d"
    # the dropped column and the generated column are not sent
    assert [c.name for c in items.columns] == ["id", "name", "note", "mood", "qty", "big"]
    assert [c.name for c in items.columns if c.is_key] == ["id"]
    mood, posint = meta["types"]["mood"], meta["types"]["posint"]
    assert [c.type_oid for c in items.columns] == [23, 25, 25, mood, posint, 25]
    assert {c.type_modifier for c in items.columns} == {-1}
    orders = rels["sales", "orders"]
    assert orders.relation_id == meta["relations"]["sales.orders"] and orders.replica_identity == "f"
    assert all(c.is_key for c in orders.columns)  # REPLICA IDENTITY FULL: every column is key
    assert orders.columns[2].name == "amount" and orders.columns[2].type_modifier == (10 << 16 | 2) + 4
    pairs = rels["public", "pairs"]
    assert pairs.replica_identity == "i" and [c.is_key for c in pairs.columns] == [True, True, False]
    logs = rels["public", "logs"]
    assert logs.replica_identity == "n" and not any(c.is_key for c in logs.columns)


def test_v1_row_changes() -> None:
    meta, _ = golden(1)
    rel = meta["relations"]
    inserts = of_type(1, Insert)
    assert inserts[0] == Insert(None, rel["items"], text("1", "alice", None, "happy", "3", meta["big"]))
    assert inserts[1] == Insert(None, rel["items"], text("2", "bob", "second", "sad", "1", "small"))
    assert inserts[2] == Insert(None, rel["item_tags"], text("1", "1", "red"))

    updates = of_type(1, Update)
    # key unchanged: no old tuple; the out-of-line TOAST value is sent as 'u'
    assert updates[0].old_kind is None and updates[0].old is None
    assert updates[0].new[:5] == text("1", "alice", None, "happy", "4")
    assert updates[0].new[5] == Cell(COLUMN_UNCHANGED_TOAST, None)
    # key changed: old key only, non-key columns NULL
    assert updates[1] == Update(None, rel["items"], "K", text("2", None, None, None, None, None),
                                text("10", "bob", "second", "sad", "1", "small"))
    assert updates[2] == Update(None, rel["sales.orders"], "O", text("1", "widget", "9.99", None),
                                text("1", "widget", "12.50", None))
    assert updates[3] == Update(None, rel["pairs"], "K", text("1", "2", None), text("1", "3", "one-two"))
    assert updates[4] == Update(None, rel["pairs"], None, None, text("1", "3", "relabelled"))

    assert of_type(1, Delete) == [
        Delete(None, rel["items"], "K", text("10", None, None, None, None, None)),
        Delete(None, rel["sales.orders"], "O", text("2", "gadget", "100.00", "x")),
    ]


def test_v1_truncate_options_and_relids() -> None:
    meta, _ = golden(1)
    rel = meta["relations"]
    assert of_type(1, Truncate) == [
        Truncate(None, 0, (rel["item_tags"],)),
        Truncate(None, TRUNCATE_RESTART_IDENTITY, (rel["sales.orders"],)),
        Truncate(None, TRUNCATE_CASCADE, (rel["items"], rel["item_tags"])),
        Truncate(None, TRUNCATE_CASCADE | TRUNCATE_RESTART_IDENTITY,
                 (rel["items"], rel["pairs"], rel["item_tags"])),
    ]


def test_v1_logical_messages() -> None:
    msgs = of_type(1, Message)
    assert [(m.transactional, m.prefix, m.content) for m in msgs] == [
        (True, "walstream", b"transactional hello"),
        (False, "walstream", b"\x00\xff"),
        (True, "walstream-only", b"just a message"),
        (False, "walstream-capture-end", b"v1"),
    ]
    assert all(m.xid is None for m in msgs)
    in_txn = {id(m) for run in transactions(1) for m in run}
    assert [id(m) in in_txn for m in msgs] == [True, False, True, False]
    # Message.lsn is the END of the logical-message WAL record, so it can equal the commit record's LSN
    only = next(run for run in transactions(1) if any(isinstance(m, Message) for m in run) and len(run) == 3)
    begin, message, commit = only
    assert isinstance(message, Message) and isinstance(commit, Commit)
    assert message.lsn <= commit.commit_lsn


def test_v1_origin() -> None:
    meta, _ = golden(1)
    run = next(run for run in transactions(1) if any(isinstance(m, Origin) for m in run))
    assert isinstance(run[0], Begin) and run[0].xid == meta["xids"]["origin"]
    assert run[1] == Origin(meta["origin"]["lsn"], meta["origin"]["name"])
    assert run[2] == Insert(None, meta["relations"]["logs"], text("from origin"))


def test_v2_streamed_commit() -> None:
    meta, _ = golden(2)
    xid = meta["xids"]["stream_commit"]
    blocks = stream_blocks(2, xid)
    assert len(blocks) >= 2
    assert [b[0] for b in blocks] == [StreamStart(xid, True)] + [StreamStart(xid, False)] * (len(blocks) - 1)
    first = blocks[0]
    changes: list[Any] = [m for m in first if not isinstance(m, (StreamStart, StreamStop, Relation, Type))]
    assert [type(m) for m in changes[:4]] == [Update, Delete, Message, Truncate]
    assert all(getattr(m, "xid", xid) == xid for block in blocks for m in block)
    assert changes[1] == Delete(xid, meta["relations"]["pairs"], "K", text("5", "6", None))
    assert changes[2] == Message(xid, True, changes[2].lsn, "walstream", b"streamed message")
    assert changes[3] == Truncate(xid, 0, (meta["relations"]["logs"],))
    # Type/Relation are re-sent for each streamed transaction, with its xid
    schema = {(m.xid, m.name) for m in first if isinstance(m, (Relation, Type))}
    assert schema >= {(xid, "items"), (xid, "int4")}
    (commit,) = [m for m in of_type(2, StreamCommit) if m.xid == xid]
    assert commit.flags == 0 and commit.commit_lsn < commit.end_lsn <= parse_lsn(meta["end_lsn"])
    assert meta["started_ts"] <= commit.commit_ts <= meta["finished_ts"]


def test_v2_streamed_abort_of_subtransaction_then_transaction() -> None:
    meta, _ = golden(2)
    xid = meta["xids"]["stream_abort"]
    sub_abort, top_abort = of_type(2, StreamAbort)
    assert top_abort == StreamAbort(xid, xid, None, None)  # top-level: xid == subxid
    assert sub_abort.xid == xid and sub_abort.subxid > xid and sub_abort.abort_lsn is None
    # inside the blocks, the subtransaction's changes carry the subxid, not the Stream Start xid
    xids = {m.xid for block in stream_blocks(2, xid) for m in block if isinstance(m, Insert)}
    assert xids == {xid, sub_abort.subxid}


def test_v3_binary_columns() -> None:
    meta, _ = golden(3)
    dave = of_type(3, Insert)[0]
    assert "".join(c.kind for c in dave.new) == "bbnbbn"
    assert {c.kind for c in dave.new} == {COLUMN_BINARY, COLUMN_NULL}
    assert dave.new[0].data == struct.pack("!i", 2) and dave.new[1].data == b"dave"
    assert dave.new[3].data == b"ok" and dave.new[4].data == struct.pack("!i", 7)


def test_v3_two_phase() -> None:
    meta, _ = golden(3)
    prepared = [run for run in transactions(3) if isinstance(run[0], BeginPrepare)]
    assert [run[0].gid for run in prepared] == ["walstream_gid_commit", "walstream_gid_rollback"]
    for run, label in zip(prepared, ("prepared_commit", "prepared_rollback"), strict=True):
        begin, prepare = run[0], run[-1]
        assert isinstance(begin, BeginPrepare) and isinstance(prepare, Prepare)
        assert begin.xid == prepare.xid == meta["xids"][label]
        # Begin Prepare already knows where the PREPARE record ends
        assert (begin.prepare_lsn, begin.end_lsn, begin.prepare_ts) == \
            (prepare.prepare_lsn, prepare.end_lsn, prepare.prepare_ts)
        assert prepare.flags == 0 and prepare.prepare_lsn < prepare.end_lsn
    first_prepare = prepared[0][-1]
    (committed, streamed_commit) = of_type(3, CommitPrepared)
    assert (committed.xid, committed.gid) == (first_prepare.xid, first_prepare.gid)
    assert first_prepare.end_lsn <= committed.commit_lsn < committed.end_lsn
    assert committed.commit_ts >= first_prepare.prepare_ts

    second_prepare = prepared[1][-1]
    (rollback,) = of_type(3, RollbackPrepared)
    assert (rollback.xid, rollback.gid) == (second_prepare.xid, second_prepare.gid)
    # Rollback Prepared repeats where and when the PREPARE was, so a subscriber can tell if it applied it
    assert rollback.prepare_end_lsn == second_prepare.end_lsn
    assert rollback.prepare_ts == second_prepare.prepare_ts
    assert rollback.rollback_end_lsn > rollback.prepare_end_lsn
    assert rollback.rollback_ts >= rollback.prepare_ts

    xid = meta["xids"]["stream_prepared"]
    assert len(stream_blocks(3, xid)) >= 2
    (stream_prepare,) = of_type(3, StreamPrepare)
    assert (stream_prepare.xid, stream_prepare.gid, stream_prepare.flags) == (xid, "walstream_gid_stream", 0)
    assert (streamed_commit.xid, streamed_commit.gid) == (xid, "walstream_gid_stream")
    assert stream_prepare.end_lsn <= streamed_commit.commit_lsn < streamed_commit.end_lsn


# ---------------------------------------------------------------------------------------------------------
# Protocol 4 (PostgreSQL 16+, streaming = parallel) cannot be captured from PostgreSQL 15: these bytes follow
# proto.c's logicalrep_write_stream_abort, which appends abort_lsn and abort_time when write_abort_info.


def test_protocol_4_parallel_stream_abort() -> None:
    raw = b"A" + struct.pack("!IIQq", 741, 742, 0x16_B374D848, 789_000_000)
    assert decode_message(raw, parallel_abort=True) == StreamAbort(741, 742, 0x16_B374D848, 789_000_000)
    assert StreamDecoder(parallel_abort=True).decode(raw) == StreamAbort(741, 742, 0x16_B374D848, 789_000_000)
    with pytest.raises(DecodeError, match=r"^pgoutput Stream Abort at offset 9: expected end of message, "
                                          r"got 16 trailing byte\(s\)$"):
        decode_message(raw)
    with pytest.raises(DecodeError, match=r"^pgoutput Stream Abort at offset 9: expected uint64 abort_lsn, "
                                          r"got end of data$"):
        decode_message(raw[:9], parallel_abort=True)


# ---------------------------------------------------------------------------------------------------------
# Hand-built malformed messages: one precise line each.

REL, XID = struct.pack("!I", 16397), struct.pack("!I", 740)
TUPLE_1 = b"\x00\x01t\x00\x00\x00\x02hi"
ERRORS: list[tuple[bytes, dict[str, bool], str]] = [  # (raw, decode_message kwargs, exact error)
    (b"", {},
     "pgoutput message at offset 0: expected a message type byte, got end of data"),
    (b"Z\x00", {},
     "pgoutput message at offset 0: expected a message type byte (one of BCOYRIUDTMSEcAbPKrp), got "
     "unknown type 'Z'"),
    (b"\x00", {},
     "pgoutput message at offset 0: expected a message type byte (one of BCOYRIUDTMSEcAbPKrp), got "
     "unknown type 0x00"),
    (b"I" + REL + b"X" + TUPLE_1, {},
     "pgoutput Insert at offset 5: expected tuple marker 'N', got 'X'"),
    (b"I" + REL, {},
     "pgoutput Insert at offset 5: expected tuple marker 'N', got end of data"),
    (b"I\x00\x00", {},
     "pgoutput Insert at offset 1: expected uint32 relation_id, got only 2 of its 4 bytes"),
    (b"I\x00\x00", {"in_stream": True},
     "pgoutput Insert at offset 1: expected uint32 xid, got only 2 of its 4 bytes"),
    (b"I" + XID + b"\x00", {"in_stream": True},
     "pgoutput Insert at offset 5: expected uint32 relation_id, got only 1 of its 4 bytes"),
    (b"I" + REL + b"N\x00", {},
     "pgoutput Insert at offset 6: expected uint16 column count, got only 1 of its 2 bytes"),
    (b"I" + REL + b"N\x00\x02n", {},
     "pgoutput Insert at offset 9: expected kind of column 2 of 2, got end of data"),
    (b"I" + REL + b"N\x00\x01x", {},
     "pgoutput Insert at offset 8: expected column kind 'n', 'u', 't' or 'b', got 'x'"),
    (b"I" + REL + b"N\x00\x01t\x00\x00", {},
     "pgoutput Insert at offset 9: expected int32 column length, got only 2 of its 4 bytes"),
    (b"I" + REL + b"N\x00\x01b\xff\xff\xff\xff", {},
     "pgoutput Insert at offset 9: expected column 1 length >= 0, got -1"),
    (b"I" + REL + b"N\x00\x01t\x00\x00\x00\x05abc", {},
     "pgoutput Insert at offset 13: expected 5 bytes of column 1 data, got only 3"),
    (b"I" + REL + b"N" + TUPLE_1 + b"\x00", {},
     "pgoutput Insert at offset 15: expected end of message, got 1 trailing byte(s)"),
    (b"U" + REL + b"X", {},
     "pgoutput Update at offset 5: expected tuple marker 'K', 'O' or 'N', got 'X'"),
    (b"U" + REL + b"K" + TUPLE_1 + b"O" + TUPLE_1, {},
     "pgoutput Update at offset 15: expected tuple marker 'N', got 'O'"),
    (b"U" + REL + b"O" + TUPLE_1, {},
     "pgoutput Update at offset 15: expected tuple marker 'N', got end of data"),
    (b"D" + REL + b"N" + TUPLE_1, {},
     "pgoutput Delete at offset 5: expected tuple marker 'K' or 'O', got 'N'"),
    (b"B" + b"\x00" * 8 + b"\x00" * 12, {},
     "pgoutput Begin at offset 1: expected a valid (non-zero) uint64 final_lsn, got 0"),
    (b"B" + b"\x01" * 10, {},
     "pgoutput Begin at offset 9: expected int64 commit_ts, got only 2 of its 8 bytes"),
    (b"B" + b"\x01" * 20 + b"\x00", {},
     "pgoutput Begin at offset 21: expected end of message, got 1 trailing byte(s)"),
    (b"C\x00" + b"\x01" * 16, {},
     "pgoutput Commit at offset 18: expected int64 commit_ts, got end of data"),
    (b"O" + b"\x01" * 8 + b"abc", {},
     "pgoutput Origin at offset 9: expected NUL-terminated origin name, got no NUL before end of data"),
    (b"O" + b"\x01" * 8, {},
     "pgoutput Origin at offset 9: expected NUL-terminated origin name, got end of data"),
    (b"R" + REL + b"public\x00t\xffx\x00d\x00\x00", {},
     "pgoutput Relation at offset 13: expected UTF-8 relation name, got invalid byte 0xff"),
    (b"R" + REL + b"\x00t\x00x\x00\x00", {},
     "pgoutput Relation at offset 8: expected replica identity 'd', 'n', 'f' or 'i', got 'x'"),
    (b"R" + REL + b"\x00t\x00d\x00\x01\x01id\x00\x00\x00\x00\x17", {},
     "pgoutput Relation at offset 19: expected int32 type modifier of column 1, got end of data"),
    (b"R" + REL + b"\x00t\x00d\x00\x02\x01id\x00\x00\x00\x00\x17\xff\xff\xff\xff", {},
     "pgoutput Relation at offset 23: expected flags of column 2 of 2, got end of data"),
    (b"Y" + REL + b"public\x00", {},
     "pgoutput Type at offset 12: expected NUL-terminated type name, got end of data"),
    (b"T\xff\xff\xff\xff\x00", {},
     "pgoutput Truncate at offset 1: expected a relation count >= 0, got -1"),
    (b"T\x00\x00\x00\x02\x01" + REL + b"\x00", {},
     "pgoutput Truncate at offset 10: expected uint32 relation_id 2 of 2, got only 1 of its 4 bytes"),
    (b"T" + XID + b"\x00\x00\x00\x01", {"in_stream": True},
     "pgoutput Truncate at offset 9: expected uint8 options, got end of data"),
    (b"M\x01" + b"\x00" * 8 + b"p\x00\xff\xff\xff\xfe", {},
     "pgoutput Message at offset 12: expected content length >= 0, got -2"),
    (b"M\x01" + b"\x00" * 8 + b"p\x00\x00\x00\x00\x04ab", {},
     "pgoutput Message at offset 16: expected 4 bytes of content data, got only 2"),
    (b"M" + XID, {"in_stream": True},
     "pgoutput Message at offset 5: expected uint8 flags, got end of data"),
    (b"S" + XID + b"\x02", {},
     "pgoutput Stream Start at offset 5: expected first_segment 0 or 1, got 2"),
    (b"E\x00", {},
     "pgoutput Stream Stop at offset 1: expected end of message, got 1 trailing byte(s)"),
    (b"A" + XID, {},
     "pgoutput Stream Abort at offset 5: expected uint32 subxid, got end of data"),
    (b"P\x00" + b"\x01" * 8 + b"\x00" * 8 + b"\x01" * 12 + b"g\x00", {},
     "pgoutput Prepare at offset 10: expected a valid (non-zero) uint64 end_lsn, got 0"),
    (b"K\x00" + b"\x01" * 28 + b"gid", {},
     "pgoutput Commit Prepared at offset 30: expected NUL-terminated gid, got no NUL before end of data"),
    (b"r\x00" + b"\x01" * 30, {},
     "pgoutput Rollback Prepared at offset 26: expected int64 rollback_ts, got only 6 of its 8 bytes"),
    (b"r\x00" + b"\x01" * 36, {},
     "pgoutput Rollback Prepared at offset 38: expected NUL-terminated gid, got end of data"),
]


@pytest.mark.parametrize(("raw", "flags", "message"), ERRORS, ids=[e[2][:60] for e in ERRORS])
def test_malformed_message_raises_one_precise_line(raw: bytes, flags: dict[str, bool], message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_message(raw, **flags)
    assert str(info.value) == message
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ProtocolError) and not info.value.retryable


def test_stream_decoder_rejects_broken_block_structure() -> None:
    decoder = StreamDecoder()
    with pytest.raises(DecodeError, match=r"^pgoutput Stream Stop at offset 0: .*outside a streamed block$"):
        decoder.decode(b"E")
    assert decoder.decode(b"S" + XID + b"\x01") == StreamStart(740, True)
    assert decoder.in_stream and decoder.stream_xid == 740
    assert decoder.decode(b"I" + XID + REL + b"N" + TUPLE_1) == Insert(740, 16397, text("hi"))
    with pytest.raises(DecodeError, match=r"^pgoutput Stream Start at offset 0: expected Stream Stop to "
                                          r"close the streamed block of xid 740, got Stream Start inside"):
        decoder.decode(b"S" + XID + b"\x00")
    with pytest.raises(DecodeError, match=r"^pgoutput Commit at offset 0: .*got Commit inside that block$"):
        decoder.decode(b"C\x00" + b"\x01" * 24)
    assert decoder.decode(b"E") == StreamStop()
    assert decoder.decode(b"I" + REL + b"N" + TUPLE_1) == Insert(None, 16397, text("hi"))
    decoder.decode(b"S" + XID + b"\x00")
    decoder.reset()
    assert not decoder.in_stream and decoder.stream_xid is None


def test_inputs_are_bytes_or_memoryview_and_cells_are_bytes() -> None:
    raw = b"I" + REL + b"N\x00\x04t\x00\x00\x00\x00nub\x00\x00\x00\x01\x00"
    expected = Insert(None, 16397, (Cell("t", b""), Cell("n", None), Cell("u", None), Cell("b", b"\x00")))
    for data in (raw, memoryview(raw), memoryview(b"xx" + raw)[2:]):
        msg = decode_message(data)
        assert msg == expected
        assert isinstance(msg, Insert) and all(type(c.data) in (bytes, type(None)) for c in msg.new)
        assert all(type(c) is Cell for c in msg.new)


# ---------------------------------------------------------------------------------------------------------
# Fuzz: truncated, mutated and random variants of every golden message only ever raise DecodeError.


def _all_golden_payloads() -> list[tuple[bytes, bool]]:
    return [(bytes.fromhex(row["hex"]), row["in_stream"]) for v in VERSIONS for row in golden(v)[1]]


def test_every_truncation_of_a_golden_message_is_rejected() -> None:
    rng = random.Random(20240601)
    for raw, in_stream in _all_golden_payloads():
        cuts = range(len(raw)) if len(raw) <= 64 else rng.sample(range(len(raw)), 24)
        for cut in cuts:
            with pytest.raises(DecodeError):
                decode_message(raw[:cut], in_stream=in_stream)


def test_fuzzed_golden_messages_only_raise_decode_error() -> None:
    rng = random.Random(5432)
    payloads = _all_golden_payloads()
    type_bytes = b"BCOYRIUDTMSEcAbPKrpZ"
    for case in range(5000):
        raw, in_stream = rng.choice(payloads)
        data = bytearray(raw)
        mode = case % 5
        if mode == 0:  # flip a few bytes
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif mode == 1:  # cut and append junk
            data = data[:rng.randrange(len(data) + 1)] + rng.randbytes(rng.randint(0, 12))
        elif mode == 2:  # change the type byte
            data[0] = rng.choice(type_bytes)
        elif mode == 3:  # random bytes behind a valid type byte
            data = bytearray([rng.choice(type_bytes)]) + rng.randbytes(rng.randint(0, 48))
        else:  # insert or delete bytes in the middle
            pos = rng.randrange(len(data))
            if rng.random() < 0.5:
                del data[pos:pos + rng.randint(1, 4)]
            else:
                data[pos:pos] = rng.randbytes(rng.randint(1, 4))
        try:
            decode_message(bytes(data), in_stream=rng.random() < 0.5 if mode else in_stream,
                           parallel_abort=rng.random() < 0.2)
        except DecodeError as exc:
            assert str(exc).startswith("pgoutput ") and "\n" not in str(exc)
