"""End to end: an INCREMENTAL snapshot of a SQL_ASCII database whose keys are not ASCII.

A SQL_ASCII database stores whatever bytes a client wrote, so a key can hold bytes no client codec accepts.
The backfill pages on key text: every key must go from a chunk to the next chunk's query (and a resume
token) and back without a byte changed, or rows are skipped or read twice. Values arrive as the stream
sends them (events/text.py: UTF-8, else Latin-1).
"""

from __future__ import annotations

from snapshot_replica import Replica, ReplicaClient
from support import WalstreamProcess, autocommit_connection

from walstream._proto import walstream_v1_pb2 as pb


def decode(data: bytes) -> str:
    """As the stream sends a SQL_ASCII value: UTF-8 if it is, else Latin-1 (events/text.py)."""
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data.decode("latin-1")


# Latin-1 bytes (not UTF-8), UTF-8 bytes, a lone 0xff, a backslash and a tab (COPY escapes): ASCII in between.
KEYS = [b"a", b"caf\xe9", "na\u00efve".encode(), b"\xff", b"\xe9t\xe9", b"back\\slash", b"tab\there", b"z",
        *(b"k%03d\xe0" % i for i in range(40))]


def test_non_ascii_keys_of_a_sql_ascii_database_round_trip_through_the_chunks(pg, unique_name, tmp_path) -> None:
    name = unique_name[:40] + "_snap_ascii"
    with autocommit_connection(pg.dsn) as admin, admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    dsn = f"host=127.0.0.1 port={pg.port} user=postgres dbname={name}"
    try:
        with autocommit_connection(dsn) as db, db.cursor() as cur:
            cur.execute("CREATE TABLE t (k text PRIMARY KEY, n int)")
            for n, key in enumerate(KEYS):  # the bytes as they are: SQL_ASCII converts nothing
                cur.execute(b"INSERT INTO t VALUES ('%s', %d)" % (key, n))
            cur.execute("CREATE PUBLICATION pub FOR TABLE t")
            with WalstreamProcess(dsn, "pub", name, temporary=True, log_dir=tmp_path) as ws:
                replica = Replica()
                client = ReplicaClient(ws.addr, replica, pb.SnapshotRequest(chunk_rows=3))
                try:
                    client.wait_snapshot()
                    assert replica.table("public.t") == {(decode(k),): {"k": decode(k), "n": n}
                                                         for n, k in enumerate(KEYS)}
                    assert replica.ops == {"SNAPSHOT": len(KEYS)}  # each row once: no chunk skipped or repeated
                    assert replica.progress[-1].done and replica.progress[-1].chunks == -(-len(KEYS) // 3)
                finally:
                    client.close()
                log = ws.log()
                assert "Traceback" not in log and "snapshot for" in log and "failed" not in log, log[-3000:]
                assert "matches nothing" not in log  # the client acks every row of a chunk: repeats are fine
                assert ws.stop() == 0
    finally:
        with autocommit_connection(pg.dsn) as admin, admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
