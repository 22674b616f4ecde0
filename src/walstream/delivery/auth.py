"""The gRPC server's guard: TLS credentials, the bearer token check and the client limit.

One interceptor runs before any servicer code, so a refused call never reaches the hub: it is not
registered as a client, receives no change, and cannot hold the slot back.

- Token: with a token configured, every call except health checks and reflection must carry the metadata
  `authorization: Bearer <token>`; otherwise UNAUTHENTICATED. Compared in constant time.
- Limit: at most max_clients streaming calls (Session, Subscribe) at once; more get RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from ..config import StartConfig
from ..ops.security import read_file

log = logging.getLogger(__name__)

# Health checks and reflection must work for probes and tools that hold no token.
OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
# The calls that register a client with the hub and stream changes.
STREAMING_METHODS = frozenset({"/plugin.PluginService/Session", "/walstream.v1.Walstream/Subscribe"})
UNAUTHENTICATED_MESSAGE = "missing or invalid credentials: send the metadata `authorization: Bearer <token>`"

Metadata = Sequence[tuple[str, str | bytes]]
if TYPE_CHECKING:  # generic only in grpc-stubs (which type handlers for the sync API)
    Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


def bearer_token_matches(metadata: Metadata | None, expected: bytes) -> bool:
    """Whether the call's first `authorization` metadata is `Bearer <expected>` (scheme in any case)."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value if isinstance(value, str) else value.decode("latin-1")
        scheme, _, given = text.strip().partition(" ")
        # compare_digest takes as long whatever the token is, so timing tells nothing about it.
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("latin-1"), expected)
    return False


def _refusal(handler: Handler, code: grpc.StatusCode, message: str,
             what: str, method: str) -> Handler:
    """A handler of the same shape as `handler` that ends the call with `code` before reading anything."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        log.warning("refused %s from %s: %s", method, context.peer(), what)
        await context.abort(code, message)

    deserialize, serialize = handler.request_deserializer, handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, deserialize, serialize)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, deserialize, serialize)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, deserialize, serialize)
    return grpc.unary_unary_rpc_method_handler(refuse, deserialize, serialize)


class Guard(_Interceptor):
    def __init__(self, token: str | None, max_clients: int) -> None:
        self._token = token.encode("ascii") if token is not None else None
        self.max_clients = max_clients
        self.active = 0  # streaming calls admitted and not finished (one event loop: no lock needed)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler  # an unknown method (UNIMPLEMENTED) or an open service
        if self._token is not None and not bearer_token_matches(
                handler_call_details.invocation_metadata, self._token):
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE,
                            "missing or invalid bearer token", method)
        if method in STREAMING_METHODS and handler.stream_stream is not None:
            return self._counted(handler, method)
        return handler

    def _counted(self, handler: Handler, method: str) -> Handler:
        behavior: Any = handler.stream_stream  # an async generator function
        limit = self.max_clients

        async def counted(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
                          ) -> AsyncIterator[Any]:
            if self.active >= limit:
                log.warning("refused %s from %s: already serving %d clients, the limit (--max-clients)",
                            method, context.peer(), limit)
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"walstream serves at most {limit} clients at once (--max-clients {limit}); "
                                    "try again later")
            self.active += 1
            responses = behavior(requests, context)
            try:
                async for response in responses:
                    yield response
            finally:
                self.active -= 1
                await responses.aclose()  # run the servicer's cleanup (hub.disconnect) now, not at GC

        return grpc.stream_stream_rpc_method_handler(counted, handler.request_deserializer,
                                                     handler.response_serializer)


def server_options(config: StartConfig) -> list[tuple[str, Any]]:
    # A larger request ends its call with RESOURCE_EXHAUSTED (gRPC's own check, before any servicer code).
    return [("grpc.max_receive_message_length", config.max_recv_message_size)]


def add_port(server: grpc.aio.Server, address: str, config: StartConfig) -> int:
    """Listen on `address`, with TLS when configured; the port bound (0 when it could not be)."""
    if config.tls_cert is None or config.tls_key is None:
        return server.add_insecure_port(address)
    client_ca = config.tls_client_ca
    credentials = grpc.ssl_server_credentials(
        [(read_file(config.tls_key, "--tls-key", "PEM private key file"),
          read_file(config.tls_cert, "--tls-cert", "PEM certificate (chain) file"))],
        root_certificates=read_file(client_ca, "--tls-client-ca", "PEM file") if client_ca else None,
        require_client_auth=client_ca is not None,
    )
    return server.add_secure_port(address, credentials)
