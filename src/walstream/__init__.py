"""walstream: PostgreSQL logical replication (pgoutput) streamed to gRPC clients.

The client library (`walstream.Client`, `walstream.AsyncClient`, ...) lives in `walstream.client` and is
imported on first use, so `import walstream` stays light (no gRPC).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("walstream")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from .client import AsyncClient, Batch, Change, Client, ServerUnreachable, Status, StreamError

_CLIENT_NAMES = frozenset({"AsyncClient", "Batch", "Change", "Client", "ServerUnreachable", "Status", "StreamError"})

__all__ = ["AsyncClient", "Batch", "Change", "Client", "ServerUnreachable", "Status", "StreamError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'walstream' has no attribute {name!r}")
