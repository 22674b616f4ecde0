"""Throwaway TLS material for tests, made with the openssl command (EC P-256 keys: fast to generate)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _key_and_csr(cwd: Path, name: str, cn: str) -> None:
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=cwd)


def _ca(cwd: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN=walstream test {name}",
             cwd=cwd)


def _sign(cwd: Path, name: str, ca: str, extensions: str) -> None:
    (cwd / f"{name}.ext").write_text(extensions + "\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=cwd)


@dataclass(frozen=True)
class Certs:
    """ca signs server (for 127.0.0.1 and localhost) and client; other_ca signs nothing here."""

    dir: Path

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def read(self, name: str) -> bytes:
        return (self.dir / name).read_bytes()


def make_certs(directory: Path) -> Certs:
    if shutil.which("openssl") is None:
        reason = "the openssl command is not installed (apt-get install openssl)"
        if os.environ.get("CI") == "true":  # as support.require_build: CI must not skip silently
            pytest.fail(reason)
        pytest.skip(reason)
    directory.mkdir(parents=True, exist_ok=True)
    _ca(directory, "ca")
    _ca(directory, "other_ca")
    _key_and_csr(directory, "server", "localhost")
    _sign(directory, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
          "extendedKeyUsage=serverAuth")
    _key_and_csr(directory, "client", "walstream-test-client")
    _sign(directory, "client", "ca", "extendedKeyUsage=clientAuth")
    _key_and_csr(directory, "stranger", "walstream-test-stranger")
    _sign(directory, "stranger", "other_ca", "extendedKeyUsage=clientAuth")
    return Certs(directory)
