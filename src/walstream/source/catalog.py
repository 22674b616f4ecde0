"""Catalog-side checks and slot management over an ordinary (non-replication) connection.

Everything the user named goes to PostgreSQL as a query parameter. Rows of pg_replication_slots are read
by column name: its columns differ between PostgreSQL 10 and 18.
"""

from __future__ import annotations

import datetime
import decimal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from ..errors import ErrorKind, SourceError, WalstreamError
from ..lsn import parse_lsn
from . import failover as failover_slots
from .dsn import parse_connection, plain_dsn, redact

Connection = psycopg2.extensions.connection
Cursor = psycopg2.extensions.cursor
DatabaseError = psycopg2.Error  # what the driver raises: callers outside source/ catch it by this name

PLUGIN = "pgoutput"
MIN_SERVER_VERSION = 100000  # pgoutput and publications arrived in PostgreSQL 10
CONNECT_TIMEOUT = "10"  # seconds; libpq's default is to wait forever on an unreachable host


@dataclass(frozen=True)
class SlotInfo:
    """An existing logical slot that walstream can stream from."""

    name: str
    plugin: str
    temporary: bool
    active_pid: int | None
    confirmed_flush_lsn: int | None
    wal_status: str | None  # None before PostgreSQL 13
    failover: bool | None = None  # None before PostgreSQL 17


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (libpq adds hints on further lines), password redacted."""
    text = str(exc).strip()
    return redact(text.splitlines()[0]) if text else type(exc).__name__


def connect(conn_str: str) -> Connection:
    """An autocommit connection for catalog queries; SourceError with libpq's reason if it fails."""
    dsn = plain_dsn(conn_str)
    if "connect_timeout" not in parse_connection(conn_str):
        dsn = psycopg2.extensions.make_dsn(dsn, connect_timeout=CONNECT_TIMEOUT)
    try:
        conn: Connection = psycopg2.connect(dsn)
    except psycopg2.Error as exc:
        raise SourceError(f"cannot connect to PostgreSQL: {first_line(exc)}", ErrorKind.CONNECTION) from None
    conn.autocommit = True
    return conn


T = TypeVar("T")
STATEMENT_TIMEOUT_MS = 5000  # a side query must never hang a Status call or a metrics scrape


class SideQueryFailed(Exception):
    """PostgreSQL could not answer a side query; the message is libpq's reason (password redacted)."""


