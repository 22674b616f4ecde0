"""End to end: the Python client's snapshot options, progress and resume token against a real walstream."""

from __future__ import annotations

import threading

import pytest
from support import WalstreamProcess

from walstream.client import Client, SnapshotProgress, StreamError


def apply(rows: dict[object, dict[str, object]], change) -> None:
    if change.op in ("SNAPSHOT", "INSERT", "UPDATE"):
        if change.old is not None:
            rows.pop(change.old["id"], None)
        rows[change.new["id"]] = change.new
    elif change.op == "DELETE":
        rows.pop(change.old["id"], None)


@pytest.fixture
def walstream(testdb, tmp_path):
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY, v text)",
                   "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g",
                   "CREATE PUBLICATION pub FOR ALL TABLES")
    ws = WalstreamProcess(testdb.dsn, "pub", testdb.slot, temporary=False, log_dir=tmp_path).start()
    yield ws
    ws.kill()


def test_client_snapshot_progress_and_resume_token(testdb, walstream):
    rows: dict[object, dict[str, object]] = {}
    with Client(walstream.addr, snapshot=["public.t"], snapshot_chunk_rows=100, reconnect=False) as first:
        for batch in first.batches():
            for change in batch:
                apply(rows, change)
            first.ack(batch)
            progress = first.snapshot_progress.get("public.t")
            if progress is not None and progress.chunks >= 3 and first.resume_token:
                break
        token = first.resume_token
        stopped_at = first.snapshot_progress["public.t"]
        assert stopped_at.state == "RUNNING" and not first.snapshot_done
    testdb.execute("UPDATE t SET v = 'changed' WHERE id IN (5, 950)", "DELETE FROM t WHERE id = 960")

    done = threading.Event()
    seen: list[SnapshotProgress] = []

    def on_progress(progress: SnapshotProgress) -> None:
        seen.append(progress)
        if second.snapshot_done:  # the last chunk's rows are acknowledged: nothing more to wait for
            done.set()
            second.close()

    with Client(walstream.addr, snapshot=["public.t"], snapshot_chunk_rows=100, resume_token=token,
                reconnect=False, on_progress=on_progress) as second:
        for batch in second.batches():
            for change in batch:
                apply(rows, change)
            second.ack(batch)
        final = second.snapshot_progress["public.t"]
        assert seen[-1] == final
        assert final.done and final.state == "DONE" and final.table == "public.t"
        # Resumed after the token: the second client copied the rest, not the whole table again.
        assert final.chunks <= 10 - stopped_at.chunks + 1
    assert done.is_set()
    assert rows == {i: {"id": i, "v": v} for i, v in testdb.query("SELECT id, v FROM t")}


def test_client_snapshot_options_are_checked(walstream):
    with pytest.raises(ValueError, match="snapshot_mode: unknown mode 'fast'"):
        Client(walstream.addr, snapshot=True, snapshot_mode="fast")
    with pytest.raises(ValueError, match="resume_token: given without snapshot"):
        Client(walstream.addr, resume_token=b"x")
    with Client(walstream.addr, snapshot=True, resume_token=b"not a token", reconnect=False) as client:
        with pytest.raises(StreamError, match="not a walstream resume token"):
            next(iter(client.batches()))
