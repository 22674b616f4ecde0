"""walstream start --sink kafka://...: a real single-node KRaft Kafka (jars from Maven Central), read back by
an independent consumer (confluent-kafka consumer group, from the earliest offset).

Proof: a pgbench workload replays into the same tables PostgreSQL has; keys and headers are as documented;
after kill -9 of walstream and after the broker is killed and restarted mid-stream nothing is lost (Kafka is
at least once across a walstream crash: the duplicates are counted and only ever re-sends of changes the
slot had not confirmed).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from brokers import KafkaBroker
from confluent_kafka import Consumer
from sinkcheck import (
    PGBENCH_KEYS,
    Message,
    apply_to_database,
    confirmed_flush,
    pgbench_init,
    pgbench_replica,
    replay,
    run_pgbench,
    snapshot,
    wait_pgbench,
)
from support import WalstreamProcess

if TYPE_CHECKING:
    from conftest import TestDB

pytestmark = pytest.mark.slow  # on PostgreSQL 15 and 18 (the `pg` fixture, tests/conftest.py)


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    # The broker takes records up to 256 KiB (librdkafka's own limit is 1 MB): the oversized test needs the
    # broker, not the client, to refuse.
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), max_message_bytes=256 * 1024).start()
    yield broker
    broker.stop()


def read_topics(bootstrap: str, prefix: str, until: int, idle: float = 3.0, timeout: float = 180) -> list[Message]:
    """Every record of the topics `<prefix>.*`, from the start, until `until` distinct changes were read and
    nothing more came for `idle` seconds."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "topic.metadata.refresh.interval.ms": 1000})
    consumer.subscribe([f"^{prefix.replace('.', '[.]')}[.].*"])
    out: list[Message] = []
    seen: set[tuple[int, int, str]] = set()
    deadline, last = time.monotonic() + timeout, time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                if len(seen) >= until and time.monotonic() - last > idle:
                    return out
                continue
            last = time.monotonic()
            pairs: Any = msg.headers() or []  # (str, bytes) pairs
            headers = {str(k): v.decode() for k, v in pairs}
            key: Any = msg.key() or b""
            headers["key"] = key.decode()
            m = Message(headers, orjson.loads(msg.value() or b"{}"), str(msg.topic()))
            out.append(m)
            seen.add(m.position)
        raise AssertionError(f"read {len(seen)} distinct changes of {until} within {timeout} s")
    finally:
        consumer.close()


def _walstream(db: TestDB, url: str, tmp_path: Path, prefix: str, *extra: str) -> WalstreamProcess:
    return WalstreamProcess(db.dsn, "pub", db.slot, temporary=False, log_dir=tmp_path,
                            extra=("--sink", url, "--kafka-topic", prefix + ".{schema}.{table}", *extra))


