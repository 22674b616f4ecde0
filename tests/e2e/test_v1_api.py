"""End to end: real PostgreSQL -> real `walstream start` process -> raw gRPC clients of walstream.v1."""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import NoReturn

import grpc
import psycopg2
import pytest
from slot_checks import metrics_args, quick_status_updates, reported_flush_after_acks
from support import SeedClient, confirmed_flush, expect_nothing_from, take_from, until_none, wait_confirmed

from walstream._proto import walstream_v1_pb2 as pb
from walstream._proto import walstream_v1_pb2_grpc
from walstream.delivery.acks import AckTracker
from walstream.delivery.hub import Hub
from walstream.delivery.v1.service import ServerStatus
from walstream.errors import SourceError

INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)
INT32_MAX, INT32_MIN = 2**31 - 1, -(2**31)
UNSET, TOAST = object(), object()


# --- a raw client -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Got:
    """One event with the relation metadata in effect when it arrived, and the batch it came in."""

    event: pb.Event
    relation: pb.Relation | None
    batch: int

    @property
    def op(self) -> str:
        return pb.Operation.Name(self.event.op)

    @property
    def name(self) -> str:
        assert self.relation is not None
        return f"{self.relation.schema}.{self.relation.table}"

    def row(self, which: str = "new") -> dict[str, object]:
        assert self.relation is not None
        values = getattr(self.event, which).values
        assert len(values) == len(self.relation.columns)
        return {c.name: py(v) for c, v in zip(self.relation.columns, values, strict=True)}

    def kinds(self, which: str = "new") -> dict[str, str | None]:
        assert self.relation is not None
        return {c.name: v.WhichOneof("kind") for c, v in
                zip(self.relation.columns, getattr(self.event, which).values, strict=True)}


def py(value: pb.Value) -> object:
    kind = value.WhichOneof("kind")
    if kind is None:
        return UNSET
    if kind == "null":
        return None
    if kind == "unchanged_toast":
        return TOAST
    if kind == "array":
        return [py(v) for v in value.array.elements]
    return getattr(value, kind)


class V1Client:
    """A client of walstream.v1.Walstream/Subscribe. With auto_ack it acks each batch's last event."""

    def __init__(self, addr: str, auto_ack: bool = True, **subscription: object) -> None:
        self.channel = grpc.insecure_channel(addr)
        self.stub = walstream_v1_pb2_grpc.WalstreamStub(self.channel)
        self.auto_ack = auto_ack
        self.batches: list[pb.Batch] = []
        self.relations: dict[int, pb.Relation] = {}
        self.events: queue.Queue[Got] = queue.Queue()
        self.error: grpc.RpcError | None = None
        self.done = threading.Event()
        self._out: queue.Queue[pb.SubscribeRequest | None] = queue.Queue()
        self._out.put(pb.SubscribeRequest(subscription=pb.Subscription(**subscription)))  # type: ignore[arg-type]
        self._call = self.stub.Subscribe(until_none(self._out))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for response in self._call:
                batch = response.batch
                index = len(self.batches)
                self.batches.append(batch)
                for rel in batch.relations:
                    self.relations[rel.relation_id] = rel
                for event in batch.events:
                    rel = self.relations.get(event.relation_id) if event.relation_id else None
                    if event.relation_id:
                        assert rel is not None, f"event for relation {event.relation_id} sent before its Relation"
                    self.events.put(Got(event, rel, index))
                if self.auto_ack and batch.events:
                    self.ack(batch.events[-1].lsn)
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.done.set()

    def ack(self, lsn: int) -> None:
        self._out.put(pb.SubscribeRequest(ack=pb.Ack(lsn=lsn)))

    def send(self, request: pb.SubscribeRequest) -> None:
        self._out.put(request)

    def take(self, n: int, timeout: float = 30) -> list[Got]:
        def fail(out: list[Got]) -> NoReturn:
            raise AssertionError(f"got {len(out)} of {n} events: {[(g.op, g.event.lsn) for g in out][:20]}"
                                 f" (error: {self.error})")

        return take_from(self.events, n, timeout, fail)

    def expect_nothing(self, wait: float = 1.5) -> None:
        def fail(extra: Got) -> NoReturn:
            raise AssertionError(f"unexpected event {extra.op} {extra.event}")

        expect_nothing_from(self.events, wait, fail)

    def wait_error(self, timeout: float = 10) -> grpc.RpcError:
        assert self.done.wait(timeout), "the call did not end"
        assert self.error is not None, "the call ended without an error"
        return self.error

    def close(self, timeout: float = 10) -> None:
        """Half-close, wait for the server to end the call, drop the channel."""
        self._out.put(None)
        self.done.wait(timeout)
        self.channel.close()


