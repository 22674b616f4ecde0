"""Issue 4's Docker files: Dockerfile, .dockerignore, docker-compose.yml, the init script, release.yml.

No Docker engine runs in CI, so the image is never built here (the release workflow builds it). What can be
checked without one is checked: the init script runs against a real PostgreSQL, the compose command line
goes through walstream's own CLI parser, and the names the files share (publication, port, user, database,
host, paths) must agree with each other.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from walstream.cli.main import build_parser
from walstream.pgcluster import Cluster
from walstream.source.dsn import parse_connection

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
INIT_DIR = ROOT / "docker-entrypoint-initdb.d"
INIT_SCRIPT = INIT_DIR / "create-publication.sh"
RELEASE = ROOT / ".github" / "workflows" / "release.yml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# --- helpers -----------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with comments dropped and `\\` continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def instruction_args(instructions: list[tuple[str, str]], name: str) -> list[str]:
    return [args for word, args in instructions if word == name]


def copy_sources(instructions: list[tuple[str, str]]) -> list[str]:
    sources: list[str] = []
    for args in instruction_args(instructions, "COPY"):
        if "--from=" in args:  # from an earlier build stage, not the build context
            continue
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        assert len(words) >= 2, f"COPY {args}"
        sources += words[:-1]
    return sources


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per .dockerignore line, with Docker's meaning of `*`, `?`, `[..]` and `**`."""
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        patterns.append((negated, re.compile(_glob_regex(pattern))))
    return patterns


def _glob_regex(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out, i = out + "[" + ("^" + body[1:] if body.startswith(("!", "^")) else body) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def dockerignored(path: str) -> bool:
    """Whether the build context leaves `path` out: the last matching pattern decides; a matching
    directory takes everything under it along."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negated, regex in dockerignore_patterns():
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- KEY=value` form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def command_argv(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) for each `ports:` entry, short or long syntax."""
    out = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            out.append((int(entry["published"]), int(entry["target"])))
        else:
            fields = str(entry).split("/")[0].split(":")
            assert len(fields) >= 2, f"port {entry!r} publishes no host port"
            out.append((int(fields[-2]), int(fields[-1])))
    return out


def init_script_publication() -> str:
    found = set(re.findall(r"CREATE\s+PUBLICATION\s+\"?(\w+)\"?", INIT_SCRIPT.read_text(), re.IGNORECASE))
    assert len(found) == 1, f"expected one CREATE PUBLICATION in {INIT_SCRIPT.name}, found {found}"
    return found.pop()


def release_workflow() -> dict[str, Any]:
    data = yaml.safe_load(RELEASE.read_text())
    assert isinstance(data, dict)
    return data


# --- the init script, against a real PostgreSQL ----------------------------------------------------------


def run_init_script(pg: Cluster, dbname: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "POSTGRES_"))}
    # psql of the cluster's own build when it has one, else the system's.
    env["PATH"] = f"{pg.bindir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    assert shutil.which("psql", path=env["PATH"]), "psql is neither in the cluster's bindir nor on PATH"
    # What the postgres image provides, pointed at the test cluster's Unix socket.
    env.update(POSTGRES_USER="postgres", POSTGRES_DB=dbname, PGHOST=str(pg.workdir), PGPORT=str(pg.port))
    return subprocess.run(["bash", str(INIT_SCRIPT)], capture_output=True, text=True, env=env, timeout=60)


def test_init_script_creates_the_publication_and_is_idempotent(pg: Cluster, testdb: Any) -> None:
    name = init_script_publication()
    for attempt in (1, 2):
        result = run_init_script(pg, testdb.name)
        assert result.returncode == 0, f"run {attempt}: {result.stdout}{result.stderr}"
    assert "already exists" in result.stderr  # the second run noticed and left it alone

    rows = testdb.query(
        "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication "
        "WHERE pubname = %s",
        (name,),
    )
    assert rows == [(True, True, True, True, True)], rows
    # FOR ALL TABLES: a table created afterwards is published without touching the publication.
    testdb.execute("CREATE TABLE created_later (id int PRIMARY KEY)")
    published = testdb.query("SELECT tablename FROM pg_publication_tables WHERE pubname = %s", (name,))
    assert published == [("created_later",)]


