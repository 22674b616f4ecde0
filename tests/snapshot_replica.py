"""A raw walstream.v1 client that builds a replica of tables from a subscription with a snapshot: what an
application keeping a cache or search index in sync does. Used by tests/e2e/test_snapshot_*.py."""

from __future__ import annotations

import queue
import threading
import time

import grpc
from support import until_none

from walstream._proto import walstream_v1_pb2 as pb
from walstream._proto import walstream_v1_pb2_grpc

Row = dict[str, object]
UNCHANGED = object()  # an unchanged TOASTed value: keep the one the replica has


def value(v: pb.Value) -> object:
    kind = v.WhichOneof("kind")
    if kind == "null":
        return None
    if kind == "unchanged_toast":
        return UNCHANGED
    if kind == "array":
        return [value(e) for e in v.array.elements]
    return getattr(v, kind)


class Replica:
    """Rows by (table, key), applied from events; the position of the last event applied and the last
    resume token processed, as an application would keep them together."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[tuple[object, ...], Row]] = {}
        self.position: tuple[int, int] = (0, 0)  # (commit_lsn, ordinal) of the last event applied
        self.token = b""
        self.progress: list[pb.SnapshotProgress] = []
        self.ops: dict[str, int] = {}
        self.repeated = 0  # events at or before the last applied position (expected only after a restart)

    def table(self, name: str) -> dict[tuple[object, ...], Row]:
        return self.rows.setdefault(name, {})

    def apply(self, event: pb.Event, rel: pb.Relation | None) -> None:
        position = (event.commit_lsn, event.ordinal)
        if event.commit_lsn and position <= self.position:
            self.repeated += 1
            return  # delivered again after a restart: applied already
        op = pb.Operation.Name(event.op)
        self.ops[op] = self.ops.get(op, 0) + 1
        if op == "TRUNCATE":
            for relation_id in event.truncate.relation_ids:
                self.rows.pop(self._names[relation_id], None)
        elif rel is not None:
            rows = self.table(f"{rel.schema}.{rel.table}")
            key_cols = [i for i, c in enumerate(rel.columns) if c.is_key]
            previous = None
            if event.HasField("old") and event.old.values:
                previous = rows.pop(tuple(value(event.old.values[i]) for i in key_cols), None)
            if op in ("INSERT", "UPDATE", "SNAPSHOT"):
                row = {c.name: value(v) for c, v in zip(rel.columns, event.new.values, strict=True)}
                key = tuple(row[rel.columns[i].name] for i in key_cols)
                previous = previous if previous is not None else rows.get(key)
                for name, v in row.items():
                    if v is UNCHANGED:
                        row[name] = previous.get(name, UNCHANGED) if previous is not None else UNCHANGED
                rows[key] = row
        if event.commit_lsn:
            self.position = position

    _names: dict[int, str] = {}


class ReplicaClient:
    """Subscribes with a snapshot request and applies every event to `replica`, acking each one."""

    def __init__(self, addr: str, replica: Replica, snapshot: pb.SnapshotRequest, auto_ack: bool = True,
                 **subscription: object) -> None:
        self.replica = replica
        self.auto_ack = auto_ack
        self.unacked: list[int] = []
        self.channel = grpc.insecure_channel(addr)
        self.relations: dict[int, pb.Relation] = {}
        self.error: grpc.RpcError | None = None
        self.done = threading.Event()
        self.snapshot_done = threading.Event()
        self.lock = threading.Lock()
        self.events = 0
        self._out: queue.Queue[pb.SubscribeRequest | None] = queue.Queue()
        self._out.put(pb.SubscribeRequest(subscription=pb.Subscription(snapshot=snapshot, **subscription)))  # type: ignore[arg-type]
        self._call = walstream_v1_pb2_grpc.WalstreamStub(self.channel).Subscribe(until_none(self._out))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        replica = self.replica
        try:
            for response in self._call:
                with self.lock:
                    if response.HasField("progress"):
                        replica.progress.append(response.progress)
                        replica.token = response.progress.resume_token
                        if response.progress.done:
                            self.snapshot_done.set()
                        continue
                    batch = response.batch
                    for rel in batch.relations:
                        self.relations[rel.relation_id] = rel
                        Replica._names[rel.relation_id] = f"{rel.schema}.{rel.table}"
                    for event in batch.events:
                        replica.apply(event, self.relations.get(event.relation_id))
                        self.events += 1
                    self.unacked.extend(event.lsn for event in batch.events)
                    if self.auto_ack:
                        self.ack_all()
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.done.set()

    def ack_all(self) -> None:
        """Acknowledge every event received (one Ack per event: events may share an lsn)."""
        lsns, self.unacked = self.unacked, []
        for lsn in lsns:
            self._out.put(pb.SubscribeRequest(ack=pb.Ack(lsn=lsn)))

    def wait_snapshot(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.snapshot_done.wait(0.1):
            if self.done.is_set() or time.monotonic() > deadline:
                raise AssertionError(f"snapshot not done (error: {self.error}); progress: {self.replica.progress[-3:]}")

    def wait_row(self, table: str, key: tuple[object, ...], row: Row, timeout: float = 60) -> None:
        """Until the replica holds `row` at `key` (a marker written last: the stream has caught up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.replica.table(table).get(key) == row:
                    return
            if self.done.is_set():
                raise AssertionError(f"the call ended: {self.error}")
            time.sleep(0.05)
        raise AssertionError(f"{table} {key} never became {row}: {self.replica.table(table).get(key)}")

    def close(self) -> None:
        self._out.put(None)
        self.done.wait(10)
        self.channel.close()

    def drop(self) -> None:
        """Gone without a goodbye (the client process died)."""
        self._call.cancel()
        self.channel.close()
        self.done.wait(10)
