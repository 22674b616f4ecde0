"""The throwaway cluster (walstream demo, the tests): stop() returns only once the postmaster has exited."""

from __future__ import annotations

from pathlib import Path

from walstream.pgcluster import Cluster, _alive


def test_stop_returns_after_the_postmaster_exited(pg_bindir: Path) -> None:
    for mode in ("fast", "immediate"):
        with Cluster(bindir=pg_bindir) as cluster:
            postmaster = cluster.postmaster_pid()
            assert postmaster is not None and _alive(postmaster)
            cluster.stop(mode)
            assert not _alive(postmaster), f"the postmaster ({postmaster}) outlived a {mode} stop"
