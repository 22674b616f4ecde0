"""Which implementation of the hot path runs: the compiled accelerator (walstream._native) or pure Python.

Chosen once at import, psycopg's way: WALSTREAM_NATIVE=0 forces the pure-Python path, =1 requires the
accelerator (an ImportError naming what failed if it was not built), unset uses it when it was built. The
pure-Python code stays the reference: the accelerator returns None for whatever it does not handle and the
caller runs the Python path for that row, so output is the same with either.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from .errors import ConfigError

ENV = "WALSTREAM_NATIVE"
RowEncodeFn = Callable[[Any, bytes, tuple[Any, ...]], "bytes | None"]
# (op field, lsn, txn fields, ordinal, relation field, cells, kinds, column encoders) -> framed Event | None
InsertEventFn = Callable[[bytes, int, bytes, int, bytes, Any, bytes, tuple[Any, ...]], "bytes | None"]
RunLengthFn = Callable[[list[bytes], int], tuple[int, int]]
# (msgs, lsns, start, stop, op field, txn fields, first ordinal, relation field, kinds, column encoders)
EncodeInsertsFn = Callable[..., tuple[bytes, bytes, int]]
# (COPY text, columns) -> rows | None
CopyRowsFn = Callable[[bytes, int], "int | None"]
# (COPY text, columns, width, cancelled keys, head, relation field, first ordinal, kinds, column encoders,
#  events per piece, bytes per piece) -> (pieces, events in each, rows cancelled) | None
SnapshotEventsFn = Callable[[bytes, int, int, Any, bytes, bytes, int, bytes, tuple[Any, ...], int, int],
                            "tuple[list[bytes], list[int], int] | None"]

_rowenc: ModuleType | None = None
_import_error = ""
try:
    _rowenc = importlib.import_module("walstream._native._rowenc")
except ImportError as exc:  # not built (no C compiler at install time): the Python path
    _import_error = str(exc)


def _choose(setting: str | None) -> tuple[str, str]:
    """(implementation, problem): a problem is raised by require(), so the CLI reports it as one line."""
    if setting in (None, ""):
        return ("native" if _rowenc is not None else "python"), ""
    if setting == "0":
        return "python", ""
    if setting == "1":
        if _rowenc is None:
            return "python", (f"{ENV}=1 but the native accelerator walstream._native is not built "
                              f"({_import_error}); reinstall walstream with a C compiler present, or unset {ENV}")
        return "native", ""
    return "python", f"{ENV} must be 0 (pure Python) or 1 (require the native accelerator), not {setting!r}"


implementation, _problem = _choose(os.environ.get(ENV))


def require() -> None:
    """Raise ConfigError if WALSTREAM_NATIVE asks for what cannot be had (or is not 0/1)."""
    if _problem:
        raise ConfigError(_problem)


def available_implementations() -> list[str]:
    return ["python", "native"] if _rowenc is not None else ["python"]


def description() -> str:
    """For --version and the start log line."""
    if implementation == "native":
        return "native C accelerator"
    why = f"{ENV}=0" if _rowenc is not None else "accelerator not built"
    return f"pure Python ({why})"


def row_encoder(utf8: bool) -> tuple[RowEncodeFn, InsertEventFn, dict[int, int]] | None:
    """The native Row encoder, the INSERT Event writer (adapter.Encoder._row_item in one call) and the kind
    code of each type OID they write themselves (others: K_SLOW, the column's Python encoder called from C),
    or None: pure Python. The kinds are those of wire.py's byte encoders; text-like ones only from a UTF-8
    server, as there."""
    require()
    r = _rowenc
    if implementation != "native" or r is None:
        return None
    kinds = {20: r.K_SINT64, 21: r.K_SINT64, 23: r.K_SINT64, 1700: r.K_NUMERIC, 16: r.K_BOOL,
             1114: r.K_TIMESTAMP, 1184: r.K_TIMESTAMPTZ}
    if utf8:
        kinds.update({25: r.K_TEXT, 1043: r.K_TEXT, 1042: r.K_TEXT, 19: r.K_TEXT, 114: r.K_JSON, 3802: r.K_JSON})
    fn: RowEncodeFn = r.encode_row
    event: InsertEventFn = r.insert_event
    return fn, event, kinds


def txn_fields() -> Callable[[int, int, int], bytes | None] | None:
    """The C twin of adapter.Encoder._txn_fields' bytes (None from it: Python writes them), or None."""
    require()
    r = _rowenc
    if implementation != "native" or r is None:
        return None
    fn: Callable[[int, int, int], bytes | None] = r.txn_fields
    return fn


def insert_decoder() -> tuple[Callable[..., None], Callable[[bytes], Any]] | None:
    """The C twin of decoder.plain_insert as (configure, plain_insert), or None: pure Python."""
    require()
    r = _rowenc
    if implementation != "native" or r is None:
        return None
    return r.configure, r.plain_insert


def plain_run() -> tuple[RunLengthFn, EncodeInsertsFn] | None:
    """(plain_run_length, encode_plain_run): a burst's Inserts cut into runs of one relation and written as
    framed walstream.v1 Events in one call each (events/run.py), or None: pure Python, message by message."""
    require()
    r = _rowenc
    if implementation != "native" or r is None:
        return None
    run_length: RunLengthFn = r.plain_run_length
    encode: EncodeInsertsFn = r.encode_plain_run
    return run_length, encode


def copy_reader(get_copy_data: int, freemem: int) -> Callable[[int], Any] | None:
    """The C CopyData reader, bound to libpq's PQgetCopyData and PQfreemem (by address), or None."""
    require()
    r = _rowenc
    if implementation != "native" or r is None:
        return None
    r.set_libpq(get_copy_data, freemem)
    fn: Callable[[int], Any] = r.read_copy_data
    return fn


def copy_row_counter() -> CopyRowsFn | None:
    """The C check of a COPY text buffer (snapshot.copytext.CopyChunk: rows counted, each with the right
    number of fields; None from it: parse in Python, which says what is wrong), or None: pure Python."""
    require()
    r = _rowenc
    if implementation != "native" or r is None:
        return None
    fn: CopyRowsFn = r.copy_rows
    return fn


def snapshot_writer() -> SnapshotEventsFn | None:
    """The C writer of a snapshot chunk's SNAPSHOT events straight from its COPY text (Encoder.snapshot_chunk
    in one call; None from it: that chunk in Python), or None: pure Python."""
    require()
    r = _rowenc
    if implementation != "native" or r is None:
        return None
    fn: SnapshotEventsFn = r.snapshot_events
    return fn


@contextmanager
def using(name: str) -> Iterator[None]:
    """Run a block with one implementation (tests and bench/micro.py compare both in one process); encoders
    built inside it keep the choice."""
    global implementation
    if name not in available_implementations():
        raise ImportError(f"implementation {name!r} is not available here: {available_implementations()}")
    saved, implementation = implementation, name
    try:
        yield
    finally:
        implementation = saved
