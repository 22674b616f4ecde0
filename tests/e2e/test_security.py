"""End to end: TLS, mutual TLS, bearer tokens and limits of the gRPC server, and TLS to PostgreSQL.

Real PostgreSQL, a real `walstream start` process and real gRPC clients; certificates made with openssl.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pwd
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg2
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support import WalstreamProcess, run_cli, to_event, wait_confirmed, walstream_env
from tlscerts import Certs, make_certs

from walstream import Client
from walstream._proto import plugin_pb2, plugin_pb2_grpc, walstream_v1_pb2_grpc
from walstream._proto import walstream_v1_pb2 as pb
from walstream.client import ServerUnreachable
from walstream.pgcluster import Cluster

TOKEN = "e2e-token-5f0c1d2a9b8e7f6a5b4c3d2e1f0a9b8c"
SCHEMA = ["CREATE TABLE t (id int PRIMARY KEY, v text)", "CREATE PUBLICATION pub FOR ALL TABLES"]
PLAINTEXT_WARNING = "serving plaintext gRPC without authentication"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def tls(certs: Certs, ca: str = "ca.crt", client: str | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=certs.read(ca),
        private_key=certs.read(f"{client}.key") if client else None,
        certificate_chain=certs.read(f"{client}.crt") if client else None)


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


class Stream:
    """A raw streaming call, seed Session or walstream.v1 Subscribe, over any channel; read on a thread."""

    def __init__(self, channel: grpc.Channel, api: str = "seed", metadata: Any = None,
                 first: pb.SubscribeRequest | None = None) -> None:
        self.channel = channel
        self.requests: queue.Queue[Any] = queue.Queue()
        self.responses: queue.Queue[Any] = queue.Queue()
        self.received = 0
        self.error: grpc.RpcError | None = None
        self.done = threading.Event()
        if api == "seed":
            stub: Any = plugin_pb2_grpc.PluginServiceStub(channel)
            self.call = stub.Session(self._requests(None), metadata=metadata)
        else:
            stub = walstream_v1_pb2_grpc.WalstreamStub(channel)
            first = first or pb.SubscribeRequest(subscription=pb.Subscription(client_name="e2e"))
            self.call = stub.Subscribe(self._requests(first), metadata=metadata)
        threading.Thread(target=self._read, daemon=True).start()

    def _requests(self, first: Any) -> Iterator[Any]:
        if first is not None:
            yield first
        while (item := self.requests.get()) is not None:  # the call stays open until close()
            yield item

    def _read(self) -> None:
        try:
            for response in self.call:
                self.received += 1
                self.responses.put(response)
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.done.set()

    def refused(self, timeout: float = 10) -> tuple[grpc.StatusCode, str]:
        """The status that ended the call, which must end without one response."""
        assert self.done.wait(timeout), "the call was not ended"
        assert self.error is not None and self.received == 0, (self.error, self.received)
        return self.error.code(), self.error.details() or ""

    def seed_events(self, n: int, ack: bool = True, timeout: float = 20) -> list[Any]:
        events: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(events) < n:
            event = to_event(self.responses.get(timeout=max(0.1, deadline - time.monotonic())))
            events.append(event)
            if ack:
                self.requests.put(plugin_pb2.ClientMessage(ack=plugin_pb2.ClientAck(pg_lsn=event.lsn)))
        return events

    def close(self) -> None:
        self.requests.put(None)
        self.call.cancel()
        self.done.wait(5)


def status(channel: grpc.Channel, metadata: Any = None) -> pb.StatusResponse:
    stub: Any = walstream_v1_pb2_grpc.WalstreamStub(channel)
    return stub.Status(pb.StatusRequest(), metadata=metadata, timeout=10)


def status_code(channel: grpc.Channel, metadata: Any = None) -> grpc.StatusCode:
    try:
        status(channel, metadata)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def connections(ws: WalstreamProcess) -> int:
    """Clients the hub registered so far ("client X connected" lines; "disconnected" does not count)."""
    return ws.log().count(" connected")


def first_batch(client: Client, ws: WalstreamProcess, connected: str, testdb: Any, sql: str) -> Any:
    """Start the client's stream (on a thread: it connects on the first next()), then write, then read."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        batch = pool.submit(next, client.batches())
        ws.wait_log(connected)
        testdb.execute(sql)
        return batch.result(timeout=20)


