"""What Client and AsyncClient share and that does no I/O: options, decoding, acknowledgements, retry policy.

Acknowledgements. The server matches an `Ack{lsn}` to *the oldest event sent on this stream and not yet
acknowledged whose lsn is that one*, and acknowledges it and everything sent before it (docs/delivery.md).
Event LSNs are not unique, so the library keeps, per stream, the events received and not yet acknowledged
on it, and turns "acknowledge up to this event" into the exact Acks that mean that: the event's lsn, once
for every unacknowledged event up to it with that same lsn (almost always once). The rows of a snapshot
chunk (the SNAPSHOT events with one lsn before its SnapshotProgress; a CONSISTENT copy's chunks all share
one lsn) are one delivery: one Ack covers them all.

Across reconnects the library remembers the highest `(commit_lsn, ordinal)` the application acknowledged
(the pair orders every event). An event at or below it that arrives again (the server resends what it had
not seen acknowledged) is not yielded again; it is acknowledged on the new stream for the application, so it
does not hold the slot back. Every other event is yielded, including redeliveries of events the application
saw but had not acknowledged.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from .._proto import walstream_v1_pb2 as pb
from .model import Batch, Change, Column, LogicalMessage, SinkStatus, SnapshotProgress, Truncate
from .values import row_to_dict

log = logging.getLogger("walstream.client")

DEFAULT_TARGET = "127.0.0.1:50051"
ROW_OPERATIONS = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")
MAX_EVENTS = 10_000
MAX_BYTES = 4 * 1024 * 1024
MAX_DELAY_MS = 10_000
# Status codes after which a stream that was up once is opened again. Anything else (a refused
# subscription, a method the server does not have, a server bug) is raised to the application.
RETRYABLE = frozenset({"UNAVAILABLE", "CANCELLED", "ABORTED", "OK"})

_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=timezone.utc)

Position = tuple[int, int]


class StreamError(Exception):
    """The stream failed in a way reconnecting does not fix (or reconnecting is off). `code`: gRPC status name."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class ServerUnreachable(StreamError):
    """The first connection to walstream failed: nothing listens there, or it is not reachable."""


@dataclass(frozen=True)
class Options:
    target: str
    include_tables: tuple[str, ...]
    exclude_tables: tuple[str, ...]
    operations: tuple[str, ...]
    transaction_boundaries: bool
    logical_messages: bool
    max_events: int
    max_bytes: int
    max_delay_ms: int
    client_name: str
    reconnect: bool
    backoff: tuple[float, float]
    close_timeout: float
    metadata: tuple[tuple[str, str], ...] = field(repr=False)  # may hold the bearer token
    channel_options: tuple[tuple[str, Any], ...]
    snapshot: tuple[str, ...] | None = None  # None: no snapshot; (): every table the subscription receives
    snapshot_mode: str = "INCREMENTAL"
    snapshot_chunk_rows: int = 0
    resume_token: bytes = field(default=b"", repr=False)


def _strings(name: str, value: str | Iterable[str]) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else tuple(value)
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"{name}: expected table names or patterns, got {item!r}")
    return tuple(item.strip() for item in items)


def make_options(
    target: str,
    tables: str | Iterable[str],
    exclude_tables: str | Iterable[str],
    operations: str | Iterable[str],
    transaction_boundaries: bool,
    logical_messages: bool,
    max_events: int,
    max_bytes: int,
    max_delay_ms: int,
    client_name: str | None,
    reconnect: bool,
    backoff: tuple[float, float],
    close_timeout: float,
    metadata: Iterable[tuple[str, str]],
    channel_options: Iterable[tuple[str, Any]],
) -> Options:
    """Check the options once, with errors that name the option."""
    ops = tuple(op.strip().upper() for op in ((operations,) if isinstance(operations, str) else operations))
    for op in ops:
        if op not in ROW_OPERATIONS:
            raise ValueError(f"operations: unknown operation {op!r}: use {', '.join(ROW_OPERATIONS)}")
    checks = (("max_events", max_events, 1, MAX_EVENTS), ("max_bytes", max_bytes, 1, MAX_BYTES),
              ("max_delay_ms", max_delay_ms, 0, MAX_DELAY_MS))
    for name, value, low, high in checks:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name}: expected a whole number from {low} to {high}, got {value!r}")
    initial, maximum = backoff
    if not 0 < initial <= maximum:
        raise ValueError(f"backoff: expected (initial, maximum) seconds with 0 < initial <= maximum, got {backoff!r}")
    if not target or not isinstance(target, str):
        raise ValueError(f"target: expected HOST:PORT, got {target!r}")
    return Options(
        target=target,
        include_tables=_strings("tables", tables),
        exclude_tables=_strings("exclude_tables", exclude_tables),
        operations=tuple(dict.fromkeys(ops)),
        transaction_boundaries=bool(transaction_boundaries),
        logical_messages=bool(logical_messages),
        max_events=max_events,
        max_bytes=max_bytes,
        max_delay_ms=max_delay_ms,
        client_name=client_name or "",
        reconnect=bool(reconnect),
        backoff=(float(initial), float(maximum)),
        close_timeout=float(close_timeout),
        metadata=tuple((str(k), str(v)) for k, v in metadata),
        channel_options=tuple(channel_options),
    )


