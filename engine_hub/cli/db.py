"""``engine-hub db migrate|status|import``: bring a PostgreSQL store's schema up to this build's, show it,
or move an embedded engine's data directory into it (:mod:`engine_hub.cli.db_import`).

The store is ``--store URL`` or ``$ENGINE_STORE_URL``. Every failure is one
line on stderr without a traceback and without the URL's password: exit 2
for a missing or malformed URL, 1 when the database cannot be reached,
refuses the login or a statement, or is ahead of this build.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine_hub.cli.support import PROG, Parser, UsageError, fail
from engine_hub.settings import STORE_URL_ENV

if TYPE_CHECKING:
    import psycopg

# psycopg is imported when a db command runs, not when the parser is built: other commands
# start without it.


def add_db(sub: Any) -> None:
    """Add the ``db`` command group to the top-level sub-parsers ``sub``."""
    db = sub.add_parser("db", help="manage the schema of a PostgreSQL store")
    dsub = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True, parser_class=Parser)
    common = Parser(add_help=False)
    common.add_argument(
        "--store", default=None, metavar="URL", help=f"postgresql:// URL of the store (default ${STORE_URL_ENV})"
    )
    p = dsub.add_parser(
        "migrate",
        parents=[common],
        help="apply the pending schema migrations",
        description="Apply every migration this engine-hub ships that the database lacks, in order. "
        "Safe to run from several hosts at once; a no-op when the schema is current.",
    )
    p.set_defaults(func=_cmd_migrate)
    p = dsub.add_parser(
        "status",
        parents=[common],
        help="show the database's schema version and this build's",
        description="Show the database's schema version and the one this engine-hub needs; "
        "exit 0 only when they are the same.",
    )
    p.set_defaults(func=_cmd_status)
    p = dsub.add_parser(
        "import",
        parents=[common],
        help="move an embedded engine's journal and jobs into a freshly migrated store",
        description="Copy every journal record (hashes kept, so `audit verify --store` passes) and every job of "
        "an embedded engine's data directory into the store, in one transaction. The engine must be stopped; "
        "job logs are not moved.",
    )
    p.add_argument(
        "--data-dir", type=Path, required=True, help="the embedded engine's data directory (holding journal/)"
    )
    p.set_defaults(func=_cmd_import)


def _store_url(args: argparse.Namespace) -> str:
    url: str | None = args.store or os.environ.get(STORE_URL_ENV)
    if not url:
        raise UsageError(f"no store: pass --store postgresql://… or set {STORE_URL_ENV}")
    return url


def _with_connection(
    args: argparse.Namespace, work: Callable[[psycopg.AsyncConnection[Any], str], Awaitable[int]]
) -> int:
    """Connect to the store, run ``work(conn, shown_url)``, and turn every store error into one line."""
    import psycopg

    from engine_hub.store.schema import SchemaError
    from shared.pg import StoreUrlError, connect, describe_error, redact

    url = _store_url(args)

    async def run() -> int:
        conn = await connect(url)
        try:
            return await work(conn, redact(url))
        finally:
            await conn.close()

    try:
        return asyncio.run(run())
    except StoreUrlError as exc:
        return fail(str(exc), 2)
    except SchemaError as exc:
        return fail(str(exc), 1)
    except psycopg.Error as exc:
        return fail(f"store {redact(url)}: {describe_error(exc, url)}", 1)


def _cmd_migrate(args: argparse.Namespace) -> int:
    from engine_hub.store.schema import known_version, migrate

    async def work(conn: psycopg.AsyncConnection[Any], shown: str) -> int:
        applied = await migrate(conn)
        for migration in applied:
            print(f"applied {migration.name}")
        state = "now at" if applied else "already at"
        print(f"{shown}: schema {state} version {known_version()}")
        return 0

    return _with_connection(args, work)


def _cmd_status(args: argparse.Namespace) -> int:
    from engine_hub.store.schema import SchemaError, check_schema, database_version, known_version

    async def work(conn: psycopg.AsyncConnection[Any], shown: str) -> int:
        version = await database_version(conn)
        print(f"store: {shown}")
        print(f"database schema: {'none' if version is None else version}")
        print(f"this {PROG}: {known_version()}")
        try:
            await check_schema(conn)
        except SchemaError as exc:
            print(f"state: {exc}")
            return 1
        print("state: up to date")
        return 0

    return _with_connection(args, work)


def _cmd_import(args: argparse.Namespace) -> int:
    from engine_hub.cli.db_import import ImportRefused, import_work
    from shared.log import configure_logging

    # The journal's own events (opened, replayed) are noise here; a warning (a torn tail cut off) is not.
    configure_logging(level="warning", stream=sys.stderr)
    try:
        return _with_connection(args, import_work(args.data_dir))
    except ImportRefused as exc:
        return fail(f"db import: {exc}", 1)
