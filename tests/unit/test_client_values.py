"""The client library without a server: Value -> Python, batch decoding, and the acknowledgement bookkeeping
(walstream.client.values and walstream.client.core). tests/e2e/test_client_lib.py runs the same against a real
walstream and PostgreSQL."""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from walstream._proto import walstream_v1_pb2 as pb
from walstream.client import INFINITY, NEG_INFINITY, Batch, Change, to_python
from walstream.client.core import Session, failure, make_options, short_details
from walstream.client.values import row_to_dict

EPOCH = datetime(1970, 1, 1)
UTC = timezone.utc
I64_MAX, I64_MIN, I32_MAX, I32_MIN = 2**63 - 1, -(2**63), 2**31 - 1, -(2**31)


def us(dt: datetime) -> int:
    base = datetime(1970, 1, 1, tzinfo=dt.tzinfo)
    return (dt - base) // timedelta(microseconds=1)


def arr(*elements: pb.Value) -> pb.Value:
    return pb.Value(array=pb.Array(elements=list(elements)))


# ---- scalar kinds -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (pb.Value(null=True), None),
    (pb.Value(), None),  # unset
    (pb.Value(bool=True), True),
    (pb.Value(bool=False), False),
    (pb.Value(int64=0), 0),
    (pb.Value(int64=I64_MIN), I64_MIN),
    (pb.Value(int64=I64_MAX), I64_MAX),
    (pb.Value(double=1.5), 1.5),
    (pb.Value(double=-0.0), -0.0),
    (pb.Value(text="héllo"), "héllo"),
    (pb.Value(text=""), ""),
    (pb.Value(bytes=b"\x00\x01\xff"), b"\x00\x01\xff"),
    (pb.Value(bytes=b""), b""),
])
def test_scalars(value: pb.Value, expected: object) -> None:
    got = to_python(value)
    assert got == expected and type(got) is type(expected)


def test_double_specials() -> None:
    assert math.isnan(to_python(pb.Value(double=float("nan"))))
    assert to_python(pb.Value(double=float("inf"))) == math.inf
    assert to_python(pb.Value(double=float("-inf"))) == -math.inf


@pytest.mark.parametrize("text", ["12.5000", "0", "-0.000001", "123456789012345678901234567890.123456789",
                                  "1E+1000"])
def test_numeric_is_exact(text: str) -> None:
    got = to_python(pb.Value(numeric=text))
    assert isinstance(got, Decimal) and str(got) == text


def test_numeric_specials() -> None:
    assert to_python(pb.Value(numeric="NaN")).is_nan()
    assert to_python(pb.Value(numeric="Infinity")) == Decimal("Infinity")
    assert to_python(pb.Value(numeric="-Infinity")) == Decimal("-Infinity")


@pytest.mark.parametrize(("text", "expected"), [
    ('{"a": [1, 2.5, null, true], "b": {"c": "d"}}', {"a": [1, 2.5, None, True], "b": {"c": "d"}}),
    ("[1, 2]", [1, 2]),
    ('"s"', "s"),
    ("null", None),
    ("123456789012345678901234567890", 123456789012345678901234567890),  # beyond 64 bits: still exact
    ('{"big": -99999999999999999999}', {"big": -99999999999999999999}),
    ('"\\ud800"', "\ud800"),  # a lone surrogate escape: json accepts it, orjson does not
])
def test_json(text: str, expected: object) -> None:
    assert to_python(pb.Value(json=text)) == expected


# ---- dates and times --------------------------------------------------------------------------------------

def test_timestamp_naive() -> None:
    dt = datetime(2024, 2, 29, 23, 59, 59, 123456)
    got = to_python(pb.Value(timestamp_us=us(dt)))
    assert got == dt and got.tzinfo is None
    assert to_python(pb.Value(timestamp_us=-1)) == datetime(1969, 12, 31, 23, 59, 59, 999999)


def test_timestamptz_aware_utc() -> None:
    dt = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    got = to_python(pb.Value(timestamptz_us=us(dt)))
    assert got == dt and got.tzinfo is UTC


