"""The `walstream` command: start the server, list and delete replication slots, tail a running walstream.

    walstream [--connection CONN] [--log-level LEVEL] [--log-format text|json] [--version] <command>

Errors are one line on stderr, `walstream: error: <message>`: exit 2 for a command line argparse cannot
parse, 1 for everything else. `-h` is `start --host`, so help is `--help` only.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import orjson

from .. import __version__, native
from ..config import StartConfig, parse_size, validate_slot_name
from ..errors import ConfigError, WalstreamError
from ..ops import security
from ..ops.logs import FORMATS, LEVELS, setup_logging
from ..sinks import spec as sink_spec
from ..source import catalog
from ..source.dsn import parse_connection, redact

log = logging.getLogger(__name__)

CONNECTION_ENV = "CONNECTION"
EXIT_ERROR = 1
EXIT_USAGE = 2

_BOOLS = {"true": True, "yes": True, "on": True, "1": True}
_BOOLS.update({"false": False, "no": False, "off": False, "0": False})


class UsageError(Exception):
    """The command line could not be parsed; `prog` names the (sub)command whose --help explains it."""

    def __init__(self, message: str, prog: str, hint: bool = True) -> None:
        super().__init__(message)
        self.prog = prog
        self.hint = hint

    def line(self) -> str:
        return f"{self} (see `{self.prog} --help`)" if self.hint else str(self)


class _Parser(argparse.ArgumentParser):
    # Raise instead of printing usage and exiting, so main() prints one line and tests run in-process.
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog)


def parse_bool(text: str) -> bool:
    try:
        return _BOOLS[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: use true or false (also accepted: yes/no, on/off, 1/0)"
        ) from None


def parse_port(text: str) -> int:
    # Only the syntax here; the range is StartConfig's rule.
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: use a number 0-65535") from None


class _ShortHelp(argparse.Action):
    """`-h` where it is not --host: say so instead of a confusing 'unrecognized argument'."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help=argparse.SUPPRESS)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        raise UsageError("unknown option -h: help is --help (-h is --host of `walstream start`)", parser.prog,
                         hint=False)


def _parser(parent: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = parent.add_parser(name, add_help=False, allow_abbrev=False, **kwargs)
    parser.add_argument("--help", action="help", help="show this help and exit")
    if name != "start":
        parser.add_argument("-h", action=_ShortHelp)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: use a whole number of at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: use a number of seconds from 0 to 3600")
    return value


def _token_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--auth-token", metavar="TOKEN", help="bearer token (gRPC metadata `authorization: Bearer "
                        f"TOKEN`); prefer {security.AUTH_TOKEN_ENV} or --auth-token-file, which stay out of the "
                        f"process list [env: {security.AUTH_TOKEN_ENV}]")
    parser.add_argument("--auth-token-file", metavar="FILE", help="read the bearer token from this file")


def _security_arguments(start: argparse.ArgumentParser) -> None:
    start.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this PEM certificate (chain); needs "
                       "--tls-key [default: plaintext]")
    start.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    start.add_argument("--tls-client-ca", metavar="FILE", help="mutual TLS: require client certificates signed by "
                       "a CA in this PEM file")
    _token_arguments(start)
    start.add_argument("--max-clients", type=_positive_int, default=StartConfig.max_clients, metavar="N",
                       help="streaming clients at once; more get RESOURCE_EXHAUSTED [default: %(default)s]")
    start.add_argument("--max-recv-message-size", type=_positive_int, default=StartConfig.max_recv_message_size,
                       metavar="BYTES", help="largest message a client may send; larger ends its call with "
                       "RESOURCE_EXHAUSTED [default: %(default)s]")


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _operations_arguments(start: argparse.ArgumentParser) -> None:
    start.add_argument("--metrics-port", type=parse_port, metavar="PORT",
                       help="serve Prometheus metrics on http://HOST:PORT/metrics [default: off]")
    start.add_argument("--metrics-host", metavar="HOST", help="metrics listen address [default: --host]")
    start.add_argument("--retained-wal-warning", type=_size, default=StartConfig.retained_wal_warning,
                       metavar="SIZE", help="warn when the slot retains this much WAL, e.g. 512MB, 1GB; 0: never "
                       "[default: 1GB]")


