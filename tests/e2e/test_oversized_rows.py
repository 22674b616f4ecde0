"""A change larger than a client's gRPC receive limit (4 MiB by default) fails that client only.

walstream logs the table, LSN and size once; a client that raised its limit receives the change and
everything after it, and the stream goes on (the failed client's deliveries stop holding the slot).
"""

from __future__ import annotations

import grpc
from support import SeedClient, WalstreamProcess, wait_confirmed

BIG = 5 * 1024 * 1024


def test_a_row_over_the_default_receive_limit_does_not_wedge_other_clients(testdb, tmp_path) -> None:
    testdb.execute("CREATE TABLE t (id int PRIMARY KEY, payload text)", "CREATE PUBLICATION pub FOR TABLE t")
    with WalstreamProcess(testdb.dsn, "pub", testdb.slot, log_dir=tmp_path) as ws:
        default = SeedClient(ws.addr)
        raised = SeedClient(ws.addr, options=(("grpc.max_receive_message_length", -1),))
        try:
            ws.wait_log("connected", count=2)
            testdb.execute("INSERT INTO t VALUES (1, 'small')")
            testdb.execute(f"INSERT INTO t VALUES (2, repeat('x', {BIG}))")
            testdb.execute("INSERT INTO t VALUES (3, 'small')")
            got = raised.take(3, timeout=60)
            assert [e.payload["id"] for e in got] == [1, 2, 3]
            assert len(got[1].payload["payload"]) == BIG
            assert default.done.wait(30), "the client with the default limit should have failed on the big row"
            assert [e.payload["id"] for e in default.received] == [1]
            assert default.error is not None and default.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            ws.wait_log(f"INSERT change of public.t at {got[1].lsn >> 32:X}/{got[1].lsn & 0xFFFFFFFF:X} is ")
            assert "over gRPC's default 4 MiB receive limit" in ws.log()
            testdb.execute("INSERT INTO t VALUES (4, 'after')")
            [after] = raised.take(1, timeout=30)
            assert after.payload["id"] == 4
            wait_confirmed(testdb.dsn, testdb.slot, after.lsn + 1, timeout=30)  # the failed client holds nothing
        finally:
            raised.close()
            default.cancel()
        assert ws.stop() == 0
        assert "Traceback" not in ws.log()
