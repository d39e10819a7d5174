"""Live processes for the Schemathesis run: a real engine and a real gateway in front of it.

Both are started from their console scripts on free ports (``tests/e2e/harness.py``),
once per test session. The engine serves a catalog of quick job types (a
run that the fuzzer starts ends in well under a second, and the one slow
type exists only to be cancelled) and gets its admin token from the
environment; the gateway runs with SAFE_MODE **off**, so runs go past the
SAFE_MODE guard to the engine, and holds one super_admin user.

Before fuzzing, each process gets a pool of real jobs (READY, RUNNING and
finished ones) whose ids the fuzzer mixes into the ``{id}`` of the job routes:
random ids only ever reach the 404 branch, pool ids reach 202, 400
``not_ready``, 409 and the log pages.

Size and seed: ``FUZZ_MAX_EXAMPLES`` (cases per operation and phase; default
:data:`tests.fuzz.harness.DEFAULT_MAX_EXAMPLES`) and ``FUZZ_SEED``. Generation is derandomised,
so a run with the same settings against the same code sends the same requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from admin_gateway.auth.users import UserStore
from tests.e2e.harness import BIN, Service, free_port
from tests.fuzz.harness import ENGINE_TOKEN, PASSWORD, USER, Stats, max_examples, quick_catalog, seed

STATS_KEY = pytest.StashKey[Stats]()


@pytest.fixture(scope="session")
def fuzz_stats(pytestconfig: pytest.Config) -> Stats:
    """The session's case counter (printed in the terminal summary)."""
    stats = Stats()
    pytestconfig.stash[STATS_KEY] = stats
    return stats


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Print how many cases the fuzzer sent and what came back."""
    stats = config.stash.get(STATS_KEY, None)
    if stats is not None and stats.cases:
        terminalreporter.write_sep("-", f"schemathesis (seed {seed()}, max {max_examples()} per operation/phase)")
        terminalreporter.write_line(stats.summary())


@pytest.fixture(scope="session")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for the processes' data and logs."""
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="session")
def live_engine(fuzz_dir: Path) -> Iterator[Service]:
    """The engine (``engine-hub serve``) with the quick catalog, its token from ``ENGINE_HUB_TOKEN``."""
    catalog = fuzz_dir / "catalog.toml"
    catalog.write_text(quick_catalog())
    port = free_port()
    service = Service(
        "engine",
        [
            str(BIN / "engine-hub"),
            "serve",
            "--port",
            str(port),
            "--config",
            str(catalog),
            "--data-dir",
            str(fuzz_dir / "engine"),
            "--kill-grace",
            "0.5",
        ],
        port=port,
        log_dir=fuzz_dir,
        env={"ENGINE_HUB_TOKEN": ENGINE_TOKEN},
    )
    try:
        yield service.start()
    finally:
        service.stop()


@pytest.fixture(scope="session")
def live_gateway(live_engine: Service, fuzz_dir: Path) -> Iterator[Service]:
    """The gateway (``admin-gateway serve``, SAFE_MODE off) in front of the live engine, with one super_admin."""
    data = fuzz_dir / "gateway"
    UserStore(data).add(USER, "super_admin", PASSWORD)
    token_file = fuzz_dir / "engine-token"
    token_file.write_text(ENGINE_TOKEN + "\n")
    token_file.chmod(0o600)
    port = free_port()
    service = Service(
        "gateway",
        [
            str(BIN / "admin-gateway"),
            "serve",
            "--port",
            str(port),
            "--engine-url",
            live_engine.url,
            "--data-dir",
            str(data),
            "--engine-token-file",
            str(token_file),
            "--safe-mode",
            "off",
        ],
        port=port,
        log_dir=fuzz_dir,
        env={"ENGINE_HUB_TOKEN": ""},
    )
    try:
        yield service.start()
    finally:
        service.stop()
