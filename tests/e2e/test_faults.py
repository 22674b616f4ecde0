"""Fault injection on a real PostgreSQL and a real walstream process (GitHub issue 7).

Every test commits a known set of rows while the fault happens (a writer thread, one transaction after
another, small ones and, regularly, one of BIG rows) and then checks, against the table itself:

- nothing lost: every committed row id arrives at least once after recovery;
- nothing acknowledged delivered again, exactly as docs/delivery.md ("Failures") promises: a client that
  stays connected across a lost PostgreSQL connection receives nothing twice, not even the already-sent
  part of a transaction cut off mid-way; after a walstream crash (SIGKILL) exactly the transactions after
  the slot's confirmed position come again, whole (the documented exception: the acknowledged part of a
  partly acknowledged transaction); a client that drops gets, when it comes back, exactly what it had not
  acknowledged, first and in order.

Each row carries its transaction number, its position in the transaction and the transaction's size, so a
client can tell where inside a transaction it is, and a fault can be made to land inside one: the clients
stop acknowledging at the first row of a BIG-row transaction and walstream, bounded by --max-unacked
(smaller than BIG), stops reading in its middle.

WALSTREAM_FAULT_ROWS sets the backlog of the slow-client test (default 200,000); WALSTREAM_FAULT_REPORT, a
file to append each test's figures to (one JSON object a line), as docs/reliability.md reports them.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import orjson
import psycopg2
import pytest
from slot_checks import metrics_args, quick_status_updates, reported_flush_after, reported_flush_after_acks
from support import WalstreamProcess, confirmed_flush, run_cli, wait_confirmed

from walstream._proto import plugin_pb2, plugin_pb2_grpc, walstream_v1_pb2_grpc
from walstream._proto import walstream_v1_pb2 as pb

BACKLOG_ROWS = int(os.environ.get("WALSTREAM_FAULT_ROWS", "1000000"))
REPORT = os.environ.get("WALSTREAM_FAULT_REPORT", "")
BIG = 500  # rows of a big transaction: more than MAX_UNACKED, so a stall always lands inside one
MAX_UNACKED = 300
WAIT = 120  # seconds: generous, the machine is shared

SCHEMA = ("CREATE TABLE t (id bigint PRIMARY KEY, txn int NOT NULL, pos int NOT NULL, n int NOT NULL)",
          "CREATE PUBLICATION pub FOR ALL TABLES")


def report(testdb, test: str, **figures: object) -> None:
    if REPORT:
        with open(REPORT, "a") as out:
            out.write(json.dumps({"test": test, "pg": testdb.cluster.version, **figures}) + "\n")


# --- the writer ---------------------------------------------------------------------------------------


class Writer:
    """Commits rows into t from one connection, one transaction after another, until stopped.

    Transaction k (from 1) holds BIG rows when k % big_every == 0, else 1 to 20, written as one multi-row
    INSERT or as two statements. Row ids grow; a transaction that fails (connection lost) is given up, its
    ids never reused: whether it committed is read back from the table. Since transactions never overlap,
    their numbers and their rows' LSNs grow in commit order.
    """

    def __init__(self, dsn: str, big: int = BIG, big_every: int = 20, gap: float = 0.03) -> None:
        self.dsn, self.big, self.big_every, self.gap = dsn, big, big_every, gap
        self.next_id = 1
        self.txn = 0  # the last transaction number used
        self.committed = 0  # transactions whose COMMIT returned
        self.failures = 0
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def size(self, k: int) -> int:
        return self.big if k % self.big_every == 0 else 1 + (k * 7) % 20

    def next_big(self) -> int:
        """The number of a big transaction not begun yet (at least two transactions ahead)."""
        k = self.txn + 2
        return k + (-k) % self.big_every

    def wait_committed(self, count: int, timeout: float = WAIT) -> None:
        with self._progress:
            if not self._progress.wait_for(lambda: self.committed >= count, timeout):
                raise AssertionError(f"the writer committed {self.committed} of {count} transactions "
                                     f"({self.failures} failed)")

    def more(self, count: int, timeout: float = WAIT) -> None:
        """Wait for `count` more commits."""
        self.wait_committed(self.committed + count, timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg2.connect(self.dsn, connect_timeout=5)
                self.txn += 1
                k, n = self.txn, self.size(self.txn)
                first = self.next_id
                self.next_id += n
                with conn.cursor() as cur:
                    split = n // 2 if n > 1 and k % 3 == 0 else n
                    for lo, hi in ((first, first + split - 1), (first + split, first + n - 1)):
                        if lo <= hi:
                            cur.execute("INSERT INTO t (id, txn, pos, n) SELECT g, %s, g - %s + 1, %s "
                                        "FROM generate_series(%s::bigint, %s) g", (k, first, n, lo, hi))
                conn.commit()
                with self._progress:
                    self.committed += 1
                    self._progress.notify_all()
            except psycopg2.Error:
                self.failures += 1
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(0.2)
                continue
            self._stop.wait(self.gap)
        if conn is not None:
            conn.close()


def table_rows(dsn: str) -> dict[int, tuple[int, int, int]]:
    """The ground truth: id -> (txn, pos, n) of every committed row."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, txn, pos, n FROM t")
        rows = {r[0]: (r[1], r[2], r[3]) for r in cur.fetchall()}
    conn.close()
    return rows


