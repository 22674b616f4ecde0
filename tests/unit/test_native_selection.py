"""walstream.native's choice when the accelerator is missing (simulated: its import blocked), in a child
process so this one keeps its own choice."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

BLOCKED = "import sys; sys.modules['walstream._native._rowenc'] = None\n"


def run(code: str, setting: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WALSTREAM_NATIVE"}
    if setting is not None:
        env["WALSTREAM_NATIVE"] = setting
    return subprocess.run([sys.executable, "-c", BLOCKED + code], env=env, capture_output=True, text=True,
                          timeout=60)


def test_without_the_build_walstream_runs_on_python_and_says_so() -> None:
    out = run("from walstream import native; from walstream.source.decoder import insert_decoder, plain_insert\n"
              "assert insert_decoder() is plain_insert\nprint(native.description())", None)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "pure Python (accelerator not built)"


@pytest.mark.parametrize("setting", ["1", "yes"])
def test_an_impossible_setting_is_one_clear_cli_error(setting: str) -> None:
    out = run("from walstream.cli.main import main; sys.exit(main(['list']))", setting)
    assert out.returncode != 0
    assert out.stderr.startswith("walstream: error: WALSTREAM_NATIVE")
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
