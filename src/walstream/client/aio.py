"""walstream.AsyncClient: the asyncio client (grpc.aio). Same behaviour as Client, awaited."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
from grpc.aio import EOF  # type: ignore[attr-defined]  # grpc-stubs lag behind grpc.aio

from .._proto import walstream_v1_pb2 as pb
from .._proto import walstream_v1_pb2_grpc as pb_grpc
from ..timeouts import within
from . import core
from .core import Backoff, Options, Session, SnapshotState, StreamError
from .credentials import PathArg, channel_credentials, with_token
from .model import Batch, Change, SnapshotProgress, Status

log = logging.getLogger("walstream.client")


def _channel(options: Options, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    opts = core.grpc_options(options)
    if credentials is None:
        return grpc.aio.insecure_channel(options.target, options=opts)
    return grpc.aio.secure_channel(options.target, credentials, options=opts)


@dataclass(frozen=True)
class _Ended:
    """The call is over ("OK": a normal end), or the client closed ("CLOSED")."""

    code: str
    details: str


class _Stream:
    """One Subscribe call: its channel, a writer task (the subscription, then queued acks) and a reader task
    that hands responses over one at a time, so cancelling the application's task never cancels the call."""

    def __init__(self, options: Options, credentials: grpc.ChannelCredentials | None,
                 on_ready: Callable[[], None], resume_token: bytes = b"") -> None:
        self.channel = _channel(options, credentials)
        stub = pb_grpc.WalstreamStub(self.channel)  # type: ignore[no-untyped-call]
        self.call: Any = stub.Subscribe(metadata=core.metadata_list(options))
        self.acks: asyncio.Queue[int | None] = asyncio.Queue()
        self.inbox: asyncio.Queue[pb.SubscribeResponse | _Ended] = asyncio.Queue(maxsize=2)
        self.ended = False  # the request side is (being) half-closed
        self.closing = False  # nobody takes responses any more: read and drop them
        self.done = asyncio.Event()  # the call is over
        self.closed = False
        self._on_ready = on_ready
        self._tasks = [asyncio.ensure_future(self._write(core.subscription(options, resume_token))),
                       asyncio.ensure_future(self._read()), asyncio.ensure_future(self._watch())]

    async def _write(self, first: pb.SubscribeRequest) -> None:
        try:
            await self.call.write(first)
            while True:
                lsn = await self.acks.get()
                if lsn is None:
                    await self.call.done_writing()
                    return
                await self.call.write(pb.SubscribeRequest(ack=pb.Ack(lsn=lsn)))
        except (grpc.RpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            # The call ended: the reader reports why. Unsent acks are settled on the next stream.
            log.debug("acknowledgements not sent: the stream ended (%s)", type(exc).__name__)

    async def _read(self) -> None:
        ended = _Ended("OK", "")
        try:
            while True:
                response = await self.call.read()
                if response is EOF:
                    break
                if not self.closing:
                    await self.inbox.put(response)
        except grpc.RpcError as exc:
            ended = _Ended(exc.code().name, exc.details() or "")
        except Exception as exc:  # a bug, not the network: still end the stream for the application
            ended = _Ended("UNKNOWN", f"{type(exc).__name__}: {exc}")
        self.done.set()
        if not self.closing:
            await self.inbox.put(ended)

    async def _watch(self) -> None:
        channel = self.channel
        state = channel.get_state(try_to_connect=True)
        while state is not grpc.ChannelConnectivity.READY:
            await channel.wait_for_state_change(state)
            state = channel.get_state()
        self._on_ready()

    def send(self, lsns: list[int]) -> None:
        if not self.ended:
            for lsn in lsns:
                self.acks.put_nowait(lsn)

    def end_requests(self) -> None:
        if not self.ended:
            self.ended = True
            self.acks.put_nowait(None)

    def stop_taking(self) -> None:
        """Drop what is waiting and wake whoever waits for the next response (with CLOSED)."""
        self.closing = True
        while not self.inbox.empty():
            self.inbox.get_nowait()
        self.inbox.put_nowait(_Ended("CLOSED", ""))

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = self.closing = self.ended = True
        self.call.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.channel.close(None)


class AsyncClient(SnapshotState):
    """A subscriber of walstream.v1 for asyncio. See docs/client.md.

        async with AsyncClient("127.0.0.1:50051", tables=["public.orders"]) as client:
            async for batch in client.batches():
                for change in batch:
                    await handle(change)
                await client.ack(batch)

    Use it on one event loop. Nothing connects until `batches()` (or `changes()`) starts.
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
        self._stream: _Stream | None = None
        self._closed = asyncio.Event()
        self._ready = False  # a channel of this client reached READY once
        self._status_channel: grpc.aio.Channel | None = None

    def _set_ready(self) -> None:
        self._ready = True

    # -- streaming --------------------------------------------------------------------------------------

    async def batches(self) -> AsyncIterator[Batch]:
        """Yield batches until close(). Reconnects (with backoff) when the stream is lost; see docs/client.md.

        Raises ServerUnreachable when the first connection fails, StreamError when the stream fails in a way
        reconnecting does not fix. Calling it again after a break (or an error) goes on where it stopped.
        """
        options = self.options
        backoff = Backoff(*options.backoff)
        while not self._closed.is_set():
            stream = self._stream  # batches() again after a break goes on with the same stream
            if stream is None:
                self._session.new_stream()
                stream = self._stream = _Stream(options, self._credentials, self._set_ready,
                                                self._session.resume_token)
            received = False
            while True:
                item = await stream.inbox.get()
                if self._closed.is_set():
                    return
                if isinstance(item, _Ended):
                    break
                if not received:
                    received = True
                    backoff.reset()
                    self._ready = True
                if item.HasField("progress"):
                    progress = self._session.receive_progress(item.progress)
                    if self.on_progress is not None:
                        self.on_progress(progress)
                    continue
                batch, acks = self._session.receive(item.batch)
                stream.send(acks)
                if batch is not None:
                    yield batch
            error = core.failure(item.code, item.details, options, self._ready)
            await self._discard(stream)
            if error is not None:
                raise error
            delay = backoff.delay()
            log.warning("stream from walstream at %s lost (%s%s); reconnecting in %.1f s", options.target,
                        item.code, f": {item.details}" if item.details else "", delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await within(self._closed.wait(), delay)

    async def changes(self) -> AsyncIterator[Change]:
        """Yield changes one by one (from batches())."""
        async for batch in self.batches():
            for change in batch.changes:
                yield change

    async def _discard(self, stream: _Stream) -> None:
        if self._stream is stream:
            self._stream = None
        await stream.close()

    async def ack(self, item: Change | Batch) -> None:
        """Acknowledge a change (or a whole batch) and everything received before it.

        Does not wait for the server and never raises for connection problems: an acknowledgement that
        cannot be delivered now is settled on the next stream (see docs/client.md).
        """
        acks = self._session.ack(item)
        if self._stream is not None:
            self._stream.send(acks)

    # -- the rest ---------------------------------------------------------------------------------------

    async def status(self, timeout: float = 10.0) -> Status:
        """walstream's Status: the slot, confirmed/written positions, lag, clients."""
        if self._closed.is_set():
            raise StreamError("the client is closed")
        if self._status_channel is None:
            self._status_channel = _channel(self.options, self._credentials)
        stub = pb_grpc.WalstreamStub(self._status_channel)  # type: ignore[no-untyped-call]
        try:
            response = await stub.Status(pb.StatusRequest(), timeout=timeout,
                                         metadata=core.metadata_list(self.options))
        except grpc.RpcError as exc:
            code, details = exc.code().name, exc.details() or ""
            if code == "UNAVAILABLE":
                raise core.ServerUnreachable(f"cannot reach walstream at {self.options.target}: "
                                             f"{core.short_details(details)}", code) from None
            raise StreamError(f"Status from walstream at {self.options.target} failed: {code}: {details}",
                              code) from None
        return Status(**core.status_from(response))

    async def close(self) -> None:
        """Send the acknowledgements given so far, end the stream and wait (up to close_timeout) for its end."""
        if self._closed.is_set():
            return
        self._closed.set()
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop_taking()  # responses still arriving are dropped: unacknowledged, the server keeps them
            stream.end_requests()  # after every ack already queued
            with contextlib.suppress(asyncio.TimeoutError):
                # the server ends the call once it has read the acks
                await within(stream.done.wait(), self.options.close_timeout)
            await stream.close()
        if self._status_channel is not None:
            channel, self._status_channel = self._status_channel, None
            await channel.close(None)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<walstream.AsyncClient {self.options.target}{' closed' if self.closed else ''}>"
