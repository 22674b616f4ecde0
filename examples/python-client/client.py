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


def describe(msg: plugin_pb2.ServerMessage) -> tuple[int, str] | None:
    """The event's pg_lsn and the line to print for it; None for a message kind this client doesn't know."""
    kind = msg.WhichOneof("msg")
    if kind is None:
        return None
    ev = getattr(msg, kind)
    line = f"{kind.upper()} {ev.schema}.{ev.table}"
    if kind != "truncate":
        line += f": {ev.json_payload}"
    return ev.pg_lsn, line


def run_session(stub: plugin_pb2_grpc.PluginServiceStub) -> None:
    """One Session call: print and ack each event until the call ends or a stop is requested."""
    acks: queue.Queue[int] = queue.Queue()
    ended = threading.Event()  # the call is over

    def requests():
        # The client -> server side of the stream: the queued acks. Returning half-closes it, which
        # happens only once a stop is requested and every queued ack has been sent.
        while True:
            try:
                lsn = acks.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set() or ended.is_set():
                    return
                continue
            yield plugin_pb2.ClientMessage(ack=plugin_pb2.ClientAck(pg_lsn=lsn))

    call = stub.Session(requests())
    call.add_done_callback(lambda _call: ended.set())

    def watchdog():
        # After a stop, give the server SHUTDOWN_GRACE to finish the call, then cancel it.
        while not ended.is_set():
            if stop.wait(0.1):
                if not ended.wait(SHUTDOWN_GRACE):
                    log("server did not finish the call in time; cancelling")
                    call.cancel()
                return

    threading.Thread(target=watchdog, daemon=True).start()

    for msg in call:
        if stop.is_set():
            continue  # not handled, not acked: the server will send it again next time
        event = describe(msg)
        if event is None:
            continue
        lsn, line = event
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
