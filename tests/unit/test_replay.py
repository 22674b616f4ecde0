"""What the ack ledger keeps of a row change (events/replay.py): the pgoutput message as read, not the decoded
columns, and the same event again when a client of another API takes over what the last client left."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from walstream.delivery.acks import AckTracker
from walstream.delivery.hub import Hub
from walstream.events.assembler import Assembler
from walstream.events.change import ChangeEvent, Op
from walstream.events.replay import RowRecord, compact, restore
from walstream.events.text import text_decoder
from walstream.events.values import TypeCatalog
from walstream.source.decoder import decode_message, plain_insert

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
ROW_OPS = {Op.INSERT, Op.UPDATE, Op.DELETE}


class Recorder:
    def __init__(self) -> None:
        self.published: list[tuple[ChangeEvent, bytes]] = []

    def begin(self, xid: int, commit_lsn: int) -> None:
        return None

    def publish(self, event: ChangeEvent, txn: Any, raw: bytes = b"") -> None:
        self.published.append((event, raw))

    def commit(self, txn: Any, end_lsn: int) -> None:
        pass


def feed(sink: Any, version: int = 1) -> None:
    """The golden stream through an assembler as the session loop does it (the Insert fast path included)."""
    assembler = Assembler(sink, TypeCatalog(), text_decoder("utf-8"))
    for line in (GOLDEN / f"pgoutput_v{version}.jsonl").read_text().splitlines()[1:]:
        row = json.loads(line)
        if row["in_stream"]:
            continue
        data = bytes.fromhex(row["hex"])
        lsn = int(row["seq"]) * 16
        if data[0] == 0x49 and (fast := plain_insert(data)) is not None:
            assembler.insert(fast[0], fast[1], lsn, data)
        else:
            assembler.handle(decode_message(data), lsn, data)


def test_row_changes_are_kept_as_their_message_and_restored_equal() -> None:
    rec = Recorder()
    feed(rec)
    rows = [(e, raw) for e, raw in rec.published if e.op in ROW_OPS]
    assert {e.op for e, _ in rows} == ROW_OPS
    for event, raw in rows:
        record = compact(event, raw)
        assert type(record) is RowRecord and record.raw is raw  # the message as read: no copy, no cells
        assert restore(record) == event
    others = [e for e, raw in rec.published if e.op not in ROW_OPS]
    assert others and all(compact(e, b"") is e and restore(e) is e for e in others)


class Tagged:
    """A client API whose messages name it: (api, lsn, the row as JSON)."""

    def __init__(self, api: str) -> None:
        self.api = api

    def expand(self, event: ChangeEvent) -> Sequence[tuple[int, object]]:
        if event.op not in ROW_OPS:
            return []
        return [(event.lsn, (self.api, event.lsn, event.json_bytes()))]

    def size(self, message: object) -> int:
        return 64


def test_a_client_of_another_api_gets_what_the_last_client_left_re_expressed_from_the_messages() -> None:
    async def scenario() -> None:
        hub = Hub(AckTracker(), 10_000, 10_000)
        first = hub.connect(Tagged("a"), "first")
        assert first is not None
        recorder = Recorder()

        class Both:  # the hub, recording what was published
            def begin(self, xid: int, commit_lsn: int) -> Any:
                return hub.begin(xid, commit_lsn)

            def publish(self, event: ChangeEvent, txn: Any, raw: bytes = b"") -> None:
                recorder.publish(event, txn, raw)
                hub.publish(event, txn, raw)

            def commit(self, txn: Any, end_lsn: int) -> None:
                hub.commit(txn, end_lsn)

        feed(Both())
        assert all(type(r) is RowRecord for r in first.ledger.events)  # no decoded columns are held
        hub.disconnect(first)  # the last client: its deliveries wait for the next one
        second = hub.connect(Tagged("b"), "second")
        assert second is not None
        expected = [m for e, _ in recorder.published for _, m in Tagged("b").expand(e)]
        assert expected and list(second.queue) == expected
    asyncio.run(scenario())