def status(addr: str) -> pb.StatusResponse:
    with grpc.insecure_channel(addr) as channel:
        return walstream_v1_pb2_grpc.WalstreamStub(channel).Status(pb.StatusRequest(), timeout=10)


def epoch_us(testdb, expr: str) -> int:
    """PostgreSQL's own answer: microseconds since 1970 of a timestamp[tz] expression."""
    return int(testdb.query(f"SELECT (extract(epoch FROM {expr}) * 1000000)::numeric(30,0)")[0][0])


def epoch_days(testdb, expr: str) -> int:
    return int(testdb.query(f"SELECT {expr} - date '1970-01-01'")[0][0])


# --- the tests ----------------------------------------------------------------------------------------

TYPED = """CREATE TABLE typed (
    id int PRIMARY KEY, i2 smallint, i8 bigint, num numeric(20,6), f4 real, f8 double precision, flag bool,
    t text, vc varchar(10), b bytea, j json, jb jsonb, ts timestamp, tstz timestamptz, d date, tm time,
    ia int[], ia2 int[], ta text[], m mood, dom posint, u uuid, iv interval, big text)"""


def test_typed_values_row_images_and_relation_metadata(testdb, walstream):
    testdb.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')", "CREATE DOMAIN posint AS int CHECK (VALUE > 0)",
                   TYPED, "CREATE TABLE audit (id int, note text, n numeric)",
                   "ALTER TABLE audit REPLICA IDENTITY FULL", "CREATE PUBLICATION pub FOR ALL TABLES")
    ws = walstream()
    client = V1Client(ws.addr)
    ws.wait_log("connected")
    big = "x" * 300_000  # stored out of line (TOASTed)
    testdb.execute(
        "INSERT INTO typed VALUES (1, -5, 9007199254740993, 12345678901234.123456, 1.5, 'NaN', true, "
        "'héllo ✓ 日本', 'abc', '\\x00ff10', '{\"a\": 1, \"a\": 2}', '{\"k\": [1, 2.50]}', "
        "'2024-01-02 03:04:05.678901', '2024-01-02 03:04:05.5+02', '2024-02-29', '23:59:59.999999', "
        "'{1,NULL,3}', '{{1,2},{3,4}}', '{\"a b\",NULL,\"c,d\"}', 'happy', 7, "
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1 day 02:00:00', %s)",
        params=(big,))
    testdb.execute(
        "INSERT INTO typed (id, f4, f8, num, ts, tstz, d, tm) VALUES "
        "(2, 'Infinity', '-Infinity', 'NaN', 'infinity', '-infinity', 'infinity', '00:00:00'), "
        "(3, '-0', '1e-07', '-0.000', '0001-01-01 00:00:00 BC', '0044-03-15 12:00:00.25+00 BC', "
        "'4713-01-01 BC', '24:00:00'), "
        "(4, NULL, NULL, NULL, '294246-12-31 23:59:59.999999', '1969-12-31 23:59:59.999999+00', "
        "'-infinity', NULL), "
        "(5, NULL, NULL, NULL, '294276-12-31 23:59:59.999999', NULL, NULL, NULL)")
    ins1, ins2, ins3, ins4, ins5 = client.take(5)
    assert [g.op for g in (ins1, ins2, ins3, ins4, ins5)] == ["INSERT"] * 5

    rel = ins1.relation
    assert rel is not None and (rel.schema, rel.table) == ("public", "typed")
    assert rel.replica_identity == pb.DEFAULT
    attrs = testdb.query("SELECT attname::text, atttypid::int, atttypmod FROM pg_attribute "
                         "WHERE attrelid = 'typed'::regclass AND attnum > 0 ORDER BY attnum")
    assert [(c.name, c.type_oid, c.type_modifier) for c in rel.columns] == attrs
    assert [c.type_name for c in rel.columns] == [
        "int4", "int2", "int8", "numeric", "float4", "float8", "bool", "text", "varchar", "bytea", "json",
        "jsonb", "timestamp", "timestamptz", "date", "time", "_int4", "_int4", "_text", "public.mood",
        "public.posint", "uuid", "interval", "text"]
    assert [c.is_key for c in rel.columns] == [True] + [False] * 23
    assert rel.relation_id == testdb.query("SELECT 'typed'::regclass::oid::int")[0][0]

    row = ins1.row()
    assert row == {
        "id": 1, "i2": -5, "i8": 9007199254740993, "num": "12345678901234.123456", "f4": 1.5,
        "f8": row["f8"], "flag": True, "t": "héllo ✓ 日本", "vc": "abc", "b": b"\x00\xff\x10",
        "j": '{"a": 1, "a": 2}', "jb": '{"k": [1, 2.50]}',
        "ts": epoch_us(testdb, "timestamp '2024-01-02 03:04:05.678901'"),
        "tstz": epoch_us(testdb, "timestamptz '2024-01-02 03:04:05.5+02'"),
        "d": epoch_days(testdb, "date '2024-02-29'"), "tm": (23 * 3600 + 59 * 60 + 59) * 10**6 + 999999,
        "ia": [1, None, 3], "ia2": [[1, 2], [3, 4]], "ta": ["a b", None, "c,d"], "m": "happy", "dom": 7,
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "iv": "1 day 02:00:00", "big": big}
    assert math.isnan(row["f8"])  # type: ignore[arg-type]
    assert ins1.kinds() == {
        "id": "int64", "i2": "int64", "i8": "int64", "num": "numeric", "f4": "double", "f8": "double",
        "flag": "bool", "t": "text", "vc": "text", "b": "bytes", "j": "json", "jb": "json",
        "ts": "timestamp_us", "tstz": "timestamptz_us", "d": "date_days", "tm": "time_us", "ia": "array",
        "ia2": "array", "ta": "array", "m": "text", "dom": "int64", "u": "text", "iv": "text", "big": "text"}
    assert ins1.row()["ts"] == 1704164645678901

    r2, r3, r4 = ins2.row(), ins3.row(), ins4.row()
    assert (r2["f4"], r2["f8"], r2["num"]) == (math.inf, -math.inf, "NaN")
    assert (r2["ts"], r2["tstz"], r2["d"], r2["tm"]) == (INT64_MAX, INT64_MIN, INT32_MAX, 0)
    assert r2["i2"] is None and r2["ia"] is None and ins2.kinds()["i2"] == "null"
    assert r3["f4"] == 0.0 and math.copysign(1, r3["f4"]) == -1
    assert (r3["f8"], r3["num"]) == (1e-07, "0.000000")  # numeric(20,6) has no -0
    assert r3["ts"] == epoch_us(testdb, "timestamp '0001-01-01 00:00:00 BC'")
    assert r3["tstz"] == epoch_us(testdb, "timestamptz '0044-03-15 12:00:00.25+00 BC'")
    assert r3["d"] == epoch_days(testdb, "date '4713-01-01 BC'")
    assert r3["tm"] == 86_400_000_000
    assert r4["ts"] == epoch_us(testdb, "timestamp '294246-12-31 23:59:59.999999'")
    assert (r4["tstz"], r4["d"]) == (-1, INT32_MIN)
    assert ins5.row()["ts"] == "294276-12-31 23:59:59.999999"  # beyond int64 microseconds since 1970: text

    # Updates and deletes: unchanged TOAST, key-only old rows, full old rows.
    testdb.execute("UPDATE typed SET i2 = 6 WHERE id = 1",  # big not rewritten: not sent
                   "UPDATE typed SET id = 10 WHERE id = 1",  # key changed: the old key is sent
                   "DELETE FROM typed WHERE id = 10",
                   "INSERT INTO audit VALUES (1, 'first', 1.50)",
                   "UPDATE audit SET note = 'second' WHERE id = 1",
                   "DELETE FROM audit WHERE id = 1")
    upd, upd_key, dele, a_ins, a_upd, a_del = client.take(6)
    assert [g.op for g in (upd, upd_key, dele)] == ["UPDATE", "UPDATE", "DELETE"]
    assert upd.row()["big"] is TOAST and upd.kinds()["big"] == "unchanged_toast" and upd.row()["i2"] == 6
    assert upd.event.old_row == pb.OLD_ROW_NONE and not upd.event.HasField("old")
    assert upd_key.event.old_row == pb.OLD_ROW_KEY
    old = upd_key.row("old")
    assert old["id"] == 1 and all(v is UNSET for k, v in old.items() if k != "id")
    assert upd_key.row()["id"] == 10
    assert dele.event.old_row == pb.OLD_ROW_KEY and not dele.event.HasField("new")
    assert dele.row("old")["id"] == 10 and dele.row("old")["t"] is UNSET
    assert a_ins.relation is not None and a_ins.relation.replica_identity == pb.FULL
    assert [c.is_key for c in a_ins.relation.columns] == [True, True, True]
    assert a_upd.event.old_row == pb.OLD_ROW_FULL
    assert a_upd.row("old") == {"id": 1, "note": "first", "n": "1.50"}
    assert a_upd.row() == {"id": 1, "note": "second", "n": "1.50"}
    assert a_del.event.old_row == pb.OLD_ROW_FULL and a_del.row("old") == {"id": 1, "note": "second", "n": "1.50"}

    # Relation metadata: once per relation, again when it changed.
    def relations_sent(table: str) -> list[int]:
        return [i for i, b in enumerate(client.batches) for r in b.relations if r.table == table]

    assert len(relations_sent("typed")) == 1 and len(relations_sent("audit")) == 1
    assert upd.batch != ins1.batch  # a later batch touching the same table carried no Relation
    testdb.execute("ALTER TABLE typed ADD COLUMN extra int DEFAULT 42", "INSERT INTO typed (id) VALUES (7)",
                   "INSERT INTO typed (id) VALUES (8)")
    five, six = client.take(2)
    assert relations_sent("typed") == [relations_sent("typed")[0], five.batch]
    assert five.relation is not None and five.relation.columns[-1].name == "extra"
    assert five.row()["extra"] == 42 and six.row()["extra"] == 42
    end = testdb.wal_lsn()
    wait_confirmed(testdb.dsn, testdb.slot, end)
    client.close()
    assert client.error is None
    assert ws.stop() == 0
    assert "Traceback" not in ws.log()