def _auth_token(args: argparse.Namespace, prog: str) -> str | None:
    """--auth-token, --auth-token-file (not both), else $WALSTREAM_AUTH_TOKEN, else None (no token)."""
    if args.auth_token is not None and args.auth_token_file is not None:
        raise UsageError("give --auth-token or --auth-token-file, not both", prog)
    if args.auth_token is not None:
        token, source = args.auth_token, "--auth-token"
    elif args.auth_token_file is not None:
        token, source = security.read_token_file(args.auth_token_file), f"--auth-token-file {args.auth_token_file}"
    elif security.AUTH_TOKEN_ENV in os.environ:
        # Set but empty is an error, not "no token": e.g. a compose file passing an unset variable along.
        token, source = os.environ[security.AUTH_TOKEN_ENV].strip(), security.AUTH_TOKEN_ENV
    else:
        return None
    security.check_token(token, source)
    return str(token)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="walstream",
        add_help=False,
        allow_abbrev=False,
        description="Stream PostgreSQL changes (logical replication, pgoutput) to gRPC clients.",
    )
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument("-h", action=_ShortHelp)
    parser.add_argument(
        "--connection",
        metavar="CONN",
        help=f"libpq connection string or postgresql:// URI [env: {CONNECTION_ENV}]",
    )
    parser.add_argument("--log-level", choices=LEVELS, default="info", type=str.lower, help="default: info")
    parser.add_argument("--log-format", choices=FORMATS, default="text", type=str.lower, help="default: text")
    parser.add_argument("--version", action="version", version=f"walstream {__version__} ({native.description()})")
    commands = parser.add_subparsers(dest="command", metavar="<command>", required=True)

    start = _parser(
        commands,
        "start",
        help="start/create the replication slot and the gRPC server",
        description="Start/create the replication slot and the gRPC server. "
        "`walstream start PUBLICATION SLOT` is accepted too.",
    )
    start.add_argument("--publication", metavar="PUBLICATION", help="publication name")
    start.add_argument("--slot", metavar="SLOT", help="replication slot name")
    start.add_argument("-p", "--port", type=parse_port, default=50051, help="gRPC port [default: 50051]")
    start.add_argument("-h", "--host", default="0.0.0.0", help="gRPC listen address [default: 0.0.0.0]")
    start.add_argument(
        "-t",
        "--temporary",
        type=parse_bool,
        default=True,
        metavar="true|false",
        help="use a temporary replication slot, dropped on disconnect [default: true]",
    )
    start.add_argument("--failover", action="store_true",
                       help="make the slot a failover slot (PostgreSQL 17+) that standbys with "
                       "sync_replication_slots = on keep in sync, so walstream resumes on a promoted standby; "
                       "needs --temporary false (docs/reliability.md)")
    start.add_argument("--client-queue-size", type=_positive_int, default=StartConfig.client_queue_size,
                       metavar="N", help="messages queued per client before reading pauses [default: %(default)s]")
    start.add_argument("--max-unacked", type=_positive_int, default=StartConfig.max_unacked, metavar="N",
                       help="unacknowledged messages over all clients before reading pauses "
                       "[default: %(default)s]")
    start.add_argument("--max-unacked-bytes", type=_size, default=StartConfig.max_unacked_bytes, metavar="SIZE",
                       help="memory held by unacknowledged messages over all clients before reading pauses, "
                       "e.g. 256MB [default: 256MB]")
    start.add_argument("--shutdown-grace", type=_seconds, default=StartConfig.shutdown_grace, metavar="SECONDS",
                       help="on SIGINT/SIGTERM, how long to wait for clients' acks [default: %(default)s]")
    start.add_argument("--snapshot-consistent", type=parse_bool, default=False, metavar="true|false",
                       help="when this walstream creates the slot, hold the snapshot PostgreSQL exports with it for "
                       "the first walstream.v1 subscriber asking for a CONSISTENT snapshot [default: false]")
    _security_arguments(start)
    _operations_arguments(start)
    sink_spec.add_arguments(start)
    start.add_argument("positional", nargs="*", help=argparse.SUPPRESS)
    start.set_defaults(handler=cmd_start)

    listing = _parser(commands, "list", help="list replication slots", description="List replication slots.")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(handler=cmd_list)

    delete = _parser(
        commands,
        "delete",
        help="delete a permanent replication slot",
        description="Delete a permanent replication slot.",
    )
    delete.add_argument("--slot", metavar="SLOT", required=True, help="replication slot name")
    delete.set_defaults(handler=cmd_delete)

    demo = _parser(
        commands,
        "demo",
        help="show walstream live: a throwaway PostgreSQL, a writer, the server and a client",
        description="Start a throwaway PostgreSQL (wal_level=logical, in a temp dir), a small shop schema and a "
        "writer that keeps changing it, the walstream server on 127.0.0.1:PORT and a gRPC client that prints "
        "every change. Needs no --connection. Ctrl-C (or SIGTERM) stops it, exits 0 and removes everything.",
    )
    demo.add_argument("-p", "--port", type=_demo_port, default=50051, help="gRPC port [default: 50051]")
    demo.add_argument("--duration", type=_duration, metavar="SECONDS",
                      help="stop after this many seconds of streaming [default: until Ctrl-C]")
    demo.set_defaults(handler=cmd_demo)

    tail = _parser(
        commands,
        "tail",
        help="print the changes a running walstream streams (JSON lines or a readable form)",
        description="Subscribe to a running walstream (API walstream.v1) and print every change: one JSON object "
        "per line (--format json) or a readable line, coloured on a terminal (--format pretty). The default is "
        "pretty on a terminal, json otherwise. Each batch is acknowledged once printed, unless --no-ack. "
        "Ctrl-C or SIGTERM exits 0. Needs no --connection.",
    )
    tail.add_argument("--server", metavar="HOST:PORT", help="walstream's gRPC address "
                      "[env: WALSTREAM_ADDR; default: 127.0.0.1:50051]")
    tail.add_argument("--table", action="append", default=[], metavar="PATTERN",
                      help="only these tables: schema.table or table (schema public), * and ? as wildcards; "
                      "repeatable")
    tail.add_argument("--exclude-table", action="append", default=[], metavar="PATTERN",
                      help="never these tables (same patterns); repeatable")
    tail.add_argument("--op", action="append", default=[], type=_tail_ops, metavar="OP",
                      help="only these operations: insert, update, delete, truncate; repeatable or "
                      "comma-separated [default: all]")
    tail.add_argument("--format", choices=("json", "pretty"), type=str.lower,
                      help="json: one JSON object per line; pretty: for people [default: pretty on a terminal, "
                      "else json]")
    tail.add_argument("--no-ack", action="store_true", help="do not acknowledge: the slot does not move")
    tail.add_argument("--transactions", action="store_true", help="also print BEGIN and COMMIT")
    tail.add_argument("--messages", action="store_true",
                      help="also print logical decoding messages (pg_logical_emit_message)")
    tail.add_argument("--snapshot", nargs="?", const="", default=None, metavar="TABLES",
                      help="also print the rows the tables already hold (op SNAPSHOT), then keep streaming; TABLES: "
                      "comma-separated patterns [default: every table tailed]; progress goes to stderr")
    tail.add_argument("--tls-ca", metavar="FILE", help="connect with TLS, trusting the CA certificates in this "
                      "PEM file")
    tail.add_argument("--tls-cert", metavar="FILE", help="client certificate (PEM) for mutual TLS; needs --tls-key")
    tail.add_argument("--tls-key", metavar="FILE", help="the client certificate's private key (PEM)")
    _token_arguments(tail)
    tail.set_defaults(handler=cmd_tail)
    return parser


