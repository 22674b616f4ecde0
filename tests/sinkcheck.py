"""Shared by the sink tests: a pgbench workload, and the proof that what a broker holds replays into the
same tables PostgreSQL has (the messages read back by an independent consumer, not by walstream)."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg2 import sql

if TYPE_CHECKING:
    from conftest import TestDB

PGBENCH_TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")


@dataclass(frozen=True)
class Message:
    """One record as a consumer reads it: headers and the JSON body."""

    headers: dict[str, str]
    body: dict[str, Any]
    where: str  # the subject or topic

    @property
    def position(self) -> tuple[int, int, str]:
        return (_lsn(self.headers["commit_lsn"]), int(self.headers["ordinal"]), self.body["table"])


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return int(high, 16) << 32 | int(low, 16)


def pgbench(db: TestDB, *args: str) -> subprocess.Popen[bytes]:
    bindir = Path(db.cluster.bindir)
    return subprocess.Popen([str(bindir / "pgbench"), "-h", "127.0.0.1", "-p", str(db.cluster.port), "-U", "postgres",
                             *args, db.name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def pgbench_init(db: TestDB, publication: str) -> None:
    done = pgbench(db, "-i", "-s", "1", "-q")
    out, _ = done.communicate(timeout=120)
    assert done.returncode == 0, out.decode()
    db.execute(f"CREATE PUBLICATION {publication} FOR TABLE {', '.join(PGBENCH_TABLES)}")


def run_pgbench(db: TestDB, clients: int, transactions: int) -> subprocess.Popen[bytes]:
    return pgbench(db, "-n", "-c", str(clients), "-t", str(transactions))


def wait_pgbench(proc: subprocess.Popen[bytes]) -> None:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out.decode()


def snapshot(db: TestDB, tables: Iterable[str] = PGBENCH_TABLES) -> dict[str, Counter[str]]:
    """Every row of each table, as to_jsonb text (a multiset: pgbench_history has no key)."""
    state: dict[str, Counter[str]] = {}
    for table in tables:
        rows = db.query(f"SELECT to_jsonb(t)::text FROM {table} t")
        state[table] = Counter(_canon(json.loads(str(r[0]))) for r in rows)
    return state


_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d)?$")


def _value(value: Any) -> Any:
    """to_jsonb writes timestamps with trailing zeros of the fraction cut (…:24.92115), tail with six digits."""
    if isinstance(value, str) and _TIMESTAMP.match(value):
        return datetime.fromisoformat(value).isoformat()
    return value


def _canon(row: dict[str, Any]) -> str:
    return json.dumps({k: _value(v) for k, v in row.items()}, sort_keys=True)


def keyed(state: dict[str, Counter[str]], keys: dict[str, tuple[str, ...]]) -> dict[str, dict[Any, str]]:
    """Rows by key (pgbench_accounts has 100 000 rows)."""
    out: dict[str, dict[Any, str]] = {}
    for table, rows in state.items():
        key = keys.get(table, ())
        out[table] = {tuple(json.loads(r)[k] for k in key) if key else (r, i): r
                      for r, n in rows.items() for i in range(n)}
    return out


def replay(initial: dict[str, Counter[str]], messages: Iterable[Message],
                 keys: dict[str, tuple[str, ...]]) -> dict[str, Counter[str]]:
    """Apply the messages, in (commit_lsn, ordinal) order, to a copy of `initial` (rows indexed by their key;
    tables without a key take inserts and truncates only)."""
    state = keyed(initial, keys)
    serial = 0
    for msg in sorted(messages, key=lambda m: m.position):
        body, table = msg.body, msg.body["table"]
        rows, key = state[table], keys.get(table, ())
        if body["op"] == "TRUNCATE":
            rows.clear()
            continue
        if body["op"] in ("UPDATE", "DELETE"):
            assert key, f"{body['op']} on {table}, which has no key"
            old = body["old"] if body["old"] is not None else body["new"]
            assert rows.pop(tuple(old[k] for k in key), None) is not None, f"unknown row: {body}"
        if body["op"] in ("INSERT", "UPDATE"):
            serial += 1
            new = body["new"]
            rows[tuple(new[k] for k in key) if key else ("new", serial)] = _canon(new)
    return {table: Counter(rows.values()) for table, rows in state.items()}


PGBENCH_KEYS: dict[str, tuple[str, ...]] = {
    "pgbench_accounts": ("aid",), "pgbench_branches": ("bid",), "pgbench_tellers": ("tid",)}


@contextmanager
def pgbench_replica(db: TestDB) -> Iterator[TestDB]:
    """A second database on db's cluster, initialised by `pgbench -i` as db was (pgbench's initial rows are
    the same every time; the caller checks it), dropped afterwards."""
    name = f"{db.name[:50]}_replica"
    db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    replica = type(db)(db.cluster, name)  # the tests' own TestDB class (conftest), so snapshot() takes it
    try:
        done = pgbench(replica, "-i", "-s", "1", "-q")
        out, _ = done.communicate(timeout=120)
        assert done.returncode == 0, out.decode()
        yield replica
    finally:
        replica.conn.close()
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def apply_to_database(replica: TestDB, messages: Iterable[Message], keys: dict[str, tuple[str, ...]]) -> None:
    """Apply the messages as SQL, in (commit_lsn, ordinal) order, one transaction per commit_lsn: what a
    consumer replicating the broker's records into another PostgreSQL does. Every UPDATE and DELETE must
    hit exactly one row."""
    by_txn: dict[int, list[Message]] = {}
    for msg in sorted(messages, key=lambda m: m.position):
        by_txn.setdefault(msg.position[0], []).append(msg)
    conn = replica.conn
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            for txn in by_txn.values():
                for msg in txn:
                    body = msg.body
                    table = sql.Identifier(body["schema"], body["table"])
                    key = keys.get(body["table"], ())
                    if body["op"] == "TRUNCATE":
                        cur.execute(sql.SQL("TRUNCATE {}").format(table))
                    elif body["op"] == "INSERT":
                        new = body["new"]
                        cur.execute(sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                            table, sql.SQL(", ").join(map(sql.Identifier, new)),
                            sql.SQL(", ").join(sql.Placeholder() * len(new))), list(new.values()))
                    else:
                        old = body["old"] if body["old"] is not None else body["new"]
                        where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in key)
                        args = [old[k] for k in key]
                        if body["op"] == "UPDATE":
                            new = body["new"]
                            sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in new)
                            cur.execute(sql.SQL("UPDATE {} SET {} WHERE {}").format(table, sets, where),
                                        [*new.values(), *args])
                        else:
                            cur.execute(sql.SQL("DELETE FROM {} WHERE {}").format(table, where), args)
                        assert key and cur.rowcount == 1, f"{body['op']} hit {cur.rowcount} rows: {body}"
                conn.commit()
    finally:
        conn.rollback()
        conn.autocommit = True


def confirmed_flush(db: TestDB, slot: str) -> int:
    rows = db.query("SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                    (slot,))
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