def test_transactions_messages_and_truncate(testdb, walstream):
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY, who text)",
                   "CREATE TABLE a (id serial PRIMARY KEY)", "CREATE TABLE b (id int)",
                   "CREATE TABLE c (id int REFERENCES a)", "CREATE TABLE d (id int)",
                   "CREATE PUBLICATION pub FOR ALL TABLES")
    ws = walstream()
    full = V1Client(ws.addr, transaction_boundaries=True, logical_messages=True)
    plain = V1Client(ws.addr)  # neither boundaries nor messages
    ws.wait_log("connected", count=2)
    first, second = psycopg2.connect(testdb.dsn), psycopg2.connect(testdb.dsn)
    before = time.time()
    with first.cursor() as c1, second.cursor() as c2:
        c1.execute("INSERT INTO t VALUES (1, 'first-started')")
        c2.execute("INSERT INTO t VALUES (2, 'second-started')")
        c1.execute("INSERT INTO t VALUES (3, 'first-started')")
        c1.execute("SELECT pg_logical_emit_message(true, 'app', 'in the transaction')")
        second.commit()
        first.commit()
    first.close()
    second.close()
    testdb.execute("SELECT pg_logical_emit_message(false, 'app', convert_to('outside ✓', 'UTF8'))",
                   "INSERT INTO a DEFAULT VALUES", "INSERT INTO c VALUES (1)",
                   "TRUNCATE a, b RESTART IDENTITY CASCADE", "TRUNCATE d")
    got = full.take(21)
    ops = [(g.op, g.event.relation_id and g.relation.table) for g in got]  # type: ignore[union-attr]
    assert ops == [
        ("BEGIN", 0), ("INSERT", "t"), ("COMMIT", 0),  # the second-started transaction committed first
        ("BEGIN", 0), ("INSERT", "t"), ("INSERT", "t"), ("MESSAGE", 0), ("COMMIT", 0),
        ("MESSAGE", 0),  # non-transactional
        ("BEGIN", 0), ("INSERT", "a"), ("COMMIT", 0), ("BEGIN", 0), ("INSERT", "c"), ("COMMIT", 0),
        ("BEGIN", 0), ("TRUNCATE", 0), ("COMMIT", 0), ("BEGIN", 0), ("TRUNCATE", 0), ("COMMIT", 0)]
    now = time.time()

    txns: dict[int, list[pb.Event]] = {}
    for g in got:
        if g.event.commit_lsn:
            txns.setdefault(g.event.commit_lsn, []).append(g.event)
    transactional = [g.event for g in got if g.event.commit_lsn]
    keys = [(e.commit_lsn, e.ordinal) for e in transactional]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)  # (commit_lsn, ordinal) orders them all
    for events in txns.values():
        assert [e.ordinal for e in events] == list(range(len(events)))
        begin, commit = events[0], events[-1]
        assert (begin.op, commit.op) == (pb.BEGIN, pb.COMMIT)
        assert begin.lsn == begin.commit_lsn and commit.end_lsn > commit.commit_lsn and commit.lsn == commit.end_lsn
        assert len({(e.xid, e.commit_lsn, e.commit_time_us) for e in events}) == 1
        assert before - 5 <= begin.commit_time_us / 1e6 <= now + 5
        assert begin.xid > 0
    second_txn, first_txn = list(txns.values())[:2]
    assert second_txn[1].lsn > first_txn[1].lsn  # change LSNs are not in commit order...
    assert second_txn[0].commit_lsn < first_txn[0].commit_lsn  # ...commit LSNs are
    assert [got[i].row()["id"] for i in (1, 4, 5)] == [2, 1, 3]

    msg_in, msg_out = got[6].event, got[8].event
    assert (msg_in.message.prefix, msg_in.message.content, msg_in.message.transactional) == (
        "app", b"in the transaction", True)
    assert msg_in.commit_lsn == first_txn[0].commit_lsn and msg_in.ordinal == 3
    assert (msg_out.message.prefix, msg_out.message.content.decode(), msg_out.message.transactional) == (
        "app", "outside ✓", False)
    assert (msg_out.xid, msg_out.commit_lsn, msg_out.ordinal) == (0, 0, 0) and msg_out.lsn > 0

    ids = {name: testdb.query(f"SELECT '{name}'::regclass::oid::int")[0][0] for name in "abcd"}
    trunc, trunc_d = got[16].event, got[-2].event
    assert sorted(trunc.truncate.relation_ids) == sorted([ids["a"], ids["b"], ids["c"]])
    assert (trunc.truncate.cascade, trunc.truncate.restart_identity) == (True, True)
    assert list(trunc_d.truncate.relation_ids) == [ids["d"]]
    assert (trunc_d.truncate.cascade, trunc_d.truncate.restart_identity) == (False, False)
    assert {full.relations[i].table for i in trunc.truncate.relation_ids} == {"a", "b", "c"}  # names them

    # Without boundaries and messages: the changes only, the same events (shared, identical).
    plain_got = plain.take(7)
    assert [g.op for g in plain_got] == ["INSERT"] * 5 + ["TRUNCATE"] * 2
    assert [g.event for g in plain_got] == [g.event for g in got if g.op in ("INSERT", "TRUNCATE")]
    plain.expect_nothing(0.5)
    wait_confirmed(testdb.dsn, testdb.slot, got[-1].event.end_lsn)
    full.close()
    plain.close()


