"""Snapshot (INCREMENTAL backfill) throughput and the live stream's latency during it, on a throwaway
PostgreSQL 15.

    python bench/snapshot.py [--rows 1000000] [--chunk-rows 0]

Prints, from one run: `COPY t TO STDOUT` through psql into /dev/null (the reference), walstream's backfill of
the same table to a raw walstream.v1 client that acknowledges every row (rows/s and the ratio to COPY), and
the commit->client latency of single-row transactions on another table (~100/s) without and with the
backfill running, and the CPU each side spent per row over the backfill: walstream's process, the client's
(this process: the backfill client, plus the small latency writer and listener running beside it) and
PostgreSQL's (every child of the postmaster: the chunk reader's backend, the walsender, the writer's).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import grpc  # noqa: E402
import psycopg2  # noqa: E402
from procstat import children, cpu_seconds  # noqa: E402

from walstream._proto import walstream_v1_pb2 as pb  # noqa: E402
from walstream._proto import walstream_v1_pb2_grpc  # noqa: E402
from walstream.pgcluster import Cluster, find_bindir, free_port  # noqa: E402

SETTINGS = {"wal_level": "logical", "max_wal_senders": "10", "max_replication_slots": "10",
            "shared_buffers": "256MB", "fsync": "off", "synchronous_commit": "off"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=0, help="0: walstream chooses")
    args = parser.parse_args()
    bindir = find_bindir(["/usr/lib/postgresql/15/bin"], embedded=False)
    cluster = Cluster(bindir=bindir, settings=dict(SETTINGS))
    cluster.start()
    try:
        return run(cluster, bindir, args)
    finally:
        cluster.destroy()


def create_tables(dsn: str, rows: int, table: str = "t", live: str = "live") -> None:
    """`table` with `rows` rows (bigint key and four ordinary columns), and the empty `live` table the
    latency is measured on."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, v text, n int, at timestamptz, amount numeric)")
            cur.execute(f"INSERT INTO {table} SELECT g, md5(g::text), g %% 1000, now(), g * 1.25 "
                        "FROM generate_series(1, %s) g", (rows,))
            cur.execute(f"CREATE TABLE {live} (id serial PRIMARY KEY, note text)")
            cur.execute(f"VACUUM ANALYZE {table}")
    finally:
        conn.close()


def copy_seconds(psql: Path, dsn: str, table: str, runs: int = 3) -> list[float]:
    """`COPY table TO STDOUT` through psql into /dev/null, `runs` times."""
    env = dict(os.environ, PGPASSWORD="")
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([str(psql), dsn, "-c", f"COPY {table} TO STDOUT"], stdout=subprocess.DEVNULL, check=True,
                       env=env)
        out.append(time.perf_counter() - start)
    return out


