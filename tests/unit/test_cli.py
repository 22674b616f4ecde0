"""The command line, parsed and run in-process; PostgreSQL is replaced only where a test is about parsing."""

from __future__ import annotations

import argparse
from typing import Any

import psycopg2
import pytest

from walstream import __version__
from walstream.cli import main as cli
from walstream.config import StartConfig
from walstream.errors import SourceError
from walstream.source import catalog

CONN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@pytest.fixture(autouse=True)
def _no_connection_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONNECTION", raising=False)


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(argv)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class FakeCatalog:
    """Stands in for PostgreSQL where only the hand-off matters: records calls in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.started: StartConfig | None = None
        monkeypatch.setattr(catalog, "connect", self.connect)
        monkeypatch.setattr(catalog, "check_start", self.check_start)
        monkeypatch.setattr(cli, "_run_start", lambda: self.run_start)

    def connect(self, conn_str: str) -> Any:
        self.calls.append(("connect", conn_str))
        return self

    def close(self) -> None:
        self.calls.append(("close", None))

    def check_start(self, conn: Any, publication: str, slot: str, failover: bool = False) -> None:
        self.calls.append(("check_start", (publication, slot, failover) if failover else (publication, slot)))

    def run_start(self, config: StartConfig) -> int:
        self.calls.append(("run_start", config))
        self.started = config
        return 0


# -- parsing ---------------------------------------------------------------------------------------------

def test_start_defaults() -> None:
    args = parse("start", "--publication", "pub", "--slot", "s")
    assert (args.publication, args.slot) == ("pub", "s")
    assert (args.port, args.host, args.temporary) == (50051, "0.0.0.0", True)
    assert (args.connection, args.log_level, args.log_format) == (None, "info", "text")


def test_every_option() -> None:
    args = parse("--connection", CONN, "--log-level", "DEBUG", "--log-format", "json", "start",
                 "--publication", "pub", "--slot", "s", "--port", "6000", "--host", "127.0.0.1",
                 "--temporary", "false")
    assert (args.connection, args.log_level, args.log_format) == (CONN, "debug", "json")
    assert (args.port, args.host, args.temporary) == (6000, "127.0.0.1", False)


def test_short_options_and_h_is_host() -> None:
    args = parse("start", "--publication", "pub", "--slot", "s", "-p", "7000", "-h", "::1", "-t", "no")
    assert (args.port, args.host, args.temporary) == (7000, "::1", False)


@pytest.mark.parametrize("text", ["true", "TRUE", "yes", "Yes", "1", "on", "ON"])
def test_temporary_true(text: str) -> None:
    assert parse("start", "p", "s", "-t", text).temporary is True


@pytest.mark.parametrize("text", ["false", "False", "no", "NO", "0", "off", "Off"])
def test_temporary_false(text: str) -> None:
    assert parse("start", "p", "s", "--temporary", text).temporary is False


def test_bad_bool(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--connection", CONN, "start", "p", "s", "-t", "maybe")
    assert (code, out) == (2, "")
    assert err == ("walstream: error: argument -t/--temporary: invalid value 'maybe': use true or false "
                   "(also accepted: yes/no, on/off, 1/0) (see `walstream start --help`)\n")


def test_bad_port_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--connection", CONN, "start", "p", "s", "-p", "http")
    assert code == 2
    assert err == ("walstream: error: argument -p/--port: invalid port 'http': use a number 0-65535 "
                   "(see `walstream start --help`)\n")


def test_bad_port_range(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCatalog(monkeypatch)
    code, _, err = run(capsys, "--connection", CONN, "start", "p", "s", "--port", "70000")
    assert (code, err) == (1, "walstream: error: invalid port 70000: use 0-65535 (0 picks a free port)\n")
    assert fake.calls == []  # rejected before connecting


def test_invalid_slot_name(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCatalog(monkeypatch)
    code, _, err = run(capsys, "--connection", CONN, "start", "--publication", "p", "--slot", "Bad")
    assert code == 1
    assert err == ("walstream: error: invalid slot name 'Bad': use 1-63 characters, only lower-case letters, "
                   "digits and underscore\n")
    assert fake.calls == []


@pytest.mark.parametrize("argv", [[], ["start"], ["list"], ["delete"]])
def test_help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv, "--help")
    assert (code, err) == (0, "")
    assert out.startswith(f"usage: walstream {argv[0]}" if argv else "usage: walstream")
    assert "--help" in out


def test_start_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "start", "--help")
    text = " ".join(out.split())  # argparse wraps to the terminal width
    for option in ("--publication PUBLICATION", "--slot SLOT", "-p PORT, --port PORT", "-h HOST, --host HOST",
                   "-t true|false, --temporary true|false", "[default: 50051]", "[default: 0.0.0.0]",
                   "[default: true]"):
        assert option in text


@pytest.mark.parametrize("argv", [["-h"], ["list", "-h"], ["delete", "-h"]])
def test_short_h_is_not_help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err == "walstream: error: unknown option -h: help is --help (-h is --host of `walstream start`)\n"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--version") == (0, f"walstream {__version__}\n", "")


def test_missing_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--connection", CONN)
    assert (code, err) == (2, "walstream: error: the following arguments are required: <command> "
                              "(see `walstream --help`)\n")


def test_bad_log_level(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--log-level", "loud", "list")
    assert code == 2 and err.startswith("walstream: error: argument --log-level: invalid choice: 'loud'")
    assert err.count("\n") == 1


# -- start: positional form, hand-off ------------------------------------------------------------------

def test_positional_form(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCatalog(monkeypatch)
    assert run(capsys, "--connection", CONN, "start", "pub", "slot_a", "-t", "off")[0] == 0
    assert fake.started == StartConfig(connection=CONN, publication="pub", slot="slot_a", temporary=False)


def test_flags_form_checks_before_handing_off(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCatalog(monkeypatch)
    code, _, _ = run(capsys, "--connection", CONN, "start", "--slot", "s", "--publication", "p", "-p", "0",
                     "-h", "127.0.0.1")
    assert code == 0
    assert [name for name, _ in fake.calls] == ["connect", "check_start", "close", "run_start"]
    assert fake.calls[1] == ("check_start", ("p", "s"))
    assert fake.started == StartConfig(connection=CONN, publication="p", slot="s", host="127.0.0.1", port=0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["p", "--slot", "s"], "give the publication and slot either as --publication P --slot S or as "
                               "`start P S`, not both"),
        (["--publication", "p", "s"], "give the publication and slot either as --publication P --slot S or "
                                      "as `start P S`, not both"),
        (["p"], "expected two positional arguments, PUBLICATION and SLOT, got 1"),
        (["p", "s", "x"], "expected two positional arguments, PUBLICATION and SLOT, got 3"),
        ([], "the following arguments are required: --publication, --slot"),
        (["--publication", "p"], "the following arguments are required: --slot"),
    ],
)
def test_start_argument_errors(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                               argv: list[str], message: str) -> None:
    fake = FakeCatalog(monkeypatch)
    code, out, err = run(capsys, "--connection", CONN, "start", *argv)
    assert (code, out, err) == (2, "", f"walstream: error: {message} (see `walstream start --help`)\n")
    assert fake.calls == []


def test_check_failure_stops_before_engine(capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCatalog(monkeypatch)

    def refuse(conn: Any, publication: str, slot: str, failover: bool = False) -> None:
        raise SourceError("publication missing")

    monkeypatch.setattr(catalog, "check_start", refuse)
    code, out, err = run(capsys, "--connection", CONN, "start", "p", "s")
    assert (code, out, err) == (1, "", "walstream: error: publication missing\n")
    assert fake.started is None and ("close", None) in fake.calls


# -- connection string -----------------------------------------------------------------------------------

def test_connection_from_env(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCatalog(monkeypatch)
    monkeypatch.setenv("CONNECTION", "postgresql://u@db.example:5433/app")
    assert run(capsys, "start", "p", "s")[0] == 0
    assert fake.calls[0] == ("connect", "postgresql://u@db.example:5433/app")


def test_connection_option_beats_env(capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCatalog(monkeypatch)
    monkeypatch.setenv("CONNECTION", "host=from-env")
    assert run(capsys, "--connection", CONN, "start", "p", "s")[0] == 0
    assert fake.calls[0] == ("connect", CONN)


def test_no_connection(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "list")
    assert (code, err) == (2, "walstream: error: no connection string: pass --connection CONN or set "
                              "CONNECTION (see `walstream --help`)\n")


def test_malformed_connection(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--connection", "host=x password=hunter2 oops", "list")
    assert (code, err) == (1, 'walstream: error: invalid connection string: missing "=" after "oops" in '
                              "connection info string\n")


def test_unreachable_redacts_password(capsys: pytest.CaptureFixture[str]) -> None:
    from walstream.pgcluster import free_port

    port = free_port()
    for conn in (f"host=127.0.0.1 port={port} password=hunter2", f"postgresql://me:hunter2@127.0.0.1:{port}/db"):
        code, out, err = run(capsys, "--connection", conn, "--log-level", "debug", "delete", "--slot", "s")
        assert code == 1 and "hunter2" not in out + err
        assert err.endswith(f'walstream: error: cannot connect to PostgreSQL: connection to server at '
                            f'"127.0.0.1", port {port} failed: Connection refused\n')


# -- top-level error handling ----------------------------------------------------------------------------

def test_unexpected_exception_is_one_line(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(args: argparse.Namespace) -> int:
        raise RuntimeError("disk on fire\nsecond line, password=hunter2")

    monkeypatch.setattr(cli, "cmd_list", boom)
    code, _, err = run(capsys, "--connection", CONN, "list")
    assert (code, err) == (1, "walstream: error: unexpected RuntimeError: disk on fire "
                              "(run with --log-level debug for details)\n")
    code, _, err = run(capsys, "--connection", CONN, "--log-level", "debug", "list")
    assert code == 1 and "Traceback" in err and "disk on fire" in err
    assert "hunter2" not in err
    assert err.splitlines()[-1] == ("walstream: error: unexpected RuntimeError: disk on fire "
                                    "(run with --log-level debug for details)")


def test_psycopg2_error_is_one_line(capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(args: argparse.Namespace) -> int:
        raise psycopg2.OperationalError("server closed the connection unexpectedly\n\tThis probably means...")

    monkeypatch.setattr(cli, "cmd_delete", fail)
    assert run(capsys, "--connection", CONN, "delete", "--slot", "s") == (
        1, "", "walstream: error: PostgreSQL: server closed the connection unexpectedly\n")


def test_keyboard_interrupt(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_list", interrupted)
    assert run(capsys, "--connection", CONN, "list") == (130, "", "")


# -- list output -----------------------------------------------------------------------------------------

def test_table_alignment_and_nulls() -> None:
    slots: list[dict[str, Any]] = [
        {"name": "a_long_slot_name", "plugin": "pgoutput", "kind": "logical", "database": "postgres",
         "temporary": True, "active": True, "active_pid": 4242, "restart_lsn": "0/16B3748",
         "confirmed_flush_lsn": "0/16B3780", "wal_status": "reserved", "retained_bytes": 123456},
        {"name": "p", "plugin": None, "kind": "physical", "database": None, "temporary": False,
         "active": False, "active_pid": None, "restart_lsn": None, "confirmed_flush_lsn": None,
         "wal_status": None, "retained_bytes": None},
    ]
    lines = cli.format_table(slots).splitlines()
    assert len(lines) == 3
    active_at = lines[0].index("ACTIVE")
    assert lines[1][active_at:].startswith("yes (pid 4242)") and lines[2][active_at:].startswith("no ")
    assert lines[2].split() == ["p", "-", "physical", "-", "no", "no", "-", "-", "-", "-"]
    assert lines[1].endswith("123456") and len(lines[2]) == len(lines[1])  # bytes right-aligned
