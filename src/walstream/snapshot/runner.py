"""Backfills of walstream.v1 subscribers: validation before the client joins, then one task per client
that reads chunk after chunk (on a worker thread) and reports progress after each.

Per chunk: wait until the client has room for a full chunk (queue and unacknowledged bound), emit L, read
the chunk, attach it to the client's window, emit H, wait for the adapter to close the window at H, then
queue a SnapshotProgress with the resume token. A chunk the window refuses (visibility guard, a change
without a readable key) is read again, after waiting for the transactions it names to become visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from .._proto import tags
from .._proto import walstream_v1_pb2 as pb
from ..delivery.acks import DeliveryGroup
from ..delivery.hub import HELD_FIXED, HELD_PER_BYTE, Client, Hub
from ..delivery.v1.adapter import Encoder, InvalidSubscription, Subscription, V1Adapter, same_relation
from ..delivery.v1.wire import field as wire_field
from ..events.change import RelationInfo, TxnInfo
from ..source import catalog
from . import tables, token
from .consistent import Held, ParallelCopy, decoded_any
from .reader import ChunkRead, ChunkReader, KeyChanged, is_retryable
from .request import CONSISTENT_CHUNK_ROWS, SnapshotSpec, SnapshotUnavailable
from .tables import TableRef, TableShape
from .window import Chunk, ClientBackfill, History, Outcome, ProgressItem, Window

log = logging.getLogger(__name__)

T = TypeVar("T")
HELD_CHECK = 1.0  # seconds between checks that the held snapshot can still be taken
ROOM_POLL = 0.02  # seconds between checks of the client's room for the next chunk
MAX_SCHEMA_RETRIES = 20  # reads of one chunk failing on a concurrent schema change before giving up
# Test-only switch: turn the visibility guard off to show the race it prevents (tests/e2e/test_snapshot_race.py).
UNGUARDED_ENV = "WALSTREAM_SNAPSHOT_UNGUARDED"
PROCESS_NONCE = secrets.token_hex(8)


class Converters(Protocol):
    def converter(self, type_oid: int) -> Any: ...


class PipelineView(Protocol):
    reconnects: int
    assembler: Any  # History and .relations

    async def ensure_types(self, oids: list[int]) -> None: ...


@dataclass
class Plan:
    """A validated backfill, ready to run once the client has joined."""

    spec: SnapshotSpec
    request_hash: str
    epoch: str
    backfill_id: str
    tables: list[TableRef]
    after: tuple[str, ...] | None
    upto: tuple[str, ...] | None
    chunk_rows: int
    reader: ChunkReader
    executor: ThreadPoolExecutor
    stop: threading.Event = field(default_factory=threading.Event)
    consistent: bool = False  # copies the snapshot held since the slot was created (consistent.py)
    # Names this call's watermarks: a resumed backfill keeps its id, and its earlier call's watermarks may be
    # decoded again (after a restart walstream re-reads the WAL after the slot's confirmed position).
    run: str = field(default_factory=lambda: secrets.token_hex(8))
    seqs: Iterator[int] = field(default_factory=lambda: itertools.count(1))  # numbers this call's chunks
    next_rows: dict[str, int] = field(default_factory=dict)  # by table: rows for its next chunk

    def limit(self, ref: TableRef) -> int:
        """Rows to read in the table's next chunk (SnapshotSpec.next_chunk_rows; chunk_rows is the most)."""
        return self.next_rows.get(ref.name) or self.spec.next_chunk_rows(self.chunk_rows)

    def close(self) -> None:
        """Close the reader's connection (on its own thread, after any read in progress) and the thread."""
        self.stop.set()
        self.executor.submit(self.reader.close)
        self.executor.shutdown(wait=False)


@dataclass
class Counters:
    """For the metrics: totals per table ("schema.table") over every backfill of this process."""

    rows: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    chunks: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    superseded: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    retries: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))


