"""--max-unacked-bytes: memory is bounded by bytes, not only by message counts.

A backlog of 1 MB rows, a client that never acknowledges and one that does: walstream stops reading once the
unacknowledged deliveries hold the byte bound, its resident memory stays under the bound plus a fixed base,
and when the silent client leaves, the other receives every row (nothing lost) with memory still bounded
(acknowledged rows are released at once, not at the ledger's next compaction).
"""

from __future__ import annotations

import threading

import pytest
from support import SeedClient, WalstreamProcess

ROW_BYTES = 1_000_000
ROWS = 120  # ~4x the bound in rows: memory must not grow with the backlog
BOUND_MB = 32
SLACK_MB = 64  # gRPC's send buffers and the batch being sent, over the RSS walstream had when idle


class RssSampler:
    def __init__(self, ws: WalstreamProcess) -> None:
        self.ws = ws
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak_kb = max(self.peak_kb, self.ws.rss_kb())
            except (FileNotFoundError, ProcessLookupError):
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kb


@pytest.mark.slow
def test_unacknowledged_megabyte_rows_are_bounded_by_bytes(testdb, tmp_path) -> None:
    testdb.execute("CREATE TABLE big (id int PRIMARY KEY, payload text)", "CREATE PUBLICATION pub FOR TABLE big")
    with WalstreamProcess(testdb.dsn, "pub", testdb.slot, log_dir=tmp_path,
                          extra=("--max-unacked-bytes", f"{BOUND_MB}MB")) as ws:
        base_kb = ws.rss_kb()
        sampler = RssSampler(ws)
        silent, acking = SeedClient(ws.addr, auto_ack=False), SeedClient(ws.addr)
        try:
            ws.wait_log("connected", count=2)
            for i in range(ROWS):  # compresses in the WAL, arrives as 1 MB of text per row
                testdb.execute(f"INSERT INTO big VALUES ({i}, repeat('x', {ROW_BYTES}))")
            # Each delivery counts as twice its encoded size: the silent client alone fills the bound.
            held = BOUND_MB * 1024**2 // (2 * ROW_BYTES)
            silent.take(held - 1, timeout=60)
            # Without the bound all 60 rows would follow within this wait; with it, reading has stopped.
            try:
                silent.expect_nothing(2.0)
            except AssertionError:
                pass  # counted below: at most two more may arrive (one message always passes)
            assert len(silent.received) <= held + 1, (
                f"walstream delivered {len(silent.received)} 1 MB rows unacknowledged with a {BOUND_MB} MB bound")
            silent.close()  # its deliveries stop holding the other client back
            got = acking.take(ROWS, timeout=120)
            assert [e.payload["id"] for e in got] == list(range(ROWS))
            assert all(len(e.payload["payload"]) == ROW_BYTES for e in got)
        finally:
            acking.close()
            peak_kb = sampler.stop()
        grown_mb = (peak_kb - base_kb) / 1024
        print(f"\nRSS: idle {base_kb / 1024:.0f} MB, peak {peak_kb / 1024:.0f} MB "
              f"(+{grown_mb:.0f} MB, bound {BOUND_MB} MB)")
        assert grown_mb < BOUND_MB + SLACK_MB, f"RSS grew by {grown_mb:.0f} MB with a {BOUND_MB} MB bound"
        assert ws.stop() == 0
