"""One replication connection: create the slot, START_REPLICATION with pgoutput, read, send status updates.

Blocking libpq calls (connect, slot creation, START_REPLICATION) run in a worker thread; reading never
blocks (CopyBoth.read returns None when the socket is drained) and runs on the event loop. Once streaming,
the connection is read and answered by walstream.source.copyboth, never by psycopg2's read_message
(which would report a flush position of its own choosing).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from ..errors import ErrorKind, SlotInUseError, SourceError
from ..events.text import SQL_ASCII
from ..lsn import format_lsn, parse_lsn
from ..threads import in_daemon_thread
from . import failover as failover_slots
from .base import StreamInfo
from .catalog import CONNECT_TIMEOUT, first_line
from .copyboth import CopyBoth, CopyBothError
from .dsn import parse_connection

log = logging.getLogger(__name__)

_PID_RE = re.compile(r"PID (\d+)")


def protocol_version(server_version: int) -> int:
    """Highest pgoutput protocol walstream decodes that the server speaks."""
    if server_version >= 160000:
        return 4
    if server_version >= 150000:
        return 3
    if server_version >= 140000:
        return 2
    return 1


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_duration(text: str) -> float:
    """A PostgreSQL time setting as SHOW prints it ('1min', '500ms', '0') in seconds."""
    match = _DURATION_RE.match(text)
    if not match or match.group(2) not in {"", *_UNITS}:
        raise SourceError(f"unexpected duration {text!r} from the server", ErrorKind.PROTOCOL)
    return float(match.group(1)) * _UNITS.get(match.group(2), 1e-3)  # a bare number is milliseconds


def quote_publication(name: str) -> str:
    # pgoutput splits publication_names as an identifier list: quote so any name is taken literally.
    return '"' + name.replace('"', '""') + '"'


class ReplicationStream:
    """`create`: whether a missing slot may be created. A permanent slot that walstream has already used
    (or found held by another process) is never created again: a new slot would silently skip every change
    committed since the old one was lost."""

    def __init__(self, dsn: str, slot: str, publication: str, temporary: bool, create: bool = True,
                 failover: bool = False, export: Callable[[str, int], None] | None = None) -> None:
        failover_slots.check_permanent(failover, temporary)
        self.dsn = dsn
        self.slot = slot
        self.publication = publication
        self.temporary = temporary
        self.create = create
        self.failover = failover
        # Called with (snapshot name, consistent point) when this stream creates the slot, exporting its
        # snapshot: the snapshot is importable only until the replication connection runs anything else,
        # so the callee must import it before it returns (walstream.snapshot.consistent).
        self.export = export
        self._conn: psycopg2.extras.LogicalReplicationConnection | None = None
        self._wire: CopyBoth | None = None

    # -- opening --------------------------------------------------------------------------------------

    async def open(self) -> StreamInfo:
        """Connect and start streaming off the event loop; a caller that stops waiting (walstream is
        stopping while a host does not answer) is held up neither here nor at exit."""
        return await in_daemon_thread(self._open, "walstream-replication-connect", lambda info: self.close())

    def _open(self) -> StreamInfo:
        dsn = self.dsn
        if "connect_timeout" not in parse_connection(dsn):  # libpq waits forever on a black-holed host
            dsn = psycopg2.extensions.make_dsn(dsn, connect_timeout=CONNECT_TIMEOUT)
        try:
            conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
        except psycopg2.OperationalError as exc:
            raise SourceError(f"cannot connect to PostgreSQL: {first_line(exc)}") from None
        self._conn = conn
        try:
            cur = conn.cursor()
            created, start_lsn = self._ensure_slot(cur) if self.create or self.temporary else (False, 0)
            version = conn.server_version
            if self.failover and not created:
                self._enable_failover(cur)
            cur.execute("SHOW wal_sender_timeout")
            row = cur.fetchone()
            sender_timeout = parse_duration(str(row[0])) if row else 60.0
            proto = protocol_version(version)
            options = {"proto_version": str(proto), "publication_names": quote_publication(self.publication)}
            if version >= 140000:
                options["messages"] = "true"
            try:
                cur.start_replication(slot_name=self.slot, decode=False, options=options)
            except psycopg2.errors.UndefinedObject as exc:
                if not created and not self.create and self.slot in first_line(exc):
                    raise slot_gone(self.slot) from None
                raise _classify(exc, self.slot) from None
            except psycopg2.Error as exc:
                raise _classify(exc, self.slot) from None
        except BaseException:
            self.close()
            raise
        pgconn = conn.pgconn_ptr
        assert pgconn is not None  # an open connection has one
        self._wire = CopyBoth(pgconn)
        if conn.encoding.replace("_", "") == "SQLASCII":  # no encoding at all: events/text.py has the rule
            encoding = SQL_ASCII
        else:
            encoding = psycopg2.extensions.encodings.get(conn.encoding, "utf-8")
        return StreamInfo(version, proto, encoding, created, start_lsn, sender_timeout)

    def _ensure_slot(self, cur: psycopg2.extras.ReplicationCursor) -> tuple[bool, int]:
        try:
            if self.failover:
                cur.execute(failover_slots.create_command(self.slot, export=self.export is not None))
            elif self.temporary or self.export is not None:
                # psycopg2's create_replication_slot has neither TEMPORARY nor a snapshot option; the name
                # is validated [a-z0-9_]. EXPORT_SNAPSHOT / NOEXPORT_SNAPSHOT: the syntax of 10 and later.
                kind = "TEMPORARY LOGICAL" if self.temporary else "LOGICAL"
                snapshot = "EXPORT_SNAPSHOT" if self.export is not None else "NOEXPORT_SNAPSHOT"
                cur.execute(f'CREATE_REPLICATION_SLOT "{self.slot}" {kind} pgoutput {snapshot}')
            else:
                cur.create_replication_slot(self.slot, output_plugin="pgoutput")
        except psycopg2.errors.DuplicateObject:
            if self.temporary:
                raise SlotInUseError(self.slot, None) from None
            return False, 0  # a permanent slot that already exists: resume from its confirmed position
        except psycopg2.Error as exc:
            raise _classify(exc, self.slot) from None
        row = cur.fetchone()
        consistent = row[1] if row else "0/0"
        kind = "temporary" if self.temporary else "permanent failover" if self.failover else "permanent"
        log.info("created %s replication slot %s at %s", kind, self.slot, consistent)
        if self.export is not None and row is not None and row[2]:
            self.export(str(row[2]), parse_lsn(consistent))  # before this connection runs anything else
        return True, parse_lsn(consistent)

    def _enable_failover(self, cur: psycopg2.extras.ReplicationCursor) -> None:
        try:
            failover_slots.enable(cur, self.slot)
        except psycopg2.Error as exc:
            raise _classify(exc, self.slot) from None

    # -- streaming ------------------------------------------------------------------------------------

    def fileno(self) -> int:
        assert self._conn is not None
        return int(self._conn.fileno())

    def read(self) -> tuple[int, bytes] | None:
        """(the message's start LSN, the pgoutput message), or None when nothing more has arrived."""
        assert self._wire is not None
        try:
            return self._wire.read()
        except CopyBothError as exc:
            raise _stream_ended(exc, self.slot) from None

    @property
    def wal_end(self) -> int:
        """The server's WAL end from the last keepalive; meaningful only when no transaction is open."""
        assert self._wire is not None
        return self._wire.wal_end

    @property
    def reply_requested(self) -> bool:
        """A keepalive asked for a status update: send one now, or the walsender times the stream out."""
        return self._wire is not None and self._wire.reply_requested

    def send_status(self, write_lsn: int, flush_lsn: int) -> None:
        assert self._wire is not None
        try:
            self._wire.send_status(write_lsn, flush_lsn)
        except CopyBothError as exc:
            raise _stream_ended(exc, self.slot) from None
        log.debug("status update: write %s flush %s", format_lsn(write_lsn), format_lsn(flush_lsn))

    def close(self) -> None:
        conn, self._conn, self._wire = self._conn, None, None
        if conn is not None:
            try:
                conn.close()
            except psycopg2.Error:
                pass


def slot_gone(slot: str) -> SourceError:
    return SourceError(
        f'replication slot "{slot}" was dropped while walstream was using or waiting for it; it is not created '
        "again, since the changes committed meanwhile would be skipped silently: start walstream again to create "
        "a new slot (those changes are lost)",
        ErrorKind.SLOT_STATE,
    )


def slot_invalidated(slot: str, why: str) -> SourceError:
    return SourceError(
        f'replication slot "{slot}" was invalidated and can no longer be used ({why}): drop it with '
        f"`walstream delete --slot {slot}` and start again (changes since it was invalidated are lost)",
        ErrorKind.SLOT_STATE,
    )


def _classify(exc: psycopg2.Error, slot: str) -> Exception:
    """Map a psycopg2 error to walstream's error kinds (retryable or not)."""
    detail = getattr(exc.diag, "message_detail", None) or ""
    return classify(exc.pgcode or "", first_line(exc), detail, slot)


def _stream_ended(exc: CopyBothError, slot: str) -> Exception:
    if exc.server is None:
        return SourceError(f"replication connection lost: {exc}", ErrorKind.CONNECTION)
    return classify(exc.server.sqlstate, exc.server.message, exc.server.detail, slot)


def classify(sqlstate: str, message: str, detail: str, slot: str) -> Exception:
    """An error PostgreSQL reported (SQLSTATE, message, detail) as walstream's error kinds."""
    if sqlstate == "55006":  # object_in_use
        match = _PID_RE.search(message)
        return SlotInUseError(slot, int(match.group(1)) if match else None)
    if sqlstate == "42501":  # insufficient_privilege
        return SourceError(message, ErrorKind.PERMISSION)
    if sqlstate == "42704":  # undefined_object, e.g. the publication was dropped
        return SourceError(message, ErrorKind.SERVER_SETUP)
    if sqlstate == "55000":  # object_not_in_prerequisite_state
        # PostgreSQL 13-15: "cannot read from logical replication slot", 16-17: "can no longer get changes
        # from replication slot", 18: "can no longer access replication slot"; the detail says why.
        detail = " ".join(detail.split())
        if "invalidated" in detail or "can no longer" in message:
            return slot_invalidated(slot, detail.rstrip(".") or message)
        return SourceError(f"replication slot {slot} cannot be used: {message}", ErrorKind.SLOT_STATE)
    if sqlstate == "53400":  # configuration_limit_exceeded
        return SourceError(message, ErrorKind.SERVER_SETUP)
    # Anything else (connection failures, shutdowns, a walsender that errored out) ends this connection
    # only: a new one resumes at the confirmed position.
    return SourceError(f"replication connection lost: {message}", ErrorKind.CONNECTION)
