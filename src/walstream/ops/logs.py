"""Logging to stderr as text or JSON lines, with passwords redacted from every record.

text: 2026-01-01T00:00:00.123Z INFO walstream.x: message key=value
json: {"ts":"2026-01-01T00:00:00.123Z","level":"info","logger":"walstream.x","msg":"message","key":"value"}
Extra fields come from `logger.info("...", extra={"key": value})`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from ..source.dsn import redact

_MASK = "********"

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

# Attributes every LogRecord has; anything else on a record was passed with extra=.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


def _scrub(value: Any) -> Any:
    """`value` with passwords removed from every string in it and from any mapping key named password."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _MASK if str(k).lower() == "password" else _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_scrub(v) for v in value]
    return redact(str(value))


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Formats the message once and redacts it (args may hold a connection string), then the extras."""
    try:
        message = record.getMessage()
    except Exception:  # a malformed format/args pair: keep the raw parts, still redacted
        message = f"{record.msg} {record.args}"
    record.msg = redact(message)
    record.args = None
    for key, value in _extras(record).items():
        setattr(record, key, _scrub(value))
    return record


class RedactFilter(logging.Filter):
    """Redacts every record a handler gets (the record factory below already did, unless replaced)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


class ClientGoneFilter(logging.Filter):
    """grpc logs a message written to a call whose client has gone (cancelled, or refused a message over its
    receive limit) as an ERROR with grpc's own traceback. For walstream that is a client leaving: one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("grpc._cython") and record.exc_info and "ExecuteBatchError" in record.getMessage():
            record.msg, record.args = "a client went away while a message was being sent to it", ()
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


def _install_record_factory() -> None:
    # Redacting at creation also protects handlers we do not own (a library's, pytest's caplog).
    old = logging.getLogRecordFactory()
    if getattr(old, "_walstream_redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(old(*args, **kwargs))

    factory._walstream_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        for key, value in _extras(record).items():
            line += f" {key}={_text_value(value)}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        # Last line of defence: extras of other types and tracebacks may carry a connection string.
        return redact(line)


def _text_value(value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return orjson.dumps(text).decode()
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            obj.setdefault(key, value)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        # Scrub values before serializing: redacting the JSON text could swallow its quotes.
        return orjson.dumps(_scrub(obj)).decode()


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time (so redirection and test capture work)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Route all logging to stderr at `level` in `fmt`; calling it again replaces the previous setup."""
    if level not in LEVELS:
        raise ValueError(f"invalid log level {level!r}: use one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"invalid log format {fmt!r}: use one of {', '.join(FORMATS)}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    handler = _StderrHandler()
    handler.addFilter(RedactFilter())
    handler.addFilter(ClientGoneFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    _install_record_factory()