def _demo_port(text: str) -> int:
    port = parse_port(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: use a number 1-65535")
    return port


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use a number of seconds above 0")
    return value


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # imported late, like the engine

    return run_demo(port=args.port, duration=args.duration)


def _tail_ops(text: str) -> list[str]:
    ops = [op.strip().lower() for op in text.split(",") if op.strip()]
    for op in ops or [text]:
        if op not in ("insert", "update", "delete", "truncate"):
            raise argparse.ArgumentTypeError(f"invalid operation {op!r}: use insert, update, delete or truncate")
    return ops


def cmd_tail(args: argparse.Namespace) -> int:
    from .tail import DEFAULT_SERVER, SERVER_ENV, run_tail  # imported late: the client needs gRPC

    server = args.server or os.environ.get(SERVER_ENV, "").strip() or DEFAULT_SERVER
    fmt = args.format or ("pretty" if sys.stdout.isatty() else "json")
    return run_tail(server, tables=args.table, exclude_tables=args.exclude_table,
                    operations=[op for ops in args.op for op in ops], fmt=fmt, ack=not args.no_ack,
                    transactions=args.transactions, messages=args.messages, tls_ca=args.tls_ca,
                    tls_cert=args.tls_cert, tls_key=args.tls_key, token=_auth_token(args, "walstream tail"),
                    snapshot=None if args.snapshot is None else [t for t in args.snapshot.split(",") if t.strip()])


def _connection(args: argparse.Namespace) -> str:
    conn_str = args.connection if args.connection is not None else os.environ.get(CONNECTION_ENV, "")
    if not conn_str.strip():
        raise UsageError(f"no connection string: pass --connection CONN or set {CONNECTION_ENV}", "walstream")
    params = parse_connection(conn_str)
    log.debug(
        "connecting to PostgreSQL",
        extra={k: params[k] for k in ("host", "hostaddr", "port", "dbname", "user") if k in params},
    )
    return conn_str


def _publication_and_slot(args: argparse.Namespace) -> tuple[str, str]:
    prog = "walstream start"
    if args.positional:
        if args.publication is not None or args.slot is not None:
            raise UsageError(
                "give the publication and slot either as --publication P --slot S or as `start P S`, "
                "not both",
                prog,
            )
        if len(args.positional) != 2:
            raise UsageError(
                f"expected two positional arguments, PUBLICATION and SLOT, got {len(args.positional)}", prog
            )
        return args.positional[0], args.positional[1]
    given = (("--publication", args.publication), ("--slot", args.slot))
    missing = [flag for flag, value in given if value is None]
    if missing:
        raise UsageError(f"the following arguments are required: {', '.join(missing)}", prog)
    return args.publication, args.slot


RunStart = Callable[[StartConfig], int]


def _run_start() -> RunStart:
    # Imported late: the engine is heavy (gRPC) and list/delete never need it.
    from ..app import run_start

    return run_start


def cmd_start(args: argparse.Namespace) -> int:
    publication, slot = _publication_and_slot(args)
    conn_str = _connection(args)
    config = StartConfig(
        connection=conn_str,
        publication=publication,
        slot=slot,
        host=args.host,
        port=args.port,
        temporary=args.temporary,
        failover=args.failover,
        client_queue_size=args.client_queue_size,
        max_unacked=args.max_unacked,
        max_unacked_bytes=args.max_unacked_bytes,
        shutdown_grace=args.shutdown_grace,
        snapshot_consistent=args.snapshot_consistent,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        auth_token=_auth_token(args, "walstream start"),
        max_clients=args.max_clients,
        max_recv_message_size=args.max_recv_message_size,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        retained_wal_warning=args.retained_wal_warning,
        sinks=sink_spec.from_arguments(args),
    )
    # Check what we can over plain SQL first: a missing publication or privilege is reported in one line
    # before anything is created or any port is opened.
    conn = catalog.connect(conn_str)
    try:
        info = catalog.check_start(conn, publication, slot, failover=args.failover)
    finally:
        conn.close()
    if info is None:
        log.info("replication slot %s does not exist yet and will be created", slot)
    else:
        log.info(
            "using existing replication slot %s",
            slot,
            extra={"temporary": info.temporary, "wal_status": info.wal_status},
        )
        if info.active_pid is not None:
            log.warning("replication slot %s is active for PID %d", slot, info.active_pid)
    return _run_start()(config)


def _slot_view(row: dict[str, Any]) -> dict[str, Any]:
    # One stable shape for every server version; columns a version lacks are None.
    return {
        "name": row.get("slot_name"),
        "plugin": row.get("plugin"),
        "kind": row.get("slot_type"),
        "database": row.get("database"),
        "temporary": bool(row.get("temporary")),
        "active": bool(row.get("active")),
        "active_pid": row.get("active_pid"),
        "restart_lsn": row.get("restart_lsn"),
        "confirmed_flush_lsn": row.get("confirmed_flush_lsn"),
        "wal_status": row.get("wal_status"),
        "retained_bytes": row.get("retained_bytes"),
    }


_COLUMNS = (
    ("NAME", "name"),
    ("PLUGIN", "plugin"),
    ("KIND", "kind"),
    ("DATABASE", "database"),
    ("TEMPORARY", "temporary"),
    ("ACTIVE", "active"),
    ("RESTART_LSN", "restart_lsn"),
    ("CONFIRMED_FLUSH_LSN", "confirmed_flush_lsn"),
    ("WAL_STATUS", "wal_status"),
    ("RETAINED_BYTES", "retained_bytes"),
)


def _cell(slot: dict[str, Any], key: str) -> str:
    value = slot[key]
    if key == "active" and value and slot["active_pid"]:
        return f"yes (pid {slot['active_pid']})"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)


