"""Only walstream's ack ledger moves the flush position PostgreSQL is told about.

psycopg2's read_message() moves the reported flush position up to a keepalive's WAL end when the last
message it read had start LSN 0 (a Relation or Type message), acknowledged or not. walstream reads the
stream itself (source/copyboth.py). To make that keepalive arrive deterministically, a proxy between
walstream and PostgreSQL parses the replication stream and puts a keepalive asking for a reply right after
a Relation message, naming the end of the transaction being sent as the server's WAL end; it records every
status update walstream sends back.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from support import SeedClient, WalstreamProcess, confirmed_flush, wait_confirmed

WAIT = 60


class KeepaliveInjector:
    """A proxy to PostgreSQL that, once armed, holds the server's stream from the next pgoutput Relation
    message until that transaction's Commit, then sends the Relation, a keepalive (reply requested, WAL end =
    the Commit's end LSN) and the rest. `flushes` are the flush positions of the client's status updates."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.armed = threading.Event()
        self.injected = threading.Event()
        self.flushes: list[int] = []
        self.replied = threading.Event()  # a status update came after the injected keepalive
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            upstream.settimeout(None)
            threading.Thread(target=self._client_to_server, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=self._server_to_client, args=(upstream, conn), daemon=True).start()

    @staticmethod
    def _read_exact(sock: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _client_to_server(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            length = struct.unpack(">i", self._read_exact(src, 4))[0]  # the startup packet has no type byte
            dst.sendall(struct.pack(">i", length) + self._read_exact(src, length - 4))
            while True:
                head = self._read_exact(src, 5)
                body = self._read_exact(src, struct.unpack(">i", head[1:])[0] - 4)
                if head[:1] == b"d" and body[:1] == b"r":  # a Standby Status Update: write, flush, apply, ...
                    self.flushes.append(struct.unpack(">Q", body[9:17])[0])
                    if self.injected.is_set():
                        self.replied.set()
                dst.sendall(head + body)
        except (EOFError, OSError):
            self._close(src, dst)

    def _server_to_client(self, src: socket.socket, dst: socket.socket) -> None:
        held: list[bytes] = []
        try:
            while True:
                head = self._read_exact(src, 5)
                frame = head + self._read_exact(src, struct.unpack(">i", head[1:])[0] - 4)
                body = frame[5:]
                pgoutput = body[25:26] if head[:1] == b"d" and body[:1] == b"w" else b""
                if not held and pgoutput == b"R" and self.armed.is_set() and not self.injected.is_set():
                    held.append(frame)
                    continue
                if held:
                    held.append(frame)
                    if pgoutput == b"C":  # Commit: flags(1), commit_lsn(8), end_lsn(8), ...
                        end_lsn = struct.unpack(">Q", body[25 + 10:25 + 18])[0]
                        keepalive = b"k" + struct.pack(">QQB", end_lsn, 0, 1)
                        frames = [held[0], b"d" + struct.pack(">i", 4 + len(keepalive)) + keepalive, *held[1:]]
                        held = []
                        self.injected.set()
                        dst.sendall(b"".join(frames))
                    continue
                dst.sendall(frame)
        except (EOFError, OSError):
            self._close(src, dst)

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def proxied(testdb) -> Iterator[tuple[KeepaliveInjector, str]]:
    """The proxy, and a connection string through it (no SSL or GSS request: the first packet is the
    startup message, which the proxy expects)."""
    proxy = KeepaliveInjector(testdb.cluster.port)
    try:
        yield proxy, (f"host=127.0.0.1 port={proxy.port} user=postgres dbname={testdb.name} "
                      "sslmode=disable gssencmode=disable")
    finally:
        proxy.close()


def test_a_keepalive_after_a_relation_message_does_not_confirm_unacknowledged_changes(testdb, proxied) -> None:
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY, v text)", f"CREATE PUBLICATION {testdb.slot} FOR TABLE t")
    proxy, dsn = proxied
    with WalstreamProcess(dsn, testdb.slot, testdb.slot) as ws:
        client = SeedClient(ws.addr, auto_ack=False)
        try:
            ws.wait_log("connected")
            before = confirmed_flush(testdb.dsn, testdb.slot)
            proxy.armed.set()
            testdb.execute("INSERT INTO t VALUES (1, 'one')")  # the first change: a Relation message first
            [event] = client.take(1)
            assert proxy.replied.wait(WAIT), "walstream sent no status update after a keepalive asked for one"
            assert all(flush <= event.lsn for flush in proxy.flushes), (
                f"walstream reported flush {max(proxy.flushes):X} past the change at {event.lsn:X}, "
                "which nobody acknowledged")
            assert confirmed_flush(testdb.dsn, testdb.slot) == before
            client.ack(event.lsn)
            wait_confirmed(testdb.dsn, testdb.slot, event.lsn + 1)  # acked: now it moves
        finally:
            client.close()


def test_status_updates_never_go_backwards(testdb, proxied) -> None:
    """Every flush position walstream reports is at least the one before (supabase/etl's rule)."""
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY)", f"CREATE PUBLICATION {testdb.slot} FOR TABLE t")
    proxy, dsn = proxied
    with WalstreamProcess(dsn, testdb.slot, testdb.slot) as ws:
        client = SeedClient(ws.addr)
        try:
            for i in range(20):
                testdb.execute(f"INSERT INTO t VALUES ({i})")
            events = client.take(20)
            wait_confirmed(testdb.dsn, testdb.slot, events[-1].lsn + 1)
            deadline = time.monotonic() + WAIT
            while not proxy.flushes or proxy.flushes[-1] <= events[-1].lsn:
                assert time.monotonic() < deadline, "no status update reported the last ack"
                time.sleep(0.05)
            assert proxy.flushes == sorted(proxy.flushes)
        finally:
            client.close()
