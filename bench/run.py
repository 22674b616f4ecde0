"""walstream against pg_recvlogical: throughput, latency and memory on a throwaway PostgreSQL 15.

    python bench/run.py [--runs 3] [--scale 1.0] [--json PATH] [--docs PATH | --no-docs] [--tiny]

For each workload (bench/workloads.py) it creates a fresh logical slot, writes the workload while the slot is
held (fsync=off and synchronous_commit=off during writing only), notes pg_current_wal_insert_lsn() as the
end position, then drains exactly that WAL several ways, each from its own copy of the slot
(pg_copy_logical_replication_slot), so every method decodes identical WAL:

  recvlogical-unix  pg_recvlogical -P pgoutput -f /dev/null --endpos over the Unix socket: the reference
  recvlogical-tcp   the same over TCP (127.0.0.1)
  batched           walstream (over the Unix socket) + a raw client of walstream.v1 Subscribe
  seed              walstream (over the Unix socket) + a raw client of plugin.PluginService (one event a message)
  grpc-ceiling      (bulk only) a bare grpc.aio server streaming prepared seed messages to the same seed
                    client: what grpcio allows for one event per message, without walstream
  grpc-ceiling-go   (bulk only) the same bare server drained by the same client written in Go
                    (bench/go_seed_client): the ceiling without Python on the client side; skipped, with
                    the reason, where Go and protoc's Go plugins are missing
  debezium          peer: Debezium's embedded engine + PostgreSQL connector (pgoutput), bench/debezium
  pgstream          peer: pgstream (its slot copy uses wal2json) with its stdout target into a line counter
  sink-nats         (bulk only) walstream --sink nats://... with no gRPC client: every row stored in NATS
                    JetStream (PubAck) before the slot's confirmed_flush_lsn reaches the end (bench/sinkdrain.py)
  sink-kafka        (bulk only) the same into a single-node KRaft Kafka (acks=all delivery reports)

The peers are built or found once (bench/peerbuild.py); a peer that cannot be had is skipped with the reason
(printed, and in the JSON's "skipped"); so is a sink whose broker cannot be started here.

Methods run in a rotating order within each round; every figure is also given as a ratio to the Unix-socket
pg_recvlogical of the same round. Then commit->client latency at ~1,000 single-row transactions per second
(synchronous_commit on, and off to show what it costs), walstream's peak RSS while a deliberately slow
client drains the bulk backlog, and the snapshot (bench/snapshot.py): one client's INCREMENTAL backfill of a
1M-row table (at --scale 1) against `COPY ... TO STDOUT` of it through psql into /dev/null, as a ratio, and
the live stream's commit->client latency (~100 tx/s on another table) without and during the backfill.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg2  # noqa: E402
import psycopg2.extensions  # noqa: E402
from gobuild import build_go_seed_client  # noqa: E402
from peerbuild import build_debezium, find_pgstream  # noqa: E402
from peers import WalsenderSampler, copy_for, drain_debezium, drain_pgstream, wal2json_missing  # noqa: E402
from procstat import syscalls  # noqa: E402
from sinkdrain import SINK_METHODS, Brokers, drain_sink  # noqa: E402
from snapshot import create_tables as create_snapshot_tables  # noqa: E402
from snapshot import measure as measure_snapshot  # noqa: E402
from workloads import TABLES, Workload, workloads  # noqa: E402

from walstream.lsn import format_lsn  # noqa: E402
from walstream.pgcluster import Cluster, find_bindir, free_port, server_version  # noqa: E402

CLIENTS = Path(__file__).resolve().parent / "clients.py"
REFERENCE = "recvlogical-unix"
DRAINS = ["recvlogical-unix", "recvlogical-tcp", "batched", "seed"]
CEILING = "grpc-ceiling"
CEILING_GO = "grpc-ceiling-go"
CEILINGS = (CEILING, CEILING_GO)
DEBEZIUM, PGSTREAM = "debezium", "pgstream"
PEERS = [DEBEZIUM, PGSTREAM]
DB = "bench"
PROTO_VERSION = 3  # what walstream asks PostgreSQL 15 for (walstream.source.stream.protocol_version)
# fsync/full_page_writes as a real server has them; the write phase turns fsync and synchronous_commit off.
CLUSTER_SETTINGS = {"fsync": "on", "full_page_writes": "on", "shared_buffers": "256MB", "max_wal_size": "4GB",
                    "wal_sender_timeout": "60s"}
WRITE_SETTINGS = {"fsync": "off", "synchronous_commit": "off"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def proc_status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def per_row(before: tuple[int, int] | None, after: tuple[int, int] | None, rows: int) -> dict[str, float]:
    """The server's read and write system calls per row over a drain (grpcio's cost is per message)."""
    if before is None or after is None:
        return {}
    return {"server_reads_per_row": (after[0] - before[0]) / rows,
            "server_writes_per_row": (after[1] - before[1]) / rows}


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# --- PostgreSQL -----------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        bindir = Path(args.bindir) if args.bindir else find_bindir(["/usr/lib/postgresql/15/bin"], embedded=False)
        self.pg_version = server_version(bindir)
        self.bindir = bindir
        self.recvlogical = bindir / "pg_recvlogical"
        self.cluster = Cluster(bindir=bindir, settings=dict(CLUSTER_SETTINGS))
        self.tmp = self.cluster.workdir
        self.results: dict[str, Any] = {}
        self.go_seed_client: Path | None = None  # built on first use (go_client_ready)
        self.go_unavailable = ""
        self.debezium: list[str] | None = None  # the java command (peers_ready)
        self.pgstream: Path | None = None
        self.brokers = Brokers(self.tmp / "brokers")  # started on a sink method's first use

    def peers_ready(self, wanted: list[str]) -> dict[str, str]:
        """Build or find the wanted peers; returns {peer: why not} for those that cannot run."""
        skipped: dict[str, str] = {}
        if DEBEZIUM in wanted:
            t0 = time.perf_counter()
            self.debezium, why = build_debezium()
            self.results["debezium_build_seconds"] = time.perf_counter() - t0
            if why:
                skipped[DEBEZIUM] = why
        if PGSTREAM in wanted:
            why = wal2json_missing(self.bindir)
            if not why:
                self.pgstream, why = find_pgstream(install=not self.args.no_install_pgstream)
            if why:
                skipped[PGSTREAM] = why
        return skipped

    @property
    def unix_dsn(self) -> str:
        return f"host={self.cluster.workdir} port={self.cluster.port} user=postgres dbname={DB}"

    @property
    def tcp_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.cluster.port} user=postgres dbname={DB}"

    @contextmanager
    def cursor(self) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor on a fresh autocommit connection, closed afterwards."""
        conn = psycopg2.connect(self.unix_dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    def sql(self, *statements: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        with self.cursor() as cur:
            for statement in statements:
                cur.execute(statement, params)
                rows = cur.fetchall() if cur.description else []
        return rows

    def settings(self, values: dict[str, str] | None) -> None:
        """ALTER SYSTEM SET values (None: RESET what the write phase set) and reload."""
        with self.cursor() as cur:
            for name in WRITE_SETTINGS:
                if values is None:
                    cur.execute(f"ALTER SYSTEM RESET {name}")
                else:
                    cur.execute(f"ALTER SYSTEM SET {name} = '{values[name]}'")
            cur.execute("SELECT pg_reload_conf()")
        time.sleep(0.3)  # the postmaster signals every backend; let them pick it up

    def start(self) -> None:
        self.cluster.start()
        admin = psycopg2.connect(self.cluster.dsn)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DB}")
        admin.close()
        self.sql(*TABLES)

    def slot_pid(self, slot: str, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        with self.cursor() as cur:
            while time.monotonic() < deadline:
                cur.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
                row = cur.fetchone()
                if row and row[0]:
                    return int(row[0])
                time.sleep(0.003)
        raise RuntimeError(f"no walsender took slot {slot} within {timeout} s")

    def copy_slot(self, base: str, slot: str, plugin: str = "") -> None:
        """A copy of the base slot (same LSNs), with another output plugin if one is named."""
        if plugin:
            self.sql("SELECT pg_copy_logical_replication_slot(%s, %s, false, %s)", params=(base, slot, plugin))
        else:
            self.sql("SELECT pg_copy_logical_replication_slot(%s, %s)", params=(base, slot))

    def drop_slot(self, slot: str) -> None:
        with self.cursor() as cur:
            for _ in range(100):
                cur.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
                row = cur.fetchone()
                if row is None:
                    break
                if row[0] is None:
                    cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                    break
                time.sleep(0.1)

    # -- writing -----------------------------------------------------------------------------------------

    def write(self, wl: Workload) -> tuple[str, int, float]:
        """Prepare, create the base slot, write the workload; returns (base slot, end LSN, write seconds)."""
        base = f"base_{wl.name}"
        self.sql(*wl.prepare)
        self.sql("CHECKPOINT")
        self.sql("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", params=(base,))
        self.settings(WRITE_SETTINGS)
        t0 = time.perf_counter()
        self.sql(*wl.write)
        seconds = time.perf_counter() - t0
        end = int(self.sql("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")[0][0])
        self.settings(None)
        # A committed (synchronous) transaction after the end position flushes all the workload's WAL, so
        # decoding reaches the end without waiting for the WAL writer; it changes no row, so it sends nothing.
        self.sql("SELECT txid_current()")
        with self.cursor() as cur:
            for _ in range(200):
                cur.execute("SELECT pg_current_wal_flush_lsn() - '0/0'::pg_lsn")
                if int(cur.fetchone()[0]) >= end:  # type: ignore[index]
                    break
                time.sleep(0.05)
        return base, end, seconds

    # -- the drains --------------------------------------------------------------------------------------

    def drain_recvlogical(self, slot: str, end: int, rows: int, tcp: bool) -> dict[str, Any]:
        dsn = self.tcp_dsn if tcp else self.unix_dsn
        cmd = [str(self.recvlogical), "-d", dsn, "--slot", slot, "--start", "--no-loop",
               "-o", f"proto_version={PROTO_VERSION}", "-o", "publication_names=pub", "-o", "messages=true",
               "-f", "/dev/null", "-E", format_lsn(end)]
        exited = threading.Event()  # not proc.poll() in the sampler: it would reap the child before wait4
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        sampler = WalsenderSampler(self.unix_dsn, slot, lambda: not exited.is_set()).start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        exited.set()
        proc.returncode = os.waitstatus_to_exitcode(status)
        walsender_cpu = sampler.stop()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.returncode != 0:
            raise RuntimeError(f"pg_recvlogical failed ({proc.returncode}): {err.strip()}")
        return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds,
                "walsender_cpu": walsender_cpu, "consumer_cpu": usage.ru_utime + usage.ru_stime}

    @contextmanager
    def walstream(self, slot: str, temporary: bool = False) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
        port = free_port()
        log_path = self.tmp / f"walstream-{slot}.log"
        src = self.args.walstream_src
        env = dict(os.environ, PYTHONPATH=str(src) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "walstream", "--connection", self.unix_dsn, "--log-level", "info", "start",
                 "--publication", "pub", "--slot", slot, "--temporary", "true" if temporary else "false",
                 "--port", str(port), "--host", "127.0.0.1"], stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 60
            while b"listening on" not in log_path.read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"walstream did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.002)
            yield proc, f"127.0.0.1:{port}"
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.results.setdefault("walstream_logs", []).append(str(log_path))

    def client(self, mode: str, cfg: dict[str, Any]) -> subprocess.Popen[str]:
        """A client process of bench/clients.py, or with mode "go-seed" the Go seed client (same protocol)."""
        cmd = [str(self.go_seed_client)] if mode == "go-seed" else [sys.executable, str(CLIENTS), mode]
        return subprocess.Popen(cmd + [json.dumps(cfg)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def go_client_ready(self) -> str:
        """Build the Go seed client once; "" when it is ready, else why not."""
        if self.go_seed_client is None and not self.go_unavailable:
            binary, self.go_unavailable = build_go_seed_client(self.tmp)
            self.go_seed_client = binary
        return self.go_unavailable

    @staticmethod
    def expect(proc: subprocess.Popen[str], what: str, timeout: float) -> str:
        assert proc.stdout is not None
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not box or not box[0]:
            proc.kill()
            raise RuntimeError(f"{what}: no answer from the client within {timeout:.0f} s")
        return box[0]

    def profiler(self, pid: int, name: str) -> subprocess.Popen[bytes] | None:
        """py-spy sampling walstream for the drain (--profile DIR): collapsed stacks, one file per drain."""
        if not self.args.profile:
            return None
        self.args.profile.mkdir(parents=True, exist_ok=True)
        out = self.args.profile / f"{name}.txt"
        spy = Path(sys.executable).parent / "py-spy"
        return subprocess.Popen([str(spy if spy.exists() else "py-spy"), "record", "--pid", str(pid), "--rate", "200",
                                 "--nonblocking", "--format", "raw", "--output", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def drain_walstream(self, slot: str, rows: int, api: str) -> dict[str, Any]:
        cfg: dict[str, Any] = {"rows": rows, "ack_every": self.args.seed_ack_every}
        with self.walstream(slot) as (ws, addr):
            client = self.client(api, {**cfg, "addr": addr})
            self.expect(client, "client start", 60)
            sender = self.slot_pid(slot)
            assert client.stdin is not None
            spy = self.profiler(ws.pid, slot)
            calls0 = syscalls(ws.pid)
            client.stdin.write(json.dumps({"walstream": ws.pid, "walsender": sender}) + "\n")
            client.stdin.flush()
            out = json.loads(self.expect(client, f"{api} drain", self.args.timeout))
            calls = per_row(calls0, syscalls(ws.pid), rows)
            client.wait(30)
            hwm = proc_status_kb(ws.pid, "VmHWM")
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
                spy.wait(60)
        if out["rows"] < rows:
            raise RuntimeError(f"{api}: got {out['rows']} of {rows} rows")
        cpu0, cpu1 = out["cpu0"], out["cpu1"]
        return {"rows": rows, "seconds": out["seconds"], "rows_per_s": rows / out["seconds"],
                "first_seconds": out["first_seconds"],
                "walstream_cpu": cpu1["walstream"] - cpu0["walstream"],
                "walsender_cpu": cpu1["walsender"], "walsender_cpu_before_subscribe": cpu0["walsender"],
                "client_cpu": out["client_cpu"], "walstream_peak_rss_mb": (hwm or 0) / 1024,
                "batches": out.get("batches"), **calls}

    def drain_ceiling(self, rows: int, client_mode: str) -> dict[str, Any]:
        server = self.client("ceiling", {"rows": rows})
        try:
            port = json.loads(self.expect(server, "ceiling server", 60))["port"]
            client = self.client(client_mode, {"rows": rows, "addr": f"127.0.0.1:{port}",
                                               "ack_every": self.args.seed_ack_every})
            self.expect(client, "client start", 60)
            assert client.stdin is not None
            calls0 = syscalls(server.pid)
            client.stdin.write(json.dumps({"server": server.pid}) + "\n")
            client.stdin.flush()
            out = json.loads(self.expect(client, "ceiling drain", self.args.timeout))
            calls = per_row(calls0, syscalls(server.pid), rows)
            client.wait(30)
        finally:
            if server.stdin is not None:
                with suppress(OSError):
                    server.stdin.write("\n")
                    server.stdin.flush()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        return {"rows": rows, "seconds": out["seconds"], "rows_per_s": rows / out["seconds"],
                "walstream_cpu": out["cpu1"]["server"] - out["cpu0"]["server"], "walsender_cpu": None,
                "client_cpu": out["client_cpu"], **calls}

    def drain(self, method: str, base: str, end: int, wl: Workload, run: int) -> dict[str, Any]:
        if method in SINK_METHODS:
            return self.drain_sink(method, base, end, wl, run)
        if method in CEILINGS:
            return self.drain_ceiling(min(wl.rows, self.args.ceiling_rows),
                                      "go-seed" if method == CEILING_GO else "seed")
        slot = f"{wl.name}_{method.replace('-', '_')}_{run}"
        self.copy_slot(base, slot, copy_for(method))
        try:
            if method.startswith("recvlogical"):
                return self.drain_recvlogical(slot, end, wl.rows, tcp=method.endswith("tcp"))
            if method == DEBEZIUM and self.debezium:
                return drain_debezium(self.debezium, self.unix_dsn, self.cluster.port, slot, wl.rows,
                                      self.args.timeout)
            if method == PGSTREAM and self.pgstream:
                return drain_pgstream(self.pgstream, self.tmp, self.unix_dsn, self.cluster.port, slot, wl.rows,
                                      self.args.timeout)
            return self.drain_walstream(slot, wl.rows, method)
        finally:
            self.drop_slot(slot)

    def drain_sink(self, method: str, base: str, end: int, wl: Workload, run: int) -> dict[str, Any]:
        url = self.brokers.url(SINK_METHODS[method])
        assert url is not None  # run() leaves out a sink whose broker cannot start
        slot = f"{wl.name}_{method.replace('-', '_')}_{run}"
        self.copy_slot(base, slot)
        try:
            spy = self.args.profile / f"{slot}.txt" if self.args.profile else None
            if spy is not None:
                self.args.profile.mkdir(parents=True, exist_ok=True)
            kind = SINK_METHODS[method]
            return drain_sink(self.unix_dsn, slot, end, wl.rows, url, self.tmp / f"walstream-{slot}.log",
                              self.args.timeout, src=self.args.walstream_src, spy_out=spy,
                              broker_pid=self.brokers.pid(kind))
        finally:
            self.drop_slot(slot)

    # -- latency and memory ------------------------------------------------------------------------------

    def latency(self, api: str, synchronous_commit: str) -> dict[str, Any]:
        count = max(100, int(self.args.latency_seconds * self.args.latency_rate))
        slot = f"lat_{api}_{synchronous_commit}"
        with self.walstream(slot, temporary=True) as (_ws, addr):
            client = self.client("latency", {"api": api, "addr": addr, "count": count,
                                             "timeout": self.args.latency_seconds * 5 + 60})
            self.expect(client, "latency client", 60)
            writer = self.client("writer", {"dsn": self.unix_dsn, "rate": self.args.latency_rate, "count": count,
                                            "synchronous_commit": synchronous_commit})
            self.expect(writer, "latency writer", 60)
            time.sleep(0.5)  # the warm-up rows reach the client
            assert writer.stdin is not None
            writer.stdin.write("{}\n")
            writer.stdin.flush()
            wrote = json.loads(self.expect(writer, "latency writer", self.args.latency_seconds * 5 + 60))
            got = json.loads(self.expect(client, "latency client", 60))
            writer.wait(10)
            client.wait(10)
        return {"api": api, "synchronous_commit": synchronous_commit, "rate": wrote["rate"],
                "commit_ms_p50": wrote["commit_ms_p50"], "commit_ms_p99": wrote["commit_ms_p99"], **got}

    def snapshot(self) -> dict[str, Any]:
        """bench/snapshot.py's figures on tables of their own, with a temporary slot of its own."""
        rows = max(2000, int(1_000_000 * self.args.scale))
        create_snapshot_tables(self.unix_dsn, rows, "snap", "snap_live")
        try:
            with self.walstream("snapshot", temporary=True) as (ws, addr):
                out = measure_snapshot(addr, self.unix_dsn, self.bindir / "psql", rows, "snap", "snap_live",
                                       idle_seconds=min(5.0, self.args.latency_seconds), walstream_pid=ws.pid,
                                       postmaster_pid=self.cluster.postmaster_pid() or 0)
        finally:
            self.sql("DROP TABLE snap, snap_live")
        return {"table_rows": rows, **out}

    def memory(self, base: str, api: str, hold_acks: bool) -> dict[str, Any]:
        slot = f"mem_{api}_{'hold' if hold_acks else 'slow'}"
        self.copy_slot(base, slot)
        try:
            with self.walstream(slot) as (ws, addr):
                before = proc_status_kb(ws.pid, "VmRSS") or 0
                client = self.client("slow", {"api": api, "addr": addr, "rate": self.args.slow_rate,
                                              "seconds": self.args.memory_seconds, "hold_acks": hold_acks})
                self.expect(client, "slow client", 60)
                assert client.stdin is not None
                client.stdin.write("{}\n")
                client.stdin.flush()
                peak = 0
                box: list[str] = []
                reader = threading.Thread(target=lambda: box.append(client.stdout.readline()),  # type: ignore[union-attr]
                                          daemon=True)
                reader.start()
                while reader.is_alive():
                    peak = max(peak, proc_status_kb(ws.pid, "VmRSS") or 0)
                    reader.join(0.2)
                out = json.loads(box[0])
                client.wait(10)
                hwm = proc_status_kb(ws.pid, "VmHWM") or 0
        finally:
            self.drop_slot(slot)
        return {"api": api, "client": "holds every ack" if hold_acks else f"{self.args.slow_rate:,} rows/s",
                "rows_handled": out["rows"], "seconds": out["seconds"],
                "rss_idle_mb": before / 1024, "rss_peak_sampled_mb": peak / 1024, "vm_hwm_mb": hwm / 1024}


# --- the run ------------------------------------------------------------------------------------------


def summarize(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    import grpc
    import orjson
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version(), "grpcio": grpc.__version__,
            "orjson": orjson.__version__}


def run(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    started = datetime.datetime.now(datetime.timezone.utc)
    result: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"), "machine": machine(), "postgresql": bench.pg_version,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                 if k not in ("json", "docs")},
        "settings": {"write_phase": WRITE_SETTINGS, "cluster": CLUSTER_SETTINGS,
                     "pgoutput": {"proto_version": PROTO_VERSION, "messages": True},
                     "note": "fsync and synchronous_commit are off while a workload is written and on (the "
                             "defaults) while it is drained and during the latency test"},
        "load_start": loadavg(), "workloads": [], "latency": [], "memory": [], "snapshot": None, "skipped": {},
    }
    log(f"PostgreSQL {bench.pg_version} in {bench.cluster.workdir}; write phase: fsync=off, "
        "synchronous_commit=off; drains and latency: fsync=on, synchronous_commit=on")
    selected = [w for w in workloads(args.scale) if not args.workloads or w.name in args.workloads]
    peers = [p for p in PEERS if p not in args.skip]
    result["skipped"].update(bench.peers_ready(peers))
    for peer, why in result["skipped"].items():
        log(f"{peer} skipped: {why}")
    peers = [p for p in peers if p not in result["skipped"]]
    if DEBEZIUM in peers:
        result["debezium_build_seconds"] = bench.results["debezium_build_seconds"]
    bench.start()
    try:
        for wl in selected:
            base, end, write_s = bench.write(wl)
            log(f"{wl.name}: wrote {wl.rows} rows in {write_s:.1f} s; end {format_lsn(end)}")
            methods = [m for m in DRAINS if m not in args.skip] + peers
            if wl.name == "bulk":
                methods += [m for m in CEILINGS if m not in args.skip]
                if CEILING_GO in methods and (why := bench.go_client_ready()):
                    methods.remove(CEILING_GO)
                    result["skipped"][CEILING_GO] = why
                    log(f"{CEILING_GO} skipped: {why}")
                for method in [m for m in SINK_METHODS if m not in args.skip]:
                    if bench.brokers.url(SINK_METHODS[method]) is None:
                        result["skipped"][method] = bench.brokers.unavailable[SINK_METHODS[method]]
                        log(f"{method} skipped: {result['skipped'][method]}")
                    else:
                        methods.append(method)
            runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
            for r in range(args.runs if methods else 0):  # --skip may leave only latency and memory
                order = methods[r % len(methods):] + methods[:r % len(methods)]
                for method in order:
                    load = loadavg()
                    out = bench.drain(method, base, end, wl, r)
                    out["load"] = load
                    runs[method].append(out)
                    log(f"{wl.name} run {r + 1}/{args.runs} {method}: {out['rows_per_s']:,.0f} rows/s "
                        f"({out['seconds']:.2f} s, load {load:.2f})")
            if wl.name == "bulk" and not args.skip_memory:
                for api, hold in (("batched", False), ("seed", False), ("batched", True), ("seed", True)):
                    if api in args.skip:
                        continue
                    mem = bench.memory(base, api, hold)
                    result["memory"].append(mem)
                    log(f"memory {api}, client {mem['client']}: peak RSS {mem['vm_hwm_mb']:.0f} MB "
                        f"({mem['rows_handled']} rows received in {mem['seconds']:.0f} s)")
            bench.drop_slot(base)
            if any(runs.values()):
                result["workloads"].append(summarize_workload(wl, runs, write_s))
        if not args.skip_latency:
            for api, sync in (("batched", "on"), ("seed", "on"), ("batched", "off")):
                if api in args.skip:
                    continue
                lat = bench.latency(api, sync)
                result["latency"].append(lat)
                log(f"latency {api} synchronous_commit={sync}: p50 {lat['p50_ms']:.2f} ms, "
                    f"p99 {lat['p99_ms']:.2f} ms at {lat['rate']:.0f} tx/s")
        if not args.skip_snapshot:
            snap = result["snapshot"] = bench.snapshot()
            log(f"snapshot: {snap['snapshot_rows_per_s']:,.0f} rows/s against COPY {snap['copy_rows_per_s']:,.0f} "
                f"rows/s ({snap['ratio']:.2f}x); live p50/p99 {snap['busy_p50_ms']:.1f}/{snap['busy_p99_ms']:.1f} ms "
                f"during it ({snap['idle_p50_ms']:.1f}/{snap['idle_p99_ms']:.1f} ms without)")
    finally:
        bench.brokers.stop_all()
        bench.cluster.destroy()
    result["load_end"] = loadavg()
    result["seconds"] = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    return result


def summarize_workload(wl: Workload, runs: dict[str, list[dict[str, Any]]], write_s: float) -> dict[str, Any]:
    ref = runs.get(REFERENCE, [])
    methods = {}
    for method, outs in runs.items():
        entry: dict[str, Any] = {
            "rows_per_s": summarize([o["rows_per_s"] for o in outs]),
            "seconds": summarize([o["seconds"] for o in outs]),
            "runs": outs,
        }
        if ref and len(ref) == len(outs):
            entry["ratio"] = summarize([o["rows_per_s"] / r["rows_per_s"] for o, r in zip(outs, ref, strict=True)])
        for key in ("walstream_cpu", "walsender_cpu", "consumer_cpu", "client_cpu", "walstream_peak_rss_mb",
                    "server_reads_per_row", "server_writes_per_row", "startup_seconds", "startup_cpu"):
            if any(key in o for o in outs):  # None: never sampled (a drain over before the first sample)
                vals = [o[key] for o in outs if o.get(key) is not None]
                entry[key] = statistics.median(vals) if vals else None
        methods[method] = entry
    return {"name": wl.name, "title": wl.title, "rows": wl.rows, "write_seconds": write_s, "methods": methods}


# --- output ---------------------------------------------------------------------------------------------

LABELS = {
    "recvlogical-unix": "pg_recvlogical, Unix socket (reference)",
    "recvlogical-tcp": "pg_recvlogical, TCP",
    "batched": "walstream + walstream.v1 client (batched)",
    "seed": "walstream + seed client (1 event/message)",
    CEILING: "bare grpcio, 1 message/event (seed ceiling)",
    CEILING_GO: "bare grpcio, 1 message/event, Go client (seed ceiling)",
    DEBEZIUM: "Debezium 3.6.1 embedded engine (pgoutput over TCP, JSON converter)",
    PGSTREAM: "pgstream v1.4.1 (wal2json, stdout target)",
    "sink-nats": "walstream --sink nats:// (JetStream, stored and acknowledged; consumer CPU: nats-server)",
    "sink-kafka": "walstream --sink kafka:// (acks=all, stored and acknowledged; consumer CPU: the broker)",
}


def cpu_per_row_total(m: dict[str, Any]) -> float | None:
    """Rows per CPU second of every process on the path (walstream, walsender, client or consumer), from the
    medians; None where a part was not measured."""
    parts = [m.get("walsender_cpu"), m.get("client_cpu", m.get("consumer_cpu"))]
    if "walstream_cpu" in m:
        parts.append(m["walstream_cpu"])
    if any(p is None for p in parts) or not sum(parts):  # type: ignore[arg-type]
        return None
    return m["runs"][0]["rows"] / sum(parts)  # type: ignore[arg-type]


def _cpu(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _per_row(cpu: float | None, rows: int) -> str:
    """walstream's CPU per row (the issue-14 figure), beside its CPU seconds."""
    return "" if cpu is None or not rows else f" ({cpu * 1e6 / rows:.1f})"


def table(result: dict[str, Any]) -> str:
    lines = ["| workload | method | rows/s median (min–max) | × reference median (min–max) | walstream CPU s (µs/row) "
             "| walsender CPU s | client / consumer CPU s | rows per CPU s, all processes (× reference) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    startups = []
    for wl in result["workloads"]:
        ref_eff = cpu_per_row_total(wl["methods"][REFERENCE]) if REFERENCE in wl["methods"] else None
        for method, m in wl["methods"].items():
            eff = cpu_per_row_total(m) if method not in CEILINGS else None
            eff_s = "" if eff is None else f"{eff:,.0f}" + (f" ({eff / ref_eff:.2f})" if ref_eff else "")
            if m.get("startup_seconds") is not None:
                startups.append(f"| {wl['name']} | {LABELS.get(method, method)} | {m['startup_seconds']:.2f} | "
                                f"{_cpu(m.get('startup_cpu'))} |")
            rps, ratio = m["rows_per_s"], m.get("ratio")
            ratio_s = f"{ratio['median']:.2f} ({ratio['min']:.2f}–{ratio['max']:.2f})" if ratio else ""
            server_cpu = m.get("walstream_cpu")
            client_cpu = m.get("client_cpu", m.get("consumer_cpu"))
            label = LABELS.get(method, method)
            if method in CEILINGS:
                label += f": {m['runs'][0]['rows']:,} messages, its server's CPU under walstream"
            lines.append(f"| {wl['name']} ({wl['rows']:,} rows) | {label} | "
                         f"{rps['median']:,.0f} ({rps['min']:,.0f}–{rps['max']:,.0f}) | {ratio_s} | "
                         f"{_cpu(server_cpu)}{_per_row(server_cpu, m['runs'][0]['rows'])} | "
                         f"{_cpu(m.get('walsender_cpu'))} | {_cpu(client_cpu)} | {eff_s} |")
    out = ["\n".join(lines)]
    if startups:
        out.append("\n".join(["| workload | peer | start-up s, median | CPU s in start-up |",
                              "| --- | --- | ---: | ---: |", *startups]))
    if result["latency"]:
        lat = ["| API | synchronous_commit | tx/s | commit p50 / p99 ms | commit→client p50 / p90 / p99 / max ms |",
               "| --- | --- | ---: | ---: | ---: |"]
        for r in result["latency"]:
            lat.append(f"| {r['api']} | {r['synchronous_commit']} | {r['rate']:,.0f} | "
                       f"{r['commit_ms_p50']:.2f} / {r['commit_ms_p99']:.2f} | "
                       f"{r['p50_ms']:.2f} / {r['p90_ms']:.2f} / {r['p99_ms']:.2f} / {r['max_ms']:.2f} |")
        out.append("\n".join(lat))
    if result["memory"]:
        mem = ["| API | client | seconds | rows received | walstream RSS idle MB | peak RSS MB (VmHWM) |",
               "| --- | --- | ---: | ---: | ---: | ---: |"]
        for r in result["memory"]:
            mem.append(f"| {r['api']} | {r['client']} | {r['seconds']:.0f} | {r['rows_handled']:,} | "
                       f"{r['rss_idle_mb']:.0f} | {r['vm_hwm_mb']:.0f} |")
        out.append("\n".join(mem))
    snap = result.get("snapshot")
    if snap:
        out.append("\n".join([
            "| snapshot of one table | rows/s | × COPY TO STDOUT "
            "| live commit→client p50 / p99 ms (without backfill) | CPU µs/row: walstream / client / PostgreSQL |",
            "| --- | ---: | ---: | ---: | ---: |",
            f"| COPY {snap['table_rows']:,} rows TO STDOUT, psql > /dev/null (reference) | "
            f"{snap['copy_rows_per_s']:,.0f} | 1.00 | | |",
            f"| walstream INCREMENTAL backfill, one walstream.v1 client | {snap['snapshot_rows_per_s']:,.0f} | "
            f"{snap['ratio']:.2f} | {snap['busy_p50_ms']:.1f} / {snap['busy_p99_ms']:.1f} "
            f"({snap['idle_p50_ms']:.1f} / {snap['idle_p99_ms']:.1f}) | {snapshot_cpu(snap)} |"]))
    return "\n\n".join(out)


def snapshot_cpu(snap: dict[str, Any]) -> str:
    """walstream / client / PostgreSQL CPU per backfilled row (absent from JSON written before they were)."""
    sides = [snap.get(f"{side}_cpu_us_per_row") for side in ("walstream", "client", "postgres")]
    if all(v is None for v in sides):
        return ""
    return " / ".join("" if v is None else f"{v:.2f}" for v in sides)


def debezium_build(result: dict[str, Any]) -> str:
    seconds = result.get("debezium_build_seconds")
    if seconds is None:
        return ""
    if seconds < 1:
        return " Debezium: the cached build of bench/debezium was reused."
    return f" Debezium: bench/debezium was built in {seconds:.0f} s (Maven) before the run."


def header(result: dict[str, Any]) -> str:
    m = result["machine"]
    return (f"Ran {result['started']} on {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Linux {m['kernel']}; "
            f"PostgreSQL {result['postgresql']}, Python {m['python']}, grpcio {m['grpcio']}, orjson "
            f"{m['orjson']}. Load average {result['load_start']:.2f} at the start, {result['load_end']:.2f} at "
            f"the end; {result['args']['runs']} run(s) per method, {result['seconds'] / 60:.0f} min in all. "
            "Writes ran with fsync=off and synchronous_commit=off; drains and the latency test with fsync=on "
            f"and synchronous_commit=on. pgoutput protocol {PROTO_VERSION} with messages=true for every method; "
            f"the seed client acks every {result['args'].get('seed_ack_every', 1)}th event (and the last)."
            + debezium_build(result)
            + "".join(f" Skipped {method}: {why}." for method, why in result.get("skipped", {}).items()))


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def update_docs(path: Path, result: dict[str, Any]) -> None:
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    block = f"{BEGIN}\n{header(result)}\n\n{table(result)}\n{END}"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text += "\n" + block + "\n"
    path.write_text(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="runs of each method per workload (default 3)")
    p.add_argument("--scale", type=float, default=1.0, help="workload size factor (1.0: 1M bulk rows, ...)")
    p.add_argument("--workloads", nargs="*", default=[], help="only these (bulk small update wide)")
    p.add_argument("--skip", nargs="*", default=[],
                   help="methods to leave out, e.g. seed grpc-ceiling grpc-ceiling-go sink-nats sink-kafka")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-snapshot", action="store_true", help="leave out the snapshot (backfill) row")
    p.add_argument("--seed-ack-every", type=int, default=100,
                   help="the seed client acks every Nth event and the last (an ack covers everything sent before "
                        "it); default 100")
    p.add_argument("--ceiling-rows", type=int, default=300_000, help="messages in a grpc-ceiling run")
    p.add_argument("--latency-rate", type=int, default=1000, help="transactions per second (default 1000)")
    p.add_argument("--latency-seconds", type=float, default=10.0)
    p.add_argument("--slow-rate", type=int, default=2000, help="rows per second the slow client handles")
    p.add_argument("--memory-seconds", type=float, default=20.0, help="how long each memory client runs")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds one drain may take")
    p.add_argument("--profile", type=Path, help="sample walstream with py-spy during each drain into this "
                   "directory (collapsed stacks; bench/profile_summary.py summarizes them); slows it a little")
    p.add_argument("--walstream-src", type=Path, default=ROOT / "src",
                   help="the walstream sources to run (e.g. a copy of src/ before a change, to compare)")
    p.add_argument("--bindir", help="PostgreSQL server programs (default: PostgreSQL 15's)")
    p.add_argument("--no-install-pgstream", action="store_true",
                   help="run pgstream only if it is on PATH or already in the cache: no go install (it builds "
                        "for minutes; the smoke test passes this)")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md",
                   help="update the table in this file (between the bench:begin/end markers)")
    p.add_argument("--no-docs", action="store_true", help="do not touch docs/benchmarks.md")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="run nothing: print the table of an earlier run's JSON (and write it to --docs)")
    p.add_argument("--tiny", action="store_true",
                   help="a smoke run: scale 0.002, 1 run, 0.5 s latency, 1 s memory (checks the harness only)")
    args = p.parse_args(argv)
    if args.tiny:
        args.scale, args.runs, args.latency_seconds, args.memory_seconds = 0.002, 1, 0.5, 1.0
        args.ceiling_rows = min(args.ceiling_rows, 2000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        result = json.loads(args.render.read_text())
        print(header(result) + "\n\n" + table(result))
        if not args.no_docs:
            update_docs(args.docs, result)
            print(f"table written to {args.docs}")
        return 0
    # SIGTERM (e.g. a timeout killing the run) unwinds like Ctrl-C: walstream stopped, cluster removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(header(result) + "\n\n" + table(result))
    print(f"\nJSON: {args.json}")
    if not args.no_docs:
        update_docs(args.docs, result)
        print(f"table written to {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
