"""What a sink publishes for a change: the record (body, key, headers, dedup id), built from the same code
as the other outputs, never a second serializer.

- json: the object `walstream tail --format json` prints (walstream.cli.tail.change_object), made from the
  change's walstream.v1 Event exactly as a v1 client decodes it (walstream.client.core.decode_event).
- protobuf: the walstream.v1.Event bytes; its Relation (column names and types) in the `relation` header,
  base64 of the walstream.v1.Relation bytes.

Headers (both brokers, text): op, schema, table, lsn, commit_lsn, ordinal, xid, commit_time_us,
content-type, and for protobuf relation. The dedup id is `<slot>:<commit_lsn>:<ordinal>` (with `.<i>` for
the i-th table of a TRUNCATE): (commit_lsn, ordinal) identifies a change for good, so a change published
again after a crash carries the same id.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import orjson

from .._proto import walstream_v1_pb2 as pb
from ..cli.tail import json_line, jsonable
from ..client.core import _relation, decode_event
from ..delivery.v1.adapter import Encoder, same_relation
from ..delivery.v1.typed import TypedCatalog
from ..events.change import PG_EPOCH_US, ChangeEvent, Op, RelationInfo, TxnInfo
from ..lsn import format_lsn

CONTENT_TYPES = {"json": "application/json", "protobuf": "application/x-protobuf; messageType=walstream.v1.Event"}


@dataclass(slots=True, eq=False)
class Record:
    schema: str
    table: str
    value: bytes
    key: bytes | None  # the replica identity key as a JSON object (None: TRUNCATE, or a table without one)
    headers: dict[str, str]
    msg_id: str
    lsn: int
    commit_lsn: int
    ordinal: int
    commit_time_us: int  # since 1970-01-01 UTC

    @property
    def size(self) -> int:
        """Bytes the broker counts: value, key and headers (each header with a little framing)."""
        head = sum(len(k) + len(v) + 4 for k, v in self.headers.items()) + len(self.msg_id) + 24
        return len(self.value) + len(self.key or b"") + head

    def describe(self) -> str:
        where = f"{self.schema}.{self.table}" if self.table else "its transaction"
        return (f"{self.headers['op']} on {where} at LSN {format_lsn(self.lsn)} "
                f"(commit {format_lsn(self.commit_lsn)}, ordinal {self.ordinal})")


class _RelationView:
    __slots__ = ("info", "client", "header")

    def __init__(self, info: RelationInfo, proto: pb.Relation) -> None:
        self.info = info
        self.client = _relation(proto)
        self.header = base64.b64encode(proto.SerializeToString()).decode()


class BodyBuilder:
    """Records for one sink. Its own Encoder (the gRPC subscribers' one caches the event being read; a sink
    encodes later, in its own task)."""

    def __init__(self, typed: TypedCatalog, fmt: str, source: str) -> None:
        self.encoder = Encoder(typed)
        self.format = fmt
        self.source = source
        self._relations: dict[int, _RelationView] = {}
        self._content_type = CONTENT_TYPES[fmt]
        self._txn: TxnInfo | None = None
        self._txn_cache: tuple[str, str, int, str] = ("", "", 0, "")

    def _txn_texts(self, txn: TxnInfo) -> tuple[str, str, int, str]:
        """(commit_lsn, xid, commit time in µs since 1970, the same as text) of a transaction, made once for
        all its records."""
        if self._txn is not txn:
            commit_time_us = txn.commit_ts + PG_EPOCH_US
            self._txn = txn
            self._txn_cache = (format_lsn(txn.commit_lsn), str(txn.xid), commit_time_us, str(commit_time_us))
        return self._txn_cache

    def record(self, event: ChangeEvent, rel: RelationInfo) -> Record:
        txn = event.txn
        assert txn is not None  # row changes and TRUNCATE are transactional
        if event.op is Op.TRUNCATE:
            item = self.encoder.truncate_item(event, (rel,))
            index = next(i for i, r in enumerate(event.truncated) if r is rel)
            msg_id = f"{self.source}:{self._txn_texts(txn)[0]}:{event.ordinal}.{index}"
        else:
            item = self.encoder.item(event)
            msg_id = f"{self.source}:{self._txn_texts(txn)[0]}:{event.ordinal}"
        view = self._view(rel)
        proto = item.event
        change = decode_event(proto, {rel.relation_id: view.client})
        commit_lsn_text, xid_text, commit_time_us, commit_time_text = self._txn_texts(txn)
        headers = {"op": event.op.value, "schema": rel.schema, "table": rel.table, "lsn": format_lsn(event.lsn),
                   "commit_lsn": commit_lsn_text, "ordinal": str(event.ordinal), "xid": xid_text,
                   "commit_time_us": commit_time_text, "content-type": self._content_type}
        if self.format == "json":
            value = json_line(change)[:-1]
        else:
            value = proto.SerializeToString()
            headers["relation"] = view.header
        key = None
        if event.op is not Op.TRUNCATE:
            row_key = change.key
            if row_key:
                key = orjson.dumps(jsonable(row_key))
        return Record(rel.schema, rel.table, value, key, headers, msg_id, event.lsn, txn.commit_lsn,
                      event.ordinal, commit_time_us)

    def commit_record(self, event: ChangeEvent, changes: int) -> Record:
        """A transaction's COMMIT (--sink-transactions): the object `walstream tail --transactions` prints for
        it, with the number of records this sink published for the transaction in the `changes` header."""
        txn = event.txn
        assert txn is not None
        proto = self.encoder.item(event).event
        change = decode_event(proto, {})
        commit_time_us = txn.commit_ts + PG_EPOCH_US
        headers = {"op": "COMMIT", "lsn": format_lsn(event.end_lsn), "commit_lsn": format_lsn(txn.commit_lsn),
                   "end_lsn": format_lsn(event.end_lsn), "ordinal": str(event.ordinal), "xid": str(txn.xid),
                   "commit_time_us": str(commit_time_us), "changes": str(changes),
                   "content-type": CONTENT_TYPES[self.format]}
        value = json_line(change)[:-1] if self.format == "json" else proto.SerializeToString()
        return Record("", "", value, None, headers, f"{self.source}:{format_lsn(txn.commit_lsn)}:commit",
                      event.end_lsn, txn.commit_lsn, event.ordinal, commit_time_us)

    def _view(self, rel: RelationInfo) -> _RelationView:
        view = self._relations.get(rel.relation_id)
        if view is None or not same_relation(view.info, rel):
            proto = pb.Batch.FromString(self.encoder.relation_bytes(rel)).relations[0]
            view = self._relations[rel.relation_id] = _RelationView(rel, proto)
        return view