def reconnect(testdb) -> None:
    """A new testdb.conn after the server restarted."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            testdb.conn = psycopg2.connect(testdb.dsn)
            testdb.conn.autocommit = True
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# --- clients that record what they receive and what they acknowledged ------------------------------------


class Row(NamedTuple):
    id: int
    txn: int
    pos: int
    n: int
    lsn: int


class Tracker:
    """Records every row received, in order, and acknowledges each after receiving it, except from a hold
    point on: `hold_at(txn, pos)` stops acknowledging at the first row at or past it, `release()` resumes
    (acknowledging everything received). `rows[:acked]` are the rows acknowledged so far."""

    ack_each = True  # seed: one ack per event; walstream.v1: one per batch (its last row acknowledged)

    def __init__(self, name: str, auto_ack: bool = True) -> None:
        self.name = name
        self.auto_ack = auto_ack
        self.rows: list[Row] = []
        self.acked = 0
        self.acks_sent = 0  # ack messages sent, matched or not (walstream_acks_received counts them too)
        self.hold: tuple[int, int] | None = None
        self.held = False
        self.error: grpc.RpcError | None = None
        self.done = threading.Event()
        self.cond = threading.Condition()
        self._out: queue.Queue[object] = queue.Queue()
        self.channel: grpc.Channel  # set by the subclass when the call starts
        self.call: Any

    # subclasses: _ack_message(lsn), start the call reading into _got()
    def _ack_message(self, lsn: int) -> object:
        raise NotImplementedError

    def _requests(self) -> Iterator[object]:
        while True:
            request = self._out.get()
            if request is None:
                return
            yield request

    def _got(self, rows: Iterable[Row]) -> None:
        with self.cond:
            last = 0
            for row in rows:
                self.rows.append(row)
                if self.hold is not None and (row.txn, row.pos) >= self.hold:
                    self.held = True
                if self.auto_ack and not self.held:
                    last = len(self.rows)
                    if self.ack_each:
                        self._ack_to(last)
            if last > self.acked:
                self._ack_to(last)
            self.cond.notify_all()

    def send(self, request: object) -> None:
        """Send any request on the call (a raw ack, a message without one, ...)."""
        self._out.put(request)

    def ack(self, lsn: int) -> None:
        """Send an ack of `lsn` as is, without recording anything."""
        self._out.put(self._ack_message(lsn))
        self.acks_sent += 1

    def _ack_to(self, count: int) -> None:
        self._out.put(self._ack_message(self.rows[count - 1].lsn))
        self.acked = count
        self.acks_sent += 1

    def hold_at(self, txn: int, pos: int = 1) -> None:
        with self.cond:
            self.hold, self.held = (txn, pos), False

    def release(self) -> None:
        with self.cond:
            self.hold, self.held = None, False
            if self.rows and self.acked < len(self.rows):
                self._ack_to(len(self.rows))

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: predicate() or self.done.is_set(), timeout) or not predicate():
                last = self.rows[-1] if self.rows else None
                raise AssertionError(f"{self.name}: timed out waiting for {what}; {len(self.rows)} rows, "
                                     f"{self.acked} acked, last {last}, error {self.error}")

    def wait_ids(self, ids: set[int], timeout: float = WAIT) -> None:
        seen: set[int] = set()
        scanned = 0

        def covered() -> bool:
            nonlocal scanned
            seen.update(r.id for r in self.rows[scanned:])
            scanned = len(self.rows)
            return ids <= seen

        self.wait(covered, f"{len(ids)} ids", timeout)

    @property
    def unacked(self) -> int:
        return len(self.rows) - self.acked

    def close(self, timeout: float = 30) -> None:
        """Half-close: every ack sent is processed before the server ends the call."""
        self._out.put(None)
        self.done.wait(timeout)
        self.channel.close()

    def cancel(self) -> None:
        self.call.cancel()
        self.done.wait(10)
        self.channel.close()


class SeedTracker(Tracker):
    def __init__(self, addr: str, name: str = "seed", auto_ack: bool = True) -> None:
        super().__init__(name, auto_ack)
        self.channel = grpc.insecure_channel(addr)
        self.call = plugin_pb2_grpc.PluginServiceStub(self.channel).Session(self._requests())
        threading.Thread(target=self._read, daemon=True).start()

    def _ack_message(self, lsn: int) -> object:
        return plugin_pb2.ClientMessage(ack=plugin_pb2.ClientAck(pg_lsn=lsn))

    def _read(self) -> None:
        try:
            for msg in self.call:
                ev = msg.insert
                row = orjson.loads(ev.json_payload)
                self._got((Row(row["id"], row["txn"], row["pos"], row["n"], ev.pg_lsn),))
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.done.set()
            with self.cond:
                self.cond.notify_all()


class V1Tracker(Tracker):
    ack_each = False

    def __init__(self, addr: str, name: str = "v1", auto_ack: bool = True) -> None:
        super().__init__(name, auto_ack)
        self.keys: list[tuple[int, int]] = []  # (commit_lsn, ordinal) of each row: the documented dedup key
        self.channel = grpc.insecure_channel(addr)
        self._out.put(pb.SubscribeRequest(subscription=pb.Subscription(client_name=name)))
        self.call = walstream_v1_pb2_grpc.WalstreamStub(self.channel).Subscribe(self._requests())
        threading.Thread(target=self._read, daemon=True).start()

    def _ack_message(self, lsn: int) -> object:
        return pb.SubscribeRequest(ack=pb.Ack(lsn=lsn))

    def _read(self) -> None:
        columns: dict[int, tuple[int, int, int, int]] = {}
        try:
            for response in self.call:
                batch = response.batch
                for rel in batch.relations:
                    names = [c.name for c in rel.columns]
                    columns[rel.relation_id] = tuple(names.index(c) for c in ("id", "txn", "pos", "n"))  # type: ignore[assignment]
                rows = []
                for ev in batch.events:
                    i, k, p, n = columns[ev.relation_id]
                    values = ev.new.values
                    rows.append(Row(values[i].int64, values[k].int64, values[p].int64, values[n].int64, ev.lsn))
                    self.keys.append((ev.commit_lsn, ev.ordinal))
                self._got(rows)
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.done.set()
            with self.cond:
                self.cond.notify_all()


# --- checks ---------------------------------------------------------------------------------------------


def assert_in_commit_order_once(client: Tracker, rows: list[Row] | None = None) -> None:
    """No row twice, and rows in commit order: transaction numbers, then positions, strictly growing."""
    rows = client.rows if rows is None else rows
    dups = [i for i, c in Counter(r.id for r in rows).items() if c > 1]
    assert not dups, f"{client.name}: {len(dups)} rows delivered twice, e.g. ids {sorted(dups)[:10]}"
    order = [(r.txn, r.pos) for r in rows]
    bad = next((i for i in range(1, len(order)) if order[i] <= order[i - 1]), None)
    assert bad is None, f"{client.name}: out of commit order at {bad}: {rows[bad - 1]} then {rows[bad]}"
    if isinstance(client, V1Tracker) and rows is client.rows:
        assert len(set(client.keys)) == len(client.keys), f"{client.name}: a (commit_lsn, ordinal) came twice"


def assert_resumed_inside(clients: list[Tracker], truth: dict[int, tuple[int, int, int]], big: int,
                          cut_at: dict[str, int]) -> None:
    """Every client stayed connected and has every committed row once, in commit order; transaction `big`,
    cut off after cut_at[name] rows, went on at the next row (resumed, not repeated)."""
    for client in clients:
        assert client.error is None and not client.done.is_set(), f"{client.name} was disconnected"
        assert_in_commit_order_once(client)
        assert {r.id for r in client.rows} == set(truth)
        rest = [r for r in client.rows[cut_at[client.name]:] if r.txn == big]
        assert rest and rest[0].pos == client.rows[cut_at[client.name] - 1].pos + 1  # resumed, not repeated


def assert_whole_transactions(rows: list[Row], label: str) -> None:
    sizes = Counter(r.txn for r in rows)
    partial = {(r.txn, sizes[r.txn], r.n) for r in rows if sizes[r.txn] != r.n}
    assert not partial, f"{label}: transactions not delivered whole (txn, got, size): {sorted(partial)[:5]}"


def hold_inside_big_transaction(writer: Writer, clients: list[Tracker], max_unacked: int = MAX_UNACKED,
                                pos: int = 1) -> int:
    """Make every client stop acknowledging at row `pos` of the next big transaction; wait until walstream
    stops at --max-unacked, inside it; return its number."""
    big = writer.next_big()
    for client in clients:
        client.hold_at(big, pos)
    for client in clients:
        client.wait(lambda c=client: c.held, f"row {pos} of transaction {big}")  # type: ignore[misc]
    deadline = time.monotonic() + WAIT
    while sum(c.unacked for c in clients) < max_unacked:
        assert time.monotonic() < deadline, f"walstream did not stop at {max_unacked} unacknowledged events"
        time.sleep(0.05)
    time.sleep(0.5)  # it really stopped: nothing more arrives
    assert sum(c.unacked for c in clients) <= max_unacked + len(clients)
    for client in clients:
        last = client.rows[-1]
        assert last.txn == big and last.pos < last.n, f"{client.name} stopped at {last}, not inside {big}"
    return big


def slot_inactive(testdb, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while testdb.query("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (testdb.slot,)) != [(False,)]:
        assert time.monotonic() < deadline, "the slot is still active"
        time.sleep(0.05)


# --- a TCP proxy between walstream and PostgreSQL -----------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:port to PostgreSQL. cut() closes every proxied connection and refuses (accepts and
    resets) new ones until restore(). With `black_hole` set, new connections are accepted and never answered
    (a host that drops packets); `swallowed` counts the replication connections among them (with sslmode and
    gssencmode disabled the client's first packet is its startup message, which names the replication)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.up = True
        self.cuts = 0
        self.black_hole = False
        self.swallowed = 0
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            if self.black_hole:
                with self._lock:
                    self._socks.append(conn)
                threading.Thread(target=self._swallow, args=(conn,), daemon=True).start()
                continue
            if not self.up:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._socks += [conn, upstream]
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _swallow(self, conn: socket.socket) -> None:
        try:
            startup = conn.recv(1 << 16)
        except OSError:
            return
        if b"replication\x00database" in startup:
            self.swallowed += 1

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.up = False
        self.cuts += 1
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.server.close()
        self.cut()


# --- raw gRPC ---------------------------------------------------------------------------------------------


def raw_stream(addr: str, method: str, frames: list[bytes], timeout: float = 30) -> grpc.RpcError | None:
    """Send raw frames (no serializer) to a stream-stream method, half-close; the error it ended with."""
    with grpc.insecure_channel(addr) as channel:
        call = channel.stream_stream(method, request_serializer=None, response_deserializer=None)
        try:
            for _ in call(iter(frames), timeout=timeout):
                pass
        except grpc.RpcError as exc:
            return exc
    return None


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture
def procs() -> Iterator[list[WalstreamProcess]]:
    """walstream processes to kill at the end, whatever happened."""
    started: list[WalstreamProcess] = []
    yield started
    for ws in started:
        ws.kill()


def start_ws(procs: list[WalstreamProcess], testdb, tmp_path: Path, *extra: str, dsn: str | None = None,
             publication: str = "pub") -> WalstreamProcess:
    ws = WalstreamProcess(dsn or testdb.dsn, publication, testdb.slot, temporary=False, log_dir=tmp_path,
                          extra=extra)
    procs.append(ws)
    return ws.start(timeout=60)


def finish(testdb, writer: Writer, clients: list[Tracker],
           but: frozenset[int] | set[int] = frozenset()) -> dict[int, tuple[int, int, int]]:
    """Stop writing; wait until every client has every committed row (`but` those); return the table's rows."""
    writer.stop()
    truth = table_rows(testdb.dsn)
    for client in clients:
        client.wait_ids(set(truth) - but)
    return truth


