"""Builds or finds the benchmark's peers (bench/run.py methods "debezium" and "pgstream"), once per machine:
each helper returns what to run, or None and why it cannot be had, so the harness can skip that row.

    python bench/peerbuild.py [debezium] [pgstream]

builds them ahead of a run (.ci/run does, so the Maven downloads are not timed inside a test) and prints how
long each took. Only the standard library: it runs before the virtualenv exists.

- debezium: bench/debezium (the embedded engine + PostgreSQL connector from Maven Central, pom.xml) built
  with `mvn -q -B package` in a copy under the cache directory, named after a hash of its sources, so a
  later run reuses the jar and target/lib without starting Maven.
- pgstream: `pgstream` on PATH, else `go install github.com/xataio/pgstream@PGSTREAM_VERSION` into the cache
  directory (GOBIN). It decodes with wal2json, so PostgreSQL needs the wal2json plugin
  (Debian: postgresql-15-wal2json), checked by the harness.

The cache directory is $WALSTREAM_BENCH_CACHE, else $XDG_CACHE_HOME/walstream-bench, else
~/.cache/walstream-bench.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEBEZIUM_SOURCE = Path(__file__).resolve().parent / "debezium"
DEBEZIUM_MAIN = "walstream.bench.DebeziumBench"
PGSTREAM_MODULE = "github.com/xataio/pgstream"
PGSTREAM_VERSION = "v1.4.1"


def cache_dir() -> Path:
    if os.environ.get("WALSTREAM_BENCH_CACHE"):
        return Path(os.environ["WALSTREAM_BENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "walstream-bench"


def _tail(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stderr or "") + (proc.stdout or "")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-4:])[-600:] or f"exit {proc.returncode}"


def _sources_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "target" not in p.relative_to(root).parts):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_debezium(cache: Path | None = None) -> tuple[list[str] | None, str]:
    """(the java command up to its arguments, "") or (None, why it could not be built)."""
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        return None, f"not on PATH: {', '.join(missing)} (Debian: default-jdk-headless maven)"
    project = (cache or cache_dir()) / f"debezium-{_sources_hash(DEBEZIUM_SOURCE)}"
    jar, lib = project / "target" / "debezium-bench.jar", project / "target" / "lib"
    if not jar.exists():
        shutil.rmtree(project, ignore_errors=True)
        shutil.copytree(DEBEZIUM_SOURCE, project, ignore=shutil.ignore_patterns("target"))
        try:
            proc = subprocess.run(["mvn", "-q", "-B", "package"], cwd=project, capture_output=True, text=True,
                                  timeout=1200)
        except subprocess.TimeoutExpired:
            return None, "`mvn -q -B package` in bench/debezium took more than 20 min"
        if proc.returncode != 0 or not jar.exists():
            return None, f"`mvn -q -B package` in bench/debezium exited {proc.returncode}: {_tail(proc)}"
    # Warnings and errors only: the engine logs every connector setting at INFO.
    return ["java", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", f"{jar}{os.pathsep}{lib}/*",
            DEBEZIUM_MAIN], ""


def find_pgstream(cache: Path | None = None, install: bool = True) -> tuple[Path | None, str]:
    """(the pgstream binary, "") or (None, why it could not be had); `install` False: only look, since
    go install builds about a hundred modules (8 min on a busy 2-core machine)."""
    on_path = shutil.which("pgstream")
    if on_path:
        return Path(on_path), ""
    gobin = (cache or cache_dir()) / f"pgstream-{PGSTREAM_VERSION}"
    binary = gobin / "pgstream"
    if binary.exists():
        return binary, ""
    if not install:
        return None, f"not on PATH and not in {gobin} (not installed: --no-install-pgstream)"
    if shutil.which("go") is None:
        return None, "not on PATH: go (needed for go install of pgstream)"
    target = f"{PGSTREAM_MODULE}@{PGSTREAM_VERSION}"
    try:
        proc = subprocess.run(["go", "install", target], env=dict(os.environ, GOBIN=str(gobin), GOFLAGS=""),
                              capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return None, f"`go install {target}` took more than 15 min"
    if proc.returncode != 0 or not binary.exists():
        return None, f"`go install {target}` exited {proc.returncode}: {_tail(proc)}"
    return binary, ""


def main(argv: list[str]) -> int:
    wanted = argv or ["debezium", "pgstream"]
    unknown = set(wanted) - {"debezium", "pgstream"}
    if unknown:
        print(f"unknown peer(s): {', '.join(sorted(unknown))} (accepted: debezium, pgstream)", file=sys.stderr)
        return 2
    for name in wanted:
        t0 = time.perf_counter()
        what, why = build_debezium() if name == "debezium" else find_pgstream()
        took = time.perf_counter() - t0
        print(f"{name}: {'ready' if what else 'unavailable'} in {took:.1f} s"
              + (f": {why}" if why else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