def format_table(slots: list[dict[str, Any]]) -> str:
    rows = [[title for title, _ in _COLUMNS]] + [[_cell(s, key) for _, key in _COLUMNS] for s in slots]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if title == "RETAINED_BYTES" else cell.ljust(width)
            for cell, width, (title, _) in zip(row, widths, _COLUMNS, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    conn = catalog.connect(_connection(args))
    try:
        slots = [_slot_view(row) for row in catalog.list_slots(conn)]
    finally:
        conn.close()
    if args.json:
        print(orjson.dumps(slots, option=orjson.OPT_INDENT_2).decode())
    elif not slots:
        print("No replication slots on this server.")
    else:
        print(format_table(slots))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    slot = validate_slot_name(args.slot)
    conn = catalog.connect(_connection(args))
    try:
        catalog.drop_slot(conn, slot)
    finally:
        conn.close()
    print(f'dropped replication slot "{slot}"')
    return 0


def _error(message: str) -> None:
    print(f"walstream: error: {redact(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        _error(exc.line())
        return EXIT_USAGE
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    setup_logging(args.log_level, args.log_format)
    # A process started in the background by a non-interactive shell inherits SIGINT ignored, and Python
    # then never raises KeyboardInterrupt: Ctrl-C (or kill -INT) must stop every command all the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        native.require()
        return int(args.handler(args))
    except UsageError as exc:
        _error(exc.line())
        return EXIT_USAGE
    except WalstreamError as exc:
        _error(str(exc))
    except catalog.DatabaseError as exc:
        _error(f"PostgreSQL: {catalog.first_line(exc)}")
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        log.debug("unexpected error", exc_info=True)
        detail = f": {catalog.first_line(exc)}" if str(exc).strip() else ""
        _error(f"unexpected {type(exc).__name__}{detail} (run with --log-level debug for details)")
    return EXIT_ERROR