def test_filters_and_the_slot(testdb, walstream):
    testdb.execute("CREATE TABLE orders (id int PRIMARY KEY)", "CREATE TABLE order_items (id int PRIMARY KEY)",
                   "CREATE TABLE users (id int PRIMARY KEY, name text)", "CREATE SCHEMA audit",
                   "CREATE TABLE audit.log (id int PRIMARY KEY)", "CREATE TABLE audit.secret (id int PRIMARY KEY)",
                   "CREATE PUBLICATION pub FOR ALL TABLES")
    ws = walstream()
    a = V1Client(ws.addr, include_tables=["order*", "audit.*"], exclude_tables=["audit.secret"],
                 transaction_boundaries=True)
    b = V1Client(ws.addr, include_tables=["public.us?rs"], operations=[pb.INSERT, pb.DELETE], auto_ack=False)
    c = V1Client(ws.addr, include_tables=["nomatch"], transaction_boundaries=True, logical_messages=False)
    ws.wait_log("connected", count=3)
    testdb.execute("INSERT INTO orders VALUES (1)", "INSERT INTO order_items VALUES (1)",
                   "INSERT INTO users VALUES (1, 'ann')", "UPDATE users SET name = 'bob'",
                   "INSERT INTO audit.log VALUES (1)", "INSERT INTO audit.secret VALUES (1)",
                   "DELETE FROM users", "SELECT pg_logical_emit_message(false, 'x', 'y')",
                   "TRUNCATE orders, users, audit.secret")
    got_a = a.take(12)
    assert [(g.op, g.event.relation_id and g.name) for g in got_a if g.op not in ("BEGIN", "COMMIT")] == [
        ("INSERT", "public.orders"), ("INSERT", "public.order_items"), ("INSERT", "audit.log"),
        ("TRUNCATE", 0)]
    assert [g.op for g in got_a].count("BEGIN") == 4  # only transactions with an event for this client
    orders = testdb.query("SELECT 'orders'::regclass::oid::int")[0][0]
    assert list(got_a[-2].event.truncate.relation_ids) == [orders]  # only the tables it wants
    assert a.relations[orders].table == "orders"
    got_b = b.take(2)
    assert [(g.op, g.name, g.row("old" if g.op == "DELETE" else "new")["id"]) for g in got_b] == [
        ("INSERT", "public.users", 1), ("DELETE", "public.users", 1)]
    for client in (a, b, c):
        client.expect_nothing(0.5)
    # b has acked nothing: the slot stays before its first event's transaction.
    assert confirmed_flush(testdb.dsn, testdb.slot) <= got_b[0].event.commit_lsn
    # When b acks what it got, the slot moves past everything, also the transactions b's filters left out
    # after its last event (c got nothing and acked nothing, and holds nothing back either).
    testdb.execute("INSERT INTO audit.secret VALUES (2)")  # a transaction no client wants
    end = testdb.wal_lsn()
    b.ack(got_b[1].event.lsn)
    wait_confirmed(testdb.dsn, testdb.slot, end)
    c.expect_nothing(0.2)
    for client in (a, b, c):
        client.close()
        assert client.error is None


