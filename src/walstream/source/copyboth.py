"""The replication protocol's CopyBoth sub-protocol, spoken by walstream itself over psycopg2's libpq.

psycopg2's `read_message()` answers keepalives on its own and, on a keepalive read right after a message
whose start LSN is 0 (Relation, Type), moves the flush position it reports up to the server's WAL end,
whatever the clients acknowledged. So walstream reads CopyData and writes Standby Status Updates itself,
as pg_recvlogical does: nothing but walstream's ack ledger decides what PostgreSQL is told is flushed.

psycopg2 still opens the connection, creates the slot and sends START_REPLICATION; after that only this
module touches the connection, through the libpq functions of the very library psycopg2 loaded (found
with ctypes from psycopg2's own extension module, so there is one libpq in the process).

Messages (protocol-replication.html): XLogData `w` + dataStart(8) + walEnd(8) + sendTime(8) + data;
Primary keepalive `k` + walEnd(8) + sendTime(8) + replyRequested(1); Standby status update `r` +
write(8) + flush(8) + apply(8) + clock(8) + replyRequested(1). Integers are big-endian.
"""

from __future__ import annotations

import ctypes
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2._psycopg

from .. import native

PG_EPOCH_OFFSET_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970
_XLOG_HEADER = 25  # w + dataStart + walEnd + sendTime
_KEEPALIVE = struct.Struct(">QQB")  # after the 'k'
_LSN = struct.Struct(">Q")
_STATUS = struct.Struct(">cQQQQB")
_SQLSTATE, _PRIMARY, _DETAIL = ord("C"), ord("M"), ord("D")
PGRES_FATAL_ERROR = 7


def _bind() -> ctypes.CDLL:
    lib = ctypes.CDLL(psycopg2._psycopg.__file__)  # its libpq comes with it: dlsym searches dependencies
    vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    for name, restype, argtypes in (
        ("PQputCopyData", i, [vp, cp, i]),
        ("PQflush", i, [vp]),
        ("PQerrorMessage", cp, [vp]),
        ("PQgetResult", vp, [vp]),
        ("PQresultStatus", i, [vp]),
        ("PQresultErrorField", cp, [vp, i]),
        ("PQclear", None, [vp]),
        ("PQfreemem", None, [vp]),
    ):
        func = getattr(lib, name)
        func.restype, func.argtypes = restype, argtypes
    return lib


_lib = _bind()
# The read path runs once per message: its calls keep the GIL (PyDLL; none of them blocks: the connection is
# read in async mode) and take ctypes objects as they are (no argtypes to convert through), which makes each
# call about half as expensive. Integers passed bare are C ints, which libffi widens.
_hot = ctypes.PyDLL(psycopg2._psycopg.__file__)
_get_copy_data, _consume_input, _free = _hot.PQgetCopyData, _hot.PQconsumeInput, _hot.PQfreemem
_bytes_from = ctypes.pythonapi.PyBytes_FromStringAndSize
_bytes_from.restype = ctypes.py_object


def _function_address(func: Any) -> int:  # a ctypes function pointer
    address = ctypes.cast(func, ctypes.c_void_p).value
    return int(address or 0)


@dataclass(frozen=True)
class ServerError:
    """The error PostgreSQL ended the stream with."""

    sqlstate: str
    message: str
    detail: str


class CopyBothError(Exception):
    """The stream ended: `server` is PostgreSQL's error if it sent one, else libpq's reason is the message."""

    def __init__(self, message: str, server: ServerError | None = None) -> None:
        super().__init__(message)
        self.server = server


