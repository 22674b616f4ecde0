"""walstream.Client: the blocking client (grpc's synchronous API)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc

from .._proto import walstream_v1_pb2 as pb
from .._proto import walstream_v1_pb2_grpc as pb_grpc
from . import core
from .core import Backoff, Options, Session, SnapshotState, StreamError
from .credentials import PathArg, channel_credentials, with_token
from .model import Batch, Change, SnapshotProgress, Status

log = logging.getLogger("walstream.client")

_END = None  # in a stream's ack queue: half-close the request side
_POLL = 0.25  # seconds between looks at the closed flag while waiting


@dataclass(frozen=True)
class _Ended:
    """The call is over: its status code name ("OK" for a normal end) and details."""

    code: str
    details: str


class _Stream:
    """One Subscribe call: its channel, the queue its request iterator reads acks from, and a reader thread
    that hands responses over one at a time (so an interrupted application never interrupts a gRPC read)."""

    def __init__(self, options: Options, credentials: grpc.ChannelCredentials | None,
                 on_ready: threading.Event, resume_token: bytes = b"") -> None:
        opts = core.grpc_options(options)
        if credentials is None:
            self.channel = grpc.insecure_channel(options.target, options=opts)
        else:
            self.channel = grpc.secure_channel(options.target, credentials, options=opts)
        self._on_ready = on_ready
        self.channel.subscribe(self._state, try_to_connect=True)
        self.acks: queue.Queue[int | None] = queue.Queue()
        self.inbox: queue.Queue[pb.SubscribeResponse | _Ended] = queue.Queue(maxsize=2)
        self.ended = False  # the request side was half-closed
        self.closing = threading.Event()  # nobody takes responses any more: read and drop them
        self.done = threading.Event()  # the call is over
        self.closed = False
        stub = pb_grpc.WalstreamStub(self.channel)  # type: ignore[no-untyped-call]
        self.call: Any = stub.Subscribe(self._requests(core.subscription(options, resume_token)),
                                        metadata=core.metadata_list(options))
        self._reader = threading.Thread(target=self._read, name="walstream-client-reader", daemon=True)
        self._reader.start()

    def _state(self, state: grpc.ChannelConnectivity) -> None:
        if state is grpc.ChannelConnectivity.READY:
            self._on_ready.set()
            # READY once is all this watches for: unsubscribing lets grpc's polling thread end now, long
            # before the channel is closed (closing under it makes that thread print a traceback).
            self.channel.unsubscribe(self._state)

    def _requests(self, first: pb.SubscribeRequest) -> Iterator[pb.SubscribeRequest]:
        yield first
        while True:
            lsn = self.acks.get()
            if lsn is _END:
                return
            yield pb.SubscribeRequest(ack=pb.Ack(lsn=lsn))

    def _read(self) -> None:
        ended = _Ended("OK", "")
        try:
            for response in self.call:
                self._put(response)
        except grpc.RpcError as exc:
            ended = _Ended(exc.code().name, exc.details() or "")
        except Exception as exc:  # a bug, not the network: still end the stream for the application
            ended = _Ended("UNKNOWN", f"{type(exc).__name__}: {exc}")
        self.done.set()
        self._put(ended)

    def _put(self, item: pb.SubscribeResponse | _Ended) -> None:
        while not self.closing.is_set():
            try:
                self.inbox.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def end_requests(self) -> None:
        if not self.ended:
            self.ended = True
            self.acks.put(_END)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.closing.set()
        self.end_requests()  # also ends the request iterator's thread
        self.call.cancel()
        self.channel.unsubscribe(self._state)
        _wait_for_poller(self.channel)
        self.channel.close()


def _wait_for_poller(channel: grpc.Channel, timeout: float = 0.5) -> None:
    """Let grpc's connectivity polling thread notice the unsubscribe (it looks every 0.2 s) before the channel
    closes: closed under it, that thread dies with a printed 'Channel closed!' traceback. Only when the
    channel never became READY (an unreachable server) is there anything to wait for."""
    state = getattr(channel, "_connectivity_state", None)  # grpc's private state: without it, do not wait
    deadline = time.monotonic() + timeout
    while getattr(state, "polling", False) and time.monotonic() < deadline:
        time.sleep(0.01)


class Client(SnapshotState):
    """A subscriber of walstream.v1 (blocking). See docs/client.md.

        with Client("127.0.0.1:50051", tables=["public.orders"]) as client:
            for batch in client.batches():
                for change in batch:
                    handle(change)
                client.ack(batch)

    Nothing connects until `batches()` (or `changes()`) starts. `ack()`, `status()` and `close()` may be
    called from any thread; iterate from one thread at a time.
    """

    def __init__(
        self,
        target: str = core.DEFAULT_TARGET,
        *,
        tables: str | Iterable[str] = (),
        exclude_tables: str | Iterable[str] = (),
        operations: str | Iterable[str] = (),
        transaction_boundaries: bool = False,
        logical_messages: bool = False,
        max_events: int = 1000,
        max_bytes: int = 1024 * 1024,
        max_delay_ms: int = 0,
        client_name: str | None = None,
        reconnect: bool = True,
        backoff: tuple[float, float] = (0.5, 30.0),
        close_timeout: float = 5.0,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Iterable[tuple[str, str]] = (),
        channel_options: Iterable[tuple[str, Any]] = (),
        tls_ca: PathArg | None = None,
        tls_cert: PathArg | None = None,
        tls_key: PathArg | None = None,
        token: str | None = None,
        snapshot: bool | str | Iterable[str] | None = None,
        snapshot_mode: str = "incremental",
        snapshot_chunk_rows: int = 0,
        resume_token: bytes | None = None,
        on_progress: Callable[[SnapshotProgress], None] | None = None,
    ) -> None:
        options = core.make_options(target, tables, exclude_tables, operations, transaction_boundaries,
                                    logical_messages, max_events, max_bytes, max_delay_ms, client_name,
                                    reconnect, backoff, close_timeout, with_token(metadata, token),
                                    channel_options)
        self.options = core.with_snapshot(options, snapshot, snapshot_mode, snapshot_chunk_rows, resume_token)
        # Called (from the iterating thread or task) with each snapshot progress, after its chunk's rows.
        self.on_progress = on_progress
        self._credentials = channel_credentials(credentials, tls_ca, tls_cert, tls_key)
        self._session = Session()
        self._lock = threading.Lock()  # the session and which stream is current
        self._stream: _Stream | None = None
        self._closed = threading.Event()
        self._ready = threading.Event()  # a channel of this client reached READY once
        self._status_channel: grpc.Channel | None = None

    # -- streaming --------------------------------------------------------------------------------------

    def batches(self) -> Iterator[Batch]:
        """Yield batches until close(). Reconnects (with backoff) when the stream is lost; see docs/client.md.

        Raises ServerUnreachable when the first connection fails, StreamError when the stream fails in a way
        reconnecting does not fix. Calling it again after a break (or an error) goes on where it stopped.
        """
        options = self.options
        backoff = Backoff(*options.backoff)
        while not self._closed.is_set():
            with self._lock:
                stream = self._stream  # batches() again after a break goes on with the same stream
            if stream is None:
                stream = self._open()
            received = False
            while True:
                try:
                    item = stream.inbox.get(timeout=_POLL)
                except queue.Empty:
                    if self._closed.is_set():
                        return
                    continue
                if self._closed.is_set():
                    return
                if isinstance(item, _Ended):
                    break
                if not received:
                    received = True
                    backoff.reset()
                    self._ready.set()
                if item.HasField("progress"):
                    with self._lock:
                        progress = self._session.receive_progress(item.progress)
                    if self.on_progress is not None:
                        self.on_progress(progress)
                    continue
                with self._lock:
                    batch, acks = self._session.receive(item.batch)
                    for lsn in acks:
                        stream.acks.put(lsn)
                if batch is not None:
                    yield batch
            error = core.failure(item.code, item.details, options, self._ready.is_set())
            self._discard(stream)
            if error is not None:
                raise error
            delay = backoff.delay()
            log.warning("stream from walstream at %s lost (%s%s); reconnecting in %.1f s", options.target,
                        item.code, f": {item.details}" if item.details else "", delay)
            if self._closed.wait(delay):
                return

    def changes(self) -> Iterator[Change]:
        """Yield changes one by one (from batches())."""
        for batch in self.batches():
            yield from batch.changes

    def _open(self) -> _Stream:
        with self._lock:
            self._session.new_stream()
            stream = _Stream(self.options, self._credentials, self._ready, self._session.resume_token)
            self._stream = stream
            return stream

    def _discard(self, stream: _Stream) -> None:
        with self._lock:
            if self._stream is stream:
                self._stream = None
        stream.close()

    def ack(self, item: Change | Batch) -> None:
        """Acknowledge a change (or a whole batch) and everything received before it.

        Never blocks and never raises for connection problems: an acknowledgement that cannot be delivered
        now is settled on the next stream (see docs/client.md).
        """
        with self._lock:
            acks = self._session.ack(item)
            stream = self._stream
            if stream is not None and not stream.ended:
                for lsn in acks:
                    stream.acks.put(lsn)

    # -- the rest ---------------------------------------------------------------------------------------

    def status(self, timeout: float = 10.0) -> Status:
        """walstream's Status: the slot, confirmed/written positions, lag, clients."""
        with self._lock:
            if self._closed.is_set():
                raise StreamError("the client is closed")
            if self._status_channel is None:
                opts = core.grpc_options(self.options)
                if self._credentials is None:
                    self._status_channel = grpc.insecure_channel(self.options.target, options=opts)
                else:
                    self._status_channel = grpc.secure_channel(self.options.target, self._credentials, options=opts)
            channel = self._status_channel
        stub = pb_grpc.WalstreamStub(channel)  # type: ignore[no-untyped-call]
        try:
            response = stub.Status(pb.StatusRequest(), timeout=timeout, metadata=core.metadata_list(self.options))
        except grpc.RpcError as exc:
            code, details = exc.code().name, exc.details() or ""
            if code == "UNAVAILABLE":
                raise core.ServerUnreachable(f"cannot reach walstream at {self.options.target}: "
                                             f"{core.short_details(details)}", code) from None
            raise StreamError(f"Status from walstream at {self.options.target} failed: {code}: {details}",
                              code) from None
        return Status(**core.status_from(response))

    def close(self) -> None:
        """Send the acknowledgements given so far, end the stream and wait (up to close_timeout) for its end."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            stream, self._stream = self._stream, None
            if stream is not None:
                stream.closing.set()  # responses still arriving are dropped: unacknowledged, the server keeps them
                stream.end_requests()  # after every ack already queued
            status_channel, self._status_channel = self._status_channel, None
        if stream is not None:
            stream.done.wait(self.options.close_timeout)  # the server ends the call once it has read the acks
            stream.close()
        if status_channel is not None:
            status_channel.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<walstream.Client {self.options.target}{' closed' if self.closed else ''}>"
