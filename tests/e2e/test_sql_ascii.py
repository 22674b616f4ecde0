"""A SQL_ASCII database holding bytes that are not UTF-8 keeps streaming (events/text.py's rule).

PostgreSQL stores whatever bytes a client sends to a SQL_ASCII database. walstream decodes values as UTF-8;
one that is not valid UTF-8 is sent decoded as Latin-1 (no byte lost) with one warning naming the table
and column, on both APIs, and the rows after it flow as usual.
"""

from __future__ import annotations

import queue
import threading

import psycopg2
from support import SeedClient, WalstreamProcess, autocommit_connection

from walstream import Change, Client

ROWS = [(1, b"plain"), (2, "caf\u00e9".encode()), (3, b"\xe9t\xe9 \xff"), (4, b"after")]
EXPECTED = {1: "plain", 2: "caf\u00e9", 3: "\u00e9t\u00e9 \u00ff", 4: "after"}


def test_bytes_that_are_not_utf8_in_a_sql_ascii_database(pg, unique_name, tmp_path) -> None:
    name = unique_name[:40] + "_ascii"
    with autocommit_connection(pg.dsn) as admin, admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    dsn = f"host=127.0.0.1 port={pg.port} user=postgres dbname={name}"
    try:
        with autocommit_connection(dsn) as db, db.cursor() as cur:
            cur.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
            cur.execute("CREATE PUBLICATION pub FOR TABLE t")
            with WalstreamProcess(dsn, "pub", name, temporary=True, log_dir=tmp_path) as ws:
                seed = SeedClient(ws.addr)
                try:
                    with Client(ws.addr) as v1:
                        typed: queue.Queue[Change] = queue.Queue()
                        threading.Thread(target=lambda: list(map(typed.put, v1.changes())), daemon=True).start()
                        ws.wait_log("connected", count=2)
                        for key, raw in ROWS:  # the bytes as they are: SQL_ASCII converts nothing
                            cur.execute(b"INSERT INTO t VALUES (%d, '%s')" % (key, raw))
                        got = [typed.get(timeout=30) for _ in ROWS]
                        assert {c.new["id"]: c.new["v"] for c in got} == EXPECTED  # type: ignore[index]
                        v1.ack(got[-1])
                    events = seed.take(len(ROWS))
                    assert {e.payload["id"]: e.payload["v"] for e in events} == EXPECTED
                finally:
                    seed.close()
                log = ws.log()
                assert log.count("column v of public.t holds bytes that are not UTF-8") == 1
                assert "Traceback" not in log and "UnicodeDecodeError" not in log
                assert ws.stop() == 0
    finally:
        with autocommit_connection(pg.dsn) as admin, admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_sql_ascii_values_round_trip_as_latin1() -> None:
    from walstream.events.text import SQL_ASCII, text_decoder, undecodable

    decode = text_decoder(SQL_ASCII)
    assert decode("café".encode()) == "café"
    raw = b"\xe9t\xe9 \xff"
    try:
        decode(raw)
        raise AssertionError("not valid UTF-8: the decoder must refuse it")
    except UnicodeDecodeError:
        pass
    assert undecodable("public", "t", "v", raw).encode("latin-1") == raw
    assert psycopg2  # the e2e test above inserts raw bytes through psycopg2
