"""Catalog look-ups for user-defined types run off the event loop, bounded by a statement timeout.

A lock makes the look-up wait (it reads pg_cast, which logical decoding does not touch): meanwhile
walstream keeps answering Status, and once the lock goes the change arrives with its enum value. With the
look-up on the event loop, Status would hang as long as the lock is held. (New connections wait on that
lock too, so every connection involved is opened before it is taken.) The look-up's statement timeout
(5 s) is longer than the lock is held here.
"""

from __future__ import annotations

import queue
import threading
import time

import grpc
import psycopg2
from support import WalstreamProcess

from walstream import Change, Client
from walstream._proto import walstream_v1_pb2 as pb
from walstream._proto import walstream_v1_pb2_grpc

WAIT = 30


def test_a_slow_type_lookup_does_not_block_the_event_loop(testdb, tmp_path) -> None:
    testdb.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')", "CREATE TYPE size AS ENUM ('s', 'l')",
                   "CREATE TABLE warm (id int PRIMARY KEY, m mood)", "CREATE TABLE t (id int PRIMARY KEY, s size)",
                   "CREATE PUBLICATION pub FOR TABLE warm, t")
    locker = psycopg2.connect(testdb.dsn)

    def lookup_waiting_on_a_lock() -> bool:
        """Asked by the session holding the lock: any other session parsing a query waits on it too."""
        with locker.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")  # inside its transaction activity is cached
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND application_name = 'walstream'")
            return bool(cur.fetchone()[0])  # type: ignore[index]

    with WalstreamProcess(testdb.dsn, "pub", testdb.slot, log_dir=tmp_path) as ws, Client(ws.addr) as client, \
            grpc.insecure_channel(ws.addr) as channel:
        changes: queue.Queue[Change] = queue.Queue()
        threading.Thread(target=lambda: list(map(changes.put, client.changes())), daemon=True).start()
        ws.wait_log("connected")
        status = walstream_v1_pb2_grpc.WalstreamStub(channel).Status
        status(pb.StatusRequest(), timeout=WAIT)  # opens Status's own connection
        testdb.execute("INSERT INTO warm VALUES (1, 'happy')")  # opens the type look-up's connection
        assert changes.get(timeout=WAIT).new == {"id": 1, "m": "happy"}

        with locker.cursor() as cur:
            cur.execute("LOCK TABLE pg_catalog.pg_cast IN ACCESS EXCLUSIVE MODE")  # held until rollback
        testdb.execute("INSERT INTO t VALUES (2, 'l')")
        deadline = time.monotonic() + WAIT
        while not lookup_waiting_on_a_lock():
            assert time.monotonic() < deadline, "walstream never looked the type up"
            time.sleep(0.05)
        answer = status(pb.StatusRequest(), timeout=2)
        assert answer.slot == testdb.slot and answer.connected_clients == 1
        assert lookup_waiting_on_a_lock()  # still stuck: Status was answered meanwhile
        locker.rollback()
        change = changes.get(timeout=WAIT)
        assert change.new == {"id": 2, "s": "l"}
        assert [c.type_name for c in change.columns] == ["int4", "public.size"]
    locker.close()