# --- the tests ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_postgres_restart_fast_and_immediate_mid_stream(pg, testdb, tmp_path, procs):
    """Two restarts under a running writer: a fast one while rows flow, an immediate one (a crash) while
    walstream is stopped inside a big transaction. Both clients stay connected and receive every row exactly
    once: PostgreSQL resends from the confirmed position, walstream drops what it already delivered."""
    testdb.execute(*SCHEMA)
    ws = start_ws(procs, testdb, tmp_path, "--max-unacked", str(MAX_UNACKED))
    clients: list[Tracker] = [SeedTracker(ws.addr), V1Tracker(ws.addr)]
    ws.wait_log("connected", count=2)
    writer = Writer(testdb.dsn).start()

    # Fast: PostgreSQL lets walsenders send everything and waits for the client to confirm it: the clients
    # keep acknowledging (see test_fast_shutdown_is_not_blocked_by_an_idle_walstream).
    writer.wait_committed(15)
    testdb.conn.close()
    pg.restart("fast")
    ws.wait_log("reconnect", timeout=WAIT)
    ws.wait_log("streaming slot", count=2, timeout=WAIT)
    reconnect(testdb)
    writer.more(10)

    # Immediate, inside a transaction the clients have partly received.
    big = hold_inside_big_transaction(writer, clients)
    cut_at = {c.name: len(c.rows) for c in clients}
    testdb.conn.close()
    pg.restart("immediate")
    ws.wait_log("streaming slot", count=3, timeout=WAIT)
    reconnect(testdb)
    for client in clients:
        client.release()
    writer.more(15)
    truth = finish(testdb, writer, clients)
    assert_resumed_inside(clients, truth, big, cut_at)
    wait_confirmed(testdb.dsn, testdb.slot, testdb.wal_lsn(), timeout=WAIT)
    for client in clients:
        client.close()
    assert ws.stop() == 0
    assert "Traceback" not in ws.log()
    report(testdb, "postgres_restart", faults=2, rows=len(truth), transactions=writer.committed,
           writer_failures=writer.failures, clients=len(clients), lost=0, duplicates=0, mid_transaction=big)


