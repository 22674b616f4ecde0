"""Parsers for PostgreSQL's array and record (composite) text formats, as array_out/record_out write them.

Leaves are handed to a converter as they are found, so a value is walked once. Both parsers also take the
looser forms array_in/record_in accept where that costs nothing (backslash escapes outside quotes, quoted
and unquoted pieces run together in one record field); whitespace around array elements, which array_out
never writes, is not skipped.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

Leaf = Callable[[str], object]


class PgTextError(ValueError):
    """The text is not in the array or record format."""


def parse_array(text: str, delim: str, leaf: Leaf) -> list[object]:
    """`{1,NULL,"a b"}` -> [leaf('1'), None, leaf('a b')]; nested braces -> nested lists.

    Dimension decorations (`[0:1]={...}`) are dropped, as to_jsonb() drops them. An unquoted NULL is None;
    a quoted "NULL" is the string. `delim` is the element type's typdelim (';' for box, ',' otherwise).
    """
    start = 0
    if text[:1] == "[":  # [lb:ub][lb:ub]=  (bounds hold only digits, '-', ':' and brackets)
        start = text.find("=") + 1
        if start == 0:
            raise PgTextError(f"malformed array dimensions: {text[:40]!r}")
    if text[start:start + 1] != "{" or text[-1:] != "}":
        raise PgTextError(f"malformed array literal: {text[:40]!r}")
    # Fast path: one dimension, nothing quoted or escaped (the common case for numbers and words).
    if "\"" not in text and "\\" not in text and text.count("{", start) == 1:
        inner = text[start + 1:-1]
        if not inner:
            return []
        return [None if item == "NULL" else leaf(item) for item in inner.split(delim)]
    result, end = _parse_dim(text, start, delim, leaf)
    if end != len(text):
        raise PgTextError(f"junk after array literal: {text[end:end + 40]!r}")
    return result


def _parse_dim(text: str, pos: int, delim: str, leaf: Leaf) -> tuple[list[object], int]:
    """Parse `{...}` starting at text[pos] == '{'; return the list and the index after its '}'."""
    out: list[object] = []
    pos += 1
    n = len(text)
    if pos < n and text[pos] == "}":
        return out, pos + 1
    while pos < n:
        ch = text[pos]
        if ch == "{":
            sub, pos = _parse_dim(text, pos, delim, leaf)
            out.append(sub)
        elif ch == "\"":
            value, pos = _quoted(text, pos + 1, False)
            out.append(leaf(value))
        else:
            end = _unquoted_end(text, pos, delim + "}")
            raw = text[pos:end]
            pos = end
            if raw == "NULL":
                out.append(None)
            else:
                out.append(leaf(_unescape(raw) if "\\" in raw else raw))
        if pos >= n:
            break
        ch = text[pos]
        if ch == delim:
            pos += 1
        elif ch == "}":
            return out, pos + 1
        else:
            raise PgTextError(f"unexpected {ch!r} at {pos} in array literal {text[:40]!r}")
    raise PgTextError(f"unterminated array literal: {text[:40]!r}")


def _quoted(text: str, pos: int, doubled_quote: bool) -> tuple[str, int]:
    """Read a quoted string whose opening quote is just before text[pos]; return (value, index after the
    closing quote). Backslash escapes the next character; with doubled_quote, "" is a literal quote too
    (the record format)."""
    parts: list[str] = []
    while True:
        q = text.find("\"", pos)
        if q < 0:
            raise PgTextError(f"unterminated quoted string in {text[:40]!r}")
        b = text.find("\\", pos, q)
        if b >= 0:
            parts.append(text[pos:b])
            if b + 1 >= len(text):
                raise PgTextError(f"trailing backslash in {text[:40]!r}")
            parts.append(text[b + 1])
            pos = b + 2
            continue
        parts.append(text[pos:q])
        if doubled_quote and text[q + 1:q + 2] == "\"":
            parts.append("\"")
            pos = q + 2
            continue
        return "".join(parts), q + 1


@functools.lru_cache(maxsize=16)
def _token(stops: str) -> re.Pattern[str]:
    """Matches an unquoted token: anything but a backslash or a stop character, or a backslash pair."""
    return re.compile(r"(?:[^\\" + re.escape(stops) + r"]|\\.)*", re.S)


def _unquoted_end(text: str, pos: int, stops: str) -> int:
    """Index of the first unescaped stop character at or after pos (len(text) if none)."""
    m = _token(stops).match(text, pos)
    assert m is not None  # the pattern matches the empty string
    return m.end()


def _unescape(raw: str) -> str:
    out: list[str] = []
    i = 0
    while True:
        b = raw.find("\\", i)
        if b < 0 or b + 1 >= len(raw):
            out.append(raw[i:])
            return "".join(out)
        out.append(raw[i:b])
        out.append(raw[b + 1])
        i = b + 2


def parse_vector(text: str, leaf: Leaf) -> list[object]:
    """int2vector / oidvector: space-separated elements, no braces, never NULL."""
    return [leaf(item) for item in text.split()]


def parse_record(text: str) -> list[str | None]:
    """`(1,"a b",)` -> ['1', 'a b', None]. An empty field is NULL, a quoted empty one ("") the empty string.

    `()` is one NULL field; a record type with no attributes also prints `()`, which the caller (knowing
    the attribute count) handles.
    """
    if text[:1] != "(" or text[-1:] != ")":
        raise PgTextError(f"malformed record literal: {text[:40]!r}")
    out: list[str | None] = []
    pos = 1
    n = len(text)
    while True:
        ch = text[pos]
        if ch == "," or ch == ")":
            out.append(None)
        else:
            parts: list[str] = []
            while True:  # a field may mix quoted and unquoted pieces: a"b c"d is 'ab cd'
                if ch == "\"":
                    value, pos = _quoted(text, pos + 1, True)
                    parts.append(value)
                else:
                    end = _unquoted_end(text, pos, ",)\"")
                    raw = text[pos:end]
                    parts.append(_unescape(raw) if "\\" in raw else raw)
                    pos = end
                if pos >= n:
                    raise PgTextError(f"unterminated record literal: {text[:40]!r}")
                ch = text[pos]
                if ch == "," or ch == ")":
                    break
            out.append("".join(parts))
        if ch == ")":
            if pos != n - 1:
                raise PgTextError(f"junk after record literal: {text[pos:pos + 40]!r}")
            return out
        pos += 1