def tail_process(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "walstream", "tail", "--format", "json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def test_tls_and_bearer_token(testdb, certs, tmp_path):
    """TLS needs the right CA; without the right token a call is refused before it is a client: no events,
    not registered, the slot moves as the other clients acknowledge. The right token streams and acks."""
    testdb.execute(*SCHEMA)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    ws = WalstreamProcess(testdb.dsn, "pub", testdb.slot, log_dir=tmp_path, extra=(
        "--tls-cert", certs.path("server.crt"), "--tls-key", certs.path("server.key"),
        "--auth-token-file", str(token_file))).start()
    secure = grpc.secure_channel(ws.addr, tls(certs))
    try:
        assert "gRPC: TLS, bearer token required, at most 100 clients" in ws.log()
        assert PLAINTEXT_WARNING not in ws.log() and "not a loopback address" not in ws.log()

        # TLS: a plaintext client, or one that trusts another CA, never gets to talk gRPC.
        with grpc.insecure_channel(ws.addr) as plain:
            assert status_code(plain, bearer(TOKEN)) == grpc.StatusCode.UNAVAILABLE
        with grpc.secure_channel(ws.addr, tls(certs, ca="other_ca.crt")) as wrong_ca:
            assert status_code(wrong_ca, bearer(TOKEN)) == grpc.StatusCode.UNAVAILABLE

        # The token: missing, wrong, another scheme -> UNAUTHENTICATED for every method, before any event.
        bad = [None, bearer("wrong"), bearer(TOKEN[:-1]), [("authorization", f"Basic {TOKEN}")]]
        for metadata in bad:
            assert status_code(secure, metadata) == grpc.StatusCode.UNAUTHENTICATED
            for api in ("seed", "v1"):
                code, details = Stream(secure, api, metadata).refused()
                assert code == grpc.StatusCode.UNAUTHENTICATED
                assert details == "missing or invalid credentials: send the metadata `authorization: Bearer <token>`"
        assert connections(ws) == 0
        # Health checks and reflection need no token (probes and grpcurl hold none); they carry no change data.
        health: Any = health_pb2_grpc.HealthStub(secure)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status in (
            health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)
        reflection: Any = reflection_pb2_grpc.ServerReflectionStub(secure)
        listed = next(iter(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
            list_services="")]), timeout=10)))
        assert "walstream.v1.Walstream" in {s.name for s in listed.list_services_response.service}

        # The right token: events arrive and acknowledgements move the slot.
        good = Stream(secure, "seed", bearer(TOKEN))
        ws.wait_log(" connected")
        testdb.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        assert [e.payload["id"] for e in good.seed_events(2)] == [1, 2]
        # A refused client arriving while rows flow receives nothing and holds nothing back.
        intruder = Stream(secure, "seed", bearer("wrong"))
        assert intruder.refused()[0] == grpc.StatusCode.UNAUTHENTICATED
        testdb.execute("INSERT INTO t VALUES (3, 'c')")
        assert [e.payload["id"] for e in good.seed_events(1)] == [3]
        wait_confirmed(testdb.dsn, testdb.slot, testdb.wal_lsn())
        assert status(secure, bearer(TOKEN)).connected_clients == 1
        assert connections(ws) == 1

        # The client library and `walstream tail`, with TLS and the token (option and environment).
        with Client(ws.addr, tls_ca=certs.path("ca.crt"), token=TOKEN, client_name="lib") as client:
            batch = first_batch(client, ws, "(lib) connected", testdb, "INSERT INTO t VALUES (4, 'd')")
            assert [c.new for c in batch] == [{"id": 4, "v": "d"}]
            client.ack(batch)
        with Client(ws.addr, tls_ca=certs.path("ca.crt"), token="wrong", reconnect=False) as client:
            with pytest.raises(Exception, match="UNAUTHENTICATED"):
                next(client.batches())
        env = {**walstream_env(), "WALSTREAM_AUTH_TOKEN": TOKEN}
        tail = tail_process("--server", ws.addr, "--tls-ca", certs.path("ca.crt"), env=env)
        try:
            ws.wait_log("(walstream tail) connected")
            testdb.execute("INSERT INTO t VALUES (5, 'e')")
            assert tail.stdout is not None
            assert json.loads(tail.stdout.readline())["new"] == {"id": 5, "v": "e"}
            tail.send_signal(signal.SIGTERM)
            assert tail.wait(20) == 0
        finally:
            tail.kill()
        assert [e.payload["id"] for e in good.seed_events(2)] == [4, 5]  # every client got them
        wait_confirmed(testdb.dsn, testdb.slot, testdb.wal_lsn())
        good.close()
        log = ws.log()
        assert log.count("refused /") == 3 * len(bad) + 2  # Status, Session, Subscribe each; the intruder; lib
        assert TOKEN not in log and TOKEN[:-1] not in log
        assert ws.stop() == 0
    finally:
        secure.close()
        ws.kill()