def test_batching_and_acks(testdb, walstream):
    testdb.execute("CREATE TABLE bulk (id int PRIMARY KEY, v text)", "CREATE PUBLICATION pub FOR ALL TABLES")
    quick_status_updates(testdb.dsn, testdb.name)
    ws = walstream(*metrics_args()[1])
    small = V1Client(ws.addr, auto_ack=False, batch=pb.BatchLimits(max_events=500),
                     transaction_boundaries=True)
    tiny = V1Client(ws.addr, batch=pb.BatchLimits(max_bytes=2000))
    ws.wait_log("connected", count=2)
    start = testdb.wal_lsn()
    testdb.execute("INSERT INTO bulk SELECT g, 'row ' || g FROM generate_series(1, 5000) g")
    got = small.take(5002)
    assert [g.op for g in got[:2]] == ["BEGIN", "INSERT"] and got[-1].op == "COMMIT"
    assert [g.row()["id"] for g in got[1:-1]] == list(range(1, 5001))
    sizes = [len(b.events) for b in small.batches]
    # Far fewer batches than events. (How full they are depends on how fast PostgreSQL sends compared to
    # how fast walstream reads: with max_delay_ms 0 a batch goes out whenever the stream runs dry.)
    assert sum(sizes) == 5002 and max(sizes) <= 500 and len(sizes) <= 500, sizes
    assert all(b.ByteSize() <= 2000 + 200 for b in tiny.batches) and len(tiny.take(5000)) == 5000
    assert len(tiny.batches) < 1000

    # Not acknowledged: the slot stays before the transaction; acking each batch's last event moves it.
    # (Checked on the first status update after walstream processed the acks so far: tiny's, one a batch.)
    commit = got[-1].event
    acks = sum(1 for b in tiny.batches if b.events)
    flushed = reported_flush_after_acks(testdb.dsn, testdb.slot, ws.metrics_port, acks)
    assert flushed < commit.end_lsn and flushed <= max(start, commit.commit_lsn)
    assert confirmed_flush(testdb.dsn, testdb.slot) <= max(start, commit.commit_lsn)
    for batch in small.batches[:-1]:
        small.ack(batch.events[-1].lsn)
    acks += len(small.batches) - 1
    # The COMMIT is not acked yet.
    assert reported_flush_after_acks(testdb.dsn, testdb.slot, ws.metrics_port, acks) < commit.end_lsn
    assert confirmed_flush(testdb.dsn, testdb.slot) < commit.end_lsn
    small.ack(commit.lsn)
    wait_confirmed(testdb.dsn, testdb.slot, commit.end_lsn)

    # max_delay_ms: what arrives within the delay goes in one batch.
    delayed = V1Client(ws.addr, batch=pb.BatchLimits(max_delay_ms=1500))
    ws.wait_log("connected", count=3)
    testdb.execute("INSERT INTO bulk VALUES (6001, 'a')")
    time.sleep(0.3)
    testdb.execute("INSERT INTO bulk VALUES (6002, 'b')")
    x, y = delayed.take(2)
    assert x.batch == y.batch
    for client in (small, tiny, delayed):
        client.close()
        assert client.error is None


