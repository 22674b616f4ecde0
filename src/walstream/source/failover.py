"""Failover slots (PostgreSQL 17+): a logical slot that standbys with sync_replication_slots = on copy, so
that after a standby is promoted walstream resumes there from the acknowledged position.

walstream creates the slot with FAILOVER; an existing slot without it is switched with ALTER_REPLICATION_SLOT
(both replication commands, on the replication connection). docs/reliability.md says how to set up the standby.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import ConfigError, ErrorKind, SourceError

if TYPE_CHECKING:  # config.py imports this module: keep psycopg2 out of its imports
    import psycopg2.extras

log = logging.getLogger(__name__)

MIN_SERVER_VERSION = 170000  # failover slots and slot synchronization arrived in PostgreSQL 17


def require_server(version: int, version_text: str) -> None:
    """SourceError naming the server's version when it has no failover slots."""
    if version < MIN_SERVER_VERSION:
        raise SourceError(
            f"--failover needs PostgreSQL 17 or later (failover slots synchronized to standbys); this server "
            f"is PostgreSQL {version_text}: upgrade it or start without --failover",
            ErrorKind.SERVER_SETUP,
        )


def check_permanent(failover: bool, temporary: bool) -> None:
    if failover and temporary:
        raise ConfigError("--failover needs a permanent slot: add --temporary false (a temporary slot, the "
                          "default, is dropped with its connection and is never synchronized to a standby)")


def create_command(slot: str, export: bool = False) -> str:
    # The name is validated [a-z0-9_] (config.validate_slot_name). A snapshot only for --snapshot-consistent.
    snapshot = "export" if export else "nothing"
    return f"CREATE_REPLICATION_SLOT \"{slot}\" LOGICAL pgoutput (FAILOVER, SNAPSHOT '{snapshot}')"


def enable(cur: psycopg2.extras.ReplicationCursor, slot: str) -> bool:
    """Make an existing slot a failover slot; True when it was not one. A missing slot is left to
    START_REPLICATION to report."""
    cur.execute("SELECT failover FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    row = cur.fetchone()
    if row is None or row[0]:
        return False
    cur.execute(f'ALTER_REPLICATION_SLOT "{slot}" (FAILOVER true)')
    log.warning("replication slot %s was not a failover slot: failover enabled on it (--failover), so standbys "
                "with sync_replication_slots = on now synchronize it", slot)
    return True
