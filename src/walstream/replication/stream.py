"""One replication connection: create the slot, START_REPLICATION with pgoutput, read, send status updates.

Blocking libpq calls (connect, slot creation, START_REPLICATION) run in a worker thread; reading never
blocks (psycopg2's read_message returns None when the socket is drained) and runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from ..errors import ErrorKind, SlotInUseError, SourceError
from ..lsn import format_lsn, parse_lsn
from .catalog import first_line

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


@dataclass(frozen=True)
class StreamInfo:
    server_version: int
    proto_version: int
    encoding: str  # Python codec of the server encoding: pgoutput sends text in it
    created_slot: bool
    start_lsn: int  # consistent point of a new slot, else 0
    sender_timeout: float  # the server's wal_sender_timeout in seconds (0: disabled)


class ReplicationStream:
    """`create`: whether a missing slot may be created. A permanent slot that walstream has already used
    (or found held by another process) is never created again: a new slot would silently skip every change
    committed since the old one was lost."""

    def __init__(self, dsn: str, slot: str, publication: str, temporary: bool, create: bool = True) -> None:
        self.dsn = dsn
        self.slot = slot
        self.publication = publication
        self.temporary = temporary
        self.create = create
        self._conn: psycopg2.extras.LogicalReplicationConnection | None = None
        self._cur: psycopg2.extras.ReplicationCursor | None = None

    # -- opening --------------------------------------------------------------------------------------

    async def open(self) -> StreamInfo:
        return await asyncio.to_thread(self._open)

    def _open(self) -> StreamInfo:
        try:
            conn = psycopg2.connect(self.dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
        except psycopg2.OperationalError as exc:
            raise SourceError(f"cannot connect to PostgreSQL: {first_line(exc)}") from None
        self._conn = conn
        try:
            cur = conn.cursor()
            created, start_lsn = self._ensure_slot(cur) if self.create or self.temporary else (False, 0)
            version = conn.server_version
            cur.execute("SHOW wal_sender_timeout")
            row = cur.fetchone()
            sender_timeout = parse_duration(str(row[0])) if row else 60.0
            proto = protocol_version(version)
            options = {"proto_version": str(proto), "publication_names": quote_publication(self.publication)}
            if version >= 140000:
                options["messages"] = "true"
            try:
                cur.start_replication(slot_name=self.slot, decode=False, options=options, status_interval=10)
            except psycopg2.errors.UndefinedObject as exc:
                if not created and not self.create and self.slot in first_line(exc):
                    raise slot_gone(self.slot) from None
                raise _classify(exc, self.slot) from None
            except psycopg2.Error as exc:
                raise _classify(exc, self.slot) from None
        except BaseException:
            self.close()
            raise
        self._cur = cur
        encoding = psycopg2.extensions.encodings.get(conn.encoding, "utf-8")
        return StreamInfo(version, proto, encoding, created, start_lsn, sender_timeout)

    def _ensure_slot(self, cur: psycopg2.extras.ReplicationCursor) -> tuple[bool, int]:
        try:
            if self.temporary:
                # psycopg2's create_replication_slot has no TEMPORARY; the name is validated [a-z0-9_].
                cur.execute(f'CREATE_REPLICATION_SLOT "{self.slot}" TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT')
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
        log.info("created %s replication slot %s at %s", "temporary" if self.temporary else "permanent",
                 self.slot, consistent)
        return True, parse_lsn(consistent)

    # -- streaming ------------------------------------------------------------------------------------

    def fileno(self) -> int:
        assert self._conn is not None
        return int(self._conn.fileno())

    def read(self) -> psycopg2.extras.ReplicationMessage | None:
        assert self._cur is not None
        try:
            return self._cur.read_message()
        except psycopg2.Error as exc:
            raise _classify(exc, self.slot) from None

    @property
    def wal_end(self) -> int:
        """The server's WAL end from the last keepalive; meaningful only when no transaction is open."""
        assert self._cur is not None
        return int(self._cur.wal_end)

    def send_status(self, write_lsn: int, flush_lsn: int) -> None:
        assert self._cur is not None
        try:
            self._cur.send_feedback(  # type: ignore[no-untyped-call]
                write_lsn=write_lsn, flush_lsn=flush_lsn, force=True)
        except psycopg2.Error as exc:
            raise _classify(exc, self.slot) from None
        log.debug("status update: write %s flush %s", format_lsn(write_lsn), format_lsn(flush_lsn))

    def close(self) -> None:
        conn, self._conn, self._cur = self._conn, None, None
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
    message = first_line(exc)
    if isinstance(exc, psycopg2.errors.ObjectInUse):
        match = _PID_RE.search(message)
        return SlotInUseError(slot, int(match.group(1)) if match else None)
    if isinstance(exc, psycopg2.errors.InsufficientPrivilege):
        return SourceError(message, ErrorKind.PERMISSION)
    if isinstance(exc, psycopg2.errors.UndefinedObject):
        return SourceError(message, ErrorKind.SERVER_SETUP)  # e.g. the publication was dropped
    if isinstance(exc, psycopg2.errors.ObjectNotInPrerequisiteState):
        # PostgreSQL 13-15: "cannot read from logical replication slot", 16-17: "can no longer get changes
        # from replication slot", 18: "can no longer access replication slot"; the detail says why.
        detail = " ".join((getattr(exc.diag, "message_detail", None) or "").split())
        if "invalidated" in detail or "can no longer" in message:
            return slot_invalidated(slot, detail.rstrip(".") or message)
        return SourceError(f"replication slot {slot} cannot be used: {message}", ErrorKind.SLOT_STATE)
    if isinstance(exc, psycopg2.errors.ConfigurationLimitExceeded):
        return SourceError(message, ErrorKind.SERVER_SETUP)
    if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError, psycopg2.DatabaseError)):
        return SourceError(f"replication connection lost: {message}", ErrorKind.CONNECTION)
    return SourceError(message, ErrorKind.PROTOCOL)