SNAPSHOT_MODES = ("INCREMENTAL", "CONSISTENT")


def with_snapshot(options: Options, snapshot: bool | str | Iterable[str] | None, mode: str, chunk_rows: int,
                  resume_token: bytes | None) -> Options:
    """The snapshot options, checked: snapshot True or [] for every table, patterns, or None/False for none."""
    if snapshot is None or snapshot is False:
        if resume_token:
            raise ValueError("resume_token: given without snapshot; pass snapshot=... as when it was issued")
        return options
    tables = () if snapshot is True else _strings("snapshot", snapshot)
    upper = str(mode).strip().upper()
    if upper not in SNAPSHOT_MODES:
        accepted = " or ".join(m.lower() for m in SNAPSHOT_MODES)
        raise ValueError(f"snapshot_mode: unknown mode {mode!r}: use {accepted}")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 0:
        raise ValueError(f"snapshot_chunk_rows: expected a whole number >= 0 (0: the server chooses), "
                         f"got {chunk_rows!r}")
    if resume_token is not None and not isinstance(resume_token, (bytes, bytearray)):
        raise ValueError(f"resume_token: expected bytes (SnapshotProgress.resume_token), "
                         f"got {type(resume_token).__name__}")
    return dataclasses.replace(options, snapshot=tables, snapshot_mode=upper, snapshot_chunk_rows=chunk_rows,
                               resume_token=bytes(resume_token or b""))


def subscription(options: Options, resume_token: bytes = b"") -> pb.SubscribeRequest:
    """The first request of a stream; with a snapshot, resuming after `resume_token` (else the option's)."""
    request = _subscription(options)
    if options.snapshot is not None:
        request.subscription.snapshot.CopyFrom(pb.SnapshotRequest(
            tables=options.snapshot, mode=options.snapshot_mode,
            resume_token=resume_token or options.resume_token, chunk_rows=options.snapshot_chunk_rows))
    return request


def _subscription(options: Options) -> pb.SubscribeRequest:
    return pb.SubscribeRequest(subscription=pb.Subscription(
        include_tables=options.include_tables,
        exclude_tables=options.exclude_tables,
        operations=options.operations,  # enum names
        transaction_boundaries=options.transaction_boundaries,
        logical_messages=options.logical_messages,
        batch=pb.BatchLimits(max_events=options.max_events, max_bytes=options.max_bytes,
                             max_delay_ms=options.max_delay_ms),
        client_name=options.client_name,
    ))


def grpc_options(options: Options) -> list[tuple[str, Any]]:
    # A single event larger than the batch limit is sent alone and may exceed gRPC's 4 MiB default.
    return [("grpc.max_receive_message_length", -1), *options.channel_options]


class Backoff:
    """Exponential backoff: initial, doubling to maximum, each delay jittered down by up to a quarter."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def reset(self) -> None:
        self._next = self.initial

    def delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay * random.uniform(0.75, 1.0)


def failure(code: str, details: str, options: Options, established: bool) -> StreamError | None:
    """None: open the stream again. Otherwise the error to raise."""
    target = options.target
    if code == "UNIMPLEMENTED":
        return StreamError(f"the server at {target} does not serve walstream.v1 (is it an older walstream?): "
                           f"{details}", code)
    if code in RETRYABLE and options.reconnect and established:
        return None
    if not established and code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        return ServerUnreachable(f"cannot reach walstream at {target}: {short_details(details)}", code)
    if code == "OK":
        return StreamError(f"walstream at {target} ended the stream", code)
    return StreamError(f"walstream at {target}: {code}: {details}", code)


def short_details(details: str) -> str:
    """gRPC's connection errors end with the useful part: 'failed to connect ...: Connection refused'."""
    details = (details or "").strip()
    tail = details.rsplit(": ", 1)[-1].strip() if ": " in details else details
    return tail or "unavailable"


