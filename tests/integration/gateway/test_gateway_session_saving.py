"""When the real gateway writes a session: only on a change, a fresh id at login, gone at logout or expiry."""

from __future__ import annotations

import hashlib

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from admin_gateway.auth.session_backends import MemorySessionBackend, SessionRecord
from admin_gateway.auth.sessions import SESSION_STORE
from tests.integration.gateway.harness import (
    PASSWORD,
    SUPER,
    GatewayServer,
    MakeGatewayServer,
    UpstreamEngine,
    login,
    post_login,
    session_cookie,
)

IDLE = 600.0


@pytest.fixture
async def session_gateway(upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer) -> GatewayServer:
    """A gateway (memory session backend, ``IDLE`` seconds idle timeout) before the real upstream engine."""
    return await make_gateway_server(upstream_engine.url, idle_timeout=IDLE)


def _backend(gateway: GatewayServer) -> MemorySessionBackend:
    backend = gateway.app[SESSION_STORE].backend
    assert isinstance(backend, MemorySessionBackend)
    return backend


async def _record(gateway: GatewayServer, session_id: str | None) -> SessionRecord | None:
    """The stored record of ``session_id`` (records are keyed by the id's SHA-256)."""
    assert session_id is not None
    return await _backend(gateway).get(hashlib.sha256(session_id.encode()).hexdigest())


async def _signed_in(gateway: GatewayServer) -> tuple[TestClient[web.Request, web.Application], str, str]:
    """A client signed in as the super_admin, its session id and CSRF token."""
    client = await gateway.client()
    csrf = await login(client, SUPER, PASSWORD)
    sid = session_cookie(client)
    assert sid is not None
    return client, sid, csrf


class TestChangedOnlySave:
    async def test_a_read_writes_nothing_and_sends_no_cookie(self, session_gateway: GatewayServer) -> None:
        """A signed-in request that changes nothing leaves the stored record as it was and sets no cookie."""
        client, sid, _ = await _signed_in(session_gateway)
        before = await _record(session_gateway, sid)
        held = len(_backend(session_gateway))
        for path in ("/api/admin/config", "/api/admin/engine/jobs", "/admin/engine/jobs"):
            resp = await client.get(path)
            assert resp.status == 200, await resp.text()
            assert "Set-Cookie" not in resp.headers, path
        assert await _record(session_gateway, sid) is before  # the very same object: nothing was put
        assert len(_backend(session_gateway)) == held

    async def test_an_anonymous_request_stores_nothing(self, session_gateway: GatewayServer) -> None:
        """A signed-out API request is refused without a session record or a session cookie."""
        client = await session_gateway.client()
        resp = await client.get("/api/admin/config")
        assert resp.status == 401
        assert "Set-Cookie" not in resp.headers
        assert len(_backend(session_gateway)) == 0


class TestRotation:
    async def test_login_rotates_the_id(self, session_gateway: GatewayServer) -> None:
        """Signing in again over a live session gives a new id; the old id's record is deleted."""
        client, old, _ = await _signed_in(session_gateway)
        resp = await post_login(client, SUPER, PASSWORD)
        assert resp.status == 303
        new = session_cookie(client)
        assert new is not None and new != old
        assert await _record(session_gateway, old) is None
        fresh = await _record(session_gateway, new)
        assert fresh is not None and fresh.data["user"] == SUPER


class TestEnding:
    async def test_logout_deletes_the_record(self, session_gateway: GatewayServer) -> None:
        """POST /logout deletes the stored record and clears the cookie."""
        client, sid, csrf = await _signed_in(session_gateway)
        assert await _record(session_gateway, sid) is not None
        resp = await client.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
        assert resp.status == 303
        assert await _record(session_gateway, sid) is None
        cleared = resp.cookies["gw_session"]
        assert cleared.value == "" and cleared["max-age"] == "0"

    async def test_an_expired_record_is_refused(self, session_gateway: GatewayServer) -> None:
        """Past the idle timeout the session is refused (401), its record deleted, no cookie sent."""
        client, sid, _ = await _signed_in(session_gateway)
        session_gateway.clock.advance(IDLE)
        resp = await client.get("/api/admin/config")
        assert resp.status == 401
        assert "Set-Cookie" not in resp.headers
        assert await _record(session_gateway, sid) is None