class CopyBoth:
    """Reads XLogData and keepalives from a connection in COPY BOTH mode and writes status updates.

    `read()` never blocks: it returns (data_start, pgoutput message) or None once libpq's buffer and the
    socket are drained. Keepalives are consumed on the way: they update `wal_end`, and one that asks for
    a reply sets `reply_requested`, which the session answers with its own positions (send_status).
    """

    def __init__(self, pgconn_ptr: int) -> None:
        self._conn = ctypes.c_void_p(pgconn_ptr)
        self._conn_int = pgconn_ptr
        # The C accelerator's reader (walstream.native), handed this libpq's functions by address.
        self._native = native.copy_reader(_function_address(_get_copy_data), _function_address(_free))
        self._buf = ctypes.c_void_p()
        self._buf_ref = ctypes.byref(self._buf)
        self.wal_end = 0  # the server's WAL end from the last keepalive
        self.reply_requested = False

    def read(self) -> tuple[int, bytes] | None:
        native = self._native
        if native is not None:
            got = native(self._conn_int)  # an XLogData at once (three per one-row transaction); the rest below
            return got if type(got) is tuple else self._read_native(native, got)
        conn, buf, buf_ref = self._conn, self._buf, self._buf_ref
        consumed = False
        while True:
            n = _get_copy_data(conn, buf_ref, 1)
            if n > 0:
                try:
                    message: bytes = _bytes_from(buf, n)  # one copy out of libpq's buffer
                finally:
                    _free(buf)
                if message[0] == 0x77 and n > _XLOG_HEADER:  # 'w' XLogData
                    return _LSN.unpack_from(message, 1)[0], message[_XLOG_HEADER:]
                self._keepalive(message)
                consumed = True
                continue
            if n == 0:
                if consumed:
                    return None
                if not _consume_input(conn):
                    raise CopyBothError(self._libpq_error())
                consumed = True  # read what the socket had; if that completed nothing, the socket is drained
                continue
            raise self._ended(n)

    def _read_native(self, read_copy_data: Callable[[int], tuple[int, bytes] | bytes | int],
                     got: tuple[int, bytes] | bytes | int) -> tuple[int, bytes] | None:
        """read() with the C accelerator, from its first result `got`: XLogData come back as (data_start,
        message), other messages whole, PQgetCopyData's n <= 0 as an int; the rest as in read()."""
        conn = self._conn_int
        consumed = False
        while True:
            if consumed:
                got = read_copy_data(conn)
            if type(got) is tuple:
                return got
            if isinstance(got, bytes):
                self._keepalive(got)
                consumed = True
                continue
            assert isinstance(got, int)
            if got == 0:
                if consumed:
                    return None
                if not _consume_input(self._conn):
                    raise CopyBothError(self._libpq_error())
                consumed = True
                continue
            raise self._ended(got)

    def _keepalive(self, message: bytes) -> None:
        """A message other than XLogData: a primary keepalive, or an error."""
        if message[0] == 0x6B and len(message) >= 1 + _KEEPALIVE.size:  # 'k' primary keepalive
            wal_end, _, reply = _KEEPALIVE.unpack_from(message, 1)
            self.wal_end = max(self.wal_end, wal_end)
            self.reply_requested = self.reply_requested or bool(reply)
            return
        raise CopyBothError(f"unexpected replication message {message[:1]!r} of {len(message)} bytes")

    def send_status(self, write_lsn: int, flush_lsn: int) -> None:
        """A Standby Status Update: written and flushed positions (applied: 0, as pg_recvlogical sends)."""
        clock = int(time.time() * 1_000_000) - PG_EPOCH_OFFSET_US
        message = _STATUS.pack(b"r", write_lsn, flush_lsn, 0, clock, 0)
        if _lib.PQputCopyData(self._conn, message, len(message)) != 1 or _lib.PQflush(self._conn) != 0:
            raise CopyBothError(self._libpq_error())
        self.reply_requested = False

    def _ended(self, code: int) -> CopyBothError:
        """-1: the server ended the copy (its result says why); -2: libpq failed."""
        if code == -1:
            result = _lib.PQgetResult(self._conn)
            try:
                if result and _lib.PQresultStatus(result) == PGRES_FATAL_ERROR:
                    fields = [_lib.PQresultErrorField(result, f) or b"" for f in (_SQLSTATE, _PRIMARY, _DETAIL)]
                    sqlstate, message, detail = (f.decode("utf-8", "replace") for f in fields)
                    return CopyBothError(message, ServerError(sqlstate, message, detail))
            finally:
                if result:
                    _lib.PQclear(result)
            return CopyBothError("the server ended the replication stream")
        return CopyBothError(self._libpq_error())

    def _libpq_error(self) -> str:
        text = (_lib.PQerrorMessage(self._conn) or b"").decode("utf-8", "replace").strip()
        return text.splitlines()[0] if text else "the connection was lost"