def test_init_script_fails_loudly(pg: Cluster) -> None:
    # The image aborts initialisation when an init script exits non-zero; a database that is not there
    # (or any SQL error, with ON_ERROR_STOP) must therefore be an error, not a warning.
    result = run_init_script(pg, "walstream_no_such_database")
    assert result.returncode != 0
    assert "walstream_no_such_database" in result.stderr


def test_init_script_file() -> None:
    text = INIT_SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") or text.startswith("#!/bin/bash\n")
    # The image executes executable *.sh files and only sources the others (git records the mode).
    assert os.access(INIT_SCRIPT, os.X_OK), f"{INIT_SCRIPT} is not executable: chmod +x it"
    assert "ON_ERROR_STOP=1" in text
    assert '--username "$POSTGRES_USER"' in text and '--dbname "$POSTGRES_DB"' in text
    assert re.search(r"CREATE\s+PUBLICATION\s+\w+\s+FOR\s+ALL\s+TABLES", text, re.IGNORECASE)
    syntax = subprocess.run(["bash", "-n", str(INIT_SCRIPT)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


# --- docker-compose.yml ------------------------------------------------------------------------------------


def test_compose_db_service() -> None:
    db = compose()["services"]["db"]
    assert str(db["image"]).split(":")[0] == "postgres"
    assert command_argv(db) == ["postgres", "-c", "wal_level=logical"]
    env = service_env(db)
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= env.keys()

    mounts = {}
    for volume in db.get("volumes") or []:
        if isinstance(volume, dict):
            mounts[volume["target"]] = str(volume.get("source", ""))
        else:
            source, target = str(volume).split(":")[:2]
            mounts[target] = source
    source = mounts.get("/docker-entrypoint-initdb.d", "")
    assert source is not None, f"the init scripts are not mounted at /docker-entrypoint-initdb.d: {mounts}"
    assert (ROOT / source).resolve() == INIT_DIR.resolve()

    test = db["healthcheck"]["test"]
    test_line = test if isinstance(test, str) else " ".join(str(word) for word in test)
    assert "pg_isready" in test_line


def test_compose_walstream_service_lines_up_with_db_cli_and_init_script() -> None:
    services = compose()["services"]
    walstream, db = services["walstream"], services["db"]

    build = walstream["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (ROOT / context / dockerfile).resolve() == DOCKERFILE.resolve()

    # The command is the image's ENTRYPOINT's (`walstream`) arguments: walstream's own parser must take it.
    argv = command_argv(walstream)
    args = build_parser().parse_args(argv)
    assert args.command == "start"
    assert args.publication == init_script_publication()
    assert args.slot == "walstream_slot"
    assert args.temporary is False  # permanent: nothing is lost while the container restarts
    assert args.host == "0.0.0.0"  # published ports only reach a server listening on all interfaces

    assert published_ports(walstream) == [(50051, args.port)]
    assert args.port == build_parser().parse_args(["start", "--publication", "p", "--slot", "s"]).port

    conn = parse_connection(service_env(walstream)["CONNECTION"])
    assert conn["host"] == "db" and "db" in services
    assert conn.get("port", "5432") == "5432"
    db_env = service_env(db)
    assert conn["user"] == db_env["POSTGRES_USER"]
    assert conn["password"] == db_env["POSTGRES_PASSWORD"]
    assert conn["dbname"] == db_env["POSTGRES_DB"]

    assert walstream["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert walstream["restart"] == "unless-stopped"


# --- Dockerfile and .dockerignore --------------------------------------------------------------------------


def test_dockerfile() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0][0] == "FROM"
    for word, args in instructions:  # every stage (the build stage compiles the C accelerator)
        if word == "FROM":
            assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?( AS \w+)?", args), args

    entrypoints = instruction_args(instructions, "ENTRYPOINT")
    assert entrypoints and json.loads(entrypoints[-1]) == ["walstream"]
    assert "walstream" in PYPROJECT["project"]["scripts"]  # the console script `pip install .` creates

    exposed = {
        port.split("/")[0] for args in instruction_args(instructions, "EXPOSE") for port in args.split()
    }
    assert "50051" in exposed

    users = instruction_args(instructions, "USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert [word for word, _ in instructions].index("USER") > max(
        i for i, (word, _) in enumerate(instructions) if word == "RUN"
    ), "USER must come after the last RUN (the install needs root, the runtime must not)"

    text = DOCKERFILE.read_text()
    assert re.search(r"pip install\b[^\n]*--no-cache-dir", text) or "PIP_NO_CACHE_DIR=1" in text


def _pip_target(run: str, extras: str) -> str:
    """The first argument after the last `pip install` with its options, as the shell expands it with EXTRAS
    set (the one before installs the wheel the build stage made)."""
    words = run.rsplit("pip install", 1)[1].split()
    target = next(w for w in words if not w.startswith("-"))
    done = subprocess.run(["bash", "-c", f"printf %s {target}"], env={"EXTRAS": extras}, capture_output=True,
                          text=True, check=True)
    return done.stdout


def test_dockerfile_installs_the_sinks_unless_told_not_to() -> None:
    """The image offers `start --sink` (issue 15): the `sinks` extra by default, `--build-arg EXTRAS=` without."""
    instructions = dockerfile_instructions()
    args = dict(a.split("=", 1) for a in instruction_args(instructions, "ARG") if "=" in a)
    assert args.get("EXTRAS") == "sinks", args
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"nats-py", "confluent-kafka"} <= {re.split(r"[<>=\[ ;]", d)[0] for d in extras["sinks"]}
    runs = [r for r in instruction_args(instructions, "RUN") if "pip install" in r]
    assert len(runs) == 1, runs
    words = [w for w, _ in instructions]
    assert words.index("ARG") < len(words) - 1 - words[::-1].index("RUN")  # before the last stage's install
    # The extras of the walstream installed from the wheel the build stage made (with the C accelerator).
    assert "pip install --no-cache-dir /tmp/wheels/walstream-*.whl" in runs[0]
    assert _pip_target(runs[0], args["EXTRAS"]) == "walstream[sinks]"
    assert _pip_target(runs[0], "") == "walstream"
    assert "--build-arg EXTRAS=" in DOCKERFILE.read_text()  # the documented way out


def test_dockerfile_copies_what_pip_install_needs_and_dockerignore_keeps_it() -> None:
    sources = copy_sources(dockerfile_instructions())
    readme = PYPROJECT["project"]["readme"]
    for needed in ("pyproject.toml", "setup.py", readme, "src"):
        assert needed in sources, f"`pip install .` needs {needed}, the Dockerfile does not copy it"
    for source in sources:
        if source != readme:  # see the next test
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert not dockerignored(source), f".dockerignore leaves {source} out of the build context"
    for path in ("src/walstream/cli/main.py", "src/walstream/_proto/plugin_pb2.py", "src/walstream/py.typed"):
        assert not dockerignored(path), path


@pytest.mark.xfail(
    not (ROOT / str(PYPROJECT["project"]["readme"])).exists(),
    reason="README.md (pyproject's readme, copied by the Dockerfile) is not in the tree yet: "
    "`docker build` would fail at COPY",
    strict=True,
)
def test_readme_copied_by_dockerfile_exists() -> None:
    assert (ROOT / str(PYPROJECT["project"]["readme"])).is_file()


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        "examples/ts-client/node_modules/grpc/index.js",
        "examples/js-client/node_modules/x/package.json",
        "examples/rust-client/target/debug/client",
        "src/walstream/__pycache__/cli.cpython-312.pyc",
    ],
)
def test_dockerignore_excludes(path: str) -> None:
    assert dockerignored(path)


