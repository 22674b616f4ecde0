"""walstream.v1 `Value` messages to Python values (pure functions, no network).

| Value kind            | Python                                                                       |
| --------------------- | ---------------------------------------------------------------------------- |
| null                  | None                                                                         |
| bool                  | bool                                                                         |
| int64                 | int                                                                          |
| double                | float (NaN and infinities included)                                          |
| numeric               | decimal.Decimal, exact (Decimal('NaN'), Decimal('Infinity'), Decimal('-Infinity')) |
| text                  | str (PostgreSQL's text form: uuid, interval, inet, enums, ...)               |
| bytes                 | bytes                                                                        |
| json                  | the parsed JSON: dict, list, str, int (exact, any size), float, bool or None |
| timestamp_us          | naive datetime                                                               |
| timestamptz_us        | aware datetime in UTC                                                        |
| date_days             | date                                                                         |
| time_us               | time                                                                         |
| array                 | list (multi-dimensional arrays nest), elements converted by the same rules   |

Date/time values Python cannot hold stay strings, so a str in a date/time column always means one of these:
`'infinity'` and `'-infinity'` (timestamp, timestamptz, date), dates before year 1 or after 9999 in
PostgreSQL's own text form (`'0044-03-15 BC'`, `'0044-03-15 12:00:00.5+00 BC'`, `'12345-01-02'`), and the time
`'24:00:00'`.

`unchanged_toast` is not a value: rows leave such columns out (see `Change.unchanged_toast`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson

from .._proto import walstream_v1_pb2 as pb

__all__ = ["INFINITY", "NEG_INFINITY", "to_python"]

INFINITY = "infinity"
NEG_INFINITY = "-infinity"

_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)
_INT32_MAX = 2**31 - 1
_INT32_MIN = -(2**31)
_US_PER_DAY = 86_400_000_000
_CYCLE_DAYS = 146_097  # the Gregorian calendar repeats every 400 years
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH_DATE = date(1970, 1, 1)
_MIN_DAYS = (date.min - _EPOCH_DATE).days
_MAX_DAYS = (date.max - _EPOCH_DATE).days


_LONG_NUMBER = re.compile(r"\d{19}")


def _json(text: str) -> Any:
    # orjson turns integers beyond 64 bits into floats (and refuses lone surrogate escapes and very deep
    # nesting, which PostgreSQL's json accepts): the standard parser keeps integers exact.
    if _LONG_NUMBER.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text  # still valid JSON for PostgreSQL, but nothing Python can build: the text itself


def _numeric(text: str) -> Decimal:
    return Decimal(text)  # also takes "NaN", "Infinity", "-Infinity"


def _ymd(days: int) -> tuple[int, int, int]:
    """Proleptic Gregorian (year, month, day) of a day number (days since 1970-01-01), any year.

    Astronomical years: 0 is 1 BC. Out of datetime's range, whole 400-year cycles are shifted in and back out.
    """
    cycles = 0  # whole cycles added to bring the day into range
    if days < _MIN_DAYS:
        cycles = -(-(_MIN_DAYS - days) // _CYCLE_DAYS)
    elif days > _MAX_DAYS:
        cycles = -(-(days - _MAX_DAYS) // _CYCLE_DAYS) * -1
    d = _EPOCH_DATE + timedelta(days=days + cycles * _CYCLE_DAYS)
    return d.year - 400 * cycles, d.month, d.day


def _date_text(days: int) -> tuple[str, str]:
    year, month, day = _ymd(days)
    era = " BC" if year <= 0 else ""
    return f"{1 - year if year <= 0 else year:04d}-{month:02d}-{day:02d}", era


def _time_text(us: int) -> str:
    seconds, micros = divmod(us, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    text = f"{hour:02d}:{minute:02d}:{second:02d}"
    return f"{text}.{micros:06d}".rstrip("0") if micros else text


def _timestamp_text(us: int, zone: str) -> str:
    days, rest = divmod(us, _US_PER_DAY)
    day, era = _date_text(days)
    return f"{day} {_time_text(rest)}{zone}{era}"


def _timestamp(us: int) -> datetime | str:
    if us == _INT64_MAX:
        return INFINITY
    if us == _INT64_MIN:
        return NEG_INFINITY
    try:
        return _EPOCH + timedelta(microseconds=us)
    except OverflowError:
        return _timestamp_text(us, "")


def _timestamptz(us: int) -> datetime | str:
    if us == _INT64_MAX:
        return INFINITY
    if us == _INT64_MIN:
        return NEG_INFINITY
    try:
        return _EPOCH_UTC + timedelta(microseconds=us)
    except OverflowError:
        return _timestamp_text(us, "+00")


def _date(days: int) -> date | str:
    if days == _INT32_MAX:
        return INFINITY
    if days == _INT32_MIN:
        return NEG_INFINITY
    if _MIN_DAYS <= days <= _MAX_DAYS:
        return _EPOCH_DATE + timedelta(days=days)
    day, era = _date_text(days)
    return day + era


def _time(us: int) -> time | str:
    if 0 <= us < _US_PER_DAY:
        seconds, micros = divmod(us, 1_000_000)
        minutes, second = divmod(seconds, 60)
        hour, minute = divmod(minutes, 60)
        return time(hour, minute, second, micros)
    return _time_text(us)  # 24:00:00, which PostgreSQL allows


def _array(array: pb.Array) -> list[Any]:
    return [to_python(element) for element in array.elements]


def _unchanged(_: bool) -> Any:
    raise ValueError("an unchanged TOAST value has no value: the row leaves its column out")


def _identity(value: Any) -> Any:
    return value


_CONVERT: dict[str | None, Callable[[Any], Any]] = {
    None: lambda _: None,  # an unset Value (the non-key columns of an old key row); rows skip those
    "null": lambda _: None,
    "unchanged_toast": _unchanged,
    "bool": _identity,
    "int64": _identity,
    "double": _identity,
    "numeric": _numeric,
    "text": _identity,
    "bytes": _identity,
    "json": _json,
    "timestamp_us": _timestamp,
    "timestamptz_us": _timestamptz,
    "date_days": _date,
    "time_us": _time,
    "array": _array,
}


def to_python(value: pb.Value) -> Any:
    """One walstream.v1 Value as a Python value (see the module's table)."""
    kind = value.WhichOneof("kind")
    try:
        convert = _CONVERT[kind]
    except KeyError:
        raise ValueError(f"unknown Value kind {kind!r}: is this walstream newer than the client?") from None
    return convert(getattr(value, kind) if kind is not None else None)


def row_to_dict(values: Any, names: tuple[str, ...], skip_unset: bool = False) -> tuple[dict[str, Any], frozenset[str]]:
    """A Row's values by column name, and the names of unchanged TOAST columns (left out of the dict)."""
    if len(values) != len(names):
        raise ValueError(f"a row has {len(values)} values but its relation {len(names)} columns")
    row: dict[str, Any] = {}
    toast: list[str] = []
    for name, value in zip(names, values, strict=True):
        kind = value.WhichOneof("kind")
        if kind == "unchanged_toast":
            toast.append(name)
        elif kind is None:
            if not skip_unset:
                row[name] = None
        else:
            row[name] = to_python(value)
    return row, frozenset(toast)
