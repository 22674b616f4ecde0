"""Security options at the boundary (TLS files, token, limits), the token check and the exposure warning.

Real certificate files (openssl), no PostgreSQL: `start` is stopped before it connects anywhere.
"""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tlscerts import Certs, make_certs

from walstream.cli import main as cli
from walstream.client.credentials import channel_credentials, with_token
from walstream.config import StartConfig
from walstream.delivery.auth import bearer_token_matches
from walstream.errors import ConfigError
from walstream.ops import security
from walstream.source import catalog

CONN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
TOKEN = "s3cr3t-token-0123456789abcdef"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("CONNECTION", raising=False)
    monkeypatch.delenv(security.AUTH_TOKEN_ENV, raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def config(**kwargs: Any) -> StartConfig:
    return StartConfig(connection=CONN, publication="p", slot="s", **kwargs)


# -- TLS files -------------------------------------------------------------------------------------------

def test_valid_tls_and_mtls(certs: Certs) -> None:
    config(tls_cert=certs.path("server.crt"), tls_key=certs.path("server.key"))
    config(tls_cert=certs.path("server.crt"), tls_key=certs.path("server.key"), tls_client_ca=certs.path("ca.crt"))


@pytest.mark.parametrize(("files", "message"), [
    ({"tls_key": "server.key"}, "--tls-key given without --tls-cert: give both (TLS) or neither (plaintext)"),
    ({"tls_cert": "server.crt"}, "--tls-cert given without --tls-key: give both (TLS) or neither (plaintext)"),
    ({"tls_client_ca": "ca.crt"}, "--tls-client-ca needs TLS: give --tls-cert and --tls-key too"),
])
def test_tls_combinations(certs: Certs, files: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(**{k: certs.path(v) for k, v in files.items()})
    assert str(info.value) == message


def test_unreadable_and_wrong_files(certs: Certs, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.crt")
    with pytest.raises(ConfigError, match=r"^--tls-cert '.*nope.crt': cannot read it \(No such file or directory\); "
                                          r"give a readable PEM certificate \(chain\) file$"):
        config(tls_cert=missing, tls_key=certs.path("server.key"))
    with pytest.raises(ConfigError, match=r"^--tls-key '.*': cannot read it \(Is a directory\)"):
        config(tls_cert=certs.path("server.crt"), tls_key=str(tmp_path))
    (tmp_path / "empty.pem").write_text("")
    with pytest.raises(ConfigError, match=r"^--tls-cert '.*empty.pem': the file is empty; give a PEM"):
        config(tls_cert=str(tmp_path / "empty.pem"), tls_key=certs.path("server.key"))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"^--tls-cert '.*junk.pem' / --tls-key '.*server.key': .*; give a PEM "
                                          "certificate and the PEM private key that belongs to it$"):
        config(tls_cert=str(tmp_path / "junk.pem"), tls_key=certs.path("server.key"))
    with pytest.raises(ConfigError, match="the private key does not belong to the certificate"):
        config(tls_cert=certs.path("server.crt"), tls_key=certs.path("client.key"))
    with pytest.raises(ConfigError, match=r"^--tls-client-ca '.*junk.pem': .*; give a PEM file of the CA"):
        config(tls_cert=certs.path("server.crt"), tls_key=certs.path("server.key"),
               tls_client_ca=str(tmp_path / "junk.pem"))


def test_encrypted_key_is_refused_without_prompting(certs: Certs, tmp_path: Path) -> None:
    encrypted = tmp_path / "enc.key"
    subprocess.run(["openssl", "pkey", "-in", certs.path("server.key"), "-aes256", "-passout", "pass:pw",
                    "-out", str(encrypted)], check=True, capture_output=True)
    with pytest.raises(ConfigError, match=r"^--tls-key '.*enc.key': the key is encrypted; give an unencrypted"):
        config(tls_cert=certs.path("server.crt"), tls_key=str(encrypted))


# -- token and limits ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("token", "message"), [
    ("", "empty auth token from X: give a token, or leave it out for no authentication"),
    ("two words", "invalid auth token from X: character 4 is not allowed; use printable ASCII without spaces"),
    ("caf\u00e9", "invalid auth token from X: character 4 is not allowed"),
    ("line\n", "invalid auth token from X: character 5 is not allowed"),
])
def test_bad_tokens_never_echoed(token: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        security.check_token(token, "X")
    assert str(info.value).startswith(message)
    assert not token or token not in str(info.value)


def test_token_kept_out_of_repr() -> None:
    assert TOKEN not in repr(config(auth_token=TOKEN))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_clients": 0}, "invalid --max-clients 0: use a whole number of at least 1"),
    ({"max_recv_message_size": 100}, "invalid --max-recv-message-size 100: use a number of bytes from 1024 to "
                                     "1073741824"),
    ({"client_queue_size": 0}, "invalid client_queue_size 0: must be at least 1"),
])
def test_limits(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(**kwargs)
    assert str(info.value) == message


def test_limit_defaults() -> None:
    c = config()
    assert (c.max_clients, c.max_recv_message_size, c.client_queue_size) == (100, 4 * 1024 * 1024, 10_000)


# -- the token check -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("metadata", "ok"), [
    ([("authorization", f"Bearer {TOKEN}")], True),
    ([("authorization", f"bearer {TOKEN}")], True),  # the scheme is case-insensitive (RFC 7235)
    ([("user-agent", "x"), ("authorization", f"Bearer {TOKEN}".encode())], True),
    ([("authorization", "Bearer wrong")], False),
    ([("authorization", f"Bearer {TOKEN[:-1]}")], False),
    ([("authorization", f"Bearer {TOKEN}x")], False),
    ([("authorization", f"Basic {TOKEN}")], False),
    ([("authorization", TOKEN)], False),
    ([("authorization", "Bearer ")], False),
    ([("authorization", "Bearer wrong"), ("authorization", f"Bearer {TOKEN}")], False),  # only the first counts
    ([("x-token", TOKEN)], False),
    ([], False),
    (None, False),
])
def test_bearer_token_matches(metadata: Any, ok: bool) -> None:
    assert bearer_token_matches(metadata, TOKEN.encode()) is ok


