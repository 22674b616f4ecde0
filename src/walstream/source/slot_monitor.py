"""The slot as PostgreSQL sees it: lag and retained WAL for the metrics, and the retained-WAL warning.

Samples come over a plain (non-replication) connection of the monitor's own, opened on first use and again
after it was lost. A sample is a blocking query, so it never runs on the event loop: the periodic check
runs it in a worker thread, and a metrics scrape (already in the HTTP server's thread) takes a fresh one
when the last is older than a second.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions

from . import catalog

log = logging.getLogger(__name__)

CHECK_EVERY = 10.0  # seconds between periodic samples (the warning needs no scrape)
WARN_REPEAT = 300.0  # seconds between repeated warnings while retained WAL stays over the limit
LOCK_WAIT = 2.0  # seconds a scrape waits for a sample in progress before it uses the previous one


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic() of the sample
    state: catalog.SlotState | None  # None: PostgreSQL could not be asked
    over_limit: bool = False  # retained WAL at or over the warning size (or that close to invalidation)


def format_size(n: int) -> str:
    """Bytes as PostgreSQL's pg_size_pretty would say them, roughly: 1536 -> '1.5 kB'."""
    value = float(n)
    for unit in ("bytes", "kB", "MB", "GB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


class SlotMonitor:
    def __init__(self, conn_str: str, slot: str, warn_bytes: int,
                 connect: Callable[[str], psycopg2.extensions.connection] = catalog.connect) -> None:
        self.slot = slot
        self.warn_bytes = warn_bytes  # 0: never warn
        self.last: Sample | None = None
        self.errors = 0  # samples that failed (PostgreSQL unreachable)
        self._side = catalog.SideConnection(conn_str, connect)
        self._lock = threading.Lock()  # one sample at a time: a scrape waiting for one reuses it
        self._warned_at: float | None = None  # monotonic time of the last warning while over the limit
        self._wal_status: str | None = None

    # -- sampling (blocking: worker or HTTP threads only) ----------------------------------------------

    def sample(self) -> Sample:
        with self._lock:
            return self._sample()

    def latest(self, max_age: float = 1.0) -> Sample | None:
        """The last sample if younger than max_age, else a new one (the last one if a sample is in progress
        for longer than LOCK_WAIT)."""
        last = self.last
        if last is not None and time.monotonic() - last.at < max_age:
            return last
        if not self._lock.acquire(timeout=LOCK_WAIT):
            return self.last
        try:
            last = self.last
            if last is not None and time.monotonic() - last.at < max_age:
                return last  # another thread sampled while this one waited
            return self._sample()
        finally:
            self._lock.release()

    def _sample(self) -> Sample:
        state = self._query()
        over = self._check(state) if state is not None else (self.last.over_limit if self.last else False)
        sample = Sample(time.monotonic(), state, over)
        self.last = sample
        return sample

    def _query(self) -> catalog.SlotState | None:
        try:
            return self._side.run(lambda conn: catalog.slot_state(conn, self.slot))
        except catalog.SideQueryFailed as exc:
            self.errors += 1
            log.debug("cannot sample replication slot %s: %s", self.slot, exc)
            return None

    def _check(self, state: catalog.SlotState) -> bool:
        """Log the warnings: retained WAL over the limit (on crossing, then every WARN_REPEAT seconds), and
        a wal_status that says the slot is about to be, or was, invalidated."""
        if state.wal_status != self._wal_status:
            if state.wal_status in ("unreserved", "lost"):
                log.warning("replication slot %s: wal_status is %s (%s)", self.slot, state.wal_status,
                            "its WAL is past max_slot_wal_keep_size and may be removed at the next checkpoint"
                            if state.wal_status == "unreserved" else "it was invalidated")
            self._wal_status = state.wal_status
        retained = state.retained_bytes
        if not self.warn_bytes or retained is None:
            return False
        over = retained >= self.warn_bytes
        # With max_slot_wal_keep_size set, being that close to invalidation is as bad as retaining that much.
        close = state.safe_wal_size is not None and state.safe_wal_size < self.warn_bytes
        now = time.monotonic()
        if not (over or close):
            if self._warned_at is not None:
                log.info("replication slot %s retains %s of WAL again, under the warning size %s", self.slot,
                         format_size(retained), format_size(self.warn_bytes))
            self._warned_at = None
            return False
        if self._warned_at is None or now - self._warned_at >= WARN_REPEAT:
            self._warned_at = now
            why = (f"retained WAL {format_size(retained)} is over --retained-wal-warning "
                   f"{format_size(self.warn_bytes)}" if over else
                   f"only {format_size(max(0, state.safe_wal_size or 0))} of WAL can still be written before "
                   f"max_slot_wal_keep_size invalidates it (--retained-wal-warning {format_size(self.warn_bytes)})")
            log.warning("replication slot %s: %s; clients must acknowledge to release it", self.slot, why)
        return True

    def close(self) -> None:
        self._side.close()

    # -- the periodic check (on the event loop) --------------------------------------------------------

    async def run(self, every: float = CHECK_EVERY) -> None:
        """Sample every `every` seconds until cancelled."""
        while True:
            await asyncio.to_thread(self.latest, every / 2)
            await asyncio.sleep(every)