def test_fast_shutdown_is_not_blocked_by_an_idle_walstream(pg, testdb, tmp_path, procs):
    """pg_ctl stop -m fast must finish while walstream runs with no client and nothing in its slot (it reads
    past keepalives while paused and confirms the server's WAL end). With changes waiting in the slot, or
    clients that do not acknowledge, PostgreSQL still waits: walstream cannot confirm what no client
    acknowledged (documented in docs/delivery.md)."""
    testdb.execute(*SCHEMA)
    ws = start_ws(procs, testdb, tmp_path)
    ws.wait_log("streaming slot")  # walstream holds a walsender: the shutdown has to wait for it
    testdb.conn.close()
    stopped = threading.Event()

    def stop() -> None:
        pg.stop("fast")
        stopped.set()

    stopper = threading.Thread(target=stop, daemon=True)
    stopper.start()
    try:
        finished = stopped.wait(15)
    finally:
        ws.kill()  # unblocks the shutdown if it hung
        stopper.join(90)
        pg.start()
        reconnect(testdb)
    assert finished, "PostgreSQL's fast shutdown did not finish within 15 s while walstream was idle"


@pytest.mark.slow
def test_walstream_sigkill_mid_transaction_then_restart(testdb, tmp_path, procs):
    """SIGKILL while a big transaction is partly acknowledged; rows keep being committed while walstream is
    down. After restart exactly the transactions after the slot's confirmed position arrive again, whole
    (the acknowledged part of the cut transaction included, as documented), and the rest after them."""
    testdb.execute(*SCHEMA)
    ws = start_ws(procs, testdb, tmp_path, "--max-unacked", str(MAX_UNACKED))
    first = SeedTracker(ws.addr, "before")
    ws.wait_log("connected")
    writer = Writer(testdb.dsn).start()
    writer.wait_committed(15)
    big = hold_inside_big_transaction(writer, [first], pos=101)  # rows 1-100 of it acknowledged
    # Every transaction acknowledged whole has reached the slot before the crash.
    done_rows = [r for r in first.rows[:first.acked] if r.txn < big]
    wait_confirmed(testdb.dsn, testdb.slot, done_rows[-1].lsn + 1, timeout=WAIT)
    assert ws.proc is not None
    ws.proc.send_signal(signal.SIGKILL)
    ws.proc.wait(30)
    slot_inactive(testdb)
    confirmed = confirmed_flush(testdb.dsn, testdb.slot)
    writer.more(10)  # committed while walstream is down

    ws2 = start_ws(procs, testdb, tmp_path, "--max-unacked", str(MAX_UNACKED))
    second = SeedTracker(ws2.addr, "after")
    writer.more(10)
    confirmed_ids = {r.id for r in first.rows if r.lsn < confirmed}
    truth = finish(testdb, writer, [second], but=confirmed_ids)
    assert_in_commit_order_once(second)
    acked_ids = {r.id for r in first.rows[:first.acked]}
    again = {r.id for r in second.rows}
    assert again == set(truth) - confirmed_ids  # no more (nothing confirmed), no less (nothing lost)
    assert not again & {r.id for r in done_rows}  # nothing of a wholly acknowledged transaction
    assert_whole_transactions(second.rows, "after restart")
    acked_again = acked_ids & again
    assert acked_again == {r.id for r in first.rows[:first.acked] if r.txn == big}  # the documented exception
    assert {r.id for r in second.rows if r.txn == big} == {i for i, v in truth.items() if v[0] == big}
    wait_confirmed(testdb.dsn, testdb.slot, testdb.wal_lsn(), timeout=WAIT)
    second.close()
    assert ws2.stop() == 0
    report(testdb, "walstream_sigkill", faults=1, rows=len(truth), transactions=writer.committed,
           before_crash=len(first.rows), acked_before=first.acked, redelivered=len(again),
           acked_redelivered=len(acked_again), lost=0)


