"""Fixtures used by more than one test folder; each folder's own fixtures are in its own ``conftest.py``.

A fixture lives in the conftest of the nearest folder that holds all its
users, so pytest finds it without an import:

- ``json_log``: structured logging into a buffer (unit/shared, integration/engine);
- ``tiny_fs``: a real file system that fills up (unit/shared, integration/engine, integration/gateway);
- ``installed`` and ``make_stack``: the installed wheel and stacks of real processes
  (e2e, browser; see :mod:`tests.e2e.harness`);
- ``postgres_server``, ``postgres_template``, ``postgres_db`` and ``postgres_url``: a throwaway
  PostgreSQL cluster and fresh databases in it (integration, e2e; see :mod:`tests.postgres`).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.log import configure_logging
from tests.disk import mount_tiny_fs
from tests.e2e.harness import StackFactory
from tests.e2e.install import Installation, installation
from tests.postgres import PostgresServer, create_template, require_bindir, start_server


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Structured logging as JSON lines into a buffer (read it after ``shared.log.flush_logs()``)."""
    buf = io.StringIO()
    configure_logging(json_output=True, stream=buf)
    yield buf
    configure_logging(json_output=False, stream=sys.stderr)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs: writing past it fails with ENOSPC (skipped without root)."""
    yield from mount_tiny_fs(tmp_path)


@pytest.fixture(scope="session")
def installed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Installation:
    """The wheel installed in a venv of its own, as an operator installs it (one per session, see tests.e2e.install)."""
    return installation(request.config, tmp_path_factory)


@pytest.fixture
def make_stack(tmp_path: Path, installed: Installation) -> Iterator[StackFactory]:
    """``make_stack(gateways={name: safe_mode})``: stacks private to one test, stopped at its end."""
    factory = StackFactory(tmp_path, installed)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the session (skipped without the binaries, see tests.postgres)."""
    server = start_server(require_bindir())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> str:
    """Name of a database holding the migrated schema and nothing else, to copy (never use it directly)."""
    return create_template(postgres_server)


@pytest.fixture(scope="module")
def postgres_db(postgres_server: PostgresServer, postgres_template: str) -> str:
    """URL of a fresh database with the migrated schema, shared by one test module."""
    return postgres_server.create_database(template=postgres_template)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, postgres_template: str) -> str:
    """URL of a fresh database with the migrated schema, for one test (a template copy: a few ms)."""
    return postgres_server.create_database(template=postgres_template)
