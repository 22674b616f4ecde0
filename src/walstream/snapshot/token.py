"""Resume tokens: where a backfill stands, held by the client, so walstream keeps no backfill state.

A token is JSON (version, backfill id, request hash, stream epoch, the tables still to copy, the last key
sent of the first one and its fixed maximum key) followed by an HMAC-SHA256 of it keyed by the stream
epoch. The epoch names the stream the token belongs to (system identifier, database, slot; for a temporary
slot also the slot's incarnation): a token only makes sense on a stream the client kept receiving since,
so a token from another stream is refused.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import orjson

VERSION = 1
_MAC = 32


class TokenRefused(Exception):
    """The message says why; `malformed` tells a corrupt token (INVALID_ARGUMENT) from one made for another
    stream (FAILED_PRECONDITION)."""

    def __init__(self, message: str, malformed: bool) -> None:
        super().__init__(message)
        self.malformed = malformed


@dataclass(frozen=True)
class Position:
    backfill_id: str
    request_hash: str
    tables: tuple[str, ...]  # still to copy, the current one first ("schema.table")
    after: tuple[str, ...] | None  # last key of tables[0] sent (text per key column); None: from the start
    upto: tuple[str, ...] | None  # tables[0]'s fixed maximum key; None: not fixed yet


def _mac(epoch: str, body: bytes) -> bytes:
    return hmac.new(hashlib.sha256(epoch.encode()).digest(), body, hashlib.sha256).digest()


def encode(position: Position, epoch: str) -> bytes:
    body = orjson.dumps({"v": VERSION, "id": position.backfill_id, "req": position.request_hash, "epoch": epoch,
                         "tables": list(position.tables), "after": position.after, "upto": position.upto})
    return body + _mac(epoch, body)


def decode(token: bytes, epoch: str, request_hash: str) -> Position:
    fresh = "send the request without resume_token to start a new backfill"
    body, mac = token[:-_MAC], token[-_MAC:]
    try:
        data = orjson.loads(body)
        if not isinstance(data, dict) or data.get("v") != VERSION:
            raise ValueError("unknown version")
        theirs = str(data["epoch"])
        tables = tuple(str(t) for t in data["tables"])
        after = None if data["after"] is None else tuple(str(v) for v in data["after"])
        upto = None if data["upto"] is None else tuple(str(v) for v in data["upto"])
        position = Position(str(data["id"]), str(data["req"]), tables, after, upto)
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
        raise TokenRefused(f"snapshot.resume_token: not a walstream resume token ({exc}); {fresh}", True) from None
    if not hmac.compare_digest(mac, _mac(theirs, body)):
        raise TokenRefused(f"snapshot.resume_token: the token is damaged (its checksum does not match); {fresh}",
                           True)
    if theirs != epoch:
        raise TokenRefused(
            f"snapshot.resume_token: the token belongs to another stream ({theirs}, this one is {epoch}): the slot "
            f"was re-created or this is another server, so changes may have been missed since; {fresh}", False)
    if position.request_hash != request_hash:
        raise TokenRefused("snapshot.resume_token: the token was made for different snapshot.tables or "
                           f"include/exclude tables; send the same request it came from, or {fresh}", True)
    return position
