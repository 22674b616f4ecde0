"""COPY ... TO STDOUT text format -> TupleData cells, as pgoutput sends them.

COPY text runs each column through its type's output function, exactly as pgoutput does for a text tuple;
only the framing differs: tab-separated, newline-terminated, `\\N` for NULL, and backslash escapes for
backslash, tab, newline and other control characters (docs/current/sql-copy.html "Text Format").
"""

from __future__ import annotations

import re
from itertools import repeat
from typing import cast

from ..source.messages import COLUMN_NULL, COLUMN_TEXT, Cell, TupleData

NULL_CELL = Cell(COLUMN_NULL, None)
_ESCAPE = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))", re.S)
_SIMPLE = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}


class CopyFormatError(ValueError):
    """A COPY row that does not have the expected number of columns."""


def _unescape_match(match: re.Match[bytes]) -> bytes:
    octal, hexa, other = match.groups()
    if octal is not None:
        return bytes((int(octal, 8) & 0xFF,))
    if hexa is not None:
        return bytes((int(hexa, 16),))
    return _SIMPLE.get(other, other)


def unescape(field: bytes) -> bytes:
    return _ESCAPE.sub(_unescape_match, field) if b"\\" in field else field


def parse_rows(data: bytes, columns: int) -> list[TupleData]:
    """Every row of a COPY text output, each with `columns` cells.

    The cells are plain (kind, data) tuples, equal to Cell and unpacked the same way, made by zip in C:
    a Cell object per value was the largest single cost of a backfill. A line without a backslash has
    no escapes and no NULL, so its fields are taken as they are."""
    rows: list[TupleData] = []
    if not data:
        return rows
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    text = repeat(COLUMN_TEXT)
    append = rows.append
    for number, line in enumerate(lines, 1):
        fields = line.split(b"\t")
        if len(fields) != columns:
            raise CopyFormatError(f"COPY row {number} has {len(fields)} columns, expected {columns}")
        if b"\\" in line:
            append(tuple(NULL_CELL if f == b"\\N" else Cell(COLUMN_TEXT, unescape(f)) for f in fields))
        else:
            append(cast(TupleData, tuple(zip(text, fields, strict=False))))  # text: endless
    return rows