def test_mutual_tls(testdb, certs, tmp_path):
    """--tls-client-ca: a client without a certificate, or with one from another CA, is refused."""
    testdb.execute(*SCHEMA)
    ws = WalstreamProcess(testdb.dsn, "pub", testdb.slot, log_dir=tmp_path, extra=(
        "--host", "0.0.0.0", "--tls-cert", certs.path("server.crt"), "--tls-key", certs.path("server.key"),
        "--tls-client-ca", certs.path("ca.crt"))).start()
    try:
        assert "gRPC: TLS, client certificates required, no token, at most 100 clients" in ws.log()
        assert "not a loopback address" not in ws.log()  # TLS with client certificates is authenticated
        for client in (None, "stranger"):
            with grpc.secure_channel(ws.addr, tls(certs, client=client)) as channel:
                assert status_code(channel) == grpc.StatusCode.UNAVAILABLE
                stream = Stream(channel, "seed")
                assert stream.refused()[0] == grpc.StatusCode.UNAVAILABLE
        with Client(ws.addr, tls_ca=certs.path("ca.crt")) as lib, pytest.raises(ServerUnreachable):
            next(lib.batches())  # no client certificate: the handshake fails
        assert connections(ws) == 0
        with Client(ws.addr, tls_ca=certs.path("ca.crt"), tls_cert=certs.path("client.crt"),
                    tls_key=certs.path("client.key"), client_name="mtls") as lib:
            batch = first_batch(lib, ws, "(mtls) connected", testdb, "INSERT INTO t VALUES (1, 'a')")
            assert [c.new for c in batch] == [{"id": 1, "v": "a"}]
            lib.ack(batch)
            assert lib.status().connected_clients == 1
        wait_confirmed(testdb.dsn, testdb.slot, testdb.wal_lsn())
        assert ws.stop() == 0
    finally:
        ws.kill()


def test_limits_and_plaintext_warning(testdb, tmp_path):
    """--max-clients and --max-recv-message-size: RESOURCE_EXHAUSTED, and a refused call is not a client."""
    testdb.execute(*SCHEMA)
    ws = WalstreamProcess(testdb.dsn, "pub", testdb.slot, log_dir=tmp_path, extra=(
        "--host", "0.0.0.0", "--max-clients", "2", "--max-recv-message-size", "1024")).start()
    channel = grpc.insecure_channel(ws.addr)
    try:
        warning = [line for line in ws.log().splitlines() if PLAINTEXT_WARNING in line]
        assert len(warning) == 1 and " WARNING " in warning[0] and "on 0.0.0.0 (not a loopback address)" in warning[0]

        first, second = Stream(channel, "seed"), Stream(channel, "v1")
        ws.wait_log(" connected", count=2)
        for api in ("seed", "v1"):
            code, details = Stream(channel, api).refused()
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert details == "walstream serves at most 2 clients at once (--max-clients 2); try again later"
        assert status(channel).connected_clients == 2  # Status is not a streaming client: not limited
        testdb.execute("INSERT INTO t VALUES (1, 'a')")
        assert [e.payload["id"] for e in first.seed_events(1)] == [1]
        assert connections(ws) == 2

        # A client that leaves frees its place.
        second.close()
        ws.wait_log("disconnected")
        third = Stream(channel, "seed")
        ws.wait_log(" connected", count=3)

        # A message over the limit ends its call: a subscription before it is a client, an ack after.
        first.close()
        ws.wait_log("disconnected", count=2)
        big = pb.SubscribeRequest(subscription=pb.Subscription(client_name="x" * 2000))
        code, details = Stream(channel, "v1", first=big).refused()
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details, details
        assert connections(ws) == 3
        padded = plugin_pb2.ClientMessage(ack=plugin_pb2.ClientAck(pg_lsn=1)).SerializeToString()
        padded += b"\x7a\xd0\x0f" + b"x" * 2000  # an unknown field 15 of 2000 bytes
        third.requests.put(plugin_pb2.ClientMessage.FromString(padded))
        assert third.done.wait(10) and third.error is not None
        assert third.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        ws.wait_log("disconnected", count=3)
        assert ws.stop() == 0
    finally:
        channel.close()
        ws.kill()


