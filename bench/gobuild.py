"""Builds the benchmark's Go seed client (bench/go_seed_client) the way examples/go-client is built: stubs
generated from proto/plugin.proto into the package, Debian's Go packages in GOPATH mode (no module proxy).
`scripts/install_example_toolchains.sh go` installs what it needs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = Path(__file__).resolve().parent / "go_seed_client" / "main.go"
TOOLS = ("go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc")


def build_go_seed_client(workdir: Path) -> tuple[Path | None, str]:
    """(the binary, "") or (None, why it could not be built)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return None, f"not on PATH: {', '.join(missing)} (scripts/install_example_toolchains.sh go installs them)"
    pkg = workdir / "go_seed_client"
    pkg.mkdir(parents=True, exist_ok=True)
    shutil.copy(SOURCE, pkg / "main.go")
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOFLAGS="")
    opt = "paths=source_relative,Mplugin.proto=walstream.bench/go_seed_client;main"
    proto = ROOT / "proto"
    steps = [["protoc", f"-I{proto}", "--go_out=.", f"--go_opt={opt}", "--go-grpc_out=.", f"--go-grpc_opt={opt}",
              str(proto / "plugin.proto")],
             ["go", "build", "-o", "go_seed_client", "."]]
    for cmd in steps:
        proc = subprocess.run(cmd, cwd=pkg, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            output = (proc.stderr or proc.stdout).strip()[-500:]
            return None, f"`{' '.join(cmd[:2])} ...` exited {proc.returncode}: {output}"
    return pkg / "go_seed_client", ""