BAD_FIRST = [
    (pb.SubscribeRequest(ack=pb.Ack(lsn=5)), "subscription: the first message must carry a Subscription"),
    (pb.SubscribeRequest(), "subscription: the first message must carry a Subscription"),
    (pb.SubscribeRequest(subscription=pb.Subscription(include_tables=["ok", ""])), "include_tables[1]: empty"),
    (pb.SubscribeRequest(subscription=pb.Subscription(exclude_tables=["a.b.c"])), "exclude_tables[0]: 'a.b.c'"),
    (pb.SubscribeRequest(subscription=pb.Subscription(include_tables=["public."])), "include_tables[0]"),
    (pb.SubscribeRequest(subscription=pb.Subscription(operations=[pb.INSERT, pb.BEGIN])),
     "operations[1]: BEGIN is not a row operation"),
    (pb.SubscribeRequest(subscription=pb.Subscription(operations=[pb.OPERATION_UNSPECIFIED])), "operations[0]"),
    (pb.SubscribeRequest(subscription=pb.Subscription(batch=pb.BatchLimits(max_events=10_001))),
     "batch.max_events: 10001 is above the maximum"),
    (pb.SubscribeRequest(subscription=pb.Subscription(batch=pb.BatchLimits(max_bytes=5 << 20))),
     "batch.max_bytes"),
    (pb.SubscribeRequest(subscription=pb.Subscription(batch=pb.BatchLimits(max_delay_ms=10_001))),
     "batch.max_delay_ms"),
]