def test_dockerignore_matcher_is_not_vacuous() -> None:
    assert not dockerignored("pyproject.toml")
    assert dockerignored("node_modules/x") and dockerignored("a/b/target/c")


# --- .github/workflows/release.yml -------------------------------------------------------------------------


def test_release_workflow() -> None:
    workflow = release_workflow()
    # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean true.
    trigger: Any = workflow.get("on", workflow.get(True))  # type: ignore[call-overload]
    tags = trigger["push"]["tags"]
    assert "v*" in ([tags] if isinstance(tags, str) else tags)
    assert workflow["permissions"]["packages"] == "write"

    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    uses = [str(step.get("uses", "")).split("@")[0] for step in steps]
    for action in (
        "docker/setup-qemu-action",
        "docker/setup-buildx-action",
        "docker/login-action",
        "docker/metadata-action",
        "docker/build-push-action",
    ):
        assert action in uses, f"{action} is not used"
    assert uses.index("docker/metadata-action") < uses.index("docker/build-push-action")

    login = steps[uses.index("docker/login-action")]["with"]
    assert login["registry"] == "ghcr.io"
    assert "secrets.GITHUB_TOKEN" in login["password"]

    meta = steps[uses.index("docker/metadata-action")]
    assert str(meta["with"]["images"]).strip().startswith("ghcr.io/")
    assert "type=semver" in meta["with"]["tags"]
    assert "latest=false" not in str(meta["with"].get("flavor", ""))

    build = steps[uses.index("docker/build-push-action")]["with"]
    assert (ROOT / build.get("context", ".") / build["file"]).resolve() == DOCKERFILE.resolve()
    platforms = {p.strip() for p in str(build["platforms"]).replace("\n", ",").split(",") if p.strip()}
    assert platforms == {"linux/amd64", "linux/arm64"}
    assert build["push"] is True
    assert f"steps.{meta['id']}.outputs.tags" in build["tags"]


