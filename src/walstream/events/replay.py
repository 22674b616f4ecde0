"""What the ack ledger keeps of a row change until it is acknowledged.

A delivery is held until its client acknowledges it, and when the last client leaves its unacknowledged
deliveries are handed to the next one, re-expressed in that client's API if it differs. That needs the change
itself, but not decoded: a RowRecord keeps the pgoutput message as it was read (one bytes object, which the
reader made anyway) and what decoding it needs (relation as of then, transaction, ordinal), instead of the
decoded ChangeEvent with an object per column. restore() decodes it again when, rarely, it is needed.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import ProtocolError
from ..source import messages as m
from ..source.decoder import decode_message
from .change import ChangeEvent, Op, RelationInfo, TxnInfo

_new = tuple.__new__  # RowRecord is a NamedTuple: this skips its Python-level __new__


class RowRecord(NamedTuple):
    op: Op
    lsn: int
    txn: TxnInfo | None
    ordinal: int
    relation: RelationInfo
    raw: bytes  # the pgoutput Insert/Update/Delete message


def compact(event: ChangeEvent, raw: bytes) -> object:
    """The record to keep for an event: a RowRecord for a row change read from `raw`, else the event (BEGIN,
    COMMIT, TRUNCATE, messages and snapshot rows carry no decoded columns worth dropping, or have no raw)."""
    if not raw or event.relation is None:
        return event
    return _new(RowRecord, (event.op, event.lsn, event.txn, event.ordinal, event.relation, raw))


def restore(record: object) -> ChangeEvent:
    """The event a record stands for (the event itself, or a RowRecord decoded again)."""
    if type(record) is not RowRecord:
        assert isinstance(record, ChangeEvent)
        return record
    msg = decode_message(record.raw)
    if isinstance(msg, m.Insert):
        return ChangeEvent(record.op, record.lsn, record.txn, record.ordinal, record.relation, new=msg.new)
    if isinstance(msg, m.Update):
        return ChangeEvent(record.op, record.lsn, record.txn, record.ordinal, record.relation, new=msg.new,
                           old=msg.old, old_kind=msg.old_kind)
    if isinstance(msg, m.Delete):
        return ChangeEvent(record.op, record.lsn, record.txn, record.ordinal, record.relation, old=msg.old,
                           old_kind=msg.old_kind)
    raise ProtocolError(f"a kept {record.op.value} record holds a {type(msg).__name__} message")
