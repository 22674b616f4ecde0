"""`walstream tail`: print the change stream of a running walstream (a walstream.v1 client).

    walstream tail [--server HOST:PORT] [--table PATTERN ...] [--exclude-table PATTERN ...]
                   [--op insert|update|delete|truncate ...] [--format json|pretty] [--no-ack]
                   [--transactions] [--messages] [--snapshot [TABLES]] [--tls-ca FILE]
                   [--tls-cert FILE --tls-key FILE]
                   [--auth-token TOKEN | --auth-token-file FILE]

json: one compact JSON object per event and line (jq-friendly). pretty: one readable line per event,
coloured when stdout is a terminal (and NO_COLOR is not set). Each batch is acknowledged once printed
(unless --no-ack). Ctrl-C or SIGTERM ends it with exit 0 after sending the acknowledgements. --snapshot
first prints the rows the tables already hold (op SNAPSHOT) while changes keep coming, with progress on
stderr.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from time import monotonic
from typing import IO, Any

import orjson

from ..client import Change, Client, SnapshotProgress, StreamError
from ..errors import ErrorKind, WalstreamError
from ..lsn import format_lsn

DEFAULT_SERVER = "127.0.0.1:50051"
SERVER_ENV = "WALSTREAM_ADDR"
OPERATIONS = ("insert", "update", "delete", "truncate")
_ROW_OPS = frozenset({"INSERT", "UPDATE", "DELETE", "SNAPSHOT"})
_INT64 = 2**63


# ---- json -------------------------------------------------------------------------------------------------

def jsonable(value: Any) -> Any:
    """A value orjson can write: Decimal as a JSON number with its exact digits, bytes as "\\x..." hex,
    non-finite numbers as the strings "NaN", "Infinity", "-Infinity"; dates and times stay (ISO 8601)."""
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else orjson.Fragment(str(value))
    if isinstance(value, float):
        return value if math.isfinite(value) else _special(value)
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value)) if value.is_finite() else _special(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value  # datetime, date, time: orjson writes ISO 8601


def _special(value: float | Decimal) -> str:
    if value != value:  # NaN
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def change_object(change: Change) -> dict[str, Any]:
    """The JSON object `tail --format json` prints for an event."""
    obj: dict[str, Any] = {
        "op": change.op,
        "schema": change.schema,
        "table": change.table,
        "lsn": format_lsn(change.lsn),
        "commit_lsn": format_lsn(change.commit_lsn) if change.commit_lsn else None,
        "ordinal": change.ordinal,
        "xid": change.xid or None,
        "commit_time": change.commit_time,
    }
    if change.op in _ROW_OPS:
        obj["new"] = jsonable(change.new)
        obj["old"] = jsonable(change.old)
        obj["old_is_key"] = change.old_is_key
        obj["unchanged_toast"] = sorted(change.unchanged_toast)
    if change.truncate is not None:
        t = change.truncate
        obj["tables"] = [f"{schema}.{table}" for schema, table in t.tables]
        obj["cascade"] = t.cascade
        obj["restart_identity"] = t.restart_identity
    if change.message is not None:
        m = change.message
        obj["prefix"] = m.prefix
        obj["content"] = _message_text(m.content)
        obj["transactional"] = m.transactional
    if change.end_lsn is not None:
        obj["end_lsn"] = format_lsn(change.end_lsn)
    return obj


def _message_text(content: bytes) -> str:
    try:
        return content.decode()
    except UnicodeDecodeError:
        return "\\x" + content.hex()


def json_line(change: Change) -> bytes:
    obj = change_object(change)
    try:
        return orjson.dumps(obj) + b"\n"
    except orjson.JSONEncodeError:  # a lone surrogate (json accepts "\ud800"): write it as an escape
        return orjson.dumps(_no_surrogates(obj)) + b"\n"


def _no_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode()
    if isinstance(value, dict):
        return {_no_surrogates(k): _no_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_surrogates(v) for v in value]
    return value


# ---- pretty -----------------------------------------------------------------------------------------------

_OP_COLOURS = {"INSERT": "32", "UPDATE": "33", "DELETE": "31", "TRUNCATE": "35", "MESSAGE": "36",
               "BEGIN": "2", "COMMIT": "2", "SNAPSHOT": "34"}


def _plain(_: str, text: str) -> str:
    return text


def _ansi(code: str, text: str) -> str:
    return f"\x1b[{code}m{text}\x1b[0m"


def pretty_value(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (bytes, bytearray)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return orjson.dumps(jsonable(value)).decode()
    return str(value)


def pretty_line(change: Change, colour: bool) -> str:
    paint: Callable[[str, str], str] = _ansi if colour else _plain
    op = change.op
    head = f"{paint('2', format_lsn(change.lsn).rjust(12))}  {paint(_OP_COLOURS.get(op, '1'), op.ljust(8))}"

    def pairs(row: dict[str, Any] | None, toast: frozenset[str] = frozenset()) -> str:
        items = [f"{paint('2', k + '=')}{pretty_value(v)}" for k, v in (row or {}).items()]
        items += [f"{paint('2', k + '=')}{paint('2', '<unchanged>')}" for k in sorted(toast)]
        return " ".join(items)

    if op in _ROW_OPS:
        parts = [head, paint("1", change.qualified_table)]
        if change.new is not None:
            parts.append(pairs(change.new, change.unchanged_toast))
        if change.old is not None:
            label = "key:" if change.old_is_key else "old:"
            parts.append(("" if op == "DELETE" else paint("2", label) + " ") + pairs(change.old))
        return "  ".join(p for p in parts if p)
    if change.truncate is not None:
        t = change.truncate
        names = ", ".join(f"{s}.{n}" for s, n in t.tables)
        flags = [f for f, on in (("cascade", t.cascade), ("restart identity", t.restart_identity)) if on]
        return f"{head} {paint('1', names)}" + (f"  ({', '.join(flags)})" if flags else "")
    if change.message is not None:
        m = change.message
        kind = "transactional" if m.transactional else "non-transactional"
        return f"{head} prefix={m.prefix!r} content={_message_text(m.content)!r} ({kind})"
    if op == "BEGIN":
        when = f" at {change.commit_time.isoformat(sep=' ')}" if change.commit_time else ""
        return f"{head} xid {change.xid}{when}"
    if op == "COMMIT":
        return f"{head} xid {change.xid}"
    return head


# ---- snapshot progress ------------------------------------------------------------------------------------

class ProgressReport:
    """Snapshot progress on stderr: on a terminal one bar per table, redrawn in place (rows, %, rate, ETA);
    otherwise one plain line per chunk. stdout keeps only the events."""

    WIDTH = 24

    def __init__(self, out: IO[str], terminal: bool, clock: Callable[[], float] = monotonic) -> None:
        self.out, self.terminal, self.clock = out, terminal, clock
        self._started: dict[str, float] = {}
        self._open = ""  # the table whose bar is drawn on the current (unfinished) line

    def __call__(self, progress: SnapshotProgress) -> None:
        now = self.clock()
        started = self._started.setdefault(progress.table, now)
        line = self.line(progress, now - started)
        if not self.terminal:
            self.out.write(line + "\n")
        else:
            if self._open and self._open != progress.table:
                self.out.write("\n")
            finished = progress.state in ("TABLE_DONE", "DONE")
            self.out.write("\r\x1b[K" + line + ("\n" if finished else ""))
            self._open = "" if finished else progress.table
        self.out.flush()

    def line(self, progress: SnapshotProgress, elapsed: float) -> str:
        sent, estimate = progress.rows_sent + progress.rows_superseded, progress.rows_estimate
        finished = progress.state in ("TABLE_DONE", "DONE")
        fraction = 1.0 if finished else min(sent / estimate, 0.99) if estimate else None
        rate = sent / elapsed if elapsed > 0 else 0.0
        parts = [f"snapshot {progress.table}"]
        if self.terminal:
            filled = round((fraction or 0.0) * self.WIDTH)
            parts.append("[" + "#" * filled + "." * (self.WIDTH - filled) + "]")
        parts.append(f"{progress.rows_sent} rows" + (f" of ~{estimate}" if estimate else ""))
        if fraction is not None:
            parts.append(f"{fraction:.0%}")
        parts.append(f"{rate:.0f} rows/s")
        if finished:
            parts.append("done" if not progress.done else "snapshot complete")
        elif fraction is not None and rate > 0 and estimate > sent:
            parts.append(f"ETA {_duration((estimate - sent) / rate)}")
        if progress.rows_superseded or progress.retries:
            parts.append(f"({progress.rows_superseded} superseded, {progress.retries} re-read)")
        return "  ".join(parts)


def _duration(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


# ---- the command ------------------------------------------------------------------------------------------

def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_tail(
    server: str,
    tables: Sequence[str] = (),
    exclude_tables: Sequence[str] = (),
    operations: Sequence[str] = (),
    fmt: str = "json",
    ack: bool = True,
    transactions: bool = False,
    messages: bool = False,
    out: IO[bytes] | None = None,
    colour: bool | None = None,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    token: str | None = None,
    snapshot: Sequence[str] | None = None,
    progress_out: IO[str] | None = None,
) -> int:
    """snapshot: None for none, [] for every table tailed, or table patterns."""
    stream = out if out is not None else sys.stdout.buffer
    report = None
    if snapshot is not None:
        errors = progress_out if progress_out is not None else sys.stderr
        report = ProgressReport(errors, errors.isatty())
    if colour is None:
        colour = fmt == "pretty" and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    if out is None:
        signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM ends it like Ctrl-C: acks are sent
    try:
        client = Client(server, tables=tables, exclude_tables=exclude_tables, operations=operations,
                        transaction_boundaries=transactions, logical_messages=messages,
                        client_name="walstream tail", tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                        token=token, snapshot=None if snapshot is None else list(snapshot), on_progress=report)
    except ValueError as exc:  # an option the client library refused
        raise WalstreamError(str(exc), ErrorKind.CONFIG) from None
    try:
        with client:
            for batch in client.batches():
                if fmt == "json":
                    data = b"".join(json_line(change) for change in batch)
                else:
                    data = "".join(pretty_line(change, colour) + "\n" for change in batch).encode()
                stream.write(data)
                stream.flush()
                if ack:
                    client.ack(batch)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): the batch being written is not acknowledged.
        if out is None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    except StreamError as exc:
        raise WalstreamError(str(exc), ErrorKind.CONNECTION) from None
    return 0