# ---- decoding ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Relation:
    schema: str
    table: str
    columns: tuple[Column, ...]
    names: tuple[str, ...]


def _relation(rel: pb.Relation) -> _Relation:
    columns = tuple(Column(c.name, c.type_name, c.type_oid, c.type_modifier, c.is_key) for c in rel.columns)
    return _Relation(rel.schema, rel.table, columns, tuple(c.name for c in columns))


def _op_name(op: int) -> str:
    try:
        return pb.Operation.Name(op)
    except ValueError:
        return f"OPERATION_{op}"


def decode_event(event: pb.Event, relations: dict[int, _Relation]) -> Change:
    op = _op_name(event.op)
    commit_time = _EPOCH_UTC + timedelta(microseconds=event.commit_time_us) if event.commit_time_us else None
    common: dict[str, Any] = dict(op=op, lsn=event.lsn, xid=event.xid, commit_lsn=event.commit_lsn,
                                  commit_time=commit_time, ordinal=event.ordinal)
    if event.HasField("new") or event.HasField("old") or event.relation_id:
        rel = relations.get(event.relation_id)
        if rel is None:
            raise StreamError(f"protocol error: the {op} at {event.commit_lsn}/{event.ordinal} refers to relation "
                              f"{event.relation_id}, which the server never described")
        new = old = None
        toast: frozenset[str] = frozenset()
        try:
            if event.HasField("new"):
                new, toast = row_to_dict(event.new.values, rel.names)
            if event.HasField("old"):
                old, _ = row_to_dict(event.old.values, rel.names, skip_unset=True)
        except ValueError as exc:
            raise StreamError(f"protocol error in {op} on {rel.schema}.{rel.table}: {exc}") from None
        return Change(schema=rel.schema, table=rel.table, new=new, old=old,
                      old_is_key=event.old_row == pb.OLD_ROW_KEY, unchanged_toast=toast, columns=rel.columns,
                      relation_id=event.relation_id, **common)
    if event.HasField("truncate"):
        t = event.truncate
        tables = tuple((r.schema, r.table) if (r := relations.get(oid)) else ("", f"relation {oid}")
                       for oid in t.relation_ids)
        first = tables[0] if tables else ("", "")
        return Change(schema=first[0], table=first[1], truncate=Truncate(tables, t.cascade, t.restart_identity),
                      **common)
    if event.HasField("message"):
        m = event.message
        return Change(schema="", table="", message=LogicalMessage(m.prefix, m.content, m.transactional), **common)
    end_lsn = event.end_lsn if op == "COMMIT" else None
    return Change(schema="", table="", end_lsn=end_lsn, **common)


# ---- one subscriber's state over reconnects ---------------------------------------------------------------