def test_date_and_time() -> None:
    assert to_python(pb.Value(date_days=0)) == date(1970, 1, 1)
    assert to_python(pb.Value(date_days=-1)) == date(1969, 12, 31)
    assert to_python(pb.Value(date_days=(date(9999, 12, 31) - date(1970, 1, 1)).days)) == date(9999, 12, 31)
    assert to_python(pb.Value(date_days=(date(1, 1, 1) - date(1970, 1, 1)).days)) == date(1, 1, 1)
    assert to_python(pb.Value(time_us=0)) == time(0)
    assert to_python(pb.Value(time_us=(13 * 3600 + 14 * 60 + 15) * 10**6 + 16)) == time(13, 14, 15, 16)
    assert to_python(pb.Value(time_us=86_400 * 10**6)) == "24:00:00"  # PostgreSQL allows 24:00


def test_infinity_stays_a_string() -> None:
    assert INFINITY == "infinity" and NEG_INFINITY == "-infinity"
    for kind, top, bottom in (("timestamp_us", I64_MAX, I64_MIN), ("timestamptz_us", I64_MAX, I64_MIN),
                              ("date_days", I32_MAX, I32_MIN)):
        assert to_python(pb.Value(**{kind: top})) == "infinity"  # type: ignore[arg-type]
        assert to_python(pb.Value(**{kind: bottom})) == "-infinity"  # type: ignore[arg-type]


# PostgreSQL's own text for values datetime cannot hold (checked against a real server in the e2e tests).
BC_TS_US = -63517780799500000  # extract(epoch from '0044-03-15 12:00:00.5 BC'::timestamp) * 1e6
FAR_DAYS = (date(2345, 1, 2) - date(1970, 1, 1)).days + 25 * 146_097  # 12345-01-02: 25 400-year cycles later


def test_out_of_range_dates_keep_postgresqls_text() -> None:
    assert to_python(pb.Value(timestamp_us=BC_TS_US)) == "0044-03-15 12:00:00.5 BC"
    assert to_python(pb.Value(timestamptz_us=BC_TS_US)) == "0044-03-15 12:00:00.5+00 BC"
    assert to_python(pb.Value(date_days=-719528)) == "0001-01-01 BC"  # '0001-01-01 BC' - '1970-01-01'
    assert to_python(pb.Value(date_days=-719528 - 365)) == "0002-01-01 BC"
    assert to_python(pb.Value(date_days=-719528 + 365)) == "0001-12-31 BC"  # 1 BC is a leap year
    assert to_python(pb.Value(date_days=FAR_DAYS)) == "12345-01-02"
    far_us = FAR_DAYS * 86_400 * 10**6 + (3 * 3600 + 4 * 60 + 5) * 10**6
    assert to_python(pb.Value(timestamp_us=far_us)) == "12345-01-02 03:04:05"
    assert to_python(pb.Value(timestamptz_us=far_us + 10)) == "12345-01-02 03:04:05.00001+00"
    # The oldest date PostgreSQL takes: 4713-11-24 BC (Julian day 0).
    assert to_python(pb.Value(date_days=-2440588)) == "4714-11-24 BC"


# ---- arrays -----------------------------------------------------------------------------------------------

def test_arrays_nest_and_convert_elements() -> None:
    value = arr(arr(pb.Value(int64=1), pb.Value(null=True)), arr(pb.Value(int64=3), pb.Value(int64=4)))
    assert to_python(value) == [[1, None], [3, 4]]
    assert to_python(arr()) == []
    assert to_python(arr(pb.Value(numeric="1.10"), pb.Value(numeric="NaN")))[0] == Decimal("1.10")
    got = to_python(arr(pb.Value(timestamptz_us=0), pb.Value(timestamptz_us=I64_MAX), pb.Value(json="{}")))
    assert got == [datetime(1970, 1, 1, tzinfo=UTC), "infinity", {}]
    assert to_python(arr(arr(arr(pb.Value(text="x"))))) == [[["x"]]]


def test_unchanged_toast_has_no_value() -> None:
    with pytest.raises(ValueError, match="unchanged TOAST"):
        to_python(pb.Value(unchanged_toast=True))


