"""Broker sinks against pg_recvlogical: rows/s from the slot into the broker, durably acknowledged.

    .venv/bin/python bench/sinks.py [--rows 200000] [--per-txn 1000] [--sinks nats,kafka]

One throwaway PostgreSQL 15; one workload written once behind a base slot; each method drains its own copy
of that slot to the workload's end: pg_recvlogical (to /dev/null) as the floor, then `walstream start
--sink URL` (no gRPC client) into a real broker (bench/sinkdrain.py). `make bench` (bench/run.py) has the
same rows as methods sink-nats and sink-kafka; this script is the quick one for working on the sinks.
SINK_PYSPY=PREFIX samples walstream with py-spy into PREFIX.<kind>.txt (bench/profile_summary.py reads it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]

from sinkdrain import Brokers, drain_sink  # noqa: E402

from walstream.lsn import format_lsn  # noqa: E402
from walstream.pgcluster import Cluster, find_bindir  # noqa: E402


def sql(dsn: str, *statements: str) -> list[tuple[object, ...]]:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    rows: list[tuple[object, ...]] = []
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
            if cur.description is not None:
                rows = cur.fetchall()
    conn.close()
    return rows


def recvlogical(bindir: Path, dsn: str, slot: str, end: int) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(bindir / "pg_recvlogical"), "-d", dsn, "--slot", slot, "--start", "--no-loop",
                    "-o", "proto_version=1", "-o", "publication_names=pub", "-f", "/dev/null",
                    "-E", format_lsn(end)], check=True)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--per-txn", type=int, default=1000)
    parser.add_argument("--sinks", default="nats,kafka")
    parser.add_argument("--walstream-src", type=Path, action="append", default=[],
                        help="run walstream from this src directory (repeat to compare versions in one run; "
                        "default: this checkout's)")
    args = parser.parse_args()
    bindir = find_bindir(["/usr/lib/postgresql/15/bin"], embedded=False)
    work = Path(tempfile.mkdtemp(prefix="walstream-bench-sinks-"))
    cluster = Cluster(bindir=bindir, settings={"wal_level": "logical", "max_replication_slots": "20",
                                               "max_wal_senders": "20"})
    with cluster:
        dsn = cluster.dsn
        sql(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text, n numeric, at timestamptz)",
            "CREATE PUBLICATION pub FOR TABLE t",
            "SELECT pg_create_logical_replication_slot('base', 'pgoutput')")
        for start in range(0, args.rows, args.per_txn):
            sql(dsn, f"INSERT INTO t SELECT g, md5(g::text), g * 1.5, now() FROM generate_series({start + 1}, "
                     f"{min(args.rows, start + args.per_txn)}) g")
        end = int(sql(dsn, "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")[0][0])  # type: ignore[arg-type]
        sql(dsn, "SELECT txid_current()")
        results: list[tuple[str, float, float | None, float | None]] = []
        sql(dsn, "SELECT pg_copy_logical_replication_slot('base', 'floor')")
        results.append(("pg_recvlogical", recvlogical(bindir, dsn, "floor", end), None, None))
        brokers = Brokers(work)
        try:
            for kind in args.sinks.split(","):
                url = brokers.url(kind)
                if url is None:
                    print(f"walstream --sink {kind} skipped: {brokers.unavailable[kind]}")
                    continue
                for i, src in enumerate(args.walstream_src or [ROOT / "src"]):
                    slot = f"sink_{kind}_{i}"
                    sql(dsn, f"SELECT pg_copy_logical_replication_slot('base', '{slot}')")
                    # SINK_PYSPY=PREFIX: sample walstream with py-spy into PREFIX.<kind>.txt
                    spy = Path(f"{os.environ['SINK_PYSPY']}.{kind}.txt") if os.environ.get("SINK_PYSPY") else None
                    out = drain_sink(dsn, slot, end, args.rows, url, work / f"walstream-{slot}.log", 900, src=src,
                                     spy_out=spy, broker_pid=brokers.pid(kind))
                    name = f"walstream --sink {kind}" + (f" ({src})" if args.walstream_src else "")
                    results.append((name, out["seconds"], out["walstream_cpu"], out["consumer_cpu"]))
        finally:
            brokers.stop_all()
    floor = results[0][1]
    print(f"{args.rows} rows, {args.per_txn} per transaction, PostgreSQL 15, {os.cpu_count()} CPUs")
    print(f"{'method':<24} {'seconds':>8} {'rows/s':>10} {'vs pg_recvlogical':>18} {'walstream CPU s':>16} "
          f"{'broker CPU s':>13}")
    for name, seconds, cpu, broker_cpu in results:
        print(f"{name:<24} {seconds:>8.2f} {args.rows / seconds:>10.0f} {floor / seconds:>17.3f}x "
              f"{'' if cpu is None else f'{cpu:.2f}':>16} {'' if broker_cpu is None else f'{broker_cpu:.2f}':>13}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
