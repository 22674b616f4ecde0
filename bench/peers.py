"""The peers' drains for bench/run.py: Debezium's embedded engine (bench/debezium) and pgstream, each on its
own copy of the workload's slot, plus the walsender sampler every drain whose walsender is not visible to
its client uses (pg_recvlogical's too).

- debezium: the Java program drains the slot copy (pgoutput) over TCP (pgjdbc has no Unix sockets), counts
  change records to the expected number and prints its times: the drain runs from the engine's
  taskStarted callback to the last expected record; start-up (JVM start to taskStarted) is apart.
- pgstream: the slot is copied with plugin wal2json (pgstream decodes nothing else); its stdout target
  writes one NDJSON line per row change into a pipe the harness counts; the drain runs from its walsender
  taking the slot to the last expected line, then it is stopped (SIGTERM). Its start-up (process start to
  the slot taken: configuration, connections, checks) is reported apart.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
from procstat import cpu_seconds

WAL2JSON = "wal2json"


class WalsenderSampler:
    """Finds the walsender that takes `slot` and samples its CPU every 10 ms until stopped (a walsender that
    exits with its client can no longer be read at the end). `taken_at` is when it took the slot."""

    def __init__(self, dsn: str, slot: str, alive: Callable[[], bool]) -> None:
        self.dsn, self.slot, self.alive = dsn, slot, alive
        self.pid: int | None = None
        self.cpu: float | None = None
        self.taken_at: float | None = None
        self._stop = threading.Event()
        self._conn = psycopg2.connect(dsn)  # connected before the drain starts: the pid comes sooner
        self._conn.autocommit = True
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> WalsenderSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        with self._conn.cursor() as cur:
            while self.pid is None and self.alive() and not self._stop.is_set():
                cur.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (self.slot,))
                row = cur.fetchone()
                if row and row[0]:
                    self.pid, self.taken_at = int(row[0]), time.perf_counter()
                else:
                    time.sleep(0.001)
        while self.pid is not None and not self._stop.is_set():
            cpu = cpu_seconds(self.pid)
            if cpu is None:
                return
            self.cpu = cpu
            time.sleep(0.01)

    def stop(self) -> float | None:
        """The walsender's CPU seconds now (or at its last sample, if it has exited)."""
        self._stop.set()
        self._thread.join(5)
        if self.pid is not None and (cpu := cpu_seconds(self.pid)) is not None:
            self.cpu = cpu
        self._conn.close()
        return self.cpu


def wal2json_missing(bindir: Path) -> str:
    """"" when PostgreSQL (bindir) can load wal2json, else why not."""
    if (bindir.parent / "lib" / f"{WAL2JSON}.so").exists():
        return ""
    return (f"PostgreSQL's wal2json plugin is not installed ({bindir.parent / 'lib' / 'wal2json.so'} is missing; "
            "Debian: apt-get install postgresql-15-wal2json)")


def _stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def drain_debezium(java: list[str], dsn: str, port: int, slot: str, rows: int, timeout: float) -> dict[str, Any]:
    """Debezium's embedded engine on `slot` (a pgoutput copy) until `rows` change records."""
    cmd = [*java, "127.0.0.1", str(port), "postgres", "bench", slot, "pub", str(rows), str(int(timeout))]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = WalsenderSampler(dsn, slot, lambda: proc.poll() is None).start()
    try:
        out, err = proc.communicate(timeout=timeout + 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(f"debezium did not finish within {timeout:.0f} s: {err.strip()[-2000:]}") from None
    finally:
        walsender = sampler.stop()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"debezium failed ({proc.returncode}): {err.strip()[-3000:]}")
    got = json.loads(out.strip().splitlines()[-1])
    if got["rows"] < rows:
        raise RuntimeError(f"debezium: got {got['rows']} of {rows} rows")
    return {"rows": rows, "seconds": got["seconds"], "rows_per_s": rows / got["seconds"],
            "first_seconds": got["first_seconds"], "startup_seconds": got["startup_seconds"],
            "startup_cpu": got["startup_cpu"], "consumer_cpu": got["consumer_cpu"], "walsender_cpu": walsender,
            "process_seconds": wall}


# The .env form: v1.4.1 reads the yaml form's `target: stdout: {}` as no target at all.
PGSTREAM_CONFIG = """\
PGSTREAM_POSTGRES_LISTENER_URL=postgres://postgres@127.0.0.1:{port}/bench?sslmode=disable
PGSTREAM_POSTGRES_REPLICATION_SLOT_NAME={slot}
PGSTREAM_STDOUT_WRITER_ENABLED=true
"""


def drain_pgstream(binary: Path, workdir: Path, dsn: str, port: int, slot: str, rows: int,
                   timeout: float) -> dict[str, Any]:
    """pgstream (stdout target) on `slot` (a wal2json copy) until `rows` lines."""
    config = workdir / f"pgstream-{slot}.env"
    config.write_text(PGSTREAM_CONFIG.format(port=port, slot=slot))
    log_path = workdir / f"pgstream-{slot}.log"
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(binary), "run", "--config", str(config), "--log-level", "error"],
                                stdout=subprocess.PIPE, stderr=log)
    sampler = WalsenderSampler(dsn, slot, lambda: proc.poll() is None).start()
    counted = {"lines": 0, "rows": 0, "cpu": None, "at": None}
    other: list[bytes] = []

    def count() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            counted["lines"] += 1
            if b'"action":"' in line:  # a row change (wal2json format 2: I, U, D)
                counted["rows"] += 1
                if counted["rows"] == rows:
                    counted["at"], counted["cpu"] = time.perf_counter(), cpu_seconds(proc.pid)
                    return
            elif len(other) < 3:
                other.append(line[:300])

    counter = threading.Thread(target=count, daemon=True)
    counter.start()
    counter.join(timeout)
    timed_out = counter.is_alive()
    walsender = sampler.stop()
    _stop(proc)
    if counted["at"] is None:
        why = f"{timeout:.0f} s passed" if timed_out else f"it exited {proc.returncode}"
        raise RuntimeError(f"pgstream: got {counted['rows']} of {rows} rows ({why}); "
                           f"its log: {log_path.read_text()[-2000:]}")
    started = sampler.taken_at or t0
    seconds = counted["at"] - started
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "startup_seconds": started - t0,
            "consumer_cpu": counted["cpu"], "walsender_cpu": walsender,
            "other_lines": [line.decode(errors="replace") for line in other]}


def copy_for(method: str) -> str:
    """The output plugin a method's slot copy needs (pgoutput: keep the base slot's)."""
    return WAL2JSON if method == "pgstream" else ""
