"""Operations, end to end: Prometheus metrics, gRPC health and reflection, slot safety and standby takeover.

Real PostgreSQL (15 and 18), real `walstream start` processes, real HTTP scrapes and gRPC calls.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import grpc
import psycopg2
import psycopg2.errors
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from support import SeedClient, WalstreamProcess, autocommit_connection, confirmed_flush, execute, run_cli

from walstream._proto import walstream_v1_pb2 as pb
from walstream._proto import walstream_v1_pb2_grpc
from walstream.pgcluster import Cluster, free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
API_SERVICES = ("plugin.PluginService", "walstream.v1.Walstream")


# --- helpers ------------------------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(port: int, name: str, **labels: str) -> float | None:
    return scrape(port).get((name, tuple(sorted(labels.items()))))


def wait_for(what: str, check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def wait_metric(port: int, name: str, expected: Callable[[float | None], bool], timeout: float = 15,
                **labels: str) -> float | None:
    seen: list[float | None] = []

    def check() -> bool:
        seen.append(metric(port, name, **labels))
        return expected(seen[-1])

    try:
        wait_for(name, check, timeout)
    except AssertionError:
        raise AssertionError(f"{name}{labels} never passed the check; last value {seen[-1:]}") from None
    return seen[-1]


def health(addr: str, service: str = "") -> int:
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)


def all_health(addr: str) -> set[int]:
    return {health(addr, s) for s in ("", *API_SERVICES)}


def wait_health(addr: str, status: int, timeout: float = 15) -> None:
    wait_for(f"health {health_pb2.HealthCheckResponse.ServingStatus.Name(status)} on {addr}",
             lambda: all_health(addr) == {status}, timeout)


class HealthWatch:
    """grpc.health.v1.Health/Watch of "" in a thread: every status the server sends, in order."""

    def __init__(self, addr: str) -> None:
        self.channel = grpc.insecure_channel(addr)
        self.seen: queue.Queue[int] = queue.Queue()
        self.call = health_pb2_grpc.HealthStub(self.channel).Watch(health_pb2.HealthCheckRequest(service=""))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.seen.put(int(response.status))
        except grpc.RpcError:
            pass

    def expect(self, status: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.seen.get(timeout=max(0.0, deadline - time.monotonic())) == status:
                    return
            except queue.Empty:
                raise AssertionError(f"health never became {status}") from None

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()


def slot_row(conn: psycopg2.extensions.connection, slot: str) -> tuple[object, ...] | None:
    with conn.cursor() as cur:
        cur.execute("SELECT wal_status, active_pid, restart_lsn FROM pg_replication_slots WHERE slot_name = %s",
                    (slot,))
        return cur.fetchone()


def walsender_pid(conn: psycopg2.extensions.connection, slot: str) -> int:
    row = slot_row(conn, slot)
    assert row is not None and row[1] is not None, f"slot {slot} is not active: {row}"
    return int(row[1])  # type: ignore[call-overload]


def metrics_args(port: int) -> tuple[str, ...]:
    return ("--metrics-port", str(port), "--metrics-host", "127.0.0.1")


# --- metrics ------------------------------------------------------------------------------------------


def test_metrics_count_what_happened(testdb, tmp_path):
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY, v text)", "CREATE TABLE other (id int PRIMARY KEY)",
                   "CREATE PUBLICATION pub FOR ALL TABLES")
    mport = free_port()
    with WalstreamProcess(testdb.dsn, "pub", testdb.slot, extra=metrics_args(mport), log_dir=tmp_path) as ws:
        assert f"metrics on http://127.0.0.1:{mport}/metrics" in ws.log()
        assert "neither TLS nor authentication" not in ws.log()  # loopback only
        wait_metric(mport, "walstream_streaming", lambda v: v == 1)
        assert metric(mport, "walstream_clients") == 0

        client = SeedClient(ws.addr)
        ws.wait_log("connected")
        assert metric(mport, "walstream_clients") == 1
        testdb.execute("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 10) g",
                       "UPDATE t SET v = 'y' WHERE id <= 2", "DELETE FROM t WHERE id = 10",
                       "INSERT INTO other VALUES (1)", "TRUNCATE t")
        client.take(15)
        wait_metric(mport, "walstream_acks_received_total", lambda v: v == 15)
        got = scrape(mport)
        changes = {dict(labels)["op"] + " " + dict(labels)["table"]: value
                   for (name, labels), value in got.items() if name == "walstream_changes_total"}
        assert changes == {"insert public.t": 10, "update public.t": 2, "delete public.t": 1,
                           "truncate public.t": 1, "insert public.other": 1}
        assert got[("walstream_acks_rejected_total", ())] == 0
        assert got[("walstream_received_bytes_total", ())] > 15 * 10
        assert got[("walstream_status_updates_total", ())] >= 1
        assert got[("walstream_reconnects_total", ())] == 0
        assert 0 <= got[("walstream_lag_seconds", ())] < 60
        assert abs(got[("walstream_last_commit_timestamp_seconds", ())] - time.time()) < 60
        # Everything acknowledged: walstream's confirmed position is the slot's on PostgreSQL.
        wait_for("confirmed LSN metric == confirmed_flush_lsn",
                 lambda: metric(mport, "walstream_confirmed_lsn") == confirmed_flush(testdb.dsn, testdb.slot))

        client.ack(12345)  # matches nothing
        wait_metric(mport, "walstream_acks_rejected_total", lambda v: v == 1)
        assert metric(mport, "walstream_acks_received_total") == 16
        client.close()
        wait_metric(mport, "walstream_clients", lambda v: v == 0)

        # A client that does not acknowledge: unacknowledged messages, and lag on the server.
        slow = SeedClient(ws.addr, auto_ack=False)
        wait_metric(mport, "walstream_clients", lambda v: v == 1)
        testdb.execute("INSERT INTO t SELECT g, 'z' FROM generate_series(1, 5) g")
        slow.take(5)
        assert metric(mport, "walstream_unacked_messages") == 5
        assert metric(mport, "walstream_queued_messages") == 0
        wait_metric(mport, "walstream_lag_bytes", lambda v: v is not None and v > 0)
        assert metric(mport, "walstream_slot_retained_wal_bytes") > 0  # type: ignore[operator]
        assert metric(mport, "walstream_slot_retained_wal_warning") == 0
        slow.close()

        # walstream.v1 counts its batches.
        channel = grpc.insecure_channel(ws.addr)
        requests: queue.Queue[pb.SubscribeRequest | None] = queue.Queue()
        requests.put(pb.SubscribeRequest(subscription=pb.Subscription()))
        call = walstream_v1_pb2_grpc.WalstreamStub(channel).Subscribe(iter(requests.get, None))
        batch = next(call).batch  # the 5 rows the last client left unacknowledged
        assert batch.events
        wait_metric(mport, "walstream_batches_sent_total", lambda v: v is not None and v >= 1)
        requests.put(None)
        call.cancel()
        channel.close()
        assert ws.stop() == 0


def test_metrics_port_in_use_is_a_one_line_error(testdb, tmp_path):
    testdb.execute("CREATE PUBLICATION pub FOR ALL TABLES")
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--connection", testdb.dsn, "start", "--publication", "pub", "--slot", testdb.slot,
                         "--host", "127.0.0.1", "--port", "0", "--temporary", "false", *metrics_args(port))
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"walstream: error: cannot serve metrics on 127.0.0.1:{port}: Address already in use "
        "(choose another --metrics-port or --metrics-host)")
    assert "Traceback" not in result.stderr
    assert testdb.query("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (testdb.slot,)) == [(0,)]


def test_retained_wal_warning(testdb, tmp_path):
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY)", "CREATE PUBLICATION pub FOR ALL TABLES")
    mport = free_port()
    # Every address: the endpoint is reachable from elsewhere, which is logged (no TLS, no auth on it).
    extra = ("--metrics-port", str(mport), "--metrics-host", "0.0.0.0", "--retained-wal-warning", "1MB")
    with WalstreamProcess(testdb.dsn, "pub", testdb.slot, extra=extra, log_dir=tmp_path) as ws:
        assert ("the metrics endpoint on 0.0.0.0 has neither TLS nor authentication: it shows table names and "
                "positions to anyone who can reach it") in ws.log()
        wait_metric(mport, "walstream_slot_retained_wal_warning", lambda v: v == 0)
        # No client: the row waits in the slot, which keeps the WAL from here on.
        testdb.execute("INSERT INTO t VALUES (1)")
        for i in range(2):
            testdb.execute(f"INSERT INTO t VALUES ({i + 2})", "SELECT pg_switch_wal()")
        wait_metric(mport, "walstream_slot_retained_wal_warning", lambda v: v == 1)
        assert metric(mport, "walstream_slot_retained_wal_bytes") >= 1024 * 1024  # type: ignore[operator]
        ws.wait_log("is over --retained-wal-warning 1.0 MB; clients must acknowledge to release it")
        assert ws.stop() == 0


# --- health and reflection ----------------------------------------------------------------------------


def test_health_follows_replication_and_reflection_lists_services(testdb, tmp_path):
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY)", "CREATE PUBLICATION pub FOR ALL TABLES")
    mport = free_port()
    extra = (*metrics_args(mport), "--shutdown-grace", "10")
    with WalstreamProcess(testdb.dsn, "pub", testdb.slot, extra=extra, log_dir=tmp_path) as ws:
        wait_health(ws.addr, SERVING)
        with grpc.insecure_channel(ws.addr) as channel, pytest.raises(grpc.RpcError) as unknown:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

        # Reflection, as grpcurl uses it: list the services, then fetch one's descriptor.
        with grpc.insecure_channel(ws.addr) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                        reflection_pb2.ServerReflectionRequest(file_containing_symbol="walstream.v1.Walstream")]
            listed, file = list(stub.ServerReflectionInfo(iter(requests), timeout=5))
        assert {s.name for s in listed.list_services_response.service} == {
            *API_SERVICES, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
        assert file.file_descriptor_response.file_descriptor_proto

        # A lost replication connection: NOT_SERVING while reconnecting, SERVING again after.
        watch = HealthWatch(ws.addr)
        watch.expect(SERVING)
        testdb.execute(f"SELECT pg_terminate_backend({walsender_pid(testdb.conn, testdb.slot)})")
        watch.expect(NOT_SERVING)
        watch.expect(SERVING)
        watch.close()
        assert metric(mport, "walstream_reconnects_total") == 1

        # Shutdown: NOT_SERVING from the start of the grace period (a client still holds unacked events).
        client = SeedClient(ws.addr, auto_ack=False)
        ws.wait_log("connected")
        testdb.execute("INSERT INTO t VALUES (1)")
        client.take(1)
        assert ws.proc is not None
        ws.proc.send_signal(signal.SIGTERM)
        ws.wait_log("shutting down")
        assert all_health(ws.addr) == {NOT_SERVING}
        client.ack(client.received[0].lsn)
        assert ws.stop() == 0


# --- high availability --------------------------------------------------------------------------------


def test_standby_is_not_serving_then_takes_over_without_loss(testdb, tmp_path):
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY)", "CREATE PUBLICATION pub FOR ALL TABLES")
    mport = free_port()
    active = WalstreamProcess(testdb.dsn, "pub", testdb.slot, log_dir=tmp_path)
    standby = WalstreamProcess(testdb.dsn, "pub", testdb.slot, extra=metrics_args(mport), log_dir=tmp_path)
    try:
        active.start()
        wait_health(active.addr, SERVING)  # holds the slot with no client connected
        holder = walsender_pid(testdb.conn, testdb.slot)
        standby.start()
        standby.wait_log(f'replication slot "{testdb.slot}" is active for PID {holder}; waiting for it to be '
                         "released (standby: retrying every 2 s)")
        assert all_health(standby.addr) == {NOT_SERVING}
        assert metric(mport, "walstream_streaming") == 0
        testdb.execute("INSERT INTO t SELECT generate_series(1, 5)")  # waits in the slot: no client yet
        client = SeedClient(standby.addr)  # accepted by the standby; nothing arrives until it takes over
        standby.wait_log("connected")
        client.expect_nothing(0.5)

        active.kill()  # SIGKILL
        killed = time.monotonic()
        testdb.execute("INSERT INTO t SELECT generate_series(6, 10)")
        wait_health(standby.addr, SERVING, timeout=10)
        assert time.monotonic() - killed < 10
        assert metric(mport, "walstream_streaming") == 1
        rows = client.take(10)
        assert sorted(e.payload["id"] for e in rows) == list(range(1, 11))
        assert standby.log().count("waiting for it to be released") == 1  # logged once, not at every retry
        client.close()
        assert standby.stop() == 0
    finally:
        active.kill()
        standby.kill()


# --- slot safety --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def capped_pg(pg: Cluster) -> Iterator[Cluster]:
    """A cluster of its own whose slots lose their WAL past 1 MB (max_slot_wal_keep_size)."""
    with Cluster(bindir=pg.bindir, settings={"max_slot_wal_keep_size": "1MB", "shared_buffers": "16MB",
                                             "max_connections": "30"}) as cluster:
        yield cluster


@pytest.fixture
def capped_db(capped_pg: Cluster) -> Iterator[psycopg2.extensions.connection]:
    with autocommit_connection(capped_pg.dsn) as conn:
        yield conn


def invalidate(conn: psycopg2.extensions.connection, slot: str, table: str) -> None:
    """Write WAL past max_slot_wal_keep_size and checkpoint until PostgreSQL invalidates the slot."""
    for i in range(20):
        execute(conn, f"INSERT INTO {table} VALUES ({1000 + i})", "SELECT pg_switch_wal()",
                 f"INSERT INTO {table} VALUES ({2000 + i})", "SELECT pg_switch_wal()", "CHECKPOINT")
        row = slot_row(conn, slot)
        if row is not None and row[0] == "lost":
            return
        time.sleep(0.1)
    raise AssertionError(f"slot {slot} was not invalidated: {slot_row(conn, slot)}")


def test_invalidated_slot_is_refused_at_start(capped_pg, capped_db, unique_name):
    slot, table = unique_name, f"t_{unique_name}"
    execute(capped_db, f"CREATE TABLE {table} (id int PRIMARY KEY)", f"CREATE PUBLICATION p_{slot} FOR ALL TABLES",
             f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")
    invalidate(capped_db, slot, table)
    result = run_cli("--connection", capped_pg.dsn, "start", "--publication", f"p_{slot}", "--slot", slot,
                     "--temporary", "false", "--port", "0", "--host", "127.0.0.1")
    assert result.returncode == 1
    assert result.stderr == (
        f'walstream: error: replication slot "{slot}" was invalidated (wal_removed) and can no longer be used: '
        f"drop it with `walstream delete --slot {slot}` and start again (changes since it was invalidated are "
        "lost)\n")
    assert slot_row(capped_db, slot)[:2] == ("lost", None)  # type: ignore[index]  # not re-created


def test_slot_invalidated_while_streaming_stops_walstream(capped_pg, capped_db, unique_name, tmp_path):
    slot, table = unique_name, f"t_{unique_name}"
    execute(capped_db, f"CREATE TABLE {table} (id int PRIMARY KEY)", f"CREATE PUBLICATION p_{slot} FOR ALL TABLES")
    ws = WalstreamProcess(capped_pg.dsn, f"p_{slot}", slot, log_dir=tmp_path)
    try:
        ws.start()
        ws.wait_log("streaming slot")
        execute(capped_db, f"INSERT INTO {table} VALUES (1)")  # no client: it waits in the slot
        invalidate(capped_db, slot, table)
        assert ws.proc is not None
        assert ws.proc.wait(20) == 1
        last = ws.log().strip().splitlines()[-1]
        assert last.startswith(f'walstream: error: replication slot "{slot}" was invalidated and can no longer '
                               "be used ("), last
        assert last.endswith(f"): drop it with `walstream delete --slot {slot}` and start again (changes since it "
                             "was invalidated are lost)"), last
        assert "Traceback" not in ws.log()
        assert slot_row(capped_db, slot)[:2] == ("lost", None)  # type: ignore[index]
    finally:
        ws.kill()
        execute(capped_db, f"SELECT pg_drop_replication_slot('{slot}')")


def test_permanent_slot_dropped_while_streaming_is_not_recreated(testdb, tmp_path):
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY)", "CREATE PUBLICATION pub FOR ALL TABLES")
    ws = WalstreamProcess(testdb.dsn, "pub", testdb.slot, log_dir=tmp_path)
    try:
        ws.start()
        ws.wait_log("streaming slot")
        deadline = time.monotonic() + 15
        while True:  # the walsender releases the slot a moment after it is terminated
            row = slot_row(testdb.conn, testdb.slot)
            assert row is not None
            if row[1] is not None:
                testdb.execute(f"SELECT pg_terminate_backend({row[1]})")
            try:
                testdb.execute(f"SELECT pg_drop_replication_slot('{testdb.slot}')")
                break
            except psycopg2.errors.ObjectInUse:
                assert time.monotonic() < deadline, "could not drop the slot"
                time.sleep(0.02)
        assert ws.proc is not None
        assert ws.proc.wait(20) == 1
        assert ws.log().strip().splitlines()[-1] == (
            f'walstream: error: replication slot "{testdb.slot}" was dropped while walstream was using or waiting '
            "for it; it is not created again, since the changes committed meanwhile would be skipped silently: start "
            "walstream again to create a new slot (those changes are lost)")
        assert slot_row(testdb.conn, testdb.slot) is None
    finally:
        ws.kill()
