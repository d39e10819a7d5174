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


#: The stores the contract tests run against: a module or class opts in with ``pytest.mark.both_stores``.
STORES = ("embedded", "postgresql")
BOTH_STORES = pytest.mark.both_stores


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test marked ``both_stores`` that starts an engine once per store in :data:`STORES`."""
    if "engine_store" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_stores"):
        metafunc.parametrize("engine_store", STORES, indirect=True)


@pytest.fixture
def engine_store(request: pytest.FixtureRequest) -> str | None:
    """The store of ``make_engine_server``'s engines: ``None`` for the embedded store, else a PostgreSQL URL.

    Embedded unless the test is marked :data:`BOTH_STORES`; then each such test
    runs once per store, the PostgreSQL run on a fresh migrated database (tests/postgres.py).
    """
    kind = getattr(request, "param", "embedded")
    if kind == "embedded":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def make_engine_server(
    aiohttp_client: Any, engine_catalog: Catalog, tmp_path: Path, engine_store: str | None
) -> MakeEngineServer:
    """Return ``async make(*, catalog=..., journal=..., environ=..., **settings) -> EngineServer``.

    Defaults: the test catalog, a fresh :class:`MemoryJournal` (or, under
    the ``postgresql`` store, the store itself with fast node timing), the
    admin token :data:`ADMIN_TOKEN`, ``data_dir`` under ``tmp_path``, a 0.5 s
    kill grace, and an empty environment for the token look-up. A test that
    passes its own ``journal`` tests the embedded store only: under
    ``postgresql`` it is skipped, saying so.
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
        settings.setdefault("kill_grace", 0.5)
        used: Journal | None
        if engine_store is None:
            settings.setdefault("ephemeral", True)
            used = journal if journal is not None else MemoryJournal()
        else:
            if journal is not None:
                pytest.skip("embedded store only: the test injects its own journal")
            settings.update(store_url=engine_store, node_heartbeat=0.5, node_lost_after=3.0, listen_poll=1.0)
            used = None
        app = create_app(
            Settings(**settings),
            journal=used,
            catalog=catalog if catalog is not None else engine_catalog,
            environ=environ if environ is not None else {},
        )
        client = await aiohttp_client(app)
        return EngineServer(client=client, journal=used, store_url=engine_store)

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