class SnapshotService:
    def __init__(self, conn_str: str, publication: str, slot: str, temporary: bool, hub: Hub, encoder: Encoder,
                 pipeline: PipelineView, types: Converters) -> None:
        self.conn_str, self.publication, self.slot, self.temporary = conn_str, publication, slot, temporary
        self.hub, self.encoder, self.pipeline, self.types = hub, encoder, pipeline, types
        self.guard = os.environ.get(UNGUARDED_ENV, "") != "1"
        self.counters = Counters()
        self.running: dict[int, pb.SnapshotStatus] = {}  # id(plan) -> the table it copies now (for Status)
        self.held = Held(conn_str)  # the snapshot exported with the slot (start --snapshot-consistent)
        if not self.guard:
            log.warning("snapshot visibility guard is OFF (%s=1): for tests only, snapshots may end stale",
                        UNGUARDED_ENV)

    # -- before the client joins ----------------------------------------------------------------------

    async def prepare(self, sub: Subscription, request: pb.SnapshotRequest) -> Plan:
        """Raises InvalidSubscription, SnapshotUnavailable or token.TokenRefused."""
        spec = SnapshotSpec.parse(request)
        chunk_rows = spec.chunk_size(self.hub.queue_size, self.hub.max_unacked, sub.max_events)
        # CONSISTENT with a resume token goes on as INCREMENTAL chunks (the held snapshot is gone by then).
        consistent = spec.mode == pb.CONSISTENT and not spec.resume_token
        if consistent:
            why = self.held.claim(decoded_any(self.pipeline.assembler, self.pipeline.reconnects))
            if why:
                raise SnapshotUnavailable(
                    f"snapshot.mode: CONSISTENT is not available for slot {self.slot}: {why}; use INCREMENTAL, which "
                    "ends in the same state while the stream flows (docs/api.md#consistent)")
            self.hub.held = True  # nothing is read from the slot until the copy is delivered
        executor = ThreadPoolExecutor(1, thread_name_prefix="walstream-snapshot")
        reader = ChunkReader(self.conn_str, self.publication)
        try:
            epoch, refs = await _in(executor, lambda: self._resolve(reader, sub, spec))
            request_hash = spec.request_hash(sub)
            backfill_id, after, upto = secrets.token_hex(8), None, None
            if spec.resume_token:
                position = token.decode(spec.resume_token, epoch, request_hash)
                by_name = {r.name: r for r in refs}
                refs = [by_name[n] for n in position.tables if n in by_name]
                backfill_id = position.backfill_id
                if refs and refs[0].name == (position.tables[0] if position.tables else None):
                    after, upto = position.after, position.upto
            if not consistent:
                tables.check_keys(refs)  # a table without a key left by a CONSISTENT copy cannot go on here
        except BaseException:
            executor.submit(reader.close)
            executor.shutdown(wait=False)
            if consistent:
                self._consistent_over()
            raise
        return Plan(spec, request_hash, epoch, backfill_id, refs, after, upto, chunk_rows, reader, executor,
                    consistent=consistent)

    def _resolve(self, reader: ChunkReader, sub: Subscription, spec: SnapshotSpec) -> tuple[str, list[TableRef]]:
        try:
            rows = reader.query("SELECT system_identifier::text, current_database()::text "
                                "FROM pg_catalog.pg_control_system()")
            if reader.server_version < 140000:
                raise SnapshotUnavailable(
                    "snapshot: needs PostgreSQL 14 or later (watermarks are logical decoding messages, which "
                    f"pgoutput sends from 14 on); this server is {reader.server_version // 10000}")
            conn = reader._connection()
            refs = tables.resolve(conn, self.publication, sub, spec)
        except catalog.DatabaseError as exc:
            raise SnapshotUnavailable(f"snapshot: cannot read the tables: {catalog.first_line(exc)}") from None
        system_id, database = rows[0]
        incarnation = f"temporary/{PROCESS_NONCE}/{self.pipeline.reconnects}" if self.temporary else "permanent"
        return f"{system_id}/{database}/{self.slot}/{incarnation}", refs

    # -- the client's backfill ------------------------------------------------------------------------

    def start(self, plan: Plan, client: Client, adapter: V1Adapter) -> asyncio.Task[None]:
        backfill = ClientBackfill(self.encoder, self.pipeline.assembler, self.guard,
                                  (adapter.sub.max_events, adapter.sub.max_bytes))
        adapter.backfill = backfill
        return asyncio.create_task(self._run(plan, client, backfill))

    def status(self) -> list[pb.SnapshotStatus]:
        """A copy of each running backfill's state (the runner keeps changing its own)."""
        return [pb.SnapshotStatus.FromString(s.SerializeToString()) for s in self.running.values()]

    async def _run(self, plan: Plan, client: Client, backfill: ClientBackfill) -> None:
        try:
            if plan.consistent:
                await self._copy_consistent(plan, client, backfill)
            else:
                await self._tables(plan, client, backfill)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client learns why its backfill stopped; the stream itself is fine
            message = catalog.first_line(exc)
            log.error("snapshot for %s failed: %s", client.name, message)
            code = "FAILED_PRECONDITION" if isinstance(exc, SnapshotUnavailable) else "INTERNAL"
            client.push(ProgressItem(b"", (code, f"snapshot failed: {message}")))
        finally:
            self.running.pop(id(plan), None)
            backfill.windows.clear()
            plan.close()
            if plan.consistent:
                self._consistent_over()

    async def watch_held(self) -> None:
        """While the exported snapshot waits for a CONSISTENT subscriber: give it up once the stream reads a
        change (checked every HELD_CHECK seconds)."""
        while True:
            await asyncio.sleep(HELD_CHECK)
            if self.held.waiting and decoded_any(self.pipeline.assembler, self.pipeline.reconnects):
                self.held.give_up()

    def _consistent_over(self) -> None:
        """The held snapshot is done with: its transaction ends and the stream reads on."""
        self.held.release()
        self.hub.release()

    async def _copy_consistent(self, plan: Plan, client: Client, backfill: ClientBackfill) -> None:
        """Every table at the slot's consistent point, before the first change (consistent.py)."""
        held, hub = self.held, self.hub
        copy = ParallelCopy(self.conn_str, self.publication, held.name, plan.tables,
                            plan.spec.chunk_rows or min(CONSISTENT_CHUNK_ROWS, plan.chunk_rows), plan.stop)
        lsn, txn = held.lsn, TxnInfo(0, held.lsn, 0)
        ordinal = held_bytes = 0
        counters = self.counters
        try:
            for index, ref in enumerate(plan.tables):
                sent = chunks = estimate = 0
                shown = self.running[id(plan)] = pb.SnapshotStatus(client=client.name, table=ref.name)
                done = False
                while not done:
                    item = await copy.feeds[index].queue.get()
                    if isinstance(item, BaseException):
                        raise SnapshotUnavailable(f"copying {ref.name}: {catalog.first_line(item)}")
                    read, after, upto, done = item
                    if read.shape is not None and read.count:
                        await self._room(client, _pieces(backfill, read.count, held_bytes), read.count, held_bytes)
                        if client.closed:
                            return
                        await self.pipeline.ensure_types([c.type_oid for c in read.shape.columns])
                        rel = self._relation(read.shape)
                        items, _ = self.encoder.snapshot_chunk(lsn, txn, rel, read.copy, set(), ordinal + 1,
                                                               *backfill.piece_limits(rel))
                        rows = sum(i.count for i in items)
                        ordinal += rows
                        hub.deliver_group(client, lsn, DeliveryGroup(items, sum(i.size for i in items), rows))
                        held_bytes = HELD_PER_BYTE * read.bytes_read + HELD_FIXED * read.count
                        sent, chunks = sent + rows, chunks + 1
                        estimate = estimate or read.shape.rows_estimate
                        counters.chunks[ref.name] += 1
                        counters.rows[ref.name] += rows
                        shown.rows_sent, shown.chunks, shown.rows_estimate = sent, chunks, estimate
                    remaining = plan.tables[index + 1:] if done else plan.tables[index:]
                    position = token.Position(plan.backfill_id, plan.request_hash, tuple(r.name for r in remaining),
                                              None if done else after, None if done else upto)
                    state = pb.SNAPSHOT_TABLE_DONE if done else pb.SNAPSHOT_RUNNING
                    progress = pb.SnapshotProgress(
                        table=ref.name, state=state, rows_sent=sent, rows_estimate=estimate,
                        position=lsn if read.count else 0, resume_token=token.encode(position, plan.epoch),
                        chunks=chunks)
                    if done and index == len(plan.tables) - 1:
                        progress.state, progress.done = pb.SNAPSHOT_DONE, True
                    client.push(_progress_item(progress))
            if not plan.tables:
                progress = pb.SnapshotProgress(state=pb.SNAPSHOT_DONE, done=True, resume_token=token.encode(
                    token.Position(plan.backfill_id, plan.request_hash, (), None, None), plan.epoch))
                client.push(_progress_item(progress))
        finally:
            copy.close()
        log.info("CONSISTENT snapshot for %s done: %d rows at the slot's starting point", client.name, ordinal)

    async def _tables(self, plan: Plan, client: Client, backfill: ClientBackfill) -> None:
        remaining = list(plan.tables)
        after, upto = plan.after, plan.upto
        ahead: asyncio.Future[tuple[Window, ChunkRead | None]] | None = None  # the next chunk, read early
        held_bytes = 0  # what the last chunk delivered holds until acknowledged (estimates the next one)
        last_table = ""
        try:
            while remaining:
                ref = remaining[0]
                sent = superseded = chunks = retries = 0
                estimate = 0
                done = False
                shown = self.running[id(plan)] = pb.SnapshotStatus(client=client.name, table=ref.name)
                counters = self.counters
                while not done:
                    if ahead is None:
                        rows = plan.limit(ref)
                        await self._room(client, _pieces(backfill, rows, held_bytes), rows, held_bytes)
                        ahead = asyncio.ensure_future(self._read(plan, backfill, ref, after, upto))
                    outcome, read, ahead = await self._chunk(plan, client, backfill, ahead, held_bytes)
                    if read is None:  # read again (counted)
                        retries += 1
                        counters.retries[ref.name] += 1
                        continue
                    if read.shape is None:
                        log.warning("snapshot: table %s was dropped or left the publication; skipped", ref.name)
                        done = True
                    else:
                        estimate = estimate or read.shape.rows_estimate
                        upto = read.upto
                        if outcome.retry:
                            retries += 1
                            counters.retries[ref.name] += 1
                            shown.retries = retries
                            log.info("snapshot chunk %d of %s read again: %s", outcome.seq, ref.name, outcome.retry)
                            if outcome.wait_for:
                                await _in(plan.executor, partial(plan.reader.wait_visible, outcome.wait_for, plan.stop))
                            continue
                        log.debug("snapshot chunk %d of %s: %d rows read after %s up to %s, %d sent, %d superseded, "
                                  "%d completed", outcome.seq, ref.name, read.count, after, read.last, outcome.sent,
                                  outcome.superseded, outcome.completed)
                        chunks += 1
                        held_bytes = HELD_PER_BYTE * read.bytes_read + HELD_FIXED * read.count
                        sent += outcome.sent
                        superseded += outcome.superseded
                        counters.chunks[ref.name] += 1
                        counters.rows[ref.name] += outcome.sent
                        counters.superseded[ref.name] += outcome.superseded
                        shown.rows_sent, shown.chunks, shown.rows_superseded = sent, chunks, superseded
                        shown.rows_estimate = estimate
                        if read.last is not None:
                            after = read.last
                        done = last_of_table(read)
                    if done:
                        remaining.pop(0)
                        after = upto = None
                    position = token.Position(plan.backfill_id, plan.request_hash,
                                              tuple(r.name for r in remaining), after, upto)
                    last_table = ref.name
                    state = pb.SNAPSHOT_TABLE_DONE if done else pb.SNAPSHOT_RUNNING
                    progress = pb.SnapshotProgress(
                        table=ref.name, state=state, rows_sent=sent, rows_estimate=estimate,
                        position=outcome.position if outcome.sent else 0,
                        resume_token=token.encode(position, plan.epoch), rows_superseded=superseded,
                        chunks=chunks, retries=retries)
                    if done and not remaining:
                        progress.state, progress.done = pb.SNAPSHOT_DONE, True
                    client.push(_progress_item(progress))
        finally:
            if ahead is not None:  # the call ended while a chunk was read ahead
                ahead.cancel()
        if not plan.tables:  # nothing to copy: say so, once
            progress = pb.SnapshotProgress(table=last_table, state=pb.SNAPSHOT_DONE, done=True,
                                           resume_token=token.encode(token.Position(
                                               plan.backfill_id, plan.request_hash, (), None, None), plan.epoch))
            client.push(_progress_item(progress))
        log.info("snapshot for %s done", client.name)

    def _has_room(self, client: Client, pieces: int, rows: int, held_bytes: int) -> bool:
        hub, tracker = self.hub, self.hub.tracker
        return not (len(client.queue) + pieces > hub.queue_size or tracker.outstanding + rows > hub.max_unacked
                    or (tracker.outstanding_bytes and tracker.outstanding_bytes + held_bytes > hub.max_unacked_bytes))

    async def _room(self, client: Client, pieces: int, rows: int, held_bytes: int) -> None:
        """Until the client's queue and the unacknowledged bounds have room for a whole chunk: `rows` rows
        (--max-unacked counts events) queued as `pieces` (_pieces), holding about `held_bytes` (the previous
        chunk's). In bytes, a chunk goes when nothing is
        unacknowledged, however large (as the hub lets one message through)."""
        while not self._has_room(client, pieces, rows, held_bytes) and not client.closed:
            await asyncio.sleep(ROOM_POLL)

    @staticmethod
    def _window(plan: Plan, backfill: ClientBackfill, ref: TableRef) -> Window:
        """A chunk's window, joining the client's before its low watermark is emitted (behind one still
        waiting for its high watermark, when read ahead)."""
        window = Window(f"{plan.backfill_id}/{plan.run}", next(plan.seqs), ref.relid, ref.key)
        backfill.windows.append(window)
        return window

    async def _read(self, plan: Plan, backfill: ClientBackfill, ref: TableRef, after: tuple[str, ...] | None,
                    upto: tuple[str, ...] | None, window: Window | None = None) -> tuple[Window, ChunkRead | None]:
        """A chunk's low watermark, then the chunk (None: read it again). `window`: read ahead, its low
        watermark emitted already (with the chunk before's high one)."""
        emit_low = window is None
        window = window or self._window(plan, backfill, ref)
        reader = plan.reader
        started = time.monotonic()
        limit = plan.limit(ref)
        try:
            if emit_low:
                await _in(plan.executor, lambda: reader.emit(window.low))
            read = await _in(plan.executor, lambda: reader.read(ref, after, upto, limit))
        except KeyChanged as exc:
            backfill.drop(window)
            raise SnapshotUnavailable(
                f"the key of {ref.name} changed during the backfill (from {', '.join(ref.key)} to "
                f"{', '.join(exc.key) or 'no key'}); start a new backfill of it without resume_token") from None
        except catalog.DatabaseError as exc:
            backfill.drop(window)
            if not is_retryable(exc):
                raise
            log.info("snapshot chunk %d of %s read again: %s", window.seq, ref.name, catalog.first_line(exc))
            await asyncio.sleep(ROOM_POLL)
            return window, None
        except BaseException:
            backfill.drop(window)
            raise
        if read.shape is None or not read.count:
            backfill.drop(window)
        else:  # the next chunk of the table is sized by this one's row width
            plan.next_rows[ref.name] = plan.spec.next_chunk_rows(plan.chunk_rows, read.count, read.bytes_read)
        log.debug("snapshot chunk %d of %s: read in %.1f ms (%d bytes)", window.seq, ref.name,
                  (time.monotonic() - started) * 1000, read.bytes_read)
        return window, read

    async def _chunk(self, plan: Plan, client: Client, backfill: ClientBackfill,
                     reading: asyncio.Future[tuple[Window, ChunkRead | None]], held_bytes: int,
                     ) -> tuple[Outcome, ChunkRead | None, asyncio.Future[tuple[Window, ChunkRead | None]] | None]:
        """A chunk read (`reading`: started by the caller, or read ahead by the chunk before), closed at its
        high watermark: (its outcome, the read, the next chunk's read if it was started meanwhile).

        Reading ahead: when the table has a next chunk and the client has room for two chunks, that chunk's
        low watermark goes with this one's high watermark, and the chunk is read while H is still on its way
        through the stream. The windows stay apart: H(k) and then L(k+1) are emitted in that order in one
        transaction (decoded in that order), on the one connection that emits every watermark; window k
        closes at H(k) before window k+1 opens at L(k+1), and ClientBackfill.windows takes them in that
        order. Chunk k+1's snapshot is taken after L(k+1) is committed, as without reading ahead. Its H is
        emitted only once chunk k's outcome is known: if chunk k must be read again, window k+1 is dropped
        before its H exists and its rows are never delivered, so no progress (resume token) gets ahead of a
        chunk not delivered."""
        window, read = await reading
        if read is None or read.shape is None or not read.count:
            return Outcome(seq=window.seq), read, None
        await self.pipeline.ensure_types([c.type_oid for c in read.shape.columns])  # typed as INSERT values
        window.chunk = Chunk(self._relation(read.shape), read.copy, read.snapshot)
        emitted = time.monotonic()
        ref = read.shape.ref
        following = None
        both = read.count + plan.limit(ref)  # this chunk and the next
        if not last_of_table(read) and self._has_room(client, _pieces(backfill, both, 2 * held_bytes), both,
                                                      2 * held_bytes):
            following = self._window(plan, backfill, ref)
        marks = (window.high,) if following is None else (window.high, following.low)
        try:
            await _in(plan.executor, lambda: plan.reader.emit(*marks))
        except BaseException:
            if following is not None:
                backfill.drop(following)
            raise
        ahead = None
        if following is not None:
            ahead = asyncio.ensure_future(self._read(plan, backfill, ref, read.last, read.upto, following))
        outcome = await window.outcome
        outcome.seq = window.seq
        if outcome.retry and ahead is not None:
            await _discard(backfill, ahead)
            ahead = None
        log.debug("snapshot chunk %d of %s: closed %.1f ms after its high watermark was emitted", window.seq,
                  ref.name, (time.monotonic() - emitted) * 1000)
        return outcome, read, ahead

    def _relation(self, shape: TableShape) -> RelationInfo:
        """The chunk's relation as pgoutput would describe it; the stream's own if it is the same."""
        ref = shape.ref
        rel = RelationInfo(ref.relid, ref.schema, ref.table, shape.replica_identity, shape.columns,
                           tuple(self.types.converter(c.type_oid) for c in shape.columns),
                           tuple(i for i, c in enumerate(shape.columns) if c.is_key),
                           _decoder(self.pipeline.assembler))
        current = self.pipeline.assembler.relations.get(ref.relid)
        return current if current is not None and same_relation(current, rel) else rel


