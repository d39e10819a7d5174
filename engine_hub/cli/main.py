"""The ``engine-hub`` command: ``serve`` the engine, manage ``jobs`` of a running one, or a store's ``db`` schema.

Every failure prints exactly one line on stderr (``engine-hub: error: ...``)
and exits non-zero: 2 for bad arguments or configuration, 1 for anything
that went wrong while talking to or running the engine.

Command groups are registered from :data:`COMMAND_GROUPS`, so another group
(``audit``) plugs in with one function that adds its sub-parser.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine_hub.cli.client import ClientError
from engine_hub.cli.db import add_db
from engine_hub.cli.jobs import add_jobs
from engine_hub.cli.support import PROG, Parser, UsageError, fail
from engine_hub.settings import (
    DEFAULT_DATA_DIR,
    DEFAULT_HOST,
    DEFAULT_LOG_MAX_BYTES,
    DEFAULT_PORT,
    DEFAULT_RETENTION_DAYS,
    DEFAULT_RUN_REQUEST_TTL,
    DEFAULT_SNAPSHOT_RECORDS,
    DEFAULT_SNAPSHOT_SECONDS,
    MAX_LOG_RETENTION_DAYS,
    MAX_RUN_REQUEST_TTL,
    MIN_RUN_REQUEST_TTL,
    STORE_URL_ENV,
    Settings,
)
from shared.connection_limits import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEPALIVE_TIMEOUT,
    ConnectionLimits,
)

# The server's imports (aiohttp, structlog) are deferred to ``serve``: client commands
# start in a fraction of the time without them.

PORT_ENV = "ENGINE_PORT"


# -- serve ---------------------------------------------------------------------------


def _parse_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"invalid port {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535; got {port}")
    return port


def _default_port() -> int | None:
    raw = os.environ.get(PORT_ENV)
    if not raw:
        return None
    try:
        return _parse_port(raw)
    except ValueError as exc:
        raise UsageError(f"{PORT_ENV}: {exc}") from None


def _port(text: str) -> int:
    try:
        return _parse_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 3600; got {text}")
    return value


def _retention_days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not 0 < value <= MAX_LOG_RETENTION_DAYS:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be above 0 and at most {MAX_LOG_RETENTION_DAYS}; got {text}")
    return value


def _count(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}; got {value}")
        return value

    return parse


def _add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the engine", description="Run the engine until SIGINT/SIGTERM.")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument(
        "--port", type=_port, default=None, help=f"port to listen on (default ${PORT_ENV} or {DEFAULT_PORT})"
    )
    p.add_argument("--config", type=Path, default=None, help="job type catalog (TOML); default: the demo types")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"state directory: token file, journal (default {DEFAULT_DATA_DIR})",
    )
    p.add_argument(
        "--ephemeral",
        action="store_true",
        help="keep job state, audit records and job logs in memory only (no files; for development)",
    )
    p.add_argument(
        "--token-file", type=Path, default=None, help="read the admin token from this file (e.g. a systemd credential)"
    )
    p.add_argument(
        "--snapshot-records",
        type=_count(100, 10_000_000),
        default=DEFAULT_SNAPSHOT_RECORDS,
        help=f"write a snapshot every N journal records (default {DEFAULT_SNAPSHOT_RECORDS})",
    )
    p.add_argument(
        "--snapshot-seconds",
        type=_count(1, 86_400),
        default=int(DEFAULT_SNAPSHOT_SECONDS),
        help="... or this many seconds after the last one, if anything changed "
        f"(default {int(DEFAULT_SNAPSHOT_SECONDS)})",
    )
    p.add_argument(
        "--retention-days",
        type=_count(1, 36_500),
        default=DEFAULT_RETENTION_DAYS,
        help=f"delete journal segments older than this once a snapshot covers them (default {DEFAULT_RETENTION_DAYS})",
    )
    p.add_argument(
        "--log-max-bytes",
        type=_count(4096, 2**40),
        default=DEFAULT_LOG_MAX_BYTES,
        help=f"cap of each job's log file (default {DEFAULT_LOG_MAX_BYTES}, 10 MiB)",
    )
    p.add_argument(
        "--log-retention-days",
        type=_retention_days,
        default=None,
        metavar="DAYS",
        help="delete the log files of jobs that finished more than DAYS ago (may be fractional; default: keep them)",
    )
    p.add_argument(
        "--kill-grace",
        type=_positive_float,
        default=5.0,
        help="seconds between SIGTERM and SIGKILL when a run is stopped (default 5)",
    )
    p.add_argument(
        "--max-connections",
        type=_count(1, 1_000_000),
        default=None,
        help="cap on open client connections; past it new ones get 503 and are closed "
        "(default 1024, lowered to fit the open-files limit)",
    )
    p.add_argument(
        "--header-timeout",
        type=_positive_float,
        default=DEFAULT_HEADER_TIMEOUT,
        help=f"seconds a client has to send a whole request head (default {DEFAULT_HEADER_TIMEOUT:g})",
    )
    p.add_argument(
        "--keepalive-timeout",
        type=_positive_float,
        default=DEFAULT_KEEPALIVE_TIMEOUT,
        help=f"seconds an idle kept-alive connection stays open (default {DEFAULT_KEEPALIVE_TIMEOUT:g})",
    )
    p.add_argument(
        "--body-timeout",
        type=_positive_float,
        default=DEFAULT_BODY_TIMEOUT,
        help=f"seconds a request's body has to arrive once its head has (default {DEFAULT_BODY_TIMEOUT:g})",
    )
    p.add_argument(
        "--max-connections-per-address",
        type=_count(0, 1_000_000),
        default=None,
        help="cap on one client address's open connections; 0: none (default a quarter of the connection cap)",
    )
    p.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help=f"run as one node of a PostgreSQL store (postgresql://...; default ${STORE_URL_ENV}, else the "
        "embedded store). Prefer the variable: a URL may hold a password, and command lines are visible",
    )
    p.add_argument(
        "--node-heartbeat",
        type=_positive_float,
        default=5.0,
        help="PostgreSQL store: seconds between a node's heartbeats (default 5)",
    )
    p.add_argument(
        "--node-lost-after",
        type=_positive_float,
        default=30.0,
        help="PostgreSQL store: a node without a heartbeat for this many seconds is lost (default 30)",
    )
    p.add_argument(
        "--store-pool-size",
        type=_count(1, 1000),
        default=10,
        help="PostgreSQL store: connections pooled per node (default 10)",
    )
    p.add_argument(
        "--store-statement-timeout",
        type=_positive_float,
        default=10.0,
        help="PostgreSQL store: a statement running longer fails the request with 503 (default 10 s)",
    )
    p.add_argument(
        "--run-request-ttl",
        type=_count(MIN_RUN_REQUEST_TTL, MAX_RUN_REQUEST_TTL),
        default=int(DEFAULT_RUN_REQUEST_TTL),
        metavar="SECONDS",
        help="how long a run request of a type that needs approval waits for its approvals before it expires "
        f"(default {int(DEFAULT_RUN_REQUEST_TTL)}: an hour)",
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from engine_hub.errors import ConfigError, StartupError
    from shared.log import configure_logging

    port = args.port if args.port is not None else _default_port()
    if port is None:
        port = DEFAULT_PORT
    store_url = args.store if args.store is not None else (os.environ.get(STORE_URL_ENV) or None)
    if store_url is not None:
        if args.ephemeral:
            return fail("--ephemeral and a PostgreSQL store (--store or $ENGINE_STORE_URL) exclude each other", 2)
        if args.node_heartbeat * 2 > args.node_lost_after:
            return fail("--node-heartbeat must be at most half of --node-lost-after", 2)
    settings = Settings(
        host=args.host,
        port=port,
        data_dir=args.data_dir,
        config=args.config,
        ephemeral=args.ephemeral,
        kill_grace=args.kill_grace,
        log_level=args.log_level,
        token_file=args.token_file,
        snapshot_records=args.snapshot_records,
        snapshot_seconds=float(args.snapshot_seconds),
        retention_days=args.retention_days,
        log_max_bytes=args.log_max_bytes,
        log_retention_days=args.log_retention_days,
        max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        keepalive_timeout=args.keepalive_timeout,
        body_timeout=args.body_timeout,
        max_connections_per_address=args.max_connections_per_address,
        store_url=store_url,
        node_heartbeat=args.node_heartbeat,
        node_lost_after=args.node_lost_after,
        store_pool_size=args.store_pool_size,
        store_statement_timeout=args.store_statement_timeout,
        run_request_ttl=float(args.run_request_ttl),
    )
    configure_logging(level=settings.log_level)
    try:
        asyncio.run(serve(settings))
    except ConfigError as exc:
        return fail(str(exc), 2)
    except StartupError as exc:
        return fail(str(exc), 1)
    except OSError as exc:
        return fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", 1)
    return 0


async def serve(settings: Settings) -> None:
    """Run the engine for ``settings`` until SIGINT or SIGTERM, then stop every run and exit.

    Raises :class:`ConfigError` for a configuration the engine refuses and
    ``OSError`` when the address cannot be bound.
    """
    import structlog

    from engine_hub.http.app import create_app
    from engine_hub.store.heap import settle_heap
    from shared.server import serving

    log = structlog.get_logger("engine.cli")
    async with serving(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        limits=ConnectionLimits.of(settings),
        after_setup=settle_heap,
    ) as server:
        for url in server.urls:
            log.info("engine_listening", url=url)
        await server.until_stopped()
        log.info("engine_stopping")


def _add_audit(sub: Any) -> None:
    from shared.journal.cli import add_audit_commands, run_audit

    add_audit_commands(sub, default_data_dir=DEFAULT_DATA_DIR)
    sub.choices["audit"].set_defaults(func=lambda args: run_audit(args, prog=PROG))


COMMAND_GROUPS: list[Callable[[Any], None]] = [_add_serve, add_jobs, _add_audit, add_db]


def build_parser() -> argparse.ArgumentParser:
    """Return the full ``engine-hub`` argument parser."""
    parser = Parser(prog=PROG, description="Engine Jobs: run operational jobs manually, guarded and auditably.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for add in COMMAND_GROUPS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 failure, 2 bad usage or configuration)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except UsageError as exc:
        return fail(str(exc), 2)
    except ClientError as exc:
        return fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130
    return status