def test_row_to_dict() -> None:
    values = [pb.Value(int64=1), pb.Value(unchanged_toast=True), pb.Value(null=True), pb.Value()]
    row, toast = row_to_dict(values, ("id", "body", "note", "x"))
    assert row == {"id": 1, "note": None, "x": None} and toast == {"body"}
    row, toast = row_to_dict(values, ("id", "body", "note", "x"), skip_unset=True)
    assert row == {"id": 1, "note": None} and toast == {"body"}
    with pytest.raises(ValueError, match="2 values but its relation 1 columns"):
        row_to_dict(values[:2], ("id",))


# ---- decoding batches -------------------------------------------------------------------------------------

REL = pb.Relation(relation_id=7, schema="public", table="items", replica_identity=pb.DEFAULT, columns=[
    pb.Column(name="id", type_oid=23, type_name="int4", type_modifier=-1, is_key=True),
    pb.Column(name="price", type_oid=1700, type_name="numeric", type_modifier=-1),
    pb.Column(name="body", type_oid=25, type_name="text", type_modifier=-1),
])
T0 = 1_700_000_000_000_000


def event(op: Any, lsn: int, commit_lsn: int, ordinal: int, **kwargs: object) -> pb.Event:
    return pb.Event(op=op, lsn=lsn, xid=9, commit_lsn=commit_lsn, commit_time_us=T0, ordinal=ordinal,
                    **kwargs)  # type: ignore[arg-type]


def row(*values: pb.Value) -> pb.Row:
    return pb.Row(values=list(values))


def insert(lsn: int, commit_lsn: int, ordinal: int, ident: int) -> pb.Event:
    return event(pb.INSERT, lsn, commit_lsn, ordinal, relation_id=7,
                 new=row(pb.Value(int64=ident), pb.Value(numeric="1.50"), pb.Value(text="b")))


def test_decode_rows_truncate_message_and_boundaries() -> None:
    s = Session()
    s.new_stream()
    upd = event(pb.UPDATE, 110, 200, 2, relation_id=7,
                new=row(pb.Value(int64=1), pb.Value(numeric="2"), pb.Value(unchanged_toast=True)),
                old=row(pb.Value(int64=1), pb.Value(), pb.Value()), old_row=pb.OLD_ROW_KEY)
    dele = event(pb.DELETE, 120, 200, 3, relation_id=7,
                 old=row(pb.Value(int64=1), pb.Value(null=True), pb.Value(text="b")), old_row=pb.OLD_ROW_FULL)
    trunc = event(pb.TRUNCATE, 130, 200, 4, truncate=pb.Truncate(relation_ids=[7, 99], cascade=True))
    msg = event(pb.MESSAGE, 140, 200, 5, message=pb.LogicalMessage(prefix="p", content=b"\x01", transactional=True))
    batch, acks = s.receive(pb.Batch(relations=[REL], events=[
        event(pb.BEGIN, 200, 200, 0), insert(100, 200, 1, 1), upd, dele, trunc, msg,
        event(pb.COMMIT, 250, 200, 6, end_lsn=250)]))
    assert acks == [] and batch is not None
    begin, ins, u, d, t, m, commit = batch.changes
    assert (begin.op, begin.schema, begin.table, begin.position) == ("BEGIN", "", "", (200, 0))
    assert begin.commit_time == datetime.fromtimestamp(T0 / 1e6, UTC)
    assert ins.op == "INSERT" and ins.qualified_table == "public.items"
    assert ins.new == {"id": 1, "price": Decimal("1.50"), "body": "b"} and ins.old is None
    assert [c.name for c in ins.columns] == ["id", "price", "body"] and ins.key == {"id": 1}
    assert u.new == {"id": 1, "price": Decimal("2")} and u.unchanged_toast == {"body"}
    assert u.old == {"id": 1} and u.old_is_key
    assert d.new is None and d.old == {"id": 1, "price": None, "body": "b"} and not d.old_is_key
    assert d.key == {"id": 1}
    assert t.truncate is not None and t.truncate.tables == (("public", "items"), ("", "relation 99"))
    assert t.truncate.cascade and not t.truncate.restart_identity and (t.schema, t.table) == ("public", "items")
    assert m.message is not None and (m.message.prefix, m.message.content, m.message.transactional) == ("p", b"\x01",
                                                                                                       True)
    assert commit.end_lsn == 250 and commit.lsn == 250 and begin.end_lsn is None