# -- exposure warning ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("0.0.0.0", False), ("::", False), ("[::]", False), ("10.0.0.5", False),
    ("db.example.com", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert security.is_loopback(host) is loopback


def test_exposure_warning() -> None:
    assert security.exposure_warning("127.0.0.1", tls=False, authenticated=False) is None
    assert security.exposure_warning("0.0.0.0", tls=True, authenticated=True) is None
    plain = security.exposure_warning("0.0.0.0", tls=False, authenticated=False)
    assert plain == ("serving plaintext gRPC without authentication: anyone who can reach it can read every change "
                     "on 0.0.0.0 (not a loopback address); use --tls-cert/--tls-key and --auth-token (or "
                     "--tls-client-ca), or --host 127.0.0.1")
    assert "the token and every change cross the network unencrypted" in str(
        security.exposure_warning("10.0.0.5", tls=False, authenticated=True))
    assert "TLS without authentication" in str(security.exposure_warning("::", tls=True, authenticated=False))


# -- the command line ------------------------------------------------------------------------------------

class Started:
    """Replaces PostgreSQL and the engine: records the StartConfig `start` would run with."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.config: StartConfig | None = None
        self.connected = False
        monkeypatch.setattr(catalog, "connect", self.connect)
        monkeypatch.setattr(catalog, "check_start", lambda conn, publication, slot, failover=False: None)
        monkeypatch.setattr(cli, "_run_start", lambda: self.run)

    def connect(self, conn_str: str) -> Any:
        self.connected = True
        return self

    def close(self) -> None:
        pass

    def run(self, config: StartConfig) -> int:
        self.config = config
        return 0


def start(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["--connection", CONN, "start", "p", "s", *argv])
    out, err = capsys.readouterr()
    assert out == ""
    return code, err


def test_start_security_options(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                certs: Certs) -> None:
    fake = Started(monkeypatch)
    code, err = start(capsys, "--tls-cert", certs.path("server.crt"), "--tls-key", certs.path("server.key"),
                      "--tls-client-ca", certs.path("ca.crt"), "--auth-token", TOKEN, "--max-clients", "7",
                      "--max-recv-message-size", "2048", "--client-queue-size", "50")
    assert (code, "error:" in err) == (0, False)
    assert fake.config == config(tls_cert=certs.path("server.crt"), tls_key=certs.path("server.key"),
                                 tls_client_ca=certs.path("ca.crt"), auth_token=TOKEN, max_clients=7,
                                 max_recv_message_size=2048, client_queue_size=50)


def test_start_token_sources(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                             tmp_path: Path) -> None:
    fake = Started(monkeypatch)
    assert start(capsys)[0] == 0 and fake.config is not None and fake.config.auth_token is None
    monkeypatch.setenv(security.AUTH_TOKEN_ENV, f" {TOKEN}\n")
    assert start(capsys)[0] == 0 and fake.config.auth_token == TOKEN
    assert start(capsys, "--auth-token", "from-flag")[0] == 0 and fake.config.auth_token == "from-flag"
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert start(capsys, "--auth-token-file", str(token_file))[0] == 0
    assert fake.config.auth_token == "from-file"
    assert TOKEN not in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "env", "code", "message"), [
    (["--auth-token", TOKEN, "--auth-token-file", "/x"], None, 2,
     "give --auth-token or --auth-token-file, not both (see `walstream start --help`)"),
    ([], "", 1, f"empty auth token from {security.AUTH_TOKEN_ENV}: give a token, or leave it out for no "
                "authentication"),
    (["--auth-token", f"{TOKEN} x"], None, 1, "invalid auth token from --auth-token: character 30 is not allowed; "
                                              "use printable ASCII without spaces (e.g. `openssl rand -hex 32`)"),
    (["--auth-token-file", "/nonexistent/token"], None, 1,
     "--auth-token-file '/nonexistent/token': cannot read it (No such file or directory); give a readable file "
     "holding the token"),
    (["--tls-cert", "/nonexistent/server.crt", "--tls-key", "/nonexistent/server.key"], None, 1,
     "--tls-cert '/nonexistent/server.crt': cannot read it (No such file or directory); give a readable PEM "
     "certificate (chain) file"),
    (["--tls-client-ca", "/nonexistent/ca.crt"], None, 1,
     "--tls-client-ca needs TLS: give --tls-cert and --tls-key too"),
    (["--max-clients", "0"], None, 2,
     "argument --max-clients: invalid value '0': use a whole number of at least 1 (see `walstream start --help`)"),
    (["--client-queue-size", "none"], None, 2, "argument --client-queue-size: invalid value 'none': use a whole "
                                               "number of at least 1 (see `walstream start --help`)"),
    (["--max-recv-message-size", "10"], None, 1,
     "invalid --max-recv-message-size 10: use a number of bytes from 1024 to 1073741824"),
])
def test_start_security_errors_are_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                            argv: list[str], env: str | None, code: int, message: str) -> None:
    fake = Started(monkeypatch)
    if env is not None:
        monkeypatch.setenv(security.AUTH_TOKEN_ENV, env)
    assert start(capsys, *argv) == (code, f"walstream: error: {message}\n")
    assert not fake.connected and fake.config is None  # refused before connecting to anything
    assert TOKEN not in message or "--auth-token" not in argv


def test_start_help_lists_security_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["start", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--tls-cert FILE", "--tls-key FILE", "--tls-client-ca FILE", "--auth-token TOKEN",
                   "--auth-token-file FILE", "--max-clients N", "--max-recv-message-size BYTES",
                   "[env: WALSTREAM_AUTH_TOKEN]", "[default: 100]", "[default: 4194304]"):
        assert option in text


@pytest.mark.parametrize(("argv", "message"), [
    (["--tls-cert", "c.pem"], "tls_cert, tls_key: give both (a client certificate and its key) or neither"),
    (["--tls-ca", "/nonexistent/ca.pem"], "tls_ca: cannot read '/nonexistent/ca.pem': No such file or directory; "
                                          "give a PEM file"),
    (["--auth-token", "a b"], "invalid auth token from --auth-token: character 2 is not allowed; use printable "
                              "ASCII without spaces (e.g. `openssl rand -hex 32`)"),
])
def test_tail_security_errors_are_one_line(capsys: pytest.CaptureFixture[str], argv: list[str],
                                           message: str) -> None:
    code = cli.main(["tail", "--server", "127.0.0.1:1", *argv])
    assert (code, capsys.readouterr().err) == (1, f"walstream: error: {message}\n")


# -- the client library's options ------------------------------------------------------------------------

def test_client_token_and_tls_options(certs: Certs) -> None:
    assert with_token([("x", "1")], TOKEN) == [("x", "1"), ("authorization", f"Bearer {TOKEN}")]
    assert with_token((), None) == []
    with pytest.raises(ValueError, match="^token: metadata already has an authorization entry"):
        with_token([("Authorization", "Bearer a")], TOKEN)
    with pytest.raises(ValueError, match="^token: expected printable ASCII without spaces$"):
        with_token((), "a b")
    assert channel_credentials(None, None, None, None) is None
    assert channel_credentials(None, certs.path("ca.crt"), certs.path("client.crt"), certs.path("client.key"))
    from walstream import Client

    client = Client("127.0.0.1:1", token=TOKEN, tls_ca=certs.path("ca.crt"))
    assert TOKEN not in repr(client.options) and TOKEN not in repr(client)
    client.close()


def test_readme_lists_every_option() -> None:
    """README.md documents every option of every command (it says so; this keeps it true)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {option}" for name, sub in [("walstream", parser), *commands.choices.items()]
               for action in sub._actions if action.help != argparse.SUPPRESS
               for option in action.option_strings
               if option.startswith("--") and not re.search(rf"(?<![\w-]){option}(?![\w-])", readme)]
    assert missing == []


def test_startup_warnings() -> None:
    assert security.startup_warnings("127.0.0.1", tls=False, client_certificates=False, token=None) == []
    assert security.startup_warnings("0.0.0.0", tls=True, client_certificates=True, token=None) == []
    assert security.startup_warnings("0.0.0.0", tls=True, client_certificates=False, token=TOKEN) == []
    [plain] = security.startup_warnings("0.0.0.0", tls=False, client_certificates=False, token=None)
    assert plain.startswith("serving plaintext gRPC without authentication")
    [short] = security.startup_warnings("::1", tls=False, client_certificates=False, token="abc")
    assert short == "the auth token has 3 characters: use at least 16 random ones (e.g. `openssl rand -hex 32`)"
