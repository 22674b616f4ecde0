"""Builds the benchmark's Go seed client (bench/go_seed_client) the way examples/go-client is built: a Go
module (its go.mod/go.sum pin grpc-go and protobuf-go, fetched from the Go module proxy), package pluginpb
generated from proto/plugin.proto by `go generate ./...` (protoc with protoc-gen-go and protoc-gen-go-grpc),
then `go build`. `scripts/install_example_toolchains.sh go` installs the plugins (`go install`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

MODULE = Path(__file__).resolve().parent / "go_seed_client"
TOOLS = ("go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc")


def go_env() -> dict[str, str]:
    """The environment with `go install`'s bin directory first on PATH, where the install script puts the
    plugins (ahead of any older copies elsewhere on PATH)."""
    env = dict(os.environ)
    go = shutil.which("go")
    if go is None:
        return env
    proc = subprocess.run([go, "env", "GOBIN", "GOPATH"], capture_output=True, text=True, timeout=60)
    lines = proc.stdout.splitlines() if proc.returncode == 0 else []
    if len(lines) == 2:
        gobin = lines[0] or str(Path(lines[1].split(os.pathsep)[0]) / "bin")
        env["PATH"] = os.pathsep.join([gobin, env.get("PATH", "")])
    return env


def build_go_seed_client(workdir: Path) -> tuple[Path | None, str]:
    """(the binary, "") or (None, why it could not be built)."""
    env = go_env()
    missing = [tool for tool in TOOLS if shutil.which(tool, path=env["PATH"]) is None]
    if missing:
        return None, f"not on PATH: {', '.join(missing)} (scripts/install_example_toolchains.sh go installs them)"
    workdir.mkdir(parents=True, exist_ok=True)
    binary = workdir / "go_seed_client"
    for cmd in (["go", "generate", "./..."], ["go", "build", "-o", str(binary), "."]):
        proc = subprocess.run(cmd, cwd=MODULE, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            output = (proc.stderr or proc.stdout).strip()[-500:]
            return None, f"`{' '.join(cmd)}` in {MODULE} exited {proc.returncode}: {output}"
    return binary, ""