def test_non_transactional_message_is_ordered_by_its_lsn() -> None:
    s = Session()
    s.new_stream()
    batch, _ = s.receive(pb.Batch(events=[pb.Event(op=pb.MESSAGE, lsn=500, message=pb.LogicalMessage(prefix="x"))]))
    assert batch is not None
    (m,) = batch.changes
    assert m.commit_time is None and m.commit_lsn == 0 and m.position == (500, 0)


def test_unknown_relation_is_a_protocol_error() -> None:
    from walstream.client import StreamError

    s = Session()
    s.new_stream()
    with pytest.raises(StreamError, match="relation 7, which the server never described"):
        s.receive(pb.Batch(events=[insert(100, 200, 1, 1)]))


def test_relations_are_replaced_and_kept_across_streams() -> None:
    s = Session()
    s.new_stream()
    s.receive(pb.Batch(relations=[REL]))
    s.new_stream()
    renamed = pb.Relation()
    renamed.CopyFrom(REL)
    renamed.table = "goods"
    batch, _ = s.receive(pb.Batch(relations=[renamed], events=[insert(100, 200, 1, 1)]))
    assert batch is not None and batch.changes[0].table == "goods"
    batch, _ = s.receive(pb.Batch(events=[insert(300, 400, 1, 2)]))
    assert batch is not None and batch.changes[0].table == "goods"


# ---- acknowledgements -------------------------------------------------------------------------------------

def take(s: Session, *events: pb.Event) -> tuple[list[Change], list[int]]:
    batch, acks = s.receive(pb.Batch(relations=[REL], events=list(events)))
    return (list(batch.changes) if batch else []), acks


def test_ack_is_cumulative_and_never_repeats() -> None:
    s = Session()
    s.new_stream()
    changes, _ = take(s, insert(100, 150, 1, 1), insert(160, 210, 1, 2), insert(220, 300, 1, 3))
    assert s.ack(changes[1]) == [160]  # acknowledges 1 and 2 with one Ack
    assert s.ack(changes[0]) == []  # already covered
    assert s.ack(changes[1]) == []
    assert s.ack(Batch(tuple(changes))) == [220]
    assert s.unacked == 0


def test_repeated_lsns_are_acked_once_per_event() -> None:
    # COPY / multi-row inserts share one LSN: an Ack matches the oldest unacknowledged event with its LSN.
    s = Session()
    s.new_stream()
    changes, _ = take(s, *(insert(100, 300, i, i) for i in range(1, 6)))
    assert s.ack(changes[2]) == [100, 100, 100]
    assert s.ack(changes[4]) == [100, 100]
    changes, _ = take(s, event(pb.BEGIN, 400, 400, 0), insert(350, 400, 1, 9), event(pb.COMMIT, 450, 400, 2))
    assert s.ack(changes[-1]) == [450]


def test_redelivered_acked_events_are_dropped_and_acked_on_the_new_stream() -> None:
    s = Session()
    s.new_stream()
    first, _ = take(s, insert(100, 150, 1, 1), insert(160, 210, 1, 2), insert(220, 300, 1, 3))
    assert s.ack(first[1]) == [160]
    # The stream breaks before the server saw that Ack; the next stream resends all three first.
    s.new_stream()
    again, acks = take(s, insert(100, 150, 1, 1), insert(160, 210, 1, 2), insert(220, 300, 1, 3),
                       insert(310, 400, 1, 4))
    assert [c.new["id"] for c in again if c.new] == [3, 4]  # 3 was yielded before but never acknowledged
    assert acks == [160]  # settles 1 and 2 on the new stream, for the application
    assert s.ack(again[0]) == [220]