class SideConnection:
    """A plain connection of its own for short queries made off the event loop (Status, the slot monitor):
    opened on first use with a statement timeout, and replaced once when a query finds it broken. One
    query at a time (a lock), so worker and HTTP threads may share it."""

    def __init__(self, conn_str: str, connect: Callable[[str], Connection] = connect) -> None:
        self._conn_str = conn_str
        self._connect = connect
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def run(self, query: Callable[[Connection], T]) -> T:
        """query(connection); SideQueryFailed when PostgreSQL cannot be reached or the query fails twice."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None:
                        self._conn = self._connect(self._conn_str)
                        with self._conn.cursor() as cur:
                            cur.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
                    return query(self._conn)
                except (psycopg2.Error, WalstreamError) as exc:
                    self._close()
                    if attempt == 2 or isinstance(exc, WalstreamError):
                        raise SideQueryFailed(first_line(exc)) from None
        raise AssertionError("not reached")

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg2.Error:
                pass
            self._conn = None


def _query(conn: Connection, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        names = [col.name for col in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _scalar(conn: Connection, sql: str, params: tuple[Any, ...] = ()) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
        return row[0] if row else None


def server_version(conn: Connection) -> int:
    return int(_scalar(conn, "SELECT current_setting('server_version_num')"))


def _ident(conn: Connection, name: str) -> str:
    # PostgreSQL's quote_ident quotes only when needed (capitals, spaces, keywords): hints read naturally.
    return str(_scalar(conn, "SELECT quote_ident(%s)", (name,)))


def check_start(conn: Connection, publication: str, slot: str, failover: bool = False) -> SlotInfo | None:
    """Fail fast, with the fix in the message, on anything that would stop streaming `publication` via `slot`.

    Returns the existing slot (possibly active in another process: the engine decides whether to wait)
    or None when it has to be created.
    """
    version = server_version(conn)
    if version < MIN_SERVER_VERSION:
        raise SourceError(
            f"PostgreSQL {_scalar(conn, 'SHOW server_version')} is too old: walstream needs 10 or later",
            ErrorKind.SERVER_SETUP,
        )
    if failover:
        failover_slots.require_server(version, str(_scalar(conn, "SHOW server_version")))
    wal_level = _scalar(conn, "SELECT current_setting('wal_level')")
    if wal_level != "logical":
        raise SourceError(
            f'wal_level is "{wal_level}" but logical decoding needs "logical": set wal_level = logical in '
            "postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart PostgreSQL",
            ErrorKind.SERVER_SETUP,
        )
    # Amazon RDS grants replication through membership in rds_replication instead of the attribute.
    role = _query(
        conn,
        "SELECT rolname, rolsuper OR rolreplication OR EXISTS (SELECT 1 FROM pg_roles g WHERE "
        "g.rolname = 'rds_replication' AND pg_has_role(current_user, g.oid, 'MEMBER')) AS may_replicate "
        "FROM pg_roles WHERE rolname = current_user",
    )
    if role and not role[0]["may_replicate"]:
        name = role[0]["rolname"]
        raise SourceError(
            f'role "{name}" may not use replication: run ALTER ROLE {_ident(conn, name)} WITH REPLICATION; '
            "as a superuser",
            ErrorKind.PERMISSION,
        )
    database = str(_scalar(conn, "SELECT current_database()"))
    if _scalar(conn, "SELECT count(*) FROM pg_publication WHERE pubname = %s", (publication,)) == 0:
        raise SourceError(
            f'publication "{publication}" does not exist in database "{database}": create it, e.g. '
            f"CREATE PUBLICATION {_ident(conn, publication)} FOR ALL TABLES;",
            ErrorKind.SERVER_SETUP,
        )
    _check_wal_senders(conn)
    rows = _query(conn, "SELECT * FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    if not rows:
        _check_free_slot(conn)
        return None
    return _usable_slot(rows[0], database)


def _usable_slot(row: dict[str, Any], database: str) -> SlotInfo:
    name = row["slot_name"]
    fix = f"choose another --slot or drop this one with `walstream delete --slot {name}`"
    if row["slot_type"] != "logical":
        raise SourceError(
            f'replication slot "{name}" is a {row["slot_type"]} slot, not a logical one: {fix}',
            ErrorKind.SLOT_STATE,
        )
    if row["plugin"] != PLUGIN:
        raise SourceError(
            f'replication slot "{name}" uses plugin "{row["plugin"]}", not "{PLUGIN}": {fix}',
            ErrorKind.SLOT_STATE,
        )
    if row["database"] != database:
        raise SourceError(
            f'replication slot "{name}" belongs to database "{row["database"]}", not "{database}": '
            f'connect to "{row["database"]}" or choose another --slot',
            ErrorKind.SLOT_STATE,
        )
    # PostgreSQL 13+: the slot's WAL was removed (max_slot_wal_keep_size); 16+: invalidated on a standby.
    reason = row.get("invalidation_reason") or ("wal_removed" if row.get("wal_status") == "lost" else None)
    if reason is None and row.get("conflicting"):
        reason = "conflict with recovery"
    if reason:
        raise SourceError(
            f'replication slot "{name}" was invalidated ({reason}) and can no longer be used: drop it with '
            f"`walstream delete --slot {name}` and start again (changes since it was invalidated are lost)",
            ErrorKind.SLOT_STATE,
        )
    lsn = row.get("confirmed_flush_lsn")
    return SlotInfo(
        name=name,
        plugin=row["plugin"],
        temporary=bool(row.get("temporary")),
        active_pid=row.get("active_pid"),
        confirmed_flush_lsn=parse_lsn(lsn) if lsn else None,
        wal_status=row.get("wal_status"),
        failover=row.get("failover"),
    )


def _check_free_slot(conn: Connection) -> None:
    limit = int(_scalar(conn, "SELECT current_setting('max_replication_slots')"))
    used = int(_scalar(conn, "SELECT count(*) FROM pg_replication_slots"))
    if used >= limit:
        raise SourceError(
            f"all replication slots are in use (max_replication_slots = {limit}): drop an unused one with "
            "`walstream delete --slot NAME` or raise max_replication_slots and restart PostgreSQL",
            ErrorKind.SERVER_SETUP,
        )


def _check_wal_senders(conn: Connection) -> None:
    limit = int(_scalar(conn, "SELECT current_setting('max_wal_senders')"))
    used = int(_scalar(conn, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'"))
    if used >= limit:
        raise SourceError(
            f"all WAL senders are busy (max_wal_senders = {limit}): stop another replication client or "
            "raise max_wal_senders and restart PostgreSQL",
            ErrorKind.SERVER_SETUP,
        )


# The WAL position slots are measured against; a standby has no current insert position.
_CURRENT_LSN = (
    "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END"
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return int(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value


def list_slots(conn: Connection) -> list[dict[str, Any]]:
    """Every slot as {column: value} (whatever this server version has) plus retained_bytes."""
    rows = _query(
        conn,
        f"SELECT s.*, pg_wal_lsn_diff({_CURRENT_LSN}, s.restart_lsn) AS retained_bytes "
        "FROM pg_replication_slots s ORDER BY s.slot_name",
    )
    return [{k: _jsonable(v) for k, v in row.items()} for row in rows]


@dataclass(frozen=True)
class SlotState:
    """One sample of a slot as PostgreSQL has it, with the server's WAL position (positions as ints)."""

    wal_lsn: int
    exists: bool
    confirmed_flush_lsn: int | None = None
    restart_lsn: int | None = None  # None once invalidated
    wal_status: str | None = None  # PostgreSQL 13+: reserved, extended, unreserved, lost
    safe_wal_size: int | None = None  # PostgreSQL 13+, only with max_slot_wal_keep_size set
    active_pid: int | None = None

    @property
    def lag_bytes(self) -> int | None:
        """WAL the slot's consumer has not confirmed yet."""
        return None if self.confirmed_flush_lsn is None else max(0, self.wal_lsn - self.confirmed_flush_lsn)

    @property
    def retained_bytes(self) -> int | None:
        """WAL PostgreSQL keeps for the slot."""
        return None if self.restart_lsn is None else max(0, self.wal_lsn - self.restart_lsn)


