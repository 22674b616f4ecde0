"""Text in the server's encoding -> str, and the rule for bytes that are not text in it.

pgoutput sends values in the database's encoding, which PostgreSQL validates for every encoding but
SQL_ASCII: there the bytes are whatever clients wrote. walstream decodes SQL_ASCII as UTF-8 (what clients
almost always write); a value that is not valid UTF-8 is decoded as Latin-1 instead, one character per byte,
so no byte is lost (encoding the string as Latin-1 gives the stored bytes back), and a warning names the
table and column, once per column.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

log = logging.getLogger(__name__)

SQL_ASCII = "sql_ascii"  # StreamInfo.encoding of a SQL_ASCII database (not a Python codec)

_warned: set[tuple[str, str, str]] = set()


def _strict_utf8(data: bytes) -> str:
    return data.decode("utf-8")  # UnicodeDecodeError for other bytes: the row encoders fall back per column


def text_decoder(encoding: str) -> Callable[[bytes], str]:
    """The decoder for a database's encoding (a Python codec name, or SQL_ASCII)."""
    if encoding == SQL_ASCII:
        return _strict_utf8
    return partial(bytes.decode, encoding=encoding)


def undecodable(schema: str, table: str, column: str, data: bytes) -> str:
    """A value that is not valid text in the stream's encoding (only SQL_ASCII allows one), as Latin-1."""
    key = (schema, table, column)
    if key not in _warned:
        _warned.add(key)
        log.warning("column %s of %s.%s holds bytes that are not UTF-8 (a SQL_ASCII database): such values are "
                    "sent decoded as Latin-1, one character per byte (encode them as Latin-1 to get the bytes)",
                    column, schema, table)
    return data.decode("latin-1")
