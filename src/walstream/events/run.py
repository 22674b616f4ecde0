"""A run of plain INSERTs: consecutive Insert messages of one transaction and one relation, read in one
burst, passed from the session loop to the delivery side as one unit instead of one ChangeEvent each.

Only with the C accelerator (walstream.native.insert_run): the session collects the Insert messages of a read
burst, native.insert_run_length cuts them into runs of well-formed Inserts of one relation, and the assembler
hands each run to the hub (Hub.publish_run). An API that can write the run in one call does so (walstream.v1:
Encoder.run_items, one C call for the framed Events of all its rows); any other adapter, and a v1 subscriber
with a snapshot running, gets the run's events one by one (`events()`), exactly the ChangeEvents the
per-message path makes. The ack ledger keeps one entry per row (its own LSN), so acks stay per LSN.
"""

from __future__ import annotations

from collections.abc import Callable

from ..source.decoder import insert_decoder, plain_insert
from ..source.messages import TupleData
from .change import ChangeEvent, Op, RelationInfo, TxnInfo
from .replay import RowRecord

_new = tuple.__new__  # ChangeEvent and RowRecord are NamedTuples: this skips their Python-level __new__


class InsertRun:
    """Rows first_ordinal, first_ordinal + 1, ... of transaction `txn`: INSERTs into `relation`, the row at
    index i read at lsns[i] as the pgoutput message raws[i] (well-formed: native.insert_run_length said so)."""

    __slots__ = ("relation", "txn", "first_ordinal", "lsns", "raws", "_events", "_records")

    def __init__(self, relation: RelationInfo, txn: TxnInfo, first_ordinal: int, lsns: list[int],
                 raws: list[bytes]) -> None:
        self.relation = relation
        self.txn = txn
        self.first_ordinal = first_ordinal
        self.lsns = lsns
        self.raws = raws
        self._events: list[ChangeEvent] | None = None
        self._records: dict[int, RowRecord] = {}

    def __len__(self) -> int:
        return len(self.raws)

    def event(self, index: int,
              decode: Callable[[bytes], tuple[int, TupleData] | None] = plain_insert) -> ChangeEvent:
        """Row `index` as the event the per-message path makes of it (decoded again)."""
        decoded = decode(self.raws[index])
        assert decoded is not None  # the run holds well-formed Inserts only
        return _new(ChangeEvent, (Op.INSERT, self.lsns[index], self.txn, self.first_ordinal + index,
                                  self.relation, decoded[1], None, None, (), 0, 0, "", b"", False))

    def events(self) -> list[ChangeEvent]:
        """Every row's event, made once for all the adapters that take events one by one."""
        if self._events is None:
            decode = insert_decoder()  # the C decoder: runs exist only with the accelerator
            self._events = [self.event(i, decode) for i in range(len(self.raws))]
        return self._events

    def record(self, index: int) -> RowRecord:
        """What the ack ledger keeps of row `index` to re-express it (events/replay.py): one object per row,
        so the deliveries of one row (a BEGIN and the row) are re-expressed once (AckTracker.adopt_orphans)."""
        record = self._records.get(index)
        if record is None:
            record = self._records[index] = _new(RowRecord, (Op.INSERT, self.lsns[index], self.txn,
                                                             self.first_ordinal + index, self.relation,
                                                             self.raws[index]))
        return record
