"""Shared by the snapshot end-to-end tests: a pgbench-style write load on t, and comparing a replica with it."""

from __future__ import annotations

import random
import threading

import psycopg2
from snapshot_replica import Replica, ReplicaClient

ROWS = 3000


class Writer(threading.Thread):
    """A pgbench-style load on t: inserts (in and beyond the backfill's key range), updates, key changes
    (moving rows within and out of the range), deletes; some transactions hold several of them."""

    def __init__(self, dsn: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg2.connect(dsn)
        self.random = random.Random(seed)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.transactions = 0

    def run(self) -> None:
        r, cur = self.random, self.conn.cursor()
        try:
            while not self.stop.is_set():
                for _ in range(r.choice((1, 1, 1, 3))):
                    x = r.randrange(1, ROWS * 2)
                    op = r.random()
                    if op < 0.25:
                        cur.execute("INSERT INTO t VALUES (%s, md5(random()::text), 0) ON CONFLICT DO NOTHING", (x,))
                    elif op < 0.6:
                        cur.execute("UPDATE t SET v = md5(random()::text), n = n + 1 WHERE id = %s", (x,))
                    elif op < 0.75:
                        cur.execute("UPDATE t SET id = %s, n = n + 1 WHERE id = %s AND NOT EXISTS "
                                    "(SELECT FROM t WHERE id = %s)", (r.randrange(1, ROWS * 2), x, x + 0))
                    else:
                        cur.execute("DELETE FROM t WHERE id = %s", (x,))
                self.conn.commit()
                self.transactions += 1
        except BaseException as exc:  # noqa: BLE001 (reported by finish())
            self.error = exc
        finally:
            self.conn.close()

    def finish(self) -> None:
        self.stop.set()
        self.join(30)
        assert self.error is None, self.error
        assert self.transactions > 50, f"only {self.transactions} write transactions ran"


def table_rows(testdb) -> dict[tuple[object, ...], dict[str, object]]:
    return {(i,): {"id": i, "v": v, "n": n} for i, v, n in testdb.query("SELECT id, v, n FROM t")}


def caught_up(testdb, client: ReplicaClient, label: str) -> None:
    """Write a marker after everything else and wait until the replica has it."""
    testdb.execute("UPDATE marker SET v = %s WHERE id = 1", params=(label,))
    client.wait_row("public.marker", (1,), {"id": 1, "v": label})


def assert_equal(replica: Replica, testdb) -> None:
    expected = table_rows(testdb)
    got = replica.table("public.t")
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in expected]
    wrong = [k for k in expected if k in got and got[k] != expected[k]]
    assert not (missing or extra or wrong), (
        f"replica differs: {len(missing)} missing {missing[:5]}, {len(extra)} extra {extra[:5]}, "
        f"{len(wrong)} wrong {[(k, got[k], expected[k]) for k in wrong[:3]]}")