def test_release_wheels_job_and_cibuildwheel_settings() -> None:
    """The wheels job runs cibuildwheel on an amd64 and an arm64 runner with the settings in pyproject.toml:
    CPython 3.10-3.13 manylinux wheels of the runner's own architecture, each tested with the accelerator
    required. (tests/e2e/test_wheel.py builds and installs one here; cibuildwheel itself runs on GitHub only.)"""
    job = release_workflow()["jobs"]["wheels"]
    assert set(job["strategy"]["matrix"]["runner"]) == {"ubuntu-latest", "ubuntu-24.04-arm"}
    assert job["runs-on"] == "${{ matrix.runner }}"
    steps = job["steps"]
    uses = [str(step.get("uses", "")) for step in steps]
    cibw = next(i for i, u in enumerate(uses) if u.startswith("pypa/cibuildwheel@"))
    # cibuildwheel tags releases and minors (v2.23), never a bare major: `@v2` would not resolve.
    assert re.fullmatch(r"v\d+\.\d+(\.\d+)?", uses[cibw].split("@")[1]), uses[cibw]
    # Its settings live in pyproject.toml only: CIBW_* variables would override them.
    for scope in (job, steps[cibw]):
        assert not [k for k in scope.get("env", {}) if k.startswith("CIBW_")], scope["env"]
    upload = steps[next(i for i, u in enumerate(uses) if u.startswith("actions/upload-artifact@"))]["with"]
    assert upload["path"] == "wheelhouse/*.whl"  # cibuildwheel's default output dir
    assert "matrix.runner" in upload["name"]  # artifact names must differ between the runners

    cibw_settings = PYPROJECT["tool"]["cibuildwheel"]
    minimum = re.fullmatch(r">=3\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert minimum is not None
    assert cibw_settings["build"] == [f"cp3{m}-*" for m in range(int(minimum[1]), 14)]
    assert cibw_settings["skip"] == ["*-musllinux_*"]
    assert cibw_settings["linux"]["archs"] == ["native"]  # `auto` adds i686 on the amd64 runner
    assert cibw_settings["test-command"].startswith("WALSTREAM_NATIVE=1 python -c ")
    assert "native.require()" in cibw_settings["test-command"]
