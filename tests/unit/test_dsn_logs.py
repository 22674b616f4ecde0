"""Connection-string handling and logging: formats, and passwords kept out of both."""

from __future__ import annotations

import logging
import re

import orjson
import pytest
from psycopg2.extensions import parse_dsn

from walstream.errors import ConfigError
from walstream.ops.logs import setup_logging
from walstream.source.dsn import REPLICATION_OPTIONS, parse_connection, plain_dsn, redact, replication_dsn

SECRET = "hunter2"


# -- parse_connection ------------------------------------------------------------------------------------

def test_parse_key_value_and_uri() -> None:
    assert parse_connection("host=h port=5433 user=u dbname=d") == {
        "host": "h", "port": "5433", "user": "u", "dbname": "d"}
    assert parse_connection("postgresql://u:pw@h:5433/d?sslmode=require") == {
        "host": "h", "port": "5433", "user": "u", "password": "pw", "dbname": "d", "sslmode": "require"}


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        (f"host=h password='{SECRET}", "unterminated quoted string in connection info string"),
        (f"host=h password={SECRET} colour=blue", 'invalid connection option "colour"'),
        (f"host=h password {SECRET}", 'missing "=" after "password" in connection info string'),
        (f"postgresql://u:{SECRET}@[::1", 'end of string reached when looking for matching "]" in IPv6 host '
                                          'address in URI: "postgresql://u:********@[::1"'),
        (f"postgresql://u:{SECRET}@h/d?colour=blue", 'invalid URI query parameter: "colour"'),
    ],
)
def test_parse_errors_name_the_problem_not_the_password(conn: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_connection(conn)
    assert str(info.value) == f"invalid connection string: {message}"
    assert SECRET not in str(info.value)


# -- redact ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host=h password=hunter2 user=u", "host=h password=******** user=u"),
        ("host=h password = hunter2", "host=h password = ********"),
        ("host=h password='hunter 2' user=u", "host=h password=******** user=u"),
        (r"password='it\'s hunter2' user=u", "password=******** user=u"),
        (r"password=hun\ ter2 user=u", "password=******** user=u"),
        ("PASSWORD=hunter2", "PASSWORD=********"),
        ("postgresql://u:hunter2@h:5432/d", "postgresql://u:********@h:5432/d"),
        ("postgres://u:hunter2@h/d", "postgres://u:********@h/d"),
        ("postgresql://:hunter2@h/d", "postgresql://:********@h/d"),
        ("postgresql://u@h:5432/d?password=hunter2", "postgresql://u@h:5432/d?password=********"),
        ("{'password': 'hunter2', 'host': 'h'}", "{'password': '********', 'host': 'h'}"),
        ("no secret: postgresql://u@h:5432/d host=h", "no secret: postgresql://u@h:5432/d host=h"),
        ('password authentication failed for user "u"', 'password authentication failed for user "u"'),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


# -- derived DSNs ----------------------------------------------------------------------------------------

def test_replication_dsn_adds_settings() -> None:
    params = parse_dsn(replication_dsn("host=h user=u dbname=d"))
    assert params == {"host": "h", "user": "u", "dbname": "d", "replication": "database",
                      "application_name": "walstream", "options": REPLICATION_OPTIONS}
    assert REPLICATION_OPTIONS == ("-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres "
                                   "-c extra_float_digits=1 -c bytea_output=hex")


def test_replication_dsn_merges_user_options_and_keeps_app_name() -> None:
    conn = "host=h options='-c statement_timeout=0 -c TimeZone=Europe/Helsinki' application_name=mine"
    params = parse_dsn(replication_dsn(conn))
    # Ours come last, so PostgreSQL applies our TimeZone; the user's other settings stay.
    assert params["options"] == f"-c statement_timeout=0 -c TimeZone=Europe/Helsinki {REPLICATION_OPTIONS}"
    assert params["application_name"] == "mine"


def test_replication_dsn_from_uri_overrides_physical_replication() -> None:
    params = parse_dsn(replication_dsn("postgresql://u:pw@h:5433/d?replication=true"))
    assert params["replication"] == "database"
    assert (params["host"], params["port"], params["user"], params["password"]) == ("h", "5433", "u", "pw")


def test_plain_dsn() -> None:
    assert parse_dsn(plain_dsn("postgresql://u@h/d")) == {
        "user": "u", "host": "h", "dbname": "d", "application_name": "walstream"}
    assert parse_dsn(plain_dsn("host=h application_name=x"))["application_name"] == "x"
    assert "replication" not in parse_dsn(plain_dsn("host=h"))


# -- logging ---------------------------------------------------------------------------------------------

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) ([\w.]+): (.*)$")


