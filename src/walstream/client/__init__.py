"""The Python client of walstream.v1: `Client` (blocking) and `AsyncClient` (asyncio). See docs/client.md.

    from walstream import Client

    with Client("127.0.0.1:50051", tables=["public.*"], operations=["insert", "update"]) as client:
        for batch in client.batches():
            for change in batch:
                print(change.op, change.qualified_table, change.new)
            client.ack(batch)
"""

from __future__ import annotations

from .aio import AsyncClient
from .core import ServerUnreachable, StreamError
from .model import Batch, Change, Column, LogicalMessage, SinkStatus, SnapshotProgress, Status, Truncate, format_lsn
from .sync import Client
from .values import INFINITY, NEG_INFINITY, to_python

__all__ = [
    "INFINITY",
    "NEG_INFINITY",
    "AsyncClient",
    "Batch",
    "Change",
    "Client",
    "Column",
    "LogicalMessage",
    "ServerUnreachable",
    "SinkStatus",
    "SnapshotProgress",
    "Status",
    "StreamError",
    "Truncate",
    "format_lsn",
    "to_python",
]
