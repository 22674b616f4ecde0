"""A physical standby of a throwaway cluster (pg_basebackup from the same binaries), for failover tests."""

from __future__ import annotations

import os
import pwd
from typing import Any

import psycopg2

from walstream.pgcluster import Cluster


def start_standby(primary: Cluster, physical_slot: str) -> Cluster:
    """A hot standby streaming from `primary` through `physical_slot` (which must exist), set up as
    docs/reliability.md tells users to: hot_standby_feedback, sync_replication_slots, dbname in
    primary_conninfo. Destroy it with .destroy()."""
    standby = Cluster(bindir=primary.bindir)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(standby.workdir, pw.pw_uid, pw.pw_gid)
    os.chmod(standby.workdir, 0o755)
    standby._run(["pg_basebackup", "-D", str(standby.datadir), "-h", "127.0.0.1", "-p", str(primary.port),
                  "-U", "postgres", "-X", "stream", "-S", physical_slot, "-c", "fast", "--no-sync"])
    settings = {
        "primary_conninfo": f"'{primary.dsn}'",  # with dbname: the slot sync worker needs one
        "primary_slot_name": f"'{physical_slot}'",
        "hot_standby_feedback": "on",
        "sync_replication_slots": "on",
        "unix_socket_directories": f"'{standby.workdir}'",
        "synchronized_standby_slots": "''",  # the primary's, copied: this server has no such slot
    }
    # Appended to the copied postgresql.conf (the file keeps its owner); later lines win.
    with open(standby.datadir / "postgresql.conf", "a") as conf:
        conf.write("\n# standby\n")
        conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
    signal_file = standby.datadir / "standby.signal"
    signal_file.touch()
    if os.geteuid() == 0:
        os.chown(signal_file, pw.pw_uid, pw.pw_gid)
    standby._initialized = True
    return standby.start()


def promote(standby: Cluster) -> None:
    """Promote and return once it accepts writes (pg_ctl -w waits for the end of recovery)."""
    standby._run(["pg_ctl", "-D", str(standby.datadir), "-w", "-t", "60", "promote"])


def scalar(dsn: str, sql: str, params: tuple[object, ...] = ()) -> Any:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