@pytest.mark.slow
@pytest.mark.parametrize("api", ["seed", "v1"])
def test_client_dropped_mid_transaction_then_reconnecting(testdb, tmp_path, procs, api):
    """The only client drops (cancels its call) inside a big transaction it has partly acknowledged; rows keep
    coming while nobody is connected. Reconnecting, it receives exactly what walstream counted as
    unacknowledged, first and in order, then the rest of the transaction and everything after it."""
    testdb.execute(*SCHEMA)
    ws = start_ws(procs, testdb, tmp_path, "--max-unacked", str(MAX_UNACKED))
    make = SeedTracker if api == "seed" else V1Tracker
    first = make(ws.addr, f"{api}-first")
    ws.wait_log("connected")
    writer = Writer(testdb.dsn).start()
    writer.wait_committed(15)
    big = hold_inside_big_transaction(writer, [first], pos=101)
    first.cancel()
    ws.wait_log("kept for the next client", timeout=WAIT)
    line = re.findall(r"disconnected \((\d+) acked, (\d+) rejected acks, (\d+) unacknowledged", ws.log())[-1]
    counted, rejected, pending = map(int, line)
    assert rejected == 0 and counted + pending == len(first.rows)
    assert counted <= first.acked  # an ack still in flight when the call was cancelled is not counted
    writer.more(10)  # while no client is connected

    second = make(ws.addr, f"{api}-second")
    writer.more(10)
    truth = finish(testdb, writer, [second], but={r.id for r in first.rows[:counted]})
    assert second.rows[:pending] == first.rows[counted:]  # the unacknowledged ones, first, in order
    assert_in_commit_order_once(second)
    assert not {r.id for r in first.rows[:counted]} & {r.id for r in second.rows}
    assert {r.id for r in first.rows[:counted]} | {r.id for r in second.rows} == set(truth)
    wait_confirmed(testdb.dsn, testdb.slot, testdb.wal_lsn(), timeout=WAIT)
    second.close()
    assert ws.stop() == 0
    report(testdb, f"client_drop_{api}", faults=1, rows=len(truth), transactions=writer.committed,
           acked_before_drop=counted, resent=pending, mid_transaction=big, lost=0, duplicates=0)


