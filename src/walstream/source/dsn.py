"""Connection strings: validate, derive the replication/plain variants, and keep passwords out of output.

Both libpq forms are accepted: `host=h user=u password=p dbname=d` and `postgresql://u:p@h:5432/d`.
"""

from __future__ import annotations

import re

import psycopg2
from psycopg2.extensions import make_dsn, parse_dsn

from ..errors import ConfigError

APPLICATION_NAME = "walstream"

# Session settings the replication stream relies on: values in text form are decoded and compared
# exactly, so they must not depend on the server's or the role's defaults.
REPLICATION_OPTIONS = (
    "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=1 -c bytea_output=hex"
)

_MASK = "********"
# password=secret, password = 'se cret', password='it\'s' (libpq allows backslash escapes in both forms).
_KV_PASSWORD = re.compile(r"""(\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|(?:[^\s\\]|\\.)+)""", re.IGNORECASE)
# postgresql://user:secret@host — libpq ends the user info at the first '@' or '/'.
_URI_PASSWORD = re.compile(r"(\bpostgres(?:ql)?://[^:@/\s]*:)[^@/\s]*@", re.IGNORECASE)
# 'password': 'secret' as in a repr()'d dict, e.g. parse_dsn's result ending up in a log line.
_REPR_PASSWORD = re.compile(r"""(['"]password['"]\s*:\s*)(?:'[^']*'|"[^"]*")""", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every password in a key=value string, URI or dict repr replaced by asterisks."""
    text = _URI_PASSWORD.sub(rf"\g<1>{_MASK}@", text)
    text = _KV_PASSWORD.sub(rf"\g<1>{_MASK}", text)
    return _REPR_PASSWORD.sub(rf"\g<1>'{_MASK}'", text)


def parse_connection(conn_str: str) -> dict[str, str]:
    """libpq's own parse of `conn_str`; ConfigError naming the problem (never the password) if malformed."""
    try:
        return dict(parse_dsn(conn_str))
    except psycopg2.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "malformed"
        detail = detail.removeprefix("invalid dsn: ")
        raise ConfigError(f"invalid connection string: {redact(detail)}") from None


def plain_dsn(conn_str: str) -> str:
    """A key=value DSN for ordinary SQL, naming the application unless the user already did."""
    params = parse_connection(conn_str)
    params.setdefault("application_name", APPLICATION_NAME)
    return str(make_dsn(**params))


def replication_dsn(conn_str: str) -> str:
    """A key=value DSN for a logical replication connection with walstream's fixed session settings."""
    params = parse_connection(conn_str)
    params.setdefault("application_name", APPLICATION_NAME)
    params["replication"] = "database"
    # Ours go last: with repeated -c, PostgreSQL keeps the last value, so the user's other settings stay.
    user_options = params.get("options", "").strip()
    params["options"] = f"{user_options} {REPLICATION_OPTIONS}" if user_options else REPLICATION_OPTIONS
    return str(make_dsn(**params))
