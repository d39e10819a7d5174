"""``admin-gateway``: run the gateway (``serve``), manage its users (``users …``), check its audit trail (``audit …``).

Every error is one line on stderr and a non-zero exit status, never a
traceback. ``SAFE_MODE`` comes from ``--safe-mode`` or the environment and
is on unless explicitly turned off; a value that is neither on nor off
stops the gateway before it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import ipaddress
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import structlog
from aiohttp import web

from admin_gateway.audit.trail import AUDIT_SUBDIR
from admin_gateway.auth.accounts import remove_user
from admin_gateway.auth.users import (
    ROLES,
    UserError,
    UserFileCorrupt,
    UserStore,
    generate_password,
    validate_password,
)
from admin_gateway.config import resolve_settings
from admin_gateway.settings import DEFAULT_AUDIT_CHAIN, Settings, SettingsError
from shared.connection_limits import ConnectionLimits
from shared.journal.chain import JournalError
from shared.journal.cli import add_audit_commands, run_audit
from shared.log import configure_logging
from shared.pg import redact
from shared.server import serving

PROG = "admin-gateway"
DEFAULT_DATA_DIR = Path("var/gateway")


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def _fail(message: str, status: int = 1) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Engine Jobs admin gateway.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", help="run the gateway", description="Flags win over the environment, which wins over --config."
    )
    serve.add_argument("--config", type=Path, help="TOML file with gateway settings")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080, or $GATEWAY_PORT)")
    serve.add_argument(
        "--engine-url",
        action="append",
        metavar="URL",
        help="an engine (default http://127.0.0.1:8090, or $ENGINE_HUB_URL); repeat it, or separate URLs "
        "with commas, for several engines tried in order",
    )
    serve.add_argument("--data-dir", type=Path, help="users file and audit/ journal live here (default ./var/gateway)")
    serve.add_argument("--engine-token-file", help="file holding the engine admin token (default: $ENGINE_HUB_TOKEN)")
    serve.add_argument(
        "--safe-mode", metavar="ON|OFF", help="true/1/yes/on (the default) or false/0/no/off; overrides $SAFE_MODE"
    )
    serve.add_argument("--connect-timeout", type=float, help="engine connect timeout, seconds (default 1)")
    serve.add_argument("--total-timeout", type=float, help="engine answer timeout, seconds (default 5)")
    serve.add_argument(
        "--failover-timeout",
        type=float,
        help="with several engine URLs: a read not answered within this many seconds goes to the next (default 1.5)",
    )
    serve.add_argument("--idle-timeout", type=float, help="session idle timeout, seconds (default 1800)")
    serve.add_argument("--absolute-timeout", type=float, help="session lifetime, seconds (default 43200)")
    serve.add_argument("--refresh-interval", type=float, help="panel polling without live updates, seconds (default 5)")
    serve.add_argument("--session-backend", choices=("embedded", "redis"))
    serve.add_argument("--redis-url", help="for --session-backend redis (or $GATEWAY_REDIS_URL)")
    serve.add_argument(
        "--audit-store",
        metavar="URL",
        help="keep the audit chain in this PostgreSQL database (postgresql://…, or $GATEWAY_AUDIT_STORE; "
        "migrated by `engine-hub db migrate`) instead of under --data-dir",
    )
    serve.add_argument(
        "--audit-chain",
        metavar="NAME",
        help="this gateway's chain in --audit-store (default gateway); give each gateway its own name",
    )
    serve.add_argument(
        "--trusted-proxy",
        dest="trusted_proxies",
        action="append",
        default=[],
        metavar="ADDR[/BITS]",
        help="a proxy whose X-Forwarded-For/-Proto are believed (repeatable)",
    )
    serve.add_argument(
        "--allowed-origin",
        dest="allowed_origins",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="extra origin accepted on POST, e.g. https://admin.example.com (repeatable)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        help="cap on open client connections; past it new ones "
        "get 503 and are closed (default 1024, lowered to fit the open-files limit)",
    )
    serve.add_argument(
        "--header-timeout", type=float, help="seconds a client has to send a whole request head (default 10)"
    )
    serve.add_argument(
        "--keepalive-timeout", type=float, help="seconds an idle kept-alive connection stays open (default 75)"
    )
    serve.add_argument(
        "--body-timeout", type=float, help="seconds a request's body has to arrive once its head has (default 30)"
    )
    serve.add_argument(
        "--max-connections-per-address",
        type=int,
        help="cap on one client address's open "
        "connections; 0: none, e.g. behind a proxy (default a quarter of the connection cap)",
    )
    serve.add_argument("--login-hash-workers", type=int, help="threads checking passwords (default 2)")
    serve.add_argument(
        "--login-hash-queue",
        type=int,
        help="password checks that may wait for a thread before sign-ins get 429 (default 16)",
    )
    serve.add_argument(
        "--login-hash-per-address",
        type=int,
        help="password checks one address (IPv6: one /64) may have running or waiting (default 4)",
    )
    serve.add_argument(
        "--login-hash-reserved",
        type=int,
        help="password-check slots kept for sign-ins from a browser with a device cookie for the account (default 2)",
    )
    serve.add_argument(
        "--events-max-streams", type=int, help="live panel streams open at once in total; 429 above (default 1000)"
    )
    serve.add_argument(
        "--events-per-session",
        type=int,
        help="live panel streams one session may hold (its tabs); 429 above (default 8)",
    )
    serve.add_argument(
        "--events-session-check",
        type=float,
        help="seconds between checks that a live stream's session still lives (default 5)",
    )
    serve.add_argument("--log-level", default="info")

    users = sub.add_parser("users", help="manage users")
    users_sub = users.add_subparsers(dest="users_command", required=True)

    def with_data_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
        return p

    add = with_data_dir(users_sub.add_parser("add", help="create a user"))
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument(
        "--generate-password",
        action="store_true",
        help="make a one-time password, print it once; it must be changed at the first sign-in",
    )
    lst = with_data_dir(users_sub.add_parser("list", help="list users"))
    lst.add_argument("--json", action="store_true")
    rm = with_data_dir(
        users_sub.add_parser("remove", help="delete a user (ends their sessions; never the last active super_admin)")
    )
    rm.add_argument("name")
    pw = with_data_dir(users_sub.add_parser("set-password", help="change a password (ends their sessions)"))
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true")
    pw.add_argument(
        "--generate-password",
        action="store_true",
        help="make a one-time password, print it once; it must be changed at the next sign-in",
    )
    ensure = with_data_dir(
        users_sub.add_parser(
            "ensure-admin", help="if there is no user, create a super_admin with a random password and print it"
        )
    )
    ensure.add_argument("--name", default="admin")
    add_audit_commands(
        sub, default_data_dir=DEFAULT_DATA_DIR, journal_subdir=AUDIT_SUBDIR, default_chain=DEFAULT_AUDIT_CHAIN
    )
    return parser


def read_password(from_stdin: bool) -> str:
    """Read a new password from stdin (one line) or by prompting twice; validate it."""
    if from_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
    else:
        if not sys.stdin.isatty():
            raise CliError("no terminal to prompt for a password; use --password-stdin")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise CliError("passwords do not match")
    validate_password(password)
    return password


def _users(args: argparse.Namespace) -> None:
    store = UserStore(args.data_dir)
    cmd = args.users_command
    if cmd == "add":
        if args.generate_password:
            password = generate_password()
            store.add(args.name, args.role, password, must_change=True)
            print(f"created user {args.name} ({args.role}) with one-time password: {password}")
            print("It is shown only once and must be changed at the first sign-in.")
        else:
            store.add(args.name, args.role, read_password(args.password_stdin))
            print(f"created user {args.name} ({args.role})")
    elif cmd == "list":
        users = store.list_users()
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "name": u.name,
                            "role": u.role,
                            "createdAt": u.created_at,
                            "passwordChangedAt": u.password_changed_at,
                            "lastSignInAt": u.last_sign_in_at,
                            "disabled": u.disabled,
                            "mustChangePassword": u.must_change_password,
                        }
                        for u in users
                    ]
                )
            )
        elif not users:
            print("no users")
        else:
            width = max(len(u.name) for u in users)
            for u in users:
                flags = "".join(
                    f"  {flag}"
                    for flag, on in (("disabled", u.disabled), ("must-change-password", u.must_change_password))
                    if on
                )
                print(f"{u.name:<{width}}  {u.role}{flags}")
    elif cmd == "remove":
        remove_user(store, args.name)
        print(f"removed user {args.name}")
    elif cmd == "set-password":
        if store.get(args.name) is None:
            raise CliError(f"no user {args.name!r}")
        if args.generate_password:
            password = generate_password()
            store.set_password(args.name, password, must_change=True)
            print(f"one-time password for {args.name}: {password} (shown once; to be changed at the next sign-in)")
        else:
            store.set_password(args.name, read_password(args.password_stdin))
        print(f"password changed for {args.name}; their sessions have ended")
    elif cmd == "ensure-admin":
        generated = store.ensure_admin(args.name)
        if generated is None:
            print("users exist; nothing to do")
        else:
            print(f"created user {args.name} (super_admin) with password: {generated}")
            print("This password is shown only once; it must be changed at the first sign-in (the panel asks).")


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Build the serve settings from parsed arguments, the environment and ``--config``."""
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "log_level")}
    return resolve_settings(flags, environ)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> None:
    from admin_gateway.http.app import create_app

    settings = settings_from_args(args, os.environ)
    configure_logging(level=args.log_level)
    log = structlog.get_logger("gateway")
    app = create_app(settings)
    if not _is_loopback(settings.host) and not settings.trusted_proxies:
        log.warning(
            "plain_http_on_network",
            host=settings.host,
            hint="serve it behind a TLS proxy (--trusted-proxy) so session cookies are Secure",
        )
    log.info(
        "gateway_starting",
        url=f"http://{settings.host}:{settings.port}/",
        engine_url=settings.engine_url,
        safe_mode=settings.safe_mode,
        data_dir=str(settings.data_dir),
        session_backend=settings.session_backend,
        audit_store=redact(settings.audit_store) if settings.audit_store else None,
        audit_chain=settings.audit_chain if settings.audit_store else None,
    )
    asyncio.run(_run(app, settings))


async def _run(app: web.Application, settings: Settings) -> None:
    log = structlog.get_logger("gateway")
    async with serving(app, host=settings.host, port=settings.port, limits=ConnectionLimits.of(settings)) as server:
        for url in server.urls:
            log.info("gateway_listening", url=url)
        await server.until_stopped()
        log.info("gateway_stopping")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``admin-gateway`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            _serve(args)
        elif args.command == "audit":
            raise SystemExit(run_audit(args, prog=PROG))
        else:
            _users(args)
    except (CliError, UserError, SettingsError) as exc:
        _fail(str(exc))
    except UserFileCorrupt as exc:
        _fail(f"users file is unreadable: {exc}")
    except JournalError as exc:  # the audit journal cannot be opened: locked, or its chain is broken
        _fail(f"audit journal: {exc}")
    except OSError as exc:
        _fail(f"{exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}")
    except KeyboardInterrupt:
        raise SystemExit(130) from None
