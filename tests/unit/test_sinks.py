"""The sink pieces that do no I/O: broker names, --sink URLs and options, the command line's errors."""

from __future__ import annotations

import pytest

from walstream.cli import main as cli
from walstream.errors import ConfigError
from walstream.sinks import naming
from walstream.sinks.spec import SinkSpec, parse_url

CONN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@pytest.mark.parametrize(("schema", "table", "subject"), [
    ("public", "orders", "walstream.public.orders"),
    ("public", "order.items", "walstream.public.order%2Eitems"),
    ("my schema", "a*b>c", "walstream.my%20schema.a%2Ab%3Ec"),
    ("public", "100%", "walstream.public.100%25"),
    ("public", "ünïcode", "walstream.public.ünïcode"),
    ("public", "tab\tnew\nline", "walstream.public.tab%09new%0Aline"),
])
def test_nats_subject_escapes_separators_and_wildcards(schema: str, table: str, subject: str) -> None:
    assert naming.nats_subject(schema, table) == subject
    assert len(subject.split(".")) == 3


def test_nats_escape_is_reversible_for_distinct_names() -> None:
    names = ["a.b", "a%2Eb", "a%b", "a b", "a_b"]
    assert len({naming.nats_token(n) for n in names}) == len(names)


@pytest.mark.parametrize(("schema", "table", "topic"), [
    ("public", "orders", "walstream.public.orders"),
    ("public", "order_items", "walstream.public.order_items"),
    ("public", "order.items", "walstream.public.order-2Eitems"),
    ("public", "a-b", "walstream.public.a-2Db"),
    ("public", "é", "walstream.public.-C3-A9"),
])
def test_kafka_topic_keeps_legal_names_and_escapes_the_rest(schema: str, table: str, topic: str) -> None:
    assert naming.kafka_topic(naming.DEFAULT_KAFKA_TOPIC, schema, table) == topic


def test_kafka_topic_too_long_is_refused_with_the_table() -> None:
    with pytest.raises(ValueError, match=r"public\.x+ would be 2\d\d characters long"):
        naming.kafka_topic("{schema}.{table}", "public", "x" * 245)


@pytest.mark.parametrize("template", ["cdc.{db}.{table}", "cdc/{table}", "{table", "cdc {table}"])
def test_bad_kafka_topic_template(template: str) -> None:
    with pytest.raises(ConfigError, match="invalid --kafka-topic"):
        SinkSpec("kafka", ("k:9092",), kafka_topic=template)


def test_parse_url() -> None:
    assert parse_url("nats://127.0.0.1:4222") == ("nats", ("127.0.0.1:4222",))
    assert parse_url("nats://broker") == ("nats", ("broker:4222",))
    assert parse_url("kafka://a:9092,b:9093") == ("kafka", ("a:9092", "b:9093"))
    assert parse_url("KAFKA://a") == ("kafka", ("a:9092",))


@pytest.mark.parametrize(("url", "message"), [
    ("amqp://x:5672", "unknown scheme 'amqp'"),
    ("127.0.0.1:4222", "unknown scheme"),
    ("nats://x:notaport", "'x:notaport' is not HOST:PORT"),
    ("nats://x:4222/stream", "only hosts and ports"),
    ("kafka://a:9092,", "'' is not HOST:PORT"),
    ("nats://user:pw@x:4222", "only hosts and ports"),
])
def test_bad_sink_url(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_url(url)


def test_spec_limits() -> None:
    with pytest.raises(ConfigError, match="--nats-stream"):
        SinkSpec("nats", ("x:1",), nats_stream="a.b")
    with pytest.raises(ConfigError, match="--sink-max-in-flight 0"):
        SinkSpec("nats", ("x:1",), max_in_flight=0)
    with pytest.raises(ConfigError, match="--sink-ack-timeout"):
        SinkSpec("nats", ("x:1",), ack_timeout=0)


def test_cli_bad_sink_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--connection", CONN, "start", "--publication", "p", "--slot", "s", "--sink", "redis://x"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        "walstream: error: invalid --sink 'redis://x': unknown scheme 'redis'; "
        "use nats://HOST:PORT or kafka://HOST:PORT[,HOST:PORT...]"]


def test_cli_sink_options_reach_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    args = cli.build_parser().parse_args(["start", "p", "s", "--sink", "nats://n:1", "--sink", "kafka://k1:2,k2:3",
                                          "--sink-format", "protobuf", "--nats-stream", "CDC", "--kafka-topic",
                                          "cdc.{table}", "--sink-max-in-flight", "10"])
    from walstream.sinks.spec import from_arguments

    nats_spec, kafka_spec = from_arguments(args)
    assert (nats_spec.kind, nats_spec.servers, nats_spec.format, nats_spec.nats_stream) == (
        "nats", ("n:1",), "protobuf", "CDC")
    assert (kafka_spec.servers, kafka_spec.kafka_topic, kafka_spec.max_in_flight) == (
        ("k1:2", "k2:3"), "cdc.{table}", 10)


class _Ledger:
    """The hub's ack rule (walstream.delivery.acks): an ack of LSN x covers every delivery up to the first
    one, from the oldest unacknowledged, with LSN x."""

    def __init__(self, lsns: list[int]) -> None:
        self.lsns, self.head, self.acks = lsns, 0, 0

    def ack(self, _client: object, lsn: int) -> bool:
        self.acks += 1
        try:
            self.head = self.lsns.index(lsn, self.head) + 1
        except ValueError:
            return False
        return True


def test_runner_acks_each_run_once_and_every_record_of_a_shared_lsn() -> None:
    """One hub ack per acknowledged run, plus one per further record sharing its last LSN (a TRUNCATE's
    tables): every delivery is acknowledged, none is skipped, and a failed record stops the run before it."""
    import asyncio

    from walstream.sinks.body import Record
    from walstream.sinks.runner import SinkRunner, SinkStats, _Entry

    async def scenario() -> None:
        lsns = [10, 20, 30, 40, 40, 40, 50, 60]  # 40: a TRUNCATE of three tables
        ledger = _Ledger(lsns)
        stats = SinkStats("nats://x:1")
        runner = SinkRunner(ledger, object(), object(), object(), 100, 10.0, stats)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        for lsn in lsns:
            entry = _Entry(lsn, Record("public", "t", b"{}", None, {"op": "INSERT"}, "id", lsn, lsn, 1, 1))
            entry.future = loop.create_future()
            runner.pending.append(entry)
        for entry in list(runner.pending)[:6]:  # up to the TRUNCATE's last table
            assert entry.future is not None
            entry.future.set_result(None)
        runner._acknowledge()
        assert ledger.head == 6 and ledger.acks == 3 and stats.acked == 6 and len(runner.pending) == 2
        runner.pending[0].future.set_exception(OSError("lost"))  # type: ignore[union-attr]
        runner.pending[1].future.set_result(None)  # type: ignore[union-attr]
        with pytest.raises(Exception, match="lost"):
            runner._acknowledge()
        assert ledger.head == 6 and len(runner.pending) == 2  # nothing past the failed record

    asyncio.run(scenario())
