"""A run of plain changes: consecutive INSERTs, or consecutive UPDATEs without an old row, of one transaction
and one relation, read in one burst, passed from the session loop to the delivery side as one unit instead of
one ChangeEvent each.

A plain change is what pgoutput sends for an INSERT ('I', relation id, 'N', new tuple) or for an UPDATE that
kept the key under the default replica identity ('U', relation id, 'N', new tuple): walstream.v1 writes both
the same way but for the op. Updates with an old row (a key change, REPLICA IDENTITY FULL) and deletes go
message by message.

Only with the C accelerator (walstream.native.plain_run): the session collects the Insert and Update messages
of a read burst, native.plain_run_length cuts them into runs of well-formed plain changes of one relation and
one kind, and the assembler hands each run to the hub (Hub.publish_run). An API that can write the run in one
call does so (walstream.v1: Encoder.run_items, one C call for the framed Events of all its rows); any other
adapter, and a v1 subscriber with a snapshot running, gets the run's events one by one (`events()`), exactly
the ChangeEvents the per-message path makes. The ack ledger keeps one entry per row (its own LSN), so acks
stay per LSN.
"""

from __future__ import annotations

from collections.abc import Callable

from ..source import messages as m
from ..source.decoder import decode_message, insert_decoder, plain_insert
from ..source.messages import TupleData
from .change import ChangeEvent, Op, RelationInfo, TxnInfo
from .replay import RowRecord

_new = tuple.__new__  # ChangeEvent and RowRecord are NamedTuples: this skips their Python-level __new__
KINDS = {0x49: Op.INSERT, 0x55: Op.UPDATE}  # the first byte of a plain change's message


def plain_update(buf: bytes) -> tuple[int, TupleData] | None:
    """An Update without an old tuple as (relation id, new tuple), like decoder.plain_insert for Inserts."""
    msg = decode_message(buf)
    if type(msg) is not m.Update or msg.old is not None:
        return None
    return msg.relation_id, msg.new


class ChangeRun:
    """Rows first_ordinal, first_ordinal + 1, ... of transaction `txn`: changes of kind `op` (INSERT, or UPDATE
    without an old row) to `relation`, the row at index i read at lsns[i] as the pgoutput message raws[i]
    (well-formed: native.plain_run_length said so)."""

    __slots__ = ("op", "relation", "txn", "first_ordinal", "lsns", "raws", "_events", "_records")

    def __init__(self, op: Op, relation: RelationInfo, txn: TxnInfo, first_ordinal: int, lsns: list[int],
                 raws: list[bytes]) -> None:
        self.op = op
        self.relation = relation
        self.txn = txn
        self.first_ordinal = first_ordinal
        self.lsns = lsns
        self.raws = raws
        self._events: list[ChangeEvent] | None = None
        self._records: dict[int, RowRecord] = {}

    def __len__(self) -> int:
        return len(self.raws)

    def event(self, index: int, decode: Callable[[bytes], tuple[int, TupleData] | None] | None = None) -> ChangeEvent:
        """Row `index` as the event the per-message path makes of it (decoded again)."""
        if decode is None:
            decode = plain_insert if self.op is Op.INSERT else plain_update
        decoded = decode(self.raws[index])
        assert decoded is not None  # the run holds well-formed plain changes only
        return _new(ChangeEvent, (self.op, self.lsns[index], self.txn, self.first_ordinal + index,
                                  self.relation, decoded[1], None, None, (), 0, 0, "", b"", False))

    def events(self) -> list[ChangeEvent]:
        """Every row's event, made once for all the adapters that take events one by one."""
        if self._events is None:
            # INSERTs: the C decoder (runs exist only with the accelerator); UPDATEs: the Python one.
            decode = insert_decoder() if self.op is Op.INSERT else plain_update
            self._events = [self.event(i, decode) for i in range(len(self.raws))]
        return self._events

    def record(self, index: int) -> RowRecord:
        """What the ack ledger keeps of row `index` to re-express it (events/replay.py): one object per row,
        so the deliveries of one row (a BEGIN and the row) are re-expressed once (AckTracker.adopt_orphans)."""
        record = self._records.get(index)
        if record is None:
            record = self._records[index] = _new(RowRecord, (self.op, self.lsns[index], self.txn,
                                                             self.first_ordinal + index, self.relation,
                                                             self.raws[index]))
        return record