def _decoder(assembler: Any) -> Callable[[bytes], str]:
    decoder: Callable[[bytes], str] = assembler.text_decoder
    return decoder


def last_of_table(read: ChunkRead) -> bool:
    """Whether no chunk of the table follows this one (read up to the key its backfill goes to)."""
    return read.upto is None or read.last is None or read.last == read.upto or read.count < read.limit


def _pieces(backfill: ClientBackfill, rows: int, held_bytes: int) -> int:
    """Queue entries a chunk of `rows` rows holding about `held_bytes` is queued as: pieces of at most the
    client's max_events rows, and of max_bytes bytes (Encoder.snapshot_chunk)."""
    max_events, max_bytes = backfill.limits
    return -(-rows // max(1, max_events)) + held_bytes // max(1, max_bytes)


async def _discard(backfill: ClientBackfill, reading: asyncio.Future[tuple[Window, ChunkRead | None]]) -> None:
    """A chunk read ahead that is not to be delivered: its window goes (its error, if any, comes back when
    the chunk is read again)."""
    with contextlib.suppress(Exception):
        window, _ = await reading
        backfill.drop(window)
        log.debug("snapshot chunk %d, read ahead, is dropped: the chunk before is read again", window.seq)


async def _in(executor: ThreadPoolExecutor, work: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(executor, work)


__all__ = ["History", "InvalidSubscription", "Plan", "SnapshotService", "SnapshotUnavailable"]


def _progress_item(progress: pb.SnapshotProgress) -> ProgressItem:
    """SubscribeResponse.progress, framed for the client's queue."""
    return ProgressItem(wire_field(tags.SUBSCRIBE_RESPONSE_PROGRESS, progress.SerializeToString()))
