"""The source stage's interface: what the session loop needs from a replication stream.

ReplicationStream (stream.py) is the one over PostgreSQL; tests drive the loop with a scripted one
(tests/unit/test_session_loop.py), so reconnects, pauses and cut transactions are tested without a server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StreamInfo:
    server_version: int
    proto_version: int
    encoding: str  # Python codec of the server encoding (pgoutput sends text in it), or text.SQL_ASCII
    created_slot: bool
    start_lsn: int  # consistent point of a new slot, else 0
    sender_timeout: float  # the server's wal_sender_timeout in seconds (0: disabled)


class Source(Protocol):
    """One connection's stream of pgoutput messages. Errors are WalstreamErrors whose kind says whether a
    new connection may be tried (errors.py)."""

    async def open(self) -> StreamInfo:
        """Connect, make sure the slot exists and start streaming from its confirmed position."""
        ...

    def read(self) -> tuple[int, bytes] | None:
        """(the message's start LSN, the pgoutput message), or None when nothing more has arrived yet."""
        ...

    def fileno(self) -> int:
        """A descriptor that becomes readable when read() may return a message."""
        ...

    @property
    def wal_end(self) -> int:
        """The server's WAL end as last reported; meaningful only when no transaction is open."""
        ...

    @property
    def reply_requested(self) -> bool:
        """The server asked for a status update: send one now."""
        ...

    def send_status(self, write_lsn: int, flush_lsn: int) -> None:
        """Report how far walstream has read (write) and what clients have acknowledged (flush)."""
        ...

    def close(self) -> None: ...


# A new Source for the next connection attempt; the argument says whether a missing slot may be created.
OpenSource = Callable[[bool], Source]