def test_text_format(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "text")
    log = logging.getLogger("walstream.x")
    log.debug("hidden")
    log.info("slot %s ready", "s1", extra={"lsn": "0/16B3748", "note": "two words"})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    match = TEXT_LINE.match(lines[0])
    assert match and match.groups() == ("INFO", "walstream.x", 'slot s1 ready lsn=0/16B3748 note="two words"')


def test_json_format(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("debug", "json")
    logging.getLogger("walstream.y").debug("got %d rows", 3, extra={"table": "public.t", "n": 3})
    obj = orjson.loads(capsys.readouterr().err)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", obj.pop("ts"))
    assert obj == {"level": "debug", "logger": "walstream.y", "msg": "got 3 rows", "table": "public.t",
                   "n": 3}


def test_json_exception_and_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "json")
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logging.getLogger("walstream.z").exception("failed")
    logging.getLogger("walstream.z").warning("next")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    first = orjson.loads(lines[0])
    assert first["level"] == "error" and "ValueError: bad" in first["exc"]
    assert orjson.loads(lines[1])["msg"] == "next"


def test_setup_twice_does_not_duplicate(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "json")
    setup_logging("warning", "text")
    logging.getLogger("walstream").info("hidden")
    logging.getLogger("walstream").warning("once")
    assert capsys.readouterr().err.count("once") == 1


def test_setup_rejects_unknown_values() -> None:
    with pytest.raises(ValueError):
        setup_logging("verbose", "text")
    with pytest.raises(ValueError):
        setup_logging("info", "xml")


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize(
    "conn",
    [
        f"host=h user=u password={SECRET}",
        f"host=h password='{SECRET} with spaces'",
        f"postgresql://u:{SECRET}@h:5432/d",
        f"postgresql://u@h/d?password={SECRET}",
    ],
)
def test_passwords_never_logged(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
                                fmt: str, conn: str) -> None:
    setup_logging("debug", fmt)
    log = logging.getLogger("walstream.secret")
    log.info("connecting with %s", conn)  # in args
    log.info(f"connecting with {conn}")  # in the message itself
    log.info("params", extra={"dsn": conn, "parsed": parse_connection(conn)})  # in extra fields
    try:
        raise RuntimeError(f"could not use {conn}")
    except RuntimeError:
        log.exception("failed")  # in a traceback
    err = capsys.readouterr().err
    assert SECRET not in err
    assert err.count("********") >= 5
    # Messages are redacted when the record is made, so even handlers we do not own never see them.
    assert all(SECRET not in r.getMessage() for r in caplog.records) and len(caplog.records) == 4


def test_grpc_write_to_a_gone_client_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """grpc's ERROR + traceback for a write to a call whose client left becomes one INFO line."""
    setup_logging("info", "json")

    class ExecuteBatchError(Exception):
        pass

    try:
        raise ExecuteBatchError('Failed "execute_batch"')
    except ExecuteBatchError:
        logging.getLogger("grpc._cython.cygrpc").exception(
            "ExecuteBatchError raised in core by servicer method [/plugin.PluginService/Session]")
    try:
        raise KeyError("other")
    except KeyError:
        logging.getLogger("grpc._cython.cygrpc").exception("Unexpected [KeyError] raised by servicer method")
    lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["level"] == "info" and "went away" in lines[0]["msg"] and "exc" not in lines[0]
    assert lines[1]["level"] == "error" and "KeyError" in lines[1]["exc"]  # anything else is kept as it is