class Session:
    """Relations, the highest acknowledged position, and the current stream's unacknowledged events.

    Callers serialise access (Client holds a lock; AsyncClient runs on one event loop).
    """

    def __init__(self) -> None:
        self.relations: dict[int, _Relation] = {}
        self.acked: Position | None = None  # highest (commit_lsn, ordinal) the application acknowledged
        self.streams = 0
        # (position, lsn to Ack, or -1: covered by an earlier event's Ack), in the order received
        self._unacked: deque[tuple[Position, int]] = deque()
        self._chunk_lsn = -1  # lsn of the chunk whose SNAPSHOT rows are arriving (-1: none since a progress)
        # Snapshot progress: the latest per table as received, and the resume token of the last chunk whose
        # rows the application acknowledged (a progress comes after its chunk's rows).
        self.progress: dict[str, SnapshotProgress] = {}
        self.resume_token = b""
        self.snapshot_done = False  # the final progress arrived and its rows are acknowledged
        self._tokens: deque[tuple[Position, SnapshotProgress]] = deque()

    def new_stream(self) -> None:
        """A new stream starts: the server knows nothing of what the previous one was sent."""
        self.streams += 1
        self._unacked.clear()
        self._chunk_lsn = -1
        self._tokens.clear()  # chunks not acknowledged are sent again after resume_token

    def receive_progress(self, message: pb.SnapshotProgress) -> SnapshotProgress:
        progress = SnapshotProgress(
            table=message.table, state=_state_name(message.state), rows_sent=message.rows_sent,
            rows_estimate=message.rows_estimate, position=message.position, resume_token=message.resume_token,
            done=message.done, rows_superseded=message.rows_superseded, chunks=message.chunks,
            retries=message.retries)
        self._chunk_lsn = -1  # its chunk is over: the next SNAPSHOT row starts another delivery
        self.progress[progress.table] = progress
        if self._unacked:  # its chunk's rows (and what came before them) are not all acknowledged yet
            self._tokens.append((self._unacked[-1][0], progress))
        else:
            self._settle(progress)
        return progress

    def _settle(self, progress: SnapshotProgress) -> None:
        self.resume_token = progress.resume_token
        self.snapshot_done = self.snapshot_done or progress.done

    def receive(self, batch: pb.Batch) -> tuple[Batch | None, list[int]]:
        """Decode a batch; returns what to yield (None: nothing new) and Acks to send now."""
        for rel in batch.relations:
            self.relations[rel.relation_id] = _relation(rel)
        acked, relations, unacked = self.acked, self.relations, self._unacked
        changes: list[Change] = []
        redelivered = False
        snapshot, chunk_lsn = pb.SNAPSHOT, self._chunk_lsn
        for event in batch.events:
            position = (event.commit_lsn or event.lsn, event.ordinal)  # as Change.position
            lsn = event.lsn
            if event.op == snapshot:
                lsn, chunk_lsn = (-1 if lsn == chunk_lsn else lsn), lsn  # a chunk: one Ack for all its rows
            else:
                chunk_lsn = -1
            unacked.append((position, lsn))
            if acked is not None and position <= acked:
                redelivered = True  # the application acknowledged it already: acknowledge it again, quietly
                continue
            changes.append(decode_event(event, relations))
        self._chunk_lsn = chunk_lsn
        acks = self._acks_up_to_acked() if redelivered else []
        return (Batch(tuple(changes)) if changes else None), acks

    def ack(self, item: Change | Batch) -> list[int]:
        """The application acknowledges `item` and everything before it. Returns the Acks to send."""
        change = item.changes[-1] if isinstance(item, Batch) else item
        if not isinstance(change, Change):
            raise TypeError(f"ack() takes a Change or a Batch, not {type(item).__name__}")
        position = change.position
        if self.acked is None or position > self.acked:
            self.acked = position
        tokens = self._tokens
        while tokens and tokens[0][0] <= self.acked:
            self._settle(tokens.popleft()[1])
        return self._acks_up_to_acked()

    def _acks_up_to_acked(self) -> list[int]:
        acked, unacked = self.acked, self._unacked
        if acked is None:
            return []
        lsns: list[int] = []
        while unacked and unacked[0][0] <= acked:
            lsn = unacked.popleft()[1]
            if lsn >= 0:
                lsns.append(lsn)
        if not lsns:
            return []
        last = lsns[-1]
        # An Ack matches the oldest unacknowledged event with its lsn: repeat it for every earlier one.
        return [last] * lsns.count(last)

    @property
    def unacked(self) -> int:
        return len(self._unacked)


def _state_name(state: int) -> str:
    try:
        return pb.SnapshotState.Name(state).removeprefix("SNAPSHOT_")
    except ValueError:
        return f"STATE_{state}"


def status_from(response: pb.StatusResponse) -> dict[str, Any]:
    return dict(slot=response.slot, temporary=response.temporary, confirmed_lsn=response.confirmed_lsn,
                written_lsn=response.written_lsn, lag_bytes=response.lag_bytes,
                connected_clients=response.connected_clients, server_version=response.server_version,
                walstream_version=response.walstream_version, streaming=response.streaming,
                pgoutput_version=response.pgoutput_version,
                sinks=tuple(SinkStatus(s.url, s.connected, s.published, s.acked, s.retries, s.in_flight, s.queued)
                            for s in response.sinks))


def metadata_list(options: Options) -> Sequence[tuple[str, str]] | None:
    return options.metadata or None


class SnapshotState:
    """The snapshot side of Client and AsyncClient: the resume token and progress their session keeps."""

    _session: Session
    options: Options

    @property
    def resume_token(self) -> bytes:
        """The resume token of the last snapshot chunk whose rows you acknowledged (b"": none yet). Store it
        with your data; pass it as resume_token= to continue the snapshot after a restart."""
        return self._session.resume_token or self.options.resume_token

    @property
    def snapshot_progress(self) -> dict[str, SnapshotProgress]:
        """The latest progress received per table ("schema.table")."""
        return dict(self._session.progress)

    @property
    def snapshot_done(self) -> bool:
        """The snapshot is complete and you acknowledged its last rows."""
        return self._session.snapshot_done