@pytest.mark.slow
def test_network_cut_between_walstream_and_postgres(testdb, tmp_path, procs):
    """A TCP proxy between walstream and PostgreSQL cuts every connection and refuses new ones for a few
    seconds, twice: once while rows flow, once while walstream is stopped inside a big transaction. walstream
    reconnects; its clients stay connected and receive every row exactly once."""
    testdb.execute(*SCHEMA)
    proxy = TcpProxy(testdb.cluster.port)
    try:
        dsn = f"host=127.0.0.1 port={proxy.port} user=postgres dbname={testdb.name}"
        ws = start_ws(procs, testdb, tmp_path, "--max-unacked", str(MAX_UNACKED), dsn=dsn)
        clients: list[Tracker] = [SeedTracker(ws.addr), V1Tracker(ws.addr)]
        ws.wait_log("connected", count=2)
        writer = Writer(testdb.dsn).start()  # straight to PostgreSQL: writes go on during the cuts

        writer.wait_committed(15)
        proxy.cut()
        time.sleep(3)  # down for a few seconds
        ws.wait_log("reconnect attempt", timeout=WAIT)  # it tried while the network was down
        proxy.restore()
        ws.wait_log("streaming slot", count=2, timeout=WAIT)

        big = hold_inside_big_transaction(writer, clients)
        cut_at = {c.name: len(c.rows) for c in clients}
        proxy.cut()
        time.sleep(3)
        ws.wait_log("reconnect attempt", count=2, timeout=WAIT)
        proxy.restore()
        ws.wait_log("streaming slot", count=3, timeout=WAIT)
        for client in clients:
            client.release()
        writer.more(10)
        truth = finish(testdb, writer, clients)
        assert_resumed_inside(clients, truth, big, cut_at)
        wait_confirmed(testdb.dsn, testdb.slot, testdb.wal_lsn(), timeout=WAIT)
        for client in clients:
            client.close()
        assert ws.stop() == 0
        assert "Traceback" not in ws.log()
        report(testdb, "network_cut", faults=proxy.cuts, rows=len(truth), transactions=writer.committed,
               clients=len(clients), lost=0, duplicates=0, mid_transaction=big)
    finally:
        proxy.close()


