"""COPY ... TO STDOUT text format -> TupleData cells, as pgoutput sends them.

COPY text runs each column through its type's output function, exactly as pgoutput does for a text tuple;
only the framing differs: tab-separated, newline-terminated, `\\N` for NULL, and backslash escapes for
backslash, tab, newline and other control characters (docs/current/sql-copy.html "Text Format").
"""

from __future__ import annotations

import re
from itertools import repeat
from typing import cast

from .. import native
from ..source.messages import COLUMN_NULL, COLUMN_TEXT, Cell, TupleData

Key = tuple[bytes | None, ...]
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


class CopyChunk:
    """One chunk's COPY text: `count` rows of `columns` fields, the first `width` the published columns and
    the rest the key columns again (none in a chunk read by pages). Checked when made (a malformed buffer
    raises CopyFormatError here, in the reader); cut into cells only where Python needs them: the native path
    writes a chunk's events straight from `data` (Encoder.snapshot_chunk)."""

    __slots__ = ("data", "columns", "width", "count", "_cells")

    def __init__(self, data: bytes, columns: int, width: int) -> None:
        self.data, self.columns, self.width = data, columns, width
        self._cells: list[TupleData] | None = None
        if not data:
            self._cells, self.count = [], 0
            return
        counter = native.copy_row_counter()
        counted = counter(data, columns) if counter is not None else None
        if counted is None:  # the Python path, or a buffer the C check refused: parse_rows says what is wrong
            self._cells = parse_rows(data, columns)
            counted = len(self._cells)
        self.count = counted

    def _parsed(self) -> list[TupleData]:
        if self._cells is None:
            self._cells = parse_rows(self.data, self.columns)
        return self._cells

    @property
    def rows(self) -> list[TupleData]:
        """The published columns of each row, as pgoutput cells."""
        width = self.width
        cells = self._parsed()
        return cells if width == self.columns else [c[:width] for c in cells]

    @property
    def keys(self) -> list[Key]:
        """The key of each row (the data of its key cells: None for NULL)."""
        width = self.width
        if width + 1 == self.columns:
            return [(c[width][1],) for c in self._parsed()]
        return [tuple(cell[1] for cell in c[width:]) for c in self._parsed()]

    def last_key(self) -> Key | None:
        """The last row's key (parsed from its line alone), None without rows."""
        if not self.count:
            return None
        data = self.data
        end = len(data) - 1 if data.endswith(b"\n") else len(data)
        fields = data[data.rfind(b"\n", 0, end) + 1:end].split(b"\t")[self.width:]
        return tuple(None if f == b"\\N" else unescape(f) for f in fields)
