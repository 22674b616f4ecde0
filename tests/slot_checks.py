"""Honest "the slot did NOT move" checks: wait for the status update that WOULD have moved it, then assert.

Sleeping and then asserting that confirmed_flush_lsn is still behind proves nothing: the status update that
would carry a wrong position may simply not have gone out yet. Instead: wait until walstream has processed
the acknowledgements in question (its walstream_acks_received metric), then until PostgreSQL has received a
status update from walstream sent after that (pg_stat_replication.reply_time, stamped by walstream), and
return the flush position that update reported. A bug that confirmed too much would show there.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import TypeVar

import psycopg2
from prometheus_client.parser import text_string_to_metric_families

from walstream.pgcluster import free_port

T = TypeVar("T")


def metrics_args() -> tuple[int, tuple[str, ...]]:
    """A free port and the `walstream start` options serving metrics on it."""
    port = free_port()
    return port, ("--metrics-port", str(port), "--metrics-host", "127.0.0.1")


def counter(port: int, name: str) -> float:
    """An unlabelled counter (`name` without _total) from walstream's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (name, f"{name}_total") and not sample.labels:
                return float(sample.value)
    raise AssertionError(f"no metric {name} in walstream's /metrics")


def _poll(what: str, check: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting until {what}")
        time.sleep(0.05)


def reported_flush_after_acks(dsn: str, slot: str, metrics_port: int, acks: int, timeout: float = 30) -> int:
    """The flush LSN of walstream's first status update sent after it had processed `acks` acks in all."""
    _poll(f"walstream has processed {acks} acks",
          lambda: True if counter(metrics_port, "walstream_acks_received") >= acks else None, timeout)
    return reported_flush_after(dsn, slot, 0, timeout)


def reported_flush_after(dsn: str, slot: str, read_past: int, timeout: float = 30) -> int:
    """The flush LSN of the first status update walstream sends from now on that reports having read up
    to `read_past` (its write position)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT clock_timestamp()")
            (since,) = cur.fetchone()  # type: ignore[misc]

            def reply() -> int | None:
                cur.execute("SELECT r.flush_lsn - '0/0'::pg_lsn FROM pg_stat_replication r JOIN "
                            "pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = %s "
                            "AND r.reply_time > %s AND r.write_lsn - '0/0'::pg_lsn >= %s", (slot, since, read_past))
                row = cur.fetchone()
                # flush_lsn is NULL while walstream reports 0: nothing confirmed yet (its ack ledger starts
                # at 0 until an ack or an idle advance confirms a position)
                return None if row is None else int(row[0] or 0)

            return _poll("walstream has sent a status update since", reply, timeout)
    finally:
        conn.close()


def quick_status_updates(dsn: str, database: str) -> None:
    """walstream sends status updates at least every wal_sender_timeout / 4 (1 s at least): with 8 s for
    this database, the status update the checks above wait for comes within 2 s, not 10 s."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"ALTER DATABASE \"{database}\" SET wal_sender_timeout = '8s'")
    finally:
        conn.close()
