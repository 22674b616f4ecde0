"""End to end: `walstream tail --snapshot` prints the rows the table holds, then changes; progress on stderr."""

from __future__ import annotations

import io

import pytest
from support import WalstreamProcess
from test_tail import Tail  # type: ignore[import-not-found]  # a sibling test module

from walstream.cli.tail import ProgressReport
from walstream.client import SnapshotProgress


@pytest.fixture
def ws(testdb, tmp_path):
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY, v text)", "CREATE TABLE other (id int PRIMARY KEY)",
                   "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 250) g", "INSERT INTO other VALUES (1)",
                   "ANALYZE t", "CREATE PUBLICATION pub FOR ALL TABLES")
    proc = WalstreamProcess(testdb.dsn, "pub", testdb.slot, temporary=False, log_dir=tmp_path).start()
    yield proc
    proc.kill()


def test_tail_snapshot_prints_rows_then_changes_with_progress_lines(testdb, ws):
    tail = Tail("--server", ws.addr, "--format", "json", "--snapshot", "public.t")
    try:
        rows = tail.json(250)
        assert {r["op"] for r in rows} == {"SNAPSHOT"} and sorted(r["new"]["id"] for r in rows) == list(range(1, 251))
        assert rows[0]["new"] == {"id": 1, "v": "v1"} and rows[0]["table"] == "t"
        testdb.execute("UPDATE t SET v = 'later' WHERE id = 3")
        (update,) = tail.json(1)
        assert update["op"] == "UPDATE" and update["new"] == {"id": 3, "v": "later"}
        assert tail.interrupt() == 0
        lines = tail.stderr.decode().splitlines()
        progress = [line for line in lines if line.startswith("snapshot public.t")]
        assert progress and progress[-1].startswith("snapshot public.t  250 rows of ~250  100%")
        assert progress[-1].endswith("snapshot complete"), progress
        assert not any("other" in line for line in lines)  # only the requested table was copied
    finally:
        tail.finish()


def test_progress_bar_on_a_terminal():
    out = io.StringIO()
    times = iter([0.0, 2.0, 4.0])
    report = ProgressReport(out, terminal=True, clock=lambda: next(times))

    def progress(sent: int, state: str) -> SnapshotProgress:
        return SnapshotProgress("public.t", state, sent, 1000, 1, b"tok", state == "DONE", 0, 1, 0)

    report(progress(0, "RUNNING"))
    report(progress(500, "RUNNING"))
    report(progress(1000, "DONE"))
    frames = out.getvalue().split("\r\x1b[K")[1:]
    assert frames[1] == ("snapshot public.t  [############............]  500 rows of ~1000  50%  250 rows/s  "
                         "ETA 0:00:02")
    assert frames[2] == ("snapshot public.t  [########################]  1000 rows of ~1000  100%  250 rows/s  "
                         "snapshot complete\n")