def test_invalid_subscriptions_status_and_the_seed_api_alongside(testdb, walstream):
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY, v text)", "CREATE PUBLICATION pub FOR ALL TABLES")
    ws = walstream()
    with grpc.insecure_channel(ws.addr) as channel:
        stub = walstream_v1_pb2_grpc.WalstreamStub(channel)
        for request, message in BAD_FIRST:
            with pytest.raises(grpc.RpcError) as info:
                list(stub.Subscribe(iter([request]), timeout=10))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
            assert str(info.value.details()).startswith(message), (info.value.details(), message)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Subscribe(iter([]), timeout=10))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert str(info.value.details()).startswith("subscription:")

    st = status(ws.addr)
    assert (st.slot, st.temporary, st.connected_clients, st.streaming) == (testdb.slot, False, 0, True)
    assert st.server_version == testdb.query("SHOW server_version")[0][0].split()[0]
    assert st.pgoutput_version in (1, 2, 3, 4) and st.walstream_version
    assert st.confirmed_lsn > 0 and st.written_lsn >= st.confirmed_lsn

    # The seed API and walstream.v1 on the same port, at the same time, get the same changes.
    seed, v1 = SeedClient(ws.addr), V1Client(ws.addr, client_name="tester")
    ws.wait_log("connected", count=2)
    ws.wait_log("(tester)")
    assert status(ws.addr).connected_clients == 2
    v1.send(pb.SubscribeRequest(subscription=pb.Subscription()))  # rejected; the stream goes on
    v1.send(pb.SubscribeRequest())
    v1.ack(12345)  # never sent: rejected
    testdb.execute("INSERT INTO t VALUES (1, 'one')", "INSERT INTO t VALUES (2, 'two')",
                   "UPDATE t SET v = 'uno' WHERE id = 1")
    seed_got, v1_got = seed.take(3), v1.take(3)
    assert [(e.op, e.lsn, e.payload) for e in seed_got] == [
        (g.op, g.event.lsn, {k: v for k, v in g.row().items()}) for g in v1_got]
    ws.wait_log("after its subscription; ignored", count=2)
    ws.wait_log("matches nothing it was sent")
    end = testdb.wal_lsn()
    wait_confirmed(testdb.dsn, testdb.slot, end)
    st = status(ws.addr)
    assert st.confirmed_lsn >= end and st.lag_bytes < 1_000_000 and st.streaming

    # Lag: unacknowledged changes hold the slot and show as lag.
    v1.close()
    assert v1.error is None  # half-close ends the call with OK
    seed.close()
    ws.wait_log("disconnected", count=2)
    holder = V1Client(ws.addr, auto_ack=False)
    ws.wait_log("connected", count=3)
    testdb.execute("INSERT INTO t SELECT g, repeat('x', 1000) FROM generate_series(10, 1000) g")
    held = holder.take(991)
    commit_lsn = held[-1].event.commit_lsn
    lagging = status(ws.addr)
    # The slot may legitimately confirm into the middle of that transaction (a keepalive while it was still
    # being written, with nothing pending), but never up to its commit: the whole transaction is held, and
    # the lag covers at least the rest of it.
    assert lagging.confirmed_lsn < commit_lsn <= lagging.written_lsn
    assert lagging.lag_bytes >= commit_lsn - lagging.confirmed_lsn > 0 and lagging.connected_clients == 1
    assert confirmed_flush(testdb.dsn, testdb.slot) < commit_lsn
    assert ws.stop() == 0
    assert holder.wait_error().code() == grpc.StatusCode.UNAVAILABLE
    holder.channel.close()