def measure(addr: str, dsn: str, psql: Path, rows: int, table: str = "t", live: str = "live",
            chunk_rows: int = 0, idle_seconds: float = 5.0, walstream_pid: int = 0,
            postmaster_pid: int = 0) -> dict[str, float]:
    """Against a running walstream at addr: COPY (best of 3), the backfill of `table` by one client, and
    the live latency on `live` without and during the backfill. Rates in rows/s, latencies in ms; with the
    pids, CPU µs per backfilled row of walstream, the client (this process) and PostgreSQL."""
    copy_s = min(copy_seconds(psql, dsn, table))
    idle = latency(addr, dsn, None, seconds=idle_seconds, table=live)
    result: dict[str, float] = {}
    before = _cpu(walstream_pid, postmaster_pid)
    seen = dict(before)  # the last CPU seen of each process: backends that exit keep what they had
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            seen.update(_cpu(walstream_pid, postmaster_pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    busy = latency(addr, dsn, lambda: backfill(addr, chunk_rows, result, table), seconds=0, table=live)
    stop.set()
    sampler.join()
    seen.update(_cpu(walstream_pid, postmaster_pid))
    copy_rate = rows / copy_s
    rate = result["rows"] / result["seconds"]
    out = {"rows": result["rows"], "copy_seconds": copy_s, "copy_rows_per_s": copy_rate,
           "snapshot_seconds": result["seconds"], "snapshot_rows_per_s": rate, "ratio": rate / copy_rate,
           "idle_p50_ms": idle[0], "idle_p99_ms": idle[1], "idle_count": idle[2],
           "busy_p50_ms": busy[0], "busy_p99_ms": busy[1], "busy_count": busy[2]}
    # Over the backfill and the second of latency samples after it: a little more than the backfill alone.
    # A backend's CPU is its last sample (every 50 ms), so one that exits loses at most that much.
    for side in ("walstream", "client"):
        if side in before:
            out[f"{side}_cpu_us_per_row"] = (seen[side] - before[side]) * 1e6 / result["rows"]
    if postmaster_pid:
        pg = sum(cpu - before.get(pid, 0.0) for pid, cpu in seen.items() if pid.startswith("pg"))
        out["postgres_cpu_us_per_row"] = pg * 1e6 / result["rows"]
    return out


def _cpu(walstream_pid: int, postmaster_pid: int) -> dict[str, float]:
    """CPU seconds so far: walstream's process, this process, and each child of the postmaster ("pg<pid>")."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {"client": usage.ru_utime + usage.ru_stime}
    if walstream_pid:
        ws = cpu_seconds(walstream_pid)
        if ws is not None:
            out["walstream"] = ws
    if postmaster_pid:
        for pid in children(postmaster_pid):
            cpu = cpu_seconds(pid)
            if cpu is not None:
                out[f"pg{pid}"] = cpu
    return out


def run(cluster: Cluster, bindir: Path, args: argparse.Namespace) -> int:
    dsn = f"host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres"
    create_tables(dsn, args.rows)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE PUBLICATION pub FOR ALL TABLES")
        # Loaded fast; measured as deployed: a logical walsender sends only flushed WAL, which with
        # synchronous_commit off waits up to wal_writer_delay.
        cur.execute("ALTER SYSTEM SET synchronous_commit = on")
        cur.execute("SELECT pg_reload_conf()")
    conn.close()

    port = free_port()
    log = cluster.workdir / "walstream.log"
    srcenv = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    with open(log, "wb") as out:
        level = os.environ.get("BENCH_LOG_LEVEL", "info")  # debug: one line per chunk (BENCH_KEEP_LOG=PATH)
        proc = subprocess.Popen([sys.executable, "-m", "walstream", "--connection", dsn, "--log-level", level,
                                 "start", "--publication", "pub", "--slot", "bench_snapshot", "--port", str(port),
                                 "--host", "127.0.0.1"], stdout=out, stderr=subprocess.STDOUT, env=srcenv)
    try:
        deadline = time.monotonic() + 60
        while b"listening on" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log.read_text()[-2000:])
            time.sleep(0.01)
        m = measure(f"127.0.0.1:{port}", dsn, bindir / "psql", args.rows, chunk_rows=args.chunk_rows,
                    walstream_pid=proc.pid, postmaster_pid=cluster.postmaster_pid() or 0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        if os.environ.get("BENCH_KEEP_LOG"):
            Path(os.environ["BENCH_KEEP_LOG"]).write_bytes(log.read_bytes())
    print(f"COPY t TO STDOUT (psql > /dev/null): {m['copy_rows_per_s']:,.0f} rows/s (best of 3, "
          f"{m['copy_seconds']:.2f} s)")
    print(f"walstream snapshot, one client:      {m['snapshot_rows_per_s']:,.0f} rows/s "
          f"({m['snapshot_seconds']:.1f} s for {m['rows']:,.0f} rows)  ratio {m['ratio']:.2f}x")
    print(f"live latency without backfill: median {m['idle_p50_ms']:.1f} ms, p99 {m['idle_p99_ms']:.1f} ms "
          f"({m['idle_count']:.0f} txns)")
    print(f"live latency during backfill:  median {m['busy_p50_ms']:.1f} ms, p99 {m['busy_p99_ms']:.1f} ms "
          f"({m['busy_count']:.0f} txns)")
    if "walstream_cpu_us_per_row" in m:
        print(f"CPU per backfilled row: walstream {m['walstream_cpu_us_per_row']:.2f} µs, client "
              f"{m['client_cpu_us_per_row']:.2f} µs, PostgreSQL {m['postgres_cpu_us_per_row']:.2f} µs")
    return 0


def backfill(addr: str, chunk_rows: int, result: dict[str, float], table: str = "t") -> None:
    """A raw client that asks for a snapshot of `table` only, acks every delivery, and stops when the
    snapshot is done."""
    with grpc.insecure_channel(addr, options=[("grpc.max_receive_message_length", -1)]) as channel:
        stub = walstream_v1_pb2_grpc.WalstreamStub(channel)
        acks: list[pb.SubscribeRequest] = []
        wake = threading.Condition()
        done = threading.Event()

        def requests():
            yield pb.SubscribeRequest(subscription=pb.Subscription(
                include_tables=[f"public.{table}"], snapshot=pb.SnapshotRequest(chunk_rows=chunk_rows)))
            while not done.is_set():
                with wake:
                    wake.wait_for(lambda: acks or done.is_set(), timeout=0.5)
                    out, acks[:] = list(acks), []
                yield from out

        rows = 0
        last = [-1]  # lsn of the last SNAPSHOT event
        start = time.perf_counter()
        call = stub.Subscribe(requests())
        for response in call:
            if response.HasField("progress"):  # the end of a chunk
                if response.progress.done:
                    break
                last[0] = -1
                continue
            with wake:
                # Every row counted, in one pass over the events (the client's own cost per row is part of
                # the figure). One Ack per delivery: a chunk's rows (the SNAPSHOT events before its progress)
                # are one.
                for e in response.batch.events:
                    if e.op == pb.SNAPSHOT:
                        rows += 1
                        lsn = e.lsn
                        if lsn != last[0]:
                            acks.append(pb.SubscribeRequest(ack=pb.Ack(lsn=lsn)))
                            last[0] = lsn
                    else:
                        acks.append(pb.SubscribeRequest(ack=pb.Ack(lsn=e.lsn)))
                        last[0] = -1
                wake.notify()
        result["seconds"] = time.perf_counter() - start
        result["rows"] = rows
        done.set()
        with wake:
            wake.notify()
        call.cancel()


def latency(addr: str, dsn: str, during, seconds: float, table: str = "live") -> tuple[float, float, int]:
    """Commit -> client latency of single-row inserts into `table`, ~100 a second, for `seconds` or while
    `during` runs (in a thread)."""
    received: dict[str, float] = {}
    stop = threading.Event()
    ready = threading.Event()

    def listen() -> None:
        with grpc.insecure_channel(addr) as channel:
            stub = walstream_v1_pb2_grpc.WalstreamStub(channel)
            out: list[pb.SubscribeRequest] = [pb.SubscribeRequest(subscription=pb.Subscription(
                include_tables=[f"public.{table}"]))]

            def requests():
                yield out.pop()
                while not stop.is_set():
                    time.sleep(0.05)
                    while out:
                        yield out.pop()

            call = stub.Subscribe(requests())
            ready.set()
            try:
                for response in call:
                    now = time.time()
                    for event in response.batch.events:
                        received[event.new.values[1].text] = now
                        out.append(pb.SubscribeRequest(ack=pb.Ack(lsn=event.lsn)))
                    if stop.is_set():
                        break
            except grpc.RpcError:
                pass

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    ready.wait(10)
    time.sleep(0.5)  # let the subscription reach the server (a benchmark, not a test)
    worker = threading.Thread(target=during, daemon=True) if during else None
    if worker:
        worker.start()
    sent: dict[str, float] = {}
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    end = time.monotonic() + seconds
    with conn.cursor() as cur:
        i = 0
        while (worker.is_alive() if worker else time.monotonic() < end):
            note = f"n{i}"
            sent[note] = time.time()  # just before the commit: the latency includes the commit itself
            cur.execute(f"INSERT INTO {table} (note) VALUES (%s)", (note,))
            i += 1
            time.sleep(0.01)
    time.sleep(1.0)
    stop.set()
    conn.close()
    lat = sorted((received[k] - sent[k]) * 1000 for k in sent if k in received)
    if not lat:
        return (float("nan"), float("nan"), 0)
    return statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))], len(lat)


if __name__ == "__main__":
    sys.exit(main())
