"""Decoded pgoutput messages -> internal events, in order, exactly once per walstream process.

After the replication connection is re-established PostgreSQL resends every transaction after the slot's
confirmed position. The assembler drops what it already passed on: whole transactions whose commit LSN is
not newer than the last one completed, and the already-seen changes of a transaction that was cut off
mid-way (resumed by its commit LSN, which Begin carries).
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import ProtocolError
from ..lsn import format_lsn
from ..source import messages as m
from ..source.decoder import BEGIN_SIZE, COMMIT_SIZE, decode_message, read_begin, read_commit
from ..source.messages import TupleData
from .change import ChangeEvent, Converter, Op, RelationInfo, TxnInfo
from .run import KINDS as RUN_KINDS
from .run import ChangeRun

log = logging.getLogger(__name__)

_new_event = tuple.__new__  # ChangeEvent is a NamedTuple: this skips its Python-level __new__
_INSERT = Op.INSERT
_DEFAULTS = tuple(ChangeEvent(Op.BEGIN, 0, None, 0))  # every field's default, for _new_event
_AFTER_ORDINAL, _BEFORE_END_LSN, _AFTER_END_LSN = _DEFAULTS[4:], _DEFAULTS[4:10], _DEFAULTS[11:]
_COUNTED = (Op.INSERT, Op.UPDATE, Op.DELETE, Op.TRUNCATE)
XID_HISTORY = 8192  # transactions whose xids the snapshot visibility guard can check (walstream.snapshot)


class Sink(Protocol):
    """The delivery side (walstream.delivery.hub.Hub). `txn` is whatever begin() returned, passed back."""

    def begin(self, xid: int, commit_lsn: int) -> Any: ...
    def publish(self, event: ChangeEvent, txn: Any, raw: bytes = b"") -> None:
        """`raw`: the pgoutput message a row change was decoded from (what the ack ledger keeps of it)."""
        ...
    def commit(self, txn: Any, end_lsn: int) -> None: ...
    # Optional: begin_events, False while nobody takes BEGIN events (the hub: no client's adapter sends
    # anything for one), so the assembler makes none.
    # Optional: publish_run(run: ChangeRun, txn), a run of plain changes (events/run.py) as one unit; a sink without
    # it is given the run's events one by one.


class ConverterSource(Protocol):
    def converter(self, type_oid: int) -> Converter: ...
    def invalidate(self, type_oid: int) -> None: ...


@dataclass
class _OpenTxn:
    info: TxnInfo
    record: Any
    ordinal: int = 0  # changes passed on so far


class Assembler:
    def __init__(self, sink: Sink, types: ConverterSource, text_decoder: Callable[[bytes], str]) -> None:
        self.sink = sink
        self.types = types
        self.text_decoder = text_decoder
        self.relations: dict[int, RelationInfo] = {}
        self.last_commit_lsn = 0  # commit LSN of the newest transaction passed on completely
        self._txn: _OpenTxn | None = None
        self._partial: _OpenTxn | None = None  # cut off by a lost connection, to be resumed
        self._skip_changes = 0  # changes of the resumed transaction already passed on
        self._skipping = False  # inside a transaction that was passed on before
        self._handlers = self._make_handlers()
        self._raw = b""  # the message handle() is processing
        # For the metrics (read at scrape time): changes passed on, by operation and relation id (a TRUNCATE
        # once per truncated relation), and the commit time of the newest transaction begun (us since 2000).
        self.changes: dict[Op, defaultdict[int, int]] = {op: defaultdict(int) for op in _COUNTED}
        self._inserts = self.changes[Op.INSERT]
        self.last_commit_ts: int | None = None
        # The xids of the latest transactions begun, in commit order, and how many were ever begun: the
        # snapshot visibility guard checks those decoded before a low watermark against the chunk's snapshot.
        self.recent_xids: deque[int] = deque(maxlen=XID_HISTORY)
        self.xids_begun = 0

    @property
    def in_transaction(self) -> bool:
        return self._txn is not None or self._skipping

    def connection_restarted(self) -> None:
        """A new replication connection on the same slot: the stream restarts at the confirmed position."""
        if self._txn is not None:
            self._partial, self._txn = self._txn, None
        self._skipping = False

    def slot_recreated(self) -> None:
        """The slot itself is new (a temporary slot died with its connection): nothing will be resent."""
        lost = self._partial or self._txn
        if lost is not None:
            log.warning("transaction %d (commit %s) was cut off with the lost temporary slot after %d changes",
                        lost.info.xid, format_lsn(lost.info.commit_lsn), lost.ordinal)
            self.sink.commit(lost.record, lost.info.commit_lsn)
        self._partial = self._txn = None
        self._skipping = False

    def handle(self, msg: m.PgoutputMessage, lsn: int, raw: bytes = b"") -> None:
        """Process one message; lsn is the WAL position PostgreSQL sent it with (data_start), raw the message
        as read (given, a row change's delivery keeps it instead of the decoded columns: events/replay.py)."""
        self._raw = raw
        handler = self._handlers.get(type(msg))
        if handler is None:
            raise ProtocolError(f"unexpected pgoutput message {type(msg).__name__}: walstream does not request "
                                "streaming of in-progress or two-phase transactions")
        handler(msg, lsn)

    def _make_handlers(self) -> dict[type, Callable[[Any, int], None]]:
        return {
            m.Insert: self._insert, m.Update: self._change, m.Delete: self._change, m.Begin: self._begin,
            m.Commit: self._commit, m.Relation: self._relation, m.Truncate: self._change,
            m.Message: self._message, m.Type: self._on_type, m.Origin: self._on_origin,
        }

    def _on_type(self, msg: m.Type, lsn: int) -> None:
        self.types.invalidate(msg.type_oid)

    def _on_origin(self, msg: m.Origin, lsn: int) -> None:
        pass  # replication origins are not part of walstream's event model

    # -- transactions ---------------------------------------------------------------------------------

    def boundary(self, raw: bytes) -> bool:
        """A well-formed Begin or Commit handled straight from its bytes, with no message object (one of each
        per transaction: most of what a one-row transaction is): True, else False and nothing done (the
        caller decodes it, which raises the decoder's error for a malformed one)."""
        kind = raw[0]
        if kind == 0x42:
            if len(raw) == BEGIN_SIZE:
                final_lsn, commit_ts, xid = read_begin(raw, 1)
                if final_lsn:  # else the decoder's error
                    self._begin_txn(final_lsn, commit_ts, xid)
                    return True
        elif kind == 0x43 and len(raw) == COMMIT_SIZE:
            _, commit_lsn, end_lsn, _ = read_commit(raw, 1)
            self._commit_txn(commit_lsn, end_lsn)
            return True
        return False

    def _begin(self, msg: m.Begin, lsn: int = 0) -> None:
        self._begin_txn(msg.final_lsn, msg.commit_ts, msg.xid)

    def _begin_txn(self, final_lsn: int, commit_ts: int, xid: int) -> None:
        if self._txn is not None:
            raise ProtocolError(f"Begin of transaction {xid} while transaction {self._txn.info.xid} is open")
        if final_lsn <= self.last_commit_lsn:
            self._skipping = True
            return
        partial, self._partial = self._partial, None
        if partial is not None:
            if partial.info.commit_lsn == final_lsn:
                self._txn, self._skip_changes = partial, partial.ordinal
                partial.ordinal = 0
                return
            log.warning("transaction %d (commit %s) was cut off and not resent; its remaining changes are lost",
                        partial.info.xid, format_lsn(partial.info.commit_lsn))
            self.sink.commit(partial.record, partial.info.commit_lsn)
        info = TxnInfo(xid, final_lsn, commit_ts)
        self.last_commit_ts = commit_ts
        self.recent_xids.append(xid)
        self.xids_begun += 1
        self._txn = _OpenTxn(info, self.sink.begin(xid, final_lsn))
        self._skip_changes = 0
        if getattr(self.sink, "begin_events", True):
            self.sink.publish(_new_event(ChangeEvent, (Op.BEGIN, final_lsn, info, 0) + _AFTER_ORDINAL),
                              self._txn.record)

    def _commit(self, msg: m.Commit, lsn: int = 0) -> None:
        self._commit_txn(msg.commit_lsn, msg.end_lsn)

    def _commit_txn(self, commit_lsn: int, end_lsn: int) -> None:
        if self._skipping:
            self._skipping = False
            return
        txn = self._txn
        if txn is None:
            raise ProtocolError(f"Commit at {format_lsn(commit_lsn)} without a Begin")
        if commit_lsn != txn.info.commit_lsn:
            raise ProtocolError(f"Commit at {format_lsn(commit_lsn)} does not match Begin's final LSN "
                                f"{format_lsn(txn.info.commit_lsn)}")
        self._txn = None
        event = _new_event(ChangeEvent, (Op.COMMIT, commit_lsn, txn.info, txn.ordinal + 1) + _BEFORE_END_LSN
                           + (end_lsn,) + _AFTER_END_LSN)
        self.sink.publish(event, txn.record)
        self.sink.commit(txn.record, end_lsn)
        self.last_commit_lsn = commit_lsn

    # -- changes --------------------------------------------------------------------------------------

    def _next_ordinal(self) -> _OpenTxn | None:
        """The open transaction, with its ordinal advanced; None when this change was passed on before."""
        if self._skipping:
            return None
        txn = self._txn
        if txn is None:
            raise ProtocolError("a change arrived outside a transaction")
        txn.ordinal += 1
        if txn.ordinal <= self._skip_changes:
            return None
        return txn

    def _insert(self, msg: m.Insert, lsn: int) -> None:
        self.insert(msg.relation_id, msg.new, lsn, self._raw)

    def insert(self, relation_id: int, new: TupleData, lsn: int, raw: bytes = b"") -> None:
        """An Insert outside a streamed block (decoder.plain_insert): _change inlined, for the one message
        there is per inserted row."""
        txn = self._txn
        if txn is None or self._skipping or self._skip_changes:
            self._raw = raw
            self._change(m.Insert(None, relation_id, new), lsn)
            return
        ordinal = txn.ordinal = txn.ordinal + 1
        rel = self._rel(relation_id)
        self._inserts[relation_id] += 1
        self.sink.publish(_new_event(ChangeEvent, (_INSERT, lsn, txn.info, ordinal, rel, new, None, None, (),
                                                   0, 0, "", b"", False)), txn.record, raw)

    def plain_run(self, lsns: list[int], raws: list[bytes], run_length: Callable[[list[bytes], int], tuple[int, int]],
                  decode: Callable[[bytes], tuple[int, TupleData] | None]) -> None:
        """The Insert ('I') and Update ('U') messages of one read burst, in order (the session loop, with the C
        accelerator): each run of well-formed plain changes of one relation and kind (run_length:
        native.plain_run) goes to the sink as one ChangeRun; a message that is not one (an Update with an
        old row, a malformed message), or any while resuming a transaction, goes message by message as the
        session would send it (decode: decoder.insert_decoder()), with the same errors."""
        i, n = 0, len(raws)
        publish_run = getattr(self.sink, "publish_run", None)
        while i < n:
            relid, count = run_length(raws, i)
            txn = self._txn
            if count == 0 or txn is None or self._skipping or self._skip_changes:
                raw = raws[i]
                row = decode(raw)
                if row is None:
                    self.handle(decode_message(raw), lsns[i], raw)  # raises the decoder's error
                else:
                    self.insert(row[0], row[1], lsns[i], raw)
                i += 1
                continue
            rel = self._rel(relid)
            end = i + count
            op = RUN_KINDS[raws[i][0]]
            run = ChangeRun(op, rel, txn.info, txn.ordinal + 1, lsns if i == 0 and end == n else lsns[i:end],
                            raws if i == 0 and end == n else raws[i:end])
            txn.ordinal += count
            self.changes[op][relid] += count
            if publish_run is not None:
                publish_run(run, txn.record)
            else:  # a sink that takes events only
                for k, event in enumerate(run.events()):
                    self.sink.publish(event, txn.record, run.raws[k])
            i = end

    def _change(self, msg: m.Insert | m.Update | m.Delete | m.Truncate, lsn: int) -> None:
        txn = self._next_ordinal()
        if txn is None:
            return
        if isinstance(msg, m.Truncate):
            event = ChangeEvent(Op.TRUNCATE, lsn, txn.info, txn.ordinal,
                                truncated=tuple(self._rel(r) for r in msg.relation_ids),
                                truncate_options=msg.options)
        elif isinstance(msg, m.Insert):
            event = ChangeEvent(Op.INSERT, lsn, txn.info, txn.ordinal, self._rel(msg.relation_id), new=msg.new)
        elif isinstance(msg, m.Update):
            event = ChangeEvent(Op.UPDATE, lsn, txn.info, txn.ordinal, self._rel(msg.relation_id),
                                new=msg.new, old=msg.old, old_kind=msg.old_kind)
        else:
            event = ChangeEvent(Op.DELETE, lsn, txn.info, txn.ordinal, self._rel(msg.relation_id),
                                old=msg.old, old_kind=msg.old_kind)
        counts = self.changes[event.op]
        for rel in event.truncated or (event.relation,):
            counts[rel.relation_id] += 1  # type: ignore[union-attr]
        self.sink.publish(event, txn.record, self._raw if event.relation is not None else b"")

    def _message(self, msg: m.Message, lsn: int) -> None:
        if not msg.transactional:
            event = ChangeEvent(Op.MESSAGE, msg.lsn, None, 0, message_prefix=msg.prefix,
                                message_content=msg.content, message_transactional=False)
            self.sink.publish(event, None)
            return
        txn = self._next_ordinal()
        if txn is None:
            return
        event = ChangeEvent(Op.MESSAGE, msg.lsn, txn.info, txn.ordinal, message_prefix=msg.prefix,
                            message_content=msg.content, message_transactional=True)
        self.sink.publish(event, txn.record)

    # -- relations ------------------------------------------------------------------------------------

    def _relation(self, msg: m.Relation, lsn: int = 0) -> None:
        self.relations[msg.relation_id] = RelationInfo(
            relation_id=msg.relation_id,
            schema=msg.namespace,
            table=msg.name,
            replica_identity=msg.replica_identity,
            columns=msg.columns,
            converters=tuple(self.types.converter(c.type_oid) for c in msg.columns),
            key_indexes=tuple(i for i, c in enumerate(msg.columns) if c.is_key),
            text_decoder=self.text_decoder,
        )

    def _rel(self, relation_id: int) -> RelationInfo:
        try:
            return self.relations[relation_id]
        except KeyError:
            raise ProtocolError(f"change for relation {relation_id} before its Relation message") from None
