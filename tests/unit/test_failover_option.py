"""`start --failover`: parsing, the refusals made before PostgreSQL is reached, and the replication commands."""

from __future__ import annotations

import pytest
from test_cli import CONN, FakeCatalog, parse, run  # type: ignore[import-not-found]  # a sibling test module

from walstream.config import StartConfig
from walstream.errors import ConfigError, ErrorKind, SourceError
from walstream.source import failover


def test_off_by_default() -> None:
    assert parse("start", "p", "s").failover is False
    assert StartConfig(connection=CONN, publication="p", slot="s").failover is False


def test_handed_to_the_check_and_the_engine(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCatalog(monkeypatch)
    assert run(capsys, "--connection", CONN, "start", "p", "s", "--temporary", "false", "--failover")[0] == 0
    assert ("check_start", ("p", "s", True)) in fake.calls
    assert fake.started == StartConfig(connection=CONN, publication="p", slot="s", temporary=False, failover=True)


@pytest.mark.parametrize("temporary", [[], ["--temporary", "true"]])
def test_a_temporary_slot_is_refused(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                     temporary: list[str]) -> None:
    fake = FakeCatalog(monkeypatch)
    code, out, err = run(capsys, "--connection", CONN, "start", "p", "s", "--failover", *temporary)
    assert (code, out) == (1, "")
    assert err == ("walstream: error: --failover needs a permanent slot: add --temporary false (a temporary "
                   "slot, the default, is dropped with its connection and is never synchronized to a standby)\n")
    assert fake.calls == []  # refused before PostgreSQL is reached


def test_config_refuses_a_temporary_failover_slot() -> None:
    with pytest.raises(ConfigError, match="--failover needs a permanent slot"):
        StartConfig(connection=CONN, publication="p", slot="s", temporary=True, failover=True)


@pytest.mark.parametrize(("version", "text"), [(150018, "15.18"), (160004, "16.4")])
def test_servers_before_17_are_refused_naming_their_version(version: int, text: str) -> None:
    with pytest.raises(SourceError) as caught:
        failover.require_server(version, text)
    assert str(caught.value) == (f"--failover needs PostgreSQL 17 or later (failover slots synchronized to "
                                 f"standbys); this server is PostgreSQL {text}: upgrade it or start without "
                                 "--failover")
    assert caught.value.kind is ErrorKind.SERVER_SETUP


def test_17_and_later_are_accepted() -> None:
    failover.require_server(170000, "17.0")
    failover.require_server(180001, "18.1")


def test_create_command() -> None:
    assert failover.create_command("my_slot") == (
        "CREATE_REPLICATION_SLOT \"my_slot\" LOGICAL pgoutput (FAILOVER, SNAPSHOT 'nothing')")
