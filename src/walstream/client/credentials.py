"""The TLS and token options of Client and AsyncClient, as gRPC channel credentials and call metadata."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import grpc

from ..ops.security import bad_token_character

PathArg = str | os.PathLike[str]


def _read(name: str, path: PathArg) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{name}: cannot read {os.fspath(path)!r}: {exc.strerror or exc}; give a PEM file") from None


def channel_credentials(credentials: grpc.ChannelCredentials | None, tls_ca: PathArg | None,
                        tls_cert: PathArg | None, tls_key: PathArg | None) -> grpc.ChannelCredentials | None:
    """`credentials` as given, or TLS from the files (tls_cert/tls_key: mutual TLS), or None: plaintext."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("tls_cert, tls_key: give both (a client certificate and its key) or neither")
    if tls_ca is None and tls_cert is None:
        return credentials
    if credentials is not None:
        raise ValueError("credentials: give either credentials or tls_ca/tls_cert/tls_key, not both")
    return grpc.ssl_channel_credentials(
        root_certificates=_read("tls_ca", tls_ca) if tls_ca is not None else None,  # None: the system's CAs
        private_key=_read("tls_key", tls_key) if tls_key is not None else None,
        certificate_chain=_read("tls_cert", tls_cert) if tls_cert is not None else None,
    )


def with_token(metadata: Iterable[tuple[str, str]], token: str | None) -> list[tuple[str, str]]:
    """`metadata` plus `authorization: Bearer <token>`, the header walstream's --auth-token checks."""
    items = list(metadata)
    if token is None:
        return items
    if not token or bad_token_character(token) is not None:
        raise ValueError("token: expected printable ASCII without spaces")  # never echo a secret
    if any(key.lower() == "authorization" for key, _ in items):
        raise ValueError("token: metadata already has an authorization entry; give one or the other")
    return [*items, ("authorization", f"Bearer {token}")]
