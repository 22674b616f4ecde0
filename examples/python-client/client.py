"""walstream example client (Python, grpcio).

Prints every change the server streams and acknowledges it. Reconnects 2 s after the stream
ends or fails; on Ctrl-C / SIGTERM it half-closes the stream, lets the server finish the call
(so the last acks are delivered) and exits.

Generate the stubs first (see README.md):
    python -m grpc_tools.protoc -I../../proto --python_out=. --grpc_python_out=. ../../proto/plugin.proto
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading

import grpc

import plugin_pb2
import plugin_pb2_grpc

RECONNECT_DELAY = 2.0  # seconds between attempts
SHUTDOWN_GRACE = 5.0  # how long to wait for the server to finish the call after we half-close

stop = threading.Event()


def log(msg: str) -> None:
    print(f"[python-client] {msg}", file=sys.stderr, flush=True)


def describe(msg: plugin_pb2.ServerMessage) -> tuple[int, str]:
    """Return (pg_lsn, printable line) for one server message."""
    kind = msg.WhichOneof("msg")
    ev = getattr(msg, kind)
    line = f"{kind.upper()} {ev.schema}.{ev.table}"
    if kind != "truncate":
        line += f": {ev.json_payload}"
    return ev.pg_lsn, line


def run_session(stub: plugin_pb2_grpc.PluginServiceStub) -> None:
    acks: queue.Queue[int] = queue.Queue()

    def requests():
        # Yields queued acks; once stop is set and every queued ack is sent, returning half-closes the stream.
        while True:
            try:
                lsn = acks.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            yield plugin_pb2.ClientMessage(ack=plugin_pb2.ClientAck(pg_lsn=lsn))

    call = stub.Session(requests())

    def watchdog():
        # If the server does not end the call soon after we half-close, cancel it.
        stop.wait()
        finished = threading.Event()
        call.add_done_callback(lambda _call: finished.set())
        if not finished.wait(SHUTDOWN_GRACE):
            log("server did not finish the call in time; cancelling")
            call.cancel()

    threading.Thread(target=watchdog, daemon=True).start()

    log("session open")
    for msg in call:
        if stop.is_set():
            continue  # not handled, not acked: the server will send it again next time
        lsn, line = describe(msg)
        print(line, flush=True)
        acks.put(lsn)
    log("stream ended by server")


def main() -> int:
    addr = os.environ.get("WALSTREAM_ADDR", "127.0.0.1:50051")

    def on_signal(signum, _frame):
        log(f"got {signal.Signals(signum).name}, flushing acks and exiting")
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    while not stop.is_set():
        log(f"connecting to {addr}")
        # A fresh channel per attempt: a channel that failed to connect backs off on its own
        # (up to minutes), which would delay the reconnect well past RECONNECT_DELAY.
        with grpc.insecure_channel(addr) as channel:
            try:
                run_session(plugin_pb2_grpc.PluginServiceStub(channel))
            except grpc.RpcError as err:
                log(f"stream failed: {err.code().name}: {err.details()}")
        if stop.wait(RECONNECT_DELAY):
            break
    log("bye")
    return 0


if __name__ == "__main__":
    sys.exit(main())
