"""Fixtures of the engine's integration tests: the in-process engine (:mod:`.harness`) and the subprocess."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from engine_hub.http.app import create_app
from engine_hub.jobs.catalog import Catalog
from engine_hub.settings import Settings
from shared.journal.chain import Journal, MemoryJournal
from tests.integration.engine.harness import ADMIN_TOKEN, EngineServer, MakeEngineServer, make_test_catalog
from tests.integration.engine.process import EngineProcess, MakeEngineProcess


@pytest.fixture
def engine_catalog(tmp_path: Path) -> Catalog:
    """The catalog of :func:`make_test_catalog` with files under ``tmp_path``."""
    return make_test_catalog(tmp_path)


@pytest.fixture
def make_engine_server(aiohttp_client: Any, engine_catalog: Catalog, tmp_path: Path) -> MakeEngineServer:
    """Return ``async make(*, catalog=..., journal=..., environ=..., **settings) -> EngineServer``.

    Defaults: the test catalog, a fresh :class:`MemoryJournal`, the admin
    token :data:`ADMIN_TOKEN`, ``data_dir`` under ``tmp_path``, a 0.5 s kill
    grace, and an empty environment for the token look-up.
    """

    async def make(
        *,
        catalog: Catalog | None = None,
        journal: Journal | None = None,
        environ: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> EngineServer:
        settings.setdefault("token", ADMIN_TOKEN)
        settings.setdefault("data_dir", tmp_path / "engine")
        settings.setdefault("ephemeral", True)
        settings.setdefault("kill_grace", 0.5)
        used = journal if journal is not None else MemoryJournal()
        app = create_app(
            Settings(**settings),
            journal=used,
            catalog=catalog if catalog is not None else engine_catalog,
            environ=environ if environ is not None else {},
        )
        client = await aiohttp_client(app)
        return EngineServer(client=client, journal=used)

    return make


@pytest.fixture
async def engine_server(make_engine_server: MakeEngineServer) -> EngineServer:
    """A running in-process engine with the test catalog and default settings."""
    return await make_engine_server()


@pytest.fixture
def engine_process() -> Iterator[MakeEngineProcess]:
    """Return ``make(data_dir, *extra, env=None) -> EngineProcess``, the same signature as :class:`EngineProcess`.

    ``make`` only builds the process; the test calls :meth:`~EngineProcess.start`,
    and :meth:`~EngineProcess.stop` or :meth:`~EngineProcess.kill` when it
    asserts on them. At teardown every process ``make`` built is killed
    (SIGKILL and reaped, if still running) and its log file closed, so a failing
    test leaks no ``engine-hub serve``; one that fails to die does not spare the others.
    """
    made: list[EngineProcess] = []

    def make(data_dir: Path, *extra: str, env: Mapping[str, str] | None = None) -> EngineProcess:
        engine = EngineProcess(data_dir, *extra, env=env)
        made.append(engine)
        return engine

    yield make
    with ExitStack() as cleanup:  # runs every callback even when one raises
        for engine in made:
            cleanup.callback(engine.kill)