def test_stop_while_reconnecting_to_a_host_that_does_not_answer(testdb, tmp_path, procs):
    """The connection to PostgreSQL is lost and the host stops answering: walstream's reconnect attempt waits
    (libpq's connect_timeout), yet SIGTERM still stops walstream within the shutdown grace."""
    testdb.execute(*SCHEMA)
    proxy = TcpProxy(testdb.cluster.port)
    try:
        dsn = (f"host=127.0.0.1 port={proxy.port} user=postgres dbname={testdb.name} "
               "sslmode=disable gssencmode=disable")
        ws = start_ws(procs, testdb, tmp_path, "--shutdown-grace", "2", dsn=dsn)
        proxy.black_hole = True
        proxy.cut()
        ws.wait_log("reconnecting", timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while proxy.swallowed == 0:  # the replication connection's new attempt reached the silent host
            assert time.monotonic() < deadline, "walstream did not try to reconnect"
            time.sleep(0.05)
        started = time.monotonic()
        assert ws.stop(timeout=WAIT) == 0
        took = time.monotonic() - started
        assert took < 2 + 3, f"walstream took {took:.1f} s to stop (grace 2 s)"
        assert "Traceback" not in ws.log()
    finally:
        proxy.close()


@pytest.mark.slow
@pytest.mark.timeout(max(180, BACKLOG_ROWS // 1000))
def test_slow_client_with_a_large_backlog(testdb, tmp_path, procs):
    """BACKLOG_ROWS rows committed while no client is connected (1,000-row transactions), then one slow
    client: it acknowledges only once walstream has stopped at --max-unacked (20,000), and dawdles before
    that. walstream's memory stays bounded (under 150 MB) and every row arrives once, in order."""
    testdb.execute(*SCHEMA)
    bound = 20_000
    ws = start_ws(procs, testdb, tmp_path, "--max-unacked", str(bound))
    per_txn = 1000
    for k in range(BACKLOG_ROWS // per_txn):
        testdb.execute("INSERT INTO t (id, txn, pos, n) SELECT g, %s, g - %s, %s FROM generate_series(%s, %s) g",
                       params=(k + 1, k * per_txn, per_txn, k * per_txn + 1, (k + 1) * per_txn))
    end = testdb.wal_lsn()
    started = time.monotonic()
    peak = stalls = 0
    client = SeedTracker(ws.addr, "slow", auto_ack=False)
    while client.acked < BACKLOG_ROWS:
        client.wait(lambda: client.unacked >= bound or len(client.rows) >= BACKLOG_ROWS,
                    f"walstream to stop at {bound} unacknowledged rows")
        assert client.unacked <= bound
        stalls += client.unacked == bound
        peak = max(peak, ws.rss_kb())
        time.sleep(0.1)  # slow: walstream waits at its bound meanwhile
        client.release()
    wait_confirmed(testdb.dsn, testdb.slot, end, timeout=WAIT)
    elapsed = time.monotonic() - started
    hwm = vm_hwm_kb(ws)
    assert [r.id for r in client.rows] == list(range(1, BACKLOG_ROWS + 1))
    assert stalls >= BACKLOG_ROWS // bound - 1  # the bound really held walstream back
    assert max(peak, hwm) < 150_000, f"walstream RSS peaked at {max(peak, hwm)} kB"
    client.close()
    assert ws.stop() == 0
    report(testdb, "slow_client_backlog", rows=BACKLOG_ROWS, seconds=round(elapsed, 1), rss_peak_kb=max(peak, hwm),
           stalls_at_bound=stalls, lost=0, duplicates=0)


def vm_hwm_kb(ws: WalstreamProcess) -> int:
    """The process's peak resident set size so far (the kernel's VmHWM)."""
    assert ws.proc is not None
    for line in Path(f"/proc/{ws.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@pytest.mark.slow
def test_fifty_clients_at_once(testdb, tmp_path, procs):
    """25 seed and 25 walstream.v1 clients at once all receive every row, in order, once; the slot moves
    past a transaction only when the last of them acknowledged it."""
    testdb.execute(*SCHEMA)
    quick_status_updates(testdb.dsn, testdb.name)
    ws = start_ws(procs, testdb, tmp_path, *metrics_args()[1])
    clients: list[Tracker] = []
    for i in range(25):
        clients.append(SeedTracker(ws.addr, f"seed{i}", auto_ack=i != 0))
        clients.append(V1Tracker(ws.addr, f"v1-{i}", auto_ack=i != 0))
    ws.wait_log("connected", count=50, timeout=WAIT)
    lazy = [c for c in clients if not c.auto_ack]
    writer = Writer(testdb.dsn, big=100, big_every=5).start()
    writer.wait_committed(40)
    truth = finish(testdb, writer, clients)
    end = testdb.wal_lsn()
    for client in clients:
        assert client.error is None, f"{client.name}: {client.error}"
        assert_in_commit_order_once(client)
        assert {r.id for r in client.rows} == set(truth)
    first_lsn = clients[1].rows[0].lsn

    def reported_flush() -> int:  # in the first status update after walstream processed every ack sent
        assert ws.metrics_port is not None
        return reported_flush_after_acks(testdb.dsn, testdb.slot, ws.metrics_port, sum(c.acks_sent for c in clients))

    assert reported_flush() <= first_lsn  # two clients acknowledged nothing yet
    lazy[0].release()
    lazy[0].close()  # half-closed: walstream has processed its acks, as its log line says
    ws.wait_log(f"disconnected ({len(truth)} acked, 0 rejected acks, 0 unacknowledged)")
    assert reported_flush() <= first_lsn  # the other still holds the slot back
    assert confirmed_flush(testdb.dsn, testdb.slot) <= first_lsn
    lazy[1].release()
    wait_confirmed(testdb.dsn, testdb.slot, end, timeout=WAIT)
    for client in clients[1:]:
        client.close()
    assert ws.stop() == 0
    report(testdb, "fifty_clients", clients=len(clients), rows=len(truth), rows_checked=len(truth) * len(clients),
           lost=0, duplicates=0)


@pytest.mark.slow
def test_bad_input_gets_a_clear_status_and_never_moves_the_slot(testdb, tmp_path, procs):
    testdb.execute(*SCHEMA)
    quick_status_updates(testdb.dsn, testdb.name)
    ws = start_ws(procs, testdb, tmp_path)
    good = SeedTracker(ws.addr, "good")
    bad_seed = SeedTracker(ws.addr, "bad-seed", auto_ack=False)
    bad_v1 = V1Tracker(ws.addr, "bad-v1", auto_ack=False)
    ws.wait_log("connected", count=3)
    testdb.execute("INSERT INTO t VALUES (1, 1, 1, 1)")
    for client in (good, bad_seed, bad_v1):
        client.wait(lambda c=client: len(c.rows) == 1, "row 1")  # type: ignore[misc]
    (row1,) = bad_seed.rows
    rejected = 0

    def slot_unmoved(expected_rejections: int) -> None:
        ws.wait_log("matches nothing it was sent", count=expected_rejections)
        # The first status update after walstream processed them: a bad ack that moved the slot shows here.
        assert reported_flush_after(testdb.dsn, testdb.slot, 0) <= row1.lsn
        assert confirmed_flush(testdb.dsn, testdb.slot) <= row1.lsn

    # Garbage acks: 0, 2^64-1, an LSN never sent, one just before and after the one sent.
    for lsn in (0, 2**64 - 1, row1.lsn + 1, row1.lsn - 1, 0x7FFF_FFFF_FFFF_FFFF):
        bad_seed.ack(lsn)
        bad_v1.ack(lsn)
        rejected += 2
    slot_unmoved(rejected)
    # Messages without an ack (and a second subscription) are logged and ignored; the call goes on.
    bad_seed.send(plugin_pb2.ClientMessage())
    bad_v1.send(pb.SubscribeRequest())
    bad_v1.send(pb.SubscribeRequest(subscription=pb.Subscription()))
    ws.wait_log("sent a message without an ack; ignored")
    ws.wait_log("sent an empty message after its subscription")
    ws.wait_log("sent another subscription after its subscription")
    slot_unmoved(rejected)

    # Malformed frames and oversized ones end that call with an error; the server goes on serving the rest.
    statuses = malformed_frames(ws.addr)
    for call, err in statuses.items():
        assert err is not None, f"{call} was accepted"
        if call.endswith("oversized"):
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (call, err)
        else:
            assert "Error parsing message" in (err.details() or ""), (call, err)  # the status: see below
    err = raw_stream(ws.addr, "/walstream.v1.Walstream/Subscribe",
                     [pb.SubscribeRequest(ack=pb.Ack(lsn=row1.lsn)).SerializeToString()])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(err.details()).startswith("subscription: the first message must carry a Subscription")
    err = raw_stream(ws.addr, "/walstream.v1.Walstream/Subscribe", [])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    slot_unmoved(rejected)

    # Acks going backwards: acknowledge rows 1-3 by row 3, then rows 2 and 1 again.
    testdb.execute("INSERT INTO t VALUES (2, 2, 1, 1)", "INSERT INTO t VALUES (3, 3, 1, 1)")
    for client in (good, bad_seed, bad_v1):
        client.wait(lambda c=client: len(c.rows) == 3, "rows 2 and 3")  # type: ignore[misc]
    for client in (bad_seed, bad_v1):
        client.ack(client.rows[2].lsn)
    end = testdb.wal_lsn()
    wait_confirmed(testdb.dsn, testdb.slot, end)
    testdb.execute("INSERT INTO t VALUES (4, 4, 1, 1)")
    for client in (good, bad_seed, bad_v1):
        client.wait(lambda c=client: len(c.rows) == 4, "row 4")  # type: ignore[misc]
    row4 = bad_seed.rows[3]
    for client in (bad_seed, bad_v1):
        for row in (client.rows[1], client.rows[0], client.rows[2]):
            client.ack(row.lsn)
            rejected += 1
    ws.wait_log("matches nothing it was sent", count=rejected)
    assert reported_flush_after(testdb.dsn, testdb.slot, 0) <= row4.lsn  # row 4 still holds it
    assert confirmed_flush(testdb.dsn, testdb.slot) <= row4.lsn

    # The server kept serving everyone: all three clients are connected and get a new row.
    testdb.execute("INSERT INTO t VALUES (5, 5, 1, 1)")
    for client in (good, bad_seed, bad_v1):
        client.wait(lambda c=client: len(c.rows) == 5, "row 5")  # type: ignore[misc]
        assert client.error is None and [r.id for r in client.rows] == [1, 2, 3, 4, 5]
    for client in (bad_seed, bad_v1):
        client.ack(client.rows[4].lsn)
    wait_confirmed(testdb.dsn, testdb.slot, testdb.wal_lsn())
    for client in (good, bad_seed, bad_v1):
        client.close()
    assert ws.stop() == 0
    report(testdb, "bad_input", rejected_acks=rejected, rows=5,
           statuses={k: v.code().name for k, v in statuses.items() if v is not None})


def malformed_frames(addr: str) -> dict[str, grpc.RpcError | None]:
    """Each stream method called with a frame that is not a valid message, one whose length runs past its
    end, and one over gRPC's default 4 MiB receive limit: the error each call ended with."""
    errors = {}
    for method in ("/plugin.PluginService/Session", "/walstream.v1.Walstream/Subscribe"):
        for name, frame in (("garbage", b"\xff\xff\xff\xff"), ("truncated", b"\x12\x05\x08"),
                            ("oversized", b"\x12" + b"\x00" * (5 << 20))):
            errors[f"{method} {name}"] = raw_stream(addr, method, [frame])
    return errors


def test_malformed_frames_get_invalid_argument(testdb, tmp_path, procs):
    testdb.execute(*SCHEMA)
    ws = start_ws(procs, testdb, tmp_path)
    errors = malformed_frames(ws.addr)
    codes = {call: err.code().name if err is not None else None for call, err in errors.items()}
    assert "Traceback" not in ws.log(), codes
    for call, err in errors.items():
        if not call.endswith("oversized"):
            assert err is not None and err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL), codes


INJECTIONS = ["x'; DROP TABLE t; --", '"pub"; select 1', "Robert'); DROP TABLE t;--"]


def test_names_shaped_like_sql_injection_are_rejected(testdb):
    """Slot names are checked before anything is sent (one-line error); a publication name goes to
    PostgreSQL only as a bound parameter or a quoted identifier, so an odd one is simply not found."""
    testdb.execute(*SCHEMA)
    for name in INJECTIONS:
        for args in (("start", "--publication", "pub", "--slot", name), ("delete", "--slot", name)):
            result = run_cli("--connection", testdb.dsn, *args)
            assert result.returncode == 1 and result.stdout == "", result
            assert result.stderr.startswith("walstream: error: invalid slot name "), result.stderr
            assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        result = run_cli("--connection", testdb.dsn, "start", "--publication", name, "--slot", testdb.slot)
        assert result.returncode == 1 and result.stdout == "", result
        assert result.stderr.startswith("walstream: error: publication "), result.stderr
        assert "does not exist" in result.stderr and result.stderr.count("\n") == 1
    assert testdb.query("SELECT count(*) FROM t") == [(0,)]  # the table is still there
    assert testdb.query("SELECT count(*) FROM pg_replication_slots WHERE database = %s", (testdb.name,)) == [(0,)]


def test_a_publication_with_a_quoting_hostile_name_streams(testdb, tmp_path, procs):
    name = 'we"ird, pub; --'
    testdb.execute(SCHEMA[0], 'CREATE PUBLICATION "we""ird, pub; --" FOR TABLE t')
    ws = start_ws(procs, testdb, tmp_path, publication=name)
    clients: list[Tracker] = [SeedTracker(ws.addr), V1Tracker(ws.addr)]
    ws.wait_log("connected", count=2)
    testdb.execute("INSERT INTO t SELECT g, 1, g, 3 FROM generate_series(1, 3) g")
    for client in clients:
        client.wait(lambda c=client: len(c.rows) == 3, "3 rows")  # type: ignore[misc]
        assert [r.id for r in client.rows] == [1, 2, 3]
    wait_confirmed(testdb.dsn, testdb.slot, testdb.wal_lsn())
    for client in clients:
        client.close()
    assert ws.stop() == 0