def slot_state(conn: Connection, slot: str) -> SlotState:
    """The slot's positions and WAL retention (a LEFT JOIN: the WAL position comes even without the slot)."""
    rows = _query(
        conn,
        f"SELECT ({_CURRENT_LSN} - '0/0'::pg_lsn)::text AS walstream_wal_lsn, s.* "
        "FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = %s",
        (slot,),
    )
    row = rows[0]

    def lsn(name: str) -> int | None:
        value = row.get(name)
        return parse_lsn(value) if value else None

    safe = row.get("safe_wal_size")
    return SlotState(
        wal_lsn=int(row["walstream_wal_lsn"] or 0),
        exists=row.get("slot_name") is not None,
        confirmed_flush_lsn=lsn("confirmed_flush_lsn"),
        restart_lsn=lsn("restart_lsn"),
        wal_status=row.get("wal_status"),
        safe_wal_size=int(safe) if safe is not None else None,
        active_pid=row.get("active_pid"),
    )


def slot_holder_pid(conn: Connection, slot: str) -> int | None:
    pid = _scalar(conn, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    return int(pid) if pid is not None else None


def drop_slot(conn: Connection, slot: str) -> None:
    """Drop `slot`; SourceError if it does not exist or a process holds it (PostgreSQL checks atomically)."""
    try:
        _scalar(conn, "SELECT pg_drop_replication_slot(%s)", (slot,))
    except psycopg2.errors.UndefinedObject:
        raise SourceError(f'replication slot "{slot}" does not exist', ErrorKind.SLOT_STATE) from None
    except psycopg2.errors.ObjectInUse as exc:
        pid = slot_holder_pid(conn, slot)
        if pid is None:  # released in the meantime: report PostgreSQL's own words
            raise SourceError(first_line(exc), ErrorKind.SLOT_IN_USE) from None
        raise SourceError(
            f'replication slot "{slot}" is active for PID {pid}: stop that process first '
            f"(or SELECT pg_terminate_backend({pid}); as a superuser)",
            ErrorKind.SLOT_IN_USE,
        ) from None
    except psycopg2.errors.InsufficientPrivilege as exc:
        raise SourceError(first_line(exc), ErrorKind.PERMISSION) from None


# The server's WAL position, and the slot's confirmed position as PostgreSQL has it (walstream's own starts
# at 0 until clients acknowledge something, or the slot idles forward).
_WAL_POSITIONS_SQL = """
SELECT (CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()
             ELSE pg_catalog.pg_current_wal_lsn() END - '0/0'::pg_catalog.pg_lsn)::text,
       (SELECT (confirmed_flush_lsn - '0/0'::pg_catalog.pg_lsn)::text
          FROM pg_catalog.pg_replication_slots WHERE slot_name = %s)
"""


def wal_positions(conn: Connection, slot: str) -> tuple[int, int] | None:
    """(the server's WAL position, the slot's confirmed_flush_lsn or 0), or None when it has no position."""
    with conn.cursor() as cur:
        cur.execute(_WAL_POSITIONS_SQL, (slot,))
        row = cur.fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1] or 0)


# -- the driver, for the snapshot's readers (walstream.snapshot): what they need of psycopg2, named here ------

def python_encoding(conn: Connection) -> str:
    """The Python codec of the connection's client encoding (utf-8 when psycopg2 has no name for it)."""
    return str(psycopg2.extensions.encodings.get(conn.encoding, "utf-8"))


def quote_ident(name: str, conn: Connection) -> str:
    return str(psycopg2.extensions.quote_ident(name, conn))


# Errors a chunk read may meet while the table is being changed under it: the read is retried.
TRANSIENT_READ_ERRORS: tuple[type[Exception], ...] = (
    psycopg2.errors.LockNotAvailable, psycopg2.errors.UndefinedColumn, psycopg2.errors.UndefinedTable,
    psycopg2.errors.SerializationFailure, psycopg2.errors.FeatureNotSupported)