def test_ack_of_an_event_from_a_previous_stream() -> None:
    s = Session()
    s.new_stream()
    old, _ = take(s, insert(100, 150, 1, 1), insert(160, 210, 1, 2))
    s.new_stream()
    new, acks = take(s, insert(100, 150, 1, 1))  # the resend has begun: event 1 again, 2 not yet here
    assert acks == [] and len(new) == 1
    # The application acknowledges the old copy of 2: that covers the new copy of 1 now, and 2 when it comes.
    assert s.ack(old[1]) == [100]
    later, acks = take(s, insert(160, 210, 1, 2), insert(220, 300, 1, 3))
    assert [c.new["id"] for c in later if c.new] == [3] and acks == [160]


def test_ack_rejects_other_things() -> None:
    s = Session()
    with pytest.raises(TypeError):
        s.ack("0/1")  # type: ignore[arg-type]


# ---- options and errors -----------------------------------------------------------------------------------

def opts(**changes: object) -> object:
    base: dict[str, object] = dict(target="h:1", tables=(), exclude_tables=(), operations=(),
                                   transaction_boundaries=False, logical_messages=False, max_events=1000,
                                   max_bytes=1 << 20, max_delay_ms=0, client_name=None, reconnect=True,
                                   backoff=(0.5, 30.0), close_timeout=5.0, metadata=(), channel_options=())
    base.update(changes)
    return make_options(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("changes", "message"), [
    ({"operations": ["insert", "upsert"]}, "operations: unknown operation 'UPSERT'"),
    ({"operations": ["begin"]}, "operations: unknown operation 'BEGIN'"),
    ({"max_events": 0}, "max_events: expected a whole number from 1 to 10000"),
    ({"max_events": 10_001}, "max_events"),
    ({"max_bytes": 5 << 20}, "max_bytes"),
    ({"max_delay_ms": -1}, "max_delay_ms"),
    ({"max_delay_ms": True}, "max_delay_ms"),
    ({"backoff": (0, 1)}, "backoff"),
    ({"tables": [""]}, "tables: expected table names or patterns"),
    ({"target": ""}, "target"),
])
def test_bad_options(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        opts(**changes)


def test_options_normalise() -> None:
    o = opts(tables="public.*", operations=("Insert", "insert", "DELETE"))
    assert o.include_tables == ("public.*",) and o.operations == ("INSERT", "DELETE")  # type: ignore[attr-defined]


def test_failure_policy() -> None:
    o = opts()
    assert failure("UNAVAILABLE", "x", o, established=True) is None  # type: ignore[arg-type]
    assert failure("OK", "", o, established=True) is None  # type: ignore[arg-type]
    err = failure("UNAVAILABLE", "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
                  "Failed to connect to remote host: Connection refused", o, established=False)  # type: ignore[arg-type]
    assert type(err).__name__ == "ServerUnreachable"
    assert str(err) == "cannot reach walstream at h:1: Connection refused"
    err = failure("INVALID_ARGUMENT", "include_tables[0]: bad", o, established=True)  # type: ignore[arg-type]
    assert err is not None and err.code == "INVALID_ARGUMENT" and "include_tables[0]: bad" in str(err)
    err = failure("UNIMPLEMENTED", "Method not found", o, established=True)  # type: ignore[arg-type]
    assert err is not None and "does not serve walstream.v1" in str(err)
    no_reconnect = opts(reconnect=False)
    assert failure("UNAVAILABLE", "x", no_reconnect, established=True) is not None  # type: ignore[arg-type]
    assert short_details("") == "unavailable"


def test_import_walstream_stays_light() -> None:
    import subprocess
    import sys

    code = ("import sys, walstream; assert 'grpc' not in sys.modules, 'grpc imported'; "
            "from walstream import Client, AsyncClient; assert 'grpc' in sys.modules; print(Client.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Client"


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    from walstream.client.core import Backoff

    b = Backoff(0.5, 3.0)
    delays = [b.delay() for _ in range(6)]
    for got, nominal in zip(delays, [0.5, 1.0, 2.0, 3.0, 3.0, 3.0], strict=True):
        assert 0.75 * nominal <= got <= nominal
    b.reset()
    assert b.delay() <= 0.5
