"""PostgreSQL log sequence numbers: 64-bit ints shown as two hex halves, e.g. 16/B374D848."""

from __future__ import annotations

import re

_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    match = _LSN_RE.match(text.strip())
    if not match:
        raise ValueError(f"invalid LSN {text!r}: expected two hex numbers like 16/B374D848")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)