def test_status_when_postgresql_cannot_be_reached() -> None:
    """Status still answers: lag 0 and streaming false, from what walstream itself knows."""

    class Pipeline:
        streaming, written_lsn, server_version, pgoutput_version = True, 0x3000, 150006, 3

    def unreachable(conn_str: str) -> psycopg2.extensions.connection:
        raise SourceError("cannot connect to PostgreSQL: connection refused")

    async def ask() -> pb.StatusResponse:
        hub = Hub(AckTracker(confirmed_lsn=0x2000), 10, 10)
        return await ServerStatus(hub, Pipeline(), "s", True, "host=nowhere", connect=unreachable)()

    st = asyncio.run(ask())
    assert (st.slot, st.temporary, st.confirmed_lsn, st.written_lsn, st.lag_bytes, st.connected_clients) == (
        "s", True, 0x2000, 0x3000, 0, 0)
    assert (st.streaming, st.server_version, st.pgoutput_version) == (False, "15.6", 3)


def test_unacked_events_are_handed_across_apis(testdb, walstream):
    """The last client leaving with unacknowledged events hands them to the next, in that client's API."""
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY, v text)", "CREATE TABLE u (id int PRIMARY KEY)",
                   "CREATE PUBLICATION pub FOR ALL TABLES")
    ws = walstream()
    v1 = V1Client(ws.addr, auto_ack=False)
    ws.wait_log("connected")
    testdb.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')", "TRUNCATE t, u")
    got = v1.take(3)
    assert [g.op for g in got] == ["INSERT", "INSERT", "TRUNCATE"]
    v1.ack(got[0].event.lsn)
    v1.close()
    ws.wait_log("kept for the next client")

    seed = SeedClient(ws.addr, auto_ack=False)
    resent = seed.take(3)  # the second insert, then the TRUNCATE as one seed message per table
    assert [(e.op, e.name) for e in resent] == [("INSERT", "public.t"), ("TRUNCATE", "public.t"),
                                                ("TRUNCATE", "public.u")]
    assert resent[0].payload == {"id": 2, "v": "b"}
    seed.ack(resent[1].lsn)  # acks the first two: the TRUNCATE is half acknowledged
    seed.close()  # half-close: the ack is processed before the call ends
    ws.wait_log("kept for the next client", count=2)

    again = V1Client(ws.addr, include_tables=["public.*"])
    (truncate,) = again.take(1)  # the whole TRUNCATE again, as one walstream.v1 event
    assert truncate.op == "TRUNCATE"
    assert len(truncate.event.truncate.relation_ids) == 2
    again.expect_nothing()
    wait_confirmed(testdb.dsn, testdb.slot, testdb.wal_lsn())
    again.close()
