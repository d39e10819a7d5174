"""Fixtures of the gateway's integration tests: a real gateway in front of a real engine (see :mod:`.harness`).

``upstream_engine`` is the engine the gateway talks to (in-process, demo
types, every answered request counted); ``gateway_server`` is a gateway
(SAFE_MODE off) in front of it, ``make_gateway_server`` makes others.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from admin_gateway.http.app import create_app
from admin_gateway.settings import Settings
from tests.integration.gateway.console import StartGateway, gateway_processes
from tests.integration.gateway.harness import (
    ENGINE_TOKEN,
    FakeClock,
    GatewayServer,
    MakeGatewayServer,
    UpstreamEngine,
    seed_users,
    start_upstream_engine,
)


@pytest.fixture
def clock() -> FakeClock:
    """The gateway's injected clock."""
    return FakeClock()


@pytest.fixture
async def upstream_engine(aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path) -> UpstreamEngine:
    """The real engine (in-process, ephemeral port) that the gateway under test talks to."""
    return await start_upstream_engine(aiohttp_server, aiohttp_client, tmp_path)


@pytest.fixture
def make_gateway_server(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> MakeGatewayServer:
    """Return ``async make(engine_url, **settings) -> GatewayServer`` (users seeded, SAFE_MODE off unless given).

    The data dir is a fresh one under ``tmp_path`` unless ``data_dir`` is given.
    """
    counter = iter(range(1000))

    async def make(engine_url: str, **overrides: Any) -> GatewayServer:
        data_dir = overrides.pop("data_dir", None) or tmp_path / f"gateway{next(counter)}"
        seed_users(data_dir)
        overrides.setdefault("safe_mode", False)
        overrides.setdefault("engine_token", ENGINE_TOKEN)
        settings = Settings(data_dir=data_dir, engine_url=engine_url, clock=clock, **overrides)
        server = await aiohttp_server(create_app(settings))
        return GatewayServer(server=server, settings=settings, clock=clock, make_client=aiohttp_client)

    return make


@pytest.fixture
async def gateway_server(upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer) -> GatewayServer:
    """A gateway (SAFE_MODE off) in front of the real :func:`upstream_engine`."""
    return await make_gateway_server(upstream_engine.url)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound (so nobody else takes it), never listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
async def hung_port() -> AsyncIterator[int]:
    """A port whose server accepts connections and reads requests but never answers (an engine that hangs)."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
def engine_token_file(tmp_path: Path) -> Path:
    """An engine token file for a gateway started as a subprocess."""
    path = tmp_path / "engine.token"
    path.write_text("some-engine-token\n")
    return path


@pytest.fixture
def gateway_process(tmp_path: Path, engine_token_file: Path) -> Iterator[StartGateway]:
    """Start ``admin-gateway serve`` subprocesses (extra args and env per call); every one is stopped at teardown."""
    yield from gateway_processes(tmp_path, engine_token_file)
