"""Security settings checked at the boundary: TLS files, the bearer token, limits, and exposure warnings.

No gRPC here (the CLI imports this for every command); the server side of it is delivery/auth.py. Secrets
never appear in messages: errors about a token name where it came from, never its value.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

from ..errors import ConfigError

AUTH_TOKEN_ENV = "WALSTREAM_AUTH_TOKEN"
DEFAULT_MAX_CLIENTS = 100
# gRPC's own default; a client only ever sends a subscription and acks, both small.
DEFAULT_MAX_RECV_MESSAGE_SIZE = 4 * 1024 * 1024
MIN_RECV_MESSAGE_SIZE = 1024
MAX_RECV_MESSAGE_SIZE = 1024 * 1024 * 1024
MIN_TOKEN_LENGTH = 16  # shorter tokens are accepted, with a warning


class _EncryptedKey(Exception):
    pass


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal; gRPC cannot use an encrypted key anyway.
    raise _EncryptedKey


def read_file(path: str, option: str, what: str) -> bytes:
    """The file's bytes, or a ConfigError naming the option, the path and why it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{option} {path!r}: cannot read it ({exc.strerror or exc}); give a readable {what}") \
            from None
    if not data.strip():
        raise ConfigError(f"{option} {path!r}: the file is empty; give a {what}")
    return data


def check_tls(cert: str | None, key: str | None, client_ca: str | None) -> None:
    """Both of cert/key or neither; client_ca only with them; every file readable PEM, the key matching."""
    if cert is None and key is not None:
        raise ConfigError("--tls-key given without --tls-cert: give both (TLS) or neither (plaintext)")
    if cert is not None and key is None:
        raise ConfigError("--tls-cert given without --tls-key: give both (TLS) or neither (plaintext)")
    if client_ca is not None and cert is None:
        raise ConfigError("--tls-client-ca needs TLS: give --tls-cert and --tls-key too")
    if cert is None or key is None:
        return
    read_file(cert, "--tls-cert", "PEM certificate (chain) file")
    read_file(key, "--tls-key", "PEM private key file")
    # The ssl module parses PEM with OpenSSL and checks that the key belongs to the certificate: the same
    # mistakes gRPC would otherwise only report (vaguely) at the first handshake.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except _EncryptedKey:
        raise ConfigError(f"--tls-key {key!r}: the key is encrypted; give an unencrypted PEM private key "
                          "(e.g. `openssl pkey -in KEY -out KEY.plain`) readable only by walstream") from None
    except ssl.SSLError as exc:
        raise ConfigError(f"--tls-cert {cert!r} / --tls-key {key!r}: {_reason(exc)}; give a PEM certificate "
                          "and the PEM private key that belongs to it") from None
    if client_ca is not None:
        read_file(client_ca, "--tls-client-ca", "PEM file of CA certificates")
        try:
            context.load_verify_locations(cafile=client_ca)
        except ssl.SSLError as exc:
            raise ConfigError(f"--tls-client-ca {client_ca!r}: {_reason(exc)}; give a PEM file of the CA "
                              "certificates that sign client certificates") from None


def _reason(exc: ssl.SSLError) -> str:
    reason = (exc.reason or str(exc)).replace("_", " ").lower()
    return {"key values mismatch": "the private key does not belong to the certificate",
            "no start line": "not PEM (no -----BEGIN line)"}.get(reason, reason)


def bad_token_character(token: str) -> int | None:
    """The index of the first character a bearer token may not hold (it is sent as gRPC metadata: visible
    ASCII only), else None. The server's options and the client library share this rule."""
    for index, char in enumerate(token):
        if not "!" <= char <= "~":
            return index
    return None


def check_token(token: str, source: str) -> None:
    """A bearer token is sent as gRPC metadata: visible ASCII only. `source` names where it came from."""
    if not token:
        raise ConfigError(f"empty auth token from {source}: give a token, or leave it out for no authentication")
    index = bad_token_character(token)
    if index is not None:
        raise ConfigError(f"invalid auth token from {source}: character {index + 1} is not allowed; "
                          "use printable ASCII without spaces (e.g. `openssl rand -hex 32`)")


def read_token_file(path: str) -> str:
    """The token in a file: its content without surrounding whitespace (a trailing newline is usual)."""
    data = read_file(path, "--auth-token-file", "file holding the token")
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"--auth-token-file {path!r}: not ASCII; use printable ASCII without spaces") from None


def check_limits(max_clients: int, max_recv_message_size: int) -> None:
    if max_clients < 1:
        raise ConfigError(f"invalid --max-clients {max_clients}: use a whole number of at least 1")
    if not MIN_RECV_MESSAGE_SIZE <= max_recv_message_size <= MAX_RECV_MESSAGE_SIZE:
        raise ConfigError(f"invalid --max-recv-message-size {max_recv_message_size}: use a number of bytes from "
                          f"{MIN_RECV_MESSAGE_SIZE} to {MAX_RECV_MESSAGE_SIZE}")


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (0.0.0.0 and :: listen everywhere: not loopback)."""
    host = host.strip().removeprefix("[").removesuffix("]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name that may resolve to anything


def exposure_warning(host: str, tls: bool, authenticated: bool) -> str | None:
    """The warning to log when clients on other machines could read the stream unprotected, else None."""
    if is_loopback(host) or (tls and authenticated):
        return None
    if not tls and not authenticated:
        what = "plaintext gRPC without authentication: anyone who can reach it can read every change"
        fix = "--tls-cert/--tls-key and --auth-token (or --tls-client-ca)"
    elif not tls:
        what = "plaintext gRPC: the token and every change cross the network unencrypted"
        fix = "--tls-cert/--tls-key"
    else:
        what = "TLS without authentication: anyone who can reach it can read every change"
        fix = "--auth-token or --tls-client-ca"
    return f"serving {what} on {host} (not a loopback address); use {fix}, or --host 127.0.0.1"


def describe(tls: bool, client_certificates: bool, token: bool, max_clients: int) -> str:
    """One line for the start-up log: how clients are protected (never the secrets themselves)."""
    parts = ["TLS" if tls else "plaintext"]
    if client_certificates:
        parts.append("client certificates required")
    parts.append("bearer token required" if token else "no token")
    parts.append(f"at most {max_clients} clients")
    return ", ".join(parts)


def startup_warnings(host: str, tls: bool, client_certificates: bool, token: str | None) -> list[str]:
    """What `walstream start` warns about once it listens: exposure, and a token short enough to guess."""
    warnings = []
    exposed = exposure_warning(host, tls, authenticated=token is not None or client_certificates)
    if exposed:
        warnings.append(exposed)
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        warnings.append(f"the auth token has {len(token)} characters: use at least {MIN_TOKEN_LENGTH} random ones "
                        "(e.g. `openssl rand -hex 32`)")
    return warnings