# --- PostgreSQL over TLS -----------------------------------------------------------------------------------


@pytest.fixture
def ssl_cluster(pg_bindir: Path, certs: Certs) -> Iterator[Cluster]:
    """A cluster of its own that accepts TLS connections only (pg_hba: hostssl), with the test CA's cert."""
    cluster = Cluster(bindir=pg_bindir, settings={
        "ssl": "on", "ssl_cert_file": "'server.crt'", "ssl_key_file": "'server.key'"})
    try:
        cluster.init()
        data = cluster.datadir
        for name in ("server.crt", "server.key"):
            shutil.copy(certs.path(name), data / name)
            if os.geteuid() == 0:  # the server runs as postgres, which must own its key
                pw = pwd.getpwnam("postgres")
                os.chown(data / name, pw.pw_uid, pw.pw_gid)
        (data / "server.key").chmod(0o600)  # PostgreSQL refuses a key others can read
        (data / "pg_hba.conf").write_text("local all all trust\n"
                                          "hostssl all all 127.0.0.1/32 trust\n"
                                          "hostssl replication all 127.0.0.1/32 trust\n")
        try:
            cluster.start()
        except Exception:
            if "SSL is not supported by this build" in cluster.log_tail():
                pytest.skip(f"this PostgreSQL build ({pg_bindir}) has no SSL support")
            raise
        yield cluster
    finally:
        cluster.destroy()


def test_postgres_over_tls(ssl_cluster, certs, tmp_path):
    """sslmode in the connection string: disable is refused in one line, require and verify-full work."""
    base = f"host=127.0.0.1 port={ssl_cluster.port} user=postgres dbname=postgres"
    admin = psycopg2.connect(f"{base} sslmode=require")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(SCHEMA[0])
        cur.execute(SCHEMA[1])

    refused = run_cli("--connection", f"{base} sslmode=disable", "start", "pub", "tls_slot")
    assert refused.returncode == 1 and refused.stdout == ""
    assert len(refused.stderr.splitlines()) == 1 and "Traceback" not in refused.stderr
    assert re.fullmatch(r'walstream: error: cannot connect to PostgreSQL: connection to server at "127.0.0.1", '
                        r'port \d+ failed: FATAL:  no pg_hba.conf entry for host "127.0.0.1", user "postgres", '
                        r'database "postgres", no encryption\n', refused.stderr), refused.stderr

    verify = f"{base} sslmode=verify-full sslrootcert={certs.path('ca.crt')}"
    assert run_cli("--connection", verify, "list").returncode == 0
    wrong_ca = run_cli("--connection", f"{base} sslmode=verify-full sslrootcert={certs.path('other_ca.crt')}",
                       "list")
    assert wrong_ca.returncode == 1 and len(wrong_ca.stderr.splitlines()) == 1
    assert "certificate verify failed" in wrong_ca.stderr

    for slot, conn in (("tls_require", f"{base} sslmode=require"), ("tls_verify", verify)):
        ws = WalstreamProcess(conn, "pub", slot, temporary=True, log_dir=tmp_path).start()
        channel = grpc.insecure_channel(ws.addr)
        try:
            assert PLAINTEXT_WARNING not in ws.log()  # plaintext gRPC, but on 127.0.0.1 only
            stream = Stream(channel, "seed")
            ws.wait_log(" connected")
            with admin.cursor() as cur:
                cur.execute("INSERT INTO t VALUES (1, %s)", (slot,))
                cur.execute("DELETE FROM t")
            assert [e.op for e in stream.seed_events(2)] == ["INSERT", "DELETE"]
            with admin.cursor() as cur:  # every connection walstream holds is encrypted
                cur.execute("SELECT bool_and(s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a "
                            "USING (pid) WHERE a.application_name = 'walstream'")
                row = cur.fetchone()
                assert row is not None
                encrypted, count = row
                assert encrypted is True and count >= 1  # at least the replication connection
            stream.close()
            assert ws.stop() == 0
        finally:
            channel.close()
            ws.kill()
    admin.close()
