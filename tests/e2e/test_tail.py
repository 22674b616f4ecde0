"""`walstream tail` as a subprocess against a real `walstream start` and PostgreSQL: JSON lines, filters,
acknowledgements (and --no-ack), the pretty format, Ctrl-C, reconnecting, and the unreachable-server error.
The encoders themselves are checked without a server at the end."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import NoReturn

import pytest
from slot_checks import metrics_args, quick_status_updates, reported_flush_after
from support import (
    WalstreamProcess,
    confirmed_flush,
    expect_nothing_from,
    run_cli,
    take_from,
    wait_confirmed,
    walstream_env,
)

from walstream.cli.tail import change_object, json_line, pretty_line
from walstream.client import Change, Column, LogicalMessage, Truncate
from walstream.lsn import parse_lsn
from walstream.pgcluster import free_port

SCHEMA = ["CREATE TABLE items (id int PRIMARY KEY, price numeric(10,3), doc jsonb, tags text[], raw bytea, "
          "seen timestamptz, body text)",
          "CREATE TABLE archive (id int PRIMARY KEY, note text)",
          "CREATE TABLE logs (id int, msg text)",
          "CREATE PUBLICATION pub FOR ALL TABLES"]


@pytest.fixture
def ws(testdb, tmp_path) -> Iterator[WalstreamProcess]:
    testdb.execute(*SCHEMA)
    quick_status_updates(testdb.dsn, testdb.name)
    proc = WalstreamProcess(testdb.dsn, "pub", testdb.slot, temporary=False, log_dir=tmp_path,
                            extra=metrics_args()[1]).start()
    try:
        yield proc
    finally:
        proc.kill()


class Tail:
    """`python -m walstream tail ...` with its stdout lines in a queue."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, sigint_ignored: bool = False) -> None:
        # sigint_ignored: start it as a non-interactive shell starts a background job, with SIGINT ignored.
        preexec = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
        self.proc = subprocess.Popen([sys.executable, "-m", "walstream", "tail", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env or walstream_env(), preexec_fn=preexec)
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.stderr = b""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def take(self, n: int, timeout: float = 30) -> list[bytes]:
        def fail(out: list[bytes]) -> NoReturn:
            raise AssertionError(f"got {len(out)} of {n} lines: {out}\nstderr: {self.finish()}")

        return take_from(self.lines, n, timeout, fail, give_up=lambda: self.proc.poll() is not None)

    def json(self, n: int, timeout: float = 30) -> list[dict]:
        return [json.loads(line, parse_float=Decimal) for line in self.take(n, timeout)]

    def nothing(self, wait: float = 1.5) -> None:
        def fail(extra: bytes) -> NoReturn:
            raise AssertionError(f"unexpected line {extra!r}")

        expect_nothing_from(self.lines, wait, fail)

    def interrupt(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(20)
        self.finish()
        return code

    def finish(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        assert self.proc.stderr is not None
        self.stderr += self.proc.stderr.read()
        return self.stderr.decode(errors="replace")


def test_json_lines_and_acks(testdb, ws):
    tail = Tail("--server", ws.addr, "--format", "json")
    try:
        ws.wait_log("connected")
        # body is TOASTed (large, hardly compressible): an update that leaves it alone does not resend it
        testdb.execute(
            "INSERT INTO items VALUES (1, 12.5, '{\"a\": [1, {\"b\": null}]}', '{x,NULL}', '\\x0102', "
            "'2024-01-02 03:04:05.678+00', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 2000) i))",
            "UPDATE items SET price = 'NaN' WHERE id = 1",
            "DELETE FROM items WHERE id = 1",
            "INSERT INTO logs VALUES (7, 'a')", "TRUNCATE logs, archive")
        end = testdb.wal_lsn()
        big = testdb.query("SELECT string_agg(md5(i::text), '') FROM generate_series(1, 2000) i")[0][0]
        ins, upd, dele, log_ins, trunc = tail.json(5)
        assert ins["op"] == "INSERT" and (ins["schema"], ins["table"]) == ("public", "items")
        assert ins["new"] == {"id": 1, "price": Decimal("12.500"), "doc": {"a": [1, {"b": None}]},
                              "tags": ["x", None], "raw": "\\x0102", "seen": "2024-01-02T03:04:05.678000+00:00",
                              "body": big}
        assert ins["old"] is None and ins["unchanged_toast"] == [] and ins["ordinal"] == 1
        assert parse_lsn(ins["lsn"]) > 0 and parse_lsn(ins["commit_lsn"]) > 0 and ins["xid"] > 0
        assert datetime.fromisoformat(ins["commit_time"]).tzinfo is not None
        assert upd["op"] == "UPDATE" and upd["new"]["price"] == "NaN" and upd["unchanged_toast"] == ["body"]
        assert "body" not in upd["new"]
        assert dele["op"] == "DELETE" and dele["new"] is None and dele["old"] == {"id": 1} and dele["old_is_key"]
        assert log_ins["table"] == "logs" and log_ins["new"] == {"id": 7, "msg": "a"}
        assert trunc["op"] == "TRUNCATE" and trunc["tables"] == ["public.logs", "public.archive"]
        assert trunc["cascade"] is False and trunc["restart_identity"] is False
        wait_confirmed(testdb.dsn, testdb.slot, end)  # acknowledged as printed
        assert tail.interrupt() == 0
        assert "Traceback" not in tail.stderr.decode()
    finally:
        tail.finish()


def test_filters_and_transactions(testdb, ws):
    tail = Tail("--server", ws.addr, "--op", "insert", "--op", "delete", "--table", "public.it*", "--table", "logs",
                "--exclude-table", "logs", "--transactions")
    try:
        ws.wait_log("connected")
        testdb.execute("INSERT INTO logs VALUES (1, 'no')", "INSERT INTO archive VALUES (1, 'no')",
                       "INSERT INTO items (id) VALUES (1)", "UPDATE items SET body = 'no'",
                       "DELETE FROM items")
        lines = tail.json(6)
        assert [(d["op"], d["table"]) for d in lines] == [("BEGIN", ""), ("INSERT", "items"), ("COMMIT", ""),
                                                          ("BEGIN", ""), ("DELETE", "items"), ("COMMIT", "")]
        assert lines[2]["end_lsn"] is not None and lines[0]["xid"] == lines[1]["xid"]
        tail.nothing()
    finally:
        assert tail.interrupt(signal.SIGTERM) == 0


def test_no_ack_leaves_the_slot_alone(testdb, ws):
    tail = Tail("--server", ws.addr, "--format", "json", "--no-ack")
    try:
        ws.wait_log("connected")
        testdb.execute("INSERT INTO logs VALUES (1, 'a')")
        (line,) = tail.json(1)
        # A walstream that took the delivery as acknowledged would confirm past it within ~0.2 s: once a status
        # update has gone out after the row's whole transaction was read, it has not.
        assert reported_flush_after(testdb.dsn, testdb.slot, parse_lsn(line["commit_lsn"])) <= parse_lsn(line["lsn"])
        assert confirmed_flush(testdb.dsn, testdb.slot) <= parse_lsn(line["lsn"])
        assert tail.interrupt() == 0
        ws.wait_log("disconnected")
        assert "1 unacknowledged, kept for the next client" in ws.log()
        assert reported_flush_after(testdb.dsn, testdb.slot, parse_lsn(line["commit_lsn"])) <= parse_lsn(line["lsn"])
        assert confirmed_flush(testdb.dsn, testdb.slot) <= parse_lsn(line["lsn"])
    finally:
        tail.finish()
    # The next tail gets it again, and acknowledges it.
    again = Tail("--server", ws.addr, "--format", "json")
    try:
        (line2,) = again.json(1)
        assert line2 == line
        wait_confirmed(testdb.dsn, testdb.slot, parse_lsn(line["commit_lsn"]))
    finally:
        assert again.interrupt() == 0


def test_pretty_without_a_terminal_is_plain(testdb, ws):
    env = walstream_env()
    env["WALSTREAM_ADDR"] = ws.addr  # --server from the environment
    tail = Tail("--format", "pretty", env=env)
    try:
        ws.wait_log("connected")
        testdb.execute("INSERT INTO items (id, price, body) VALUES (1, 2.5, 'hi')", "UPDATE items SET body = NULL",
                       "DELETE FROM items")
        ins, upd, dele = (line.decode() for line in tail.take(3))
        for line in (ins, upd, dele):
            assert "\x1b" not in line and line.endswith("\n")
        assert "INSERT" in ins and "public.items" in ins and "id=1" in ins and "price=2.500" in ins
        assert "body='hi'" in ins and "doc=NULL" in ins
        assert "UPDATE" in upd and "body=NULL" in upd
        assert "DELETE" in dele and "id=1" in dele
    finally:
        assert tail.interrupt() == 0


def test_default_format_in_a_pipe_is_json(testdb, ws):
    tail = Tail("--server", ws.addr)
    try:
        ws.wait_log("connected")
        testdb.execute("INSERT INTO logs VALUES (1, 'a')")
        (line,) = tail.json(1)
        assert line["new"] == {"id": 1, "msg": "a"}
    finally:
        assert tail.interrupt() == 0


def test_tail_reconnects_after_a_restart(testdb, ws):
    tail = Tail("--server", ws.addr, "--format", "json")
    try:
        ws.wait_log("connected")
        testdb.execute("INSERT INTO logs VALUES (1, 'before')")
        assert tail.json(1)[0]["new"]["msg"] == "before"
        assert ws.stop() == 0
        ws2 = WalstreamProcess(testdb.dsn, "pub", testdb.slot, temporary=False, port=ws.port).start()
        try:
            testdb.execute("INSERT INTO logs VALUES (2, 'after')")
            assert tail.json(1, timeout=60)[0]["new"]["msg"] == "after"
        finally:
            ws2.kill()
        assert "reconnecting" in tail.finish()
    finally:
        tail.finish()


def test_unreachable_server():
    port = free_port()
    started = time.monotonic()
    result = run_cli("tail", "--server", f"127.0.0.1:{port}", timeout=30)
    assert time.monotonic() - started < 20
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"walstream: error: cannot reach walstream at 127.0.0.1:{port}: ")
    assert "Traceback" not in result.stderr


def test_usage_errors():
    result = run_cli("tail", "--op", "upsert")
    assert result.returncode == 2 and "invalid operation 'upsert'" in result.stderr
    result = run_cli("tail", "--format", "yaml")
    assert result.returncode == 2 and "--format" in result.stderr


# ---- the encoders, without a server -------------------------------------------------------------------------

def change(**fields: object) -> Change:
    base: dict[str, object] = dict(op="INSERT", schema="public", table="t", lsn=0x1_0000_00A0, xid=5,
                                   commit_lsn=0x1_0000_00F0, commit_time=datetime(2024, 1, 2, tzinfo=timezone.utc),
                                   ordinal=1)
    base.update(fields)
    return Change(**base)  # type: ignore[arg-type]


def test_json_encoding_of_values():
    c = change(new={"n": Decimal("12.50"), "nan": Decimal("NaN"), "inf": float("inf"), "b": b"\x01\xff",
                    "big": 2**70, "ts": datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "inf_ts": "infinity",
                    "j": {"k": [1, Decimal("-0.5"), None]}, "none": None},
               columns=(Column("n", "numeric", 1700, -1, False),), unchanged_toast=frozenset({"body"}))
    line = json_line(c)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    obj = json.loads(line, parse_float=Decimal)
    assert obj["lsn"] == "1/A0" and obj["commit_lsn"] == "1/F0" and obj["commit_time"] == "2024-01-02T00:00:00+00:00"
    assert obj["new"] == {"n": Decimal("12.50"), "nan": "NaN", "inf": "Infinity", "b": "\\x01ff", "big": 2**70,
                          "ts": "2024-01-02T03:04:05+00:00", "inf_ts": "infinity",
                          "j": {"k": [1, Decimal("-0.5"), None]}, "none": None}
    assert b'"n":12.50' in line  # the exact digits, as a JSON number
    assert obj["unchanged_toast"] == ["body"]


def test_json_with_a_lone_surrogate():
    obj = json.loads(json_line(change(new={"doc": {"k": "a\ud800b"}})))
    assert obj["new"] == {"doc": {"k": "a\\ud800b"}}


def test_json_of_other_events():
    msg = change(op="MESSAGE", schema="", table="", commit_lsn=0, xid=0, commit_time=None, ordinal=0,
                 message=LogicalMessage("p", b"\xff", False))
    assert change_object(msg) == {"op": "MESSAGE", "schema": "", "table": "", "lsn": "1/A0",
                                       "commit_lsn": None, "ordinal": 0, "xid": None, "commit_time": None,
                                       "prefix": "p", "content": "\\xff", "transactional": False}
    trunc = change(op="TRUNCATE", truncate=Truncate((("public", "a"), ("s", "b")), True, False))
    assert change_object(trunc)["tables"] == ["public.a", "s.b"] and "new" not in change_object(trunc)
    commit = change(op="COMMIT", schema="", table="", end_lsn=0x200)
    assert change_object(commit)["end_lsn"] == "0/200"


def test_pretty_colour_and_plain():
    c = change(new={"id": 1, "name": "a b", "at": None, "raw": b"\x00"}, unchanged_toast=frozenset({"big"}))
    plain = pretty_line(c, colour=False)
    assert "\x1b" not in plain
    assert plain.split() == ["1/A0", "INSERT", "public.t", "id=1", "name='a", "b'", "at=NULL", "raw=\\x00",
                             "big=<unchanged>"]
    coloured = pretty_line(c, colour=True)
    assert "\x1b[32mINSERT" in coloured and "\x1b[1mpublic.t" in coloured
    upd = pretty_line(change(op="UPDATE", new={"id": 2}, old={"id": 1}, old_is_key=True), colour=False)
    assert upd.endswith("id=2  key: id=1")
    assert "xid 5" in pretty_line(change(op="BEGIN", schema="", table=""), colour=False)
    assert pretty_line(change(op="TRUNCATE", truncate=Truncate((("public", "t"),), False, True)),
                       colour=False).endswith("public.t  (restart identity)")


def test_sigint_stops_tail_even_when_started_with_sigint_ignored(testdb, ws):
    tail = Tail("--server", ws.addr, "--format", "json", sigint_ignored=True)
    try:
        ws.wait_log("connected")
        testdb.execute("INSERT INTO logs VALUES (1, 'x')")
        tail.json(1)
        assert tail.interrupt() == 0
    finally:
        tail.finish()
