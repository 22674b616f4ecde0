"""walstream's one error type. Its kind says whether retrying can help and what the operator should do.

    WalstreamError
     ├── ConfigError        bad option or name given by the user             (fatal, fix the command line)
     ├── SourceError        PostgreSQL refused or lacks something we need    (fatal unless kind.retryable)
     │    └── SlotInUseError  the slot is held by another process           (retryable: standby waits)
     ├── ProtocolError      the replication stream broke its own rules      (fatal: a bug or corruption)
     │    └── DecodeError     a pgoutput message could not be decoded
     └── ClientError        a gRPC client sent something invalid             (reject that input only)

The CLI prints str(error) as one line and exits 1; nothing else ever reaches the user as a traceback.
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    # value: (retryable, what the operator should do)
    CONFIG = (False, "fix the command line or environment")
    CONNECTION = (True, "check that PostgreSQL is reachable and the connection string is right")
    PERMISSION = (False, "grant the missing privilege")
    SERVER_SETUP = (False, "change the PostgreSQL setting named in the message")
    SLOT_IN_USE = (True, "wait: another process holds the slot")
    SLOT_STATE = (False, "inspect the slot with `walstream list`")
    PROTOCOL = (False, "report a bug with the message")
    CLIENT = (False, "fix the client")

    @property
    def retryable(self) -> bool:
        return self.value[0]

    @property
    def action(self) -> str:
        return self.value[1]


class WalstreamError(Exception):
    kind: ErrorKind = ErrorKind.CONFIG

    def __init__(self, message: str, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind

    @property
    def retryable(self) -> bool:
        return self.kind.retryable


class ConfigError(WalstreamError):
    kind = ErrorKind.CONFIG


class SourceError(WalstreamError):
    kind = ErrorKind.CONNECTION


class SlotInUseError(SourceError):
    kind = ErrorKind.SLOT_IN_USE

    def __init__(self, slot: str, pid: int | None) -> None:
        holder = f"PID {pid}" if pid else "another process"
        super().__init__(f'replication slot "{slot}" is active for {holder}; waiting for it to be released')
        self.slot = slot
        self.pid = pid


class ProtocolError(WalstreamError):
    kind = ErrorKind.PROTOCOL


class DecodeError(ProtocolError):
    """A pgoutput message that does not follow PostgreSQL's proto.c; the message names the offset and field."""


class ClientError(WalstreamError):
    kind = ErrorKind.CLIENT
