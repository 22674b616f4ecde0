"""The wheel the release workflow ships (.github/workflows/release.yml, job `wheels`), built here from the checkout.

cibuildwheel builds it on GitHub only (this CI has no Docker for the manylinux images), so this test does its
build step with the running interpreter, without build isolation or an index (no network): a wheel of
pyproject.toml, setup.py, README.md, LICENSE and src/ (what the build reads: the Dockerfile's files and the
license), copied to a temp dir so a stale build/ or an in-place .so of the checkout cannot stand in. The wheel
must carry the compiled accelerator and py.typed but not the C sources, and installed alone into a fresh venv
it must import the accelerator under WALSTREAM_NATIVE=1 (the workflow's test command) from outside the source
tree. A setup.py that stops listing the extension, or an extension that no longer compiles (setup.py's
optional=True would build the wheel without it), fails here.

Needs a C compiler and Python.h: skipped without them, except under CI (CI=true), where it fails.
"""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
# The compiled modules setup.py declares: exactly these must be in the wheel.
EXTENSIONS = {"walstream._native._rowenc"}
BUILD_FILES = ["pyproject.toml", "setup.py", "README.md", "LICENSE"]


def missing_build_tools() -> str:
    """Why this interpreter cannot compile an extension here, or ''."""
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc})"
    header = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not header.is_file():
        return f"no {header} (the Python development headers)"
    return ""


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{cmd} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_FILES:
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info"))
    out = tmp_path / "wheelhouse"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(out), str(source)], env=env)
    wheels = sorted(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_carries_the_accelerator_and_installs_without_the_sources(tmp_path: Path) -> None:
    why = missing_build_tools()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and this machine cannot build the accelerator: {why}")
        pytest.skip(f"cannot build the accelerator here: {why}")

    wheel = build_wheel(tmp_path)

    # A platform wheel for this interpreter (walstream-0.1.0-cp311-cp311-linux_x86_64.whl); one without
    # extension modules would be py3-none-any.
    python_tag, abi_tag, _platform = wheel.name.removesuffix(".whl").split("-")[-3:]
    cp = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert (python_tag, abi_tag) == (cp, cp), f"{wheel.name} is not a {cp} wheel with compiled code"
    names = set(zipfile.ZipFile(wheel).namelist())
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]  # .cpython-311-x86_64-linux-gnu.so
    compiled = {n for n in names if n.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))}
    expected = {m.replace(".", "/") + suffix for m in EXTENSIONS}
    assert compiled == expected, f"compiled modules in {wheel.name}: {sorted(compiled)}, expected {sorted(expected)}"
    assert "walstream/py.typed" in names
    assert "walstream/_native/_rowenc.pyi" in names
    sources = sorted(n for n in names if n.endswith((".c", ".h")))
    assert not sources, f"C sources in the wheel (the sdist carries them): {sources}"

    # A fresh venv with the wheel alone (--no-deps): pip of this interpreter installs into it.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    installed = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         cwd=tmp_path).stdout.strip())
    assert not [p for p in (installed / "walstream").rglob("*") if p.suffix in (".c", ".h")]

    # The release workflow's test command (pyproject.toml), run as cibuildwheel runs it: `sh -c` in an empty
    # directory with the venv's bin first on PATH.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "WALSTREAM_NATIVE"}
    test_command = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["cibuildwheel"]["test-command"]
    test_cwd = tmp_path / "test_cwd"
    test_cwd.mkdir()
    run(["sh", "-c", test_command], cwd=test_cwd,
        env={**env, "PATH": f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}", "VIRTUAL_ENV": str(env_dir)})

    # And that it is this wheel's accelerator that loads: -I leaves the checkout and PYTHONPATH out.
    code = ("from walstream import native; native.require(); import walstream._native._rowenc as m; "
            "print(native.implementation); print(m.__file__)")
    out = run([str(python), "-I", "-c", code], cwd=tmp_path, env={**env, "WALSTREAM_NATIVE": "1"}).stdout.split()
    assert out[0] == "native", out
    assert Path(out[1]).resolve().is_relative_to(installed.resolve()), out

    # `walstream --version` needs the runtime dependencies: this interpreter's, appended after the venv's own
    # site-packages (a path line only, so a walstream installed there in editable mode is not picked up).
    (installed / "deps-of-the-test-run.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    version = run([str(env_dir / "bin" / "walstream"), "--version"], cwd=tmp_path, env=env).stdout
    assert "(native C accelerator)" in version, version
