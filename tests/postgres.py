"""A throwaway PostgreSQL server for the tests: one cluster per session, a fresh database per module or test.

The server itself (finding the binaries, ``initdb``, ``pg_ctl``, running as a
non-root user) is :mod:`deploy.local_postgres`, shared with ``make run-cluster``.
Here: the tests' settings (``fsync`` and ``synchronous_commit`` off: a test
cluster need not survive a power cut), the template database, and the skip.

Without the binaries the tests that need a server skip, naming the Debian
package ``postgresql``; with ``REQUIRE_POSTGRES=1`` (``.ci/run``) they fail.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Final

from deploy import local_postgres
from deploy.local_postgres import MISSING, PostgresServer, find_bindir
from engine_hub.store.schema import migrate
from shared.pg import connect
from tests.requirements import missing

__all__ = ["MISSING", "TEMPLATE_DB", "PostgresServer", "create_template", "require_bindir", "start_server"]

#: Name of the session's template database: migrated once, copied by CREATE DATABASE … TEMPLATE.
TEMPLATE_DB: Final = "engine_template"


def require_bindir() -> Path:
    """:func:`~deploy.local_postgres.find_bindir`'s answer, or skip the test (fail it with ``REQUIRE_POSTGRES=1``)."""
    bindir = find_bindir()
    if bindir is None:
        missing("REQUIRE_POSTGRES", MISSING)
    return bindir


def start_server(bindir: Path) -> PostgresServer:
    """A new cluster in a temporary directory with the tests' (not durable) settings; stop it when done."""
    return local_postgres.start_server(bindir, settings=local_postgres.NOT_DURABLE)


def create_template(server: PostgresServer) -> str:
    """Create :data:`TEMPLATE_DB` with every migration applied; return its name."""
    with server.admin() as conn:
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}".encode())

    async def apply() -> None:
        conn = await connect(server.url(TEMPLATE_DB))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(apply())
    return TEMPLATE_DB