def _wait_confirmed(db: TestDB, end: int, ws: WalstreamProcess, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while confirmed_flush(db, db.slot) < end:
        assert time.monotonic() < deadline, f"the slot did not confirm {end}:\n{ws.log()[-4000:]}"
        time.sleep(0.1)


def _distinct(messages: list[Message]) -> list[Message]:
    first: dict[tuple[int, int, str], Message] = {}
    for m in messages:
        first.setdefault(m.position, m)
    return list(first.values())


def test_pgbench_through_kafka_replays_identically(testdb: TestDB, kafka: KafkaBroker, tmp_path: Path) -> None:
    pgbench_init(testdb, "pub")
    initial = snapshot(testdb)
    prefix = f"ws{uuid.uuid4().hex[:8]}"
    with _walstream(testdb, kafka.url, tmp_path, prefix, "--sink-transactions") as ws:
        ws.wait_log("streaming slot")
        wait_pgbench(run_pgbench(testdb, 4, 150))  # 600 transactions, 2400 changes
        _wait_confirmed(testdb, testdb.wal_lsn(), ws)
        assert ws.stop() == 0
    messages = read_topics(kafka.bootstrap, prefix, 2400)
    assert len(messages) == 2400, "the idempotent producer wrote a change twice without any fault"
    assert replay(initial, messages, PGBENCH_KEYS) == snapshot(testdb)
    with pgbench_replica(testdb) as replica:  # and into a second database, as SQL: identical tables
        assert snapshot(replica) == initial
        apply_to_database(replica, messages, PGBENCH_KEYS)
        assert snapshot(replica) == snapshot(testdb)
    account = next(m for m in messages if m.body["table"] == "pgbench_accounts")
    assert account.where == f"{prefix}.public.pgbench_accounts"
    assert orjson.loads(account.headers["key"]) == {"aid": account.body["new"]["aid"]}
    assert {"lsn", "commit_lsn", "ordinal", "op", "xid"} <= set(account.headers)
    assert account.headers["op"] == "UPDATE" and account.headers["lsn"] == account.body["lsn"]
    history = next(m for m in messages if m.body["table"] == "pgbench_history")
    assert history.headers["key"] == ""  # no replica identity key: no record key
    # --sink-transactions: one COMMIT record per transaction on walstream.commit (only this test uses it)
    # The topic is shared by the module's tests (one broker): this run's records are those of its transactions.
    txns = {(m.headers["commit_lsn"], m.headers["xid"]) for m in messages}
    commits = [m for m in read_topics(kafka.bootstrap, "walstream", 600)
               if (m.headers["commit_lsn"], m.headers["xid"]) in txns]
    assert len(commits) == 600 and {(m.where, m.body["op"], m.headers["changes"]) for m in commits} == {
        ("walstream.commit", "COMMIT", "4")}
    by_commit = Counter(m.headers["commit_lsn"] for m in messages)
    assert all(by_commit[m.headers["commit_lsn"]] == 4 for m in commits)


def test_kill9_walstream_and_broker_lost_nothing_lost(testdb: TestDB, kafka: KafkaBroker, tmp_path: Path) -> None:
    pgbench_init(testdb, "pub")
    initial = snapshot(testdb)
    prefix = f"ws{uuid.uuid4().hex[:8]}"
    first = _walstream(testdb, kafka.url, tmp_path, prefix).start()
    first.wait_log("streaming slot")
    bench = run_pgbench(testdb, 2, 800)  # 1600 transactions, 6400 changes (and 800 more below)
    deadline = time.monotonic() + 120
    while confirmed_flush(testdb, testdb.slot) == 0 or first.log().count("status update") < 3:
        assert time.monotonic() < deadline, first.log()[-3000:]
        time.sleep(0.1)
    first.kill()  # SIGKILL mid-stream
    second = _walstream(testdb, kafka.url, tmp_path, prefix).start()
    try:
        second.wait_log("streaming slot")
        kafka.kill()  # the broker is lost mid-stream, then comes back on the same port and data
        more = run_pgbench(testdb, 2, 100)  # 200 transactions, 800 changes, written while it is away
        second.wait_log("publishing them again", timeout=60)  # the sink saw the broker go
        kafka.start()
        wait_pgbench(bench)
        wait_pgbench(more)
        _wait_confirmed(testdb, testdb.wal_lsn(), second)
        assert second.stop() == 0
    finally:
        second.kill()
    messages = read_topics(kafka.bootstrap, prefix, 7200)
    distinct = _distinct(messages)
    assert len(distinct) == 7200
    assert replay(initial, distinct, PGBENCH_KEYS) == snapshot(testdb)
    copies = Counter(m.position for m in messages)
    print(f"kafka after kill -9 and a broker restart: {len(messages)} records, "
          f"{len(messages) - len(distinct)} duplicates of {sum(1 for n in copies.values() if n > 1)} changes")


def test_record_the_broker_refuses_stops_walstream_and_the_slot_keeps_it(testdb: TestDB, kafka: KafkaBroker,
                                                                         tmp_path: Path) -> None:
    testdb.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)", "CREATE PUBLICATION pub FOR TABLE docs")
    prefix = f"ws{uuid.uuid4().hex[:8]}"
    ws = _walstream(testdb, kafka.url, tmp_path, prefix).start()
    ws.wait_log("streaming slot")
    testdb.execute("INSERT INTO docs VALUES (1, 'small')")
    before_big = testdb.wal_lsn()
    # 600 kB of random hex: under librdkafka's 1 MB, over the broker's 256 KiB (random: no compression helps)
    testdb.execute("INSERT INTO docs SELECT 2, string_agg(md5(random()::text), '') FROM generate_series(1, 19000)")
    assert ws.proc is not None
    assert ws.proc.wait(120) == 1
    log = ws.log()
    assert "Kafka refused the INSERT on public.docs at LSN" in log and "bytes)" in log, log[-3000:]
    assert [m.body["new"]["id"] for m in read_topics(kafka.bootstrap, prefix, 1)] == [1]
    assert confirmed_flush(testdb, testdb.slot) <= before_big
