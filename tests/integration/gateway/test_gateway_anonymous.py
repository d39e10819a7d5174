"""Anonymous traffic: it opens no server-side session, cannot evict a signed-in one, and its denials are coalesced.

The Redis backend's half of the session guarantee is in test_gateway_redis.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from admin_gateway.audit.trail import ACCESS_DENIED, AUDIT, CSRF_REFUSED
from admin_gateway.auth.session_backends import MemorySessionBackend
from admin_gateway.auth.sessions import SESSION_STORE
from shared.journal.chain import Record
from shared.journal.tools import verify
from tests.integration.gateway.harness import (
    ADMIN,
    PASSWORD,
    SUPER,
    GatewayServer,
    MakeGatewayServer,
    UpstreamEngine,
    anonymous_flood,
    check_flood_answers,
    form_token_in,
    session_cookie,
)


def _store(gw: GatewayServer) -> MemorySessionBackend:
    backend = gw.app[SESSION_STORE].backend
    assert isinstance(backend, MemorySessionBackend)
    return backend


async def _post_form(client: TestClient[web.Request, web.Application], token: str, password: str = PASSWORD) -> Any:
    return await client.post(
        "/login", data={"username": SUPER, "password": password, "csrf_token": token}, allow_redirects=False
    )


async def _signed_in(client: TestClient[web.Request, web.Application]) -> bool:
    return (await client.get("/api/admin/config")).status == 200


def _csrf_reasons(gw: GatewayServer, before: int) -> list[str]:
    return [r.data["reason"] for r in gw.audit_records()[before:] if r.action == CSRF_REFUSED]


class TestAnonymousTrafficKeepsSessions:
    async def test_flood_does_not_evict_a_signed_in_super_admin(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """A parallel anonymous flood against a 3-session store leaves the super_admin signed in and adds no record."""
        gw = await make_gateway_server(upstream_engine.url, max_sessions=3)
        alice = await gw.login()
        assert len(_store(gw)) == 1
        statuses = await anonymous_flood(gw)
        assert len(_store(gw)) == 1
        assert await _signed_in(alice.client)
        await alice.create()
        check_flood_answers(statuses)

    async def test_login_form_stores_nothing_until_sign_in(self, gateway_server: GatewayServer) -> None:
        """GET /login sets only the gw_form cookie and stores nothing; posting its token signs in (one record)."""
        client = await gateway_server.client()
        resp = await client.get("/login")
        assert [c.key for c in resp.cookies.values()] == ["gw_form"]
        assert session_cookie(client) is None
        assert len(_store(gateway_server)) == 0
        resp = await _post_form(client, form_token_in(await resp.text()))
        assert resp.status == 303
        assert len(_store(gateway_server)) == 1
        assert await _signed_in(client)


class TestLoginFormToken:
    async def test_token_from_another_browser_is_refused(self, gateway_server: GatewayServer) -> None:
        """A form token lifted from one browser is 403 in another browser, which its own token passes."""
        before = len(gateway_server.audit_records())
        victim, thief = await gateway_server.client(), await gateway_server.client()
        lifted = form_token_in(await (await thief.get("/login")).text())
        own = form_token_in(await (await victim.get("/login")).text())
        assert (await _post_form(victim, lifted)).status == 403
        assert not await _signed_in(victim)
        assert (await _post_form(victim, own)).status == 303
        assert _csrf_reasons(gateway_server, before) == ["wrong_token"]

    async def test_token_without_its_cookie_is_refused(self, gateway_server: GatewayServer) -> None:
        """A form token sent without any gw_form cookie is 403 ``no_form_cookie``."""
        before = len(gateway_server.audit_records())
        token = form_token_in(await (await (await gateway_server.client()).get("/login")).text())
        bare = await gateway_server.client()
        assert (await _post_form(bare, token)).status == 403
        assert not await _signed_in(bare)
        assert _csrf_reasons(gateway_server, before) == ["no_form_cookie"]

    async def test_forged_tokens_are_refused(self, gateway_server: GatewayServer) -> None:
        """Tokens not made by the gateway (wrong MAC, bad issue time, junk) are 403 and sign nobody in."""
        client = await gateway_server.client()
        real = form_token_in(await (await client.get("/login")).text())
        issued, mac = real.split(".")
        before = len(gateway_server.audit_records())
        forged = [
            f"{issued}.{mac[:-2]}AA",
            f"{int(issued) + 1}.{mac}",
            f"{issued}",
            f".{mac}",
            f"٣{issued[1:]}.{mac}",
            "x" * 500,
        ]
        for token in forged:
            assert (await _post_form(client, token)).status == 403, token
        assert not await _signed_in(client)
        await gateway_server.server.close()  # identical refusals are counted into one summary, written at shutdown
        refusals = [r for r in gateway_server.audit_records()[before:] if r.action == CSRF_REFUSED]
        assert [r.data["reason"] for r in refusals] == ["wrong_token", "wrong_token"]
        assert refusals[1].data["repeated"] == len(forged) - 1

    async def test_expired_token_is_refused_and_the_form_is_renewed(self, gateway_server: GatewayServer) -> None:
        """After ``login_form_timeout`` the token is 403 ``expired_token``; the re-served form's token signs in."""
        client = await gateway_server.client()
        token = form_token_in(await (await client.get("/login")).text())
        gateway_server.clock.advance(gateway_server.settings.login_form_timeout)
        before = len(gateway_server.audit_records())
        resp = await _post_form(client, token)
        assert resp.status == 403
        assert "expired" in await resp.text()
        assert _csrf_reasons(gateway_server, before) == ["expired_token"]
        assert (await _post_form(client, form_token_in(await resp.text()))).status == 303

    async def test_form_token_is_no_csrf_token_for_a_session(self, gateway_server: GatewayServer) -> None:
        """A signed-in session's mutations need its own token: a login form token is refused."""
        alice = await gateway_server.login()
        form = await gateway_server.client()
        token = form_token_in(await (await form.get("/login")).text())
        resp = await alice.client.post(
            "/api/admin/engine/jobs", json={"type": "demo.echo"}, headers={"X-CSRF-Token": token}
        )
        assert resp.status == 403


async def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def _denials(gw: GatewayServer, before: int = 0) -> list[Record]:
    return [r for r in gw.audit_records()[before:] if r.action == ACCESS_DENIED]


async def _unauthorized(
    client: TestClient[web.Request, web.Application], count: int, path: str = "/api/admin/engine/jobs", **headers: str
) -> None:
    async def one() -> None:
        resp = await client.get(path, headers=headers)
        assert resp.status == 401

    await asyncio.gather(*(one() for _ in range(count)))


class TestDenialFlood:
    async def test_flood_is_one_record_and_one_summary_at_shutdown(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """300 parallel anonymous 401s: one record at once, one summary (count, first, last) at shutdown."""
        gw = await make_gateway_server(upstream_engine.url, audit_coalesce_window=3600.0)
        client = await gw.client()
        await _unauthorized(client, 300)
        assert len(_denials(gw)) == 1
        await gw.server.close()
        first, summary = _denials(gw)
        assert first.data["path"] == "/api/admin/engine/jobs" and "repeated" not in first.data
        assert summary.actor == first.actor == "(anonymous)" and summary.source == first.source
        assert summary.data["repeated"] == 299
        assert summary.data["reason"] == "no_session" and summary.data["status"] == 401
        assert summary.data["path"] == "/api/admin/engine/jobs"
        assert summary.data["firstAt"] <= summary.data["lastAt"]
        result = verify(gw.audit_dir)
        assert result.ok and result.count == len(gw.audit_records())

    async def test_summary_is_written_when_the_window_ends(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """Within a running gateway, repeats are summed per window; after a quiet window a denial is written at once."""
        gw = await make_gateway_server(upstream_engine.url, audit_coalesce_window=0.3)
        client = await gw.client()
        await _unauthorized(client, 50)
        await _wait_for(lambda: len(_denials(gw)) == 2)
        assert _denials(gw)[1].data["repeated"] == 49
        # A window with repeats stays open one more period; a quiet one is closed and forgotten.
        await asyncio.sleep(0.9)
        before = len(_denials(gw))
        await _unauthorized(client, 1)
        assert len(_denials(gw)) == before + 1
        assert "repeated" not in _denials(gw)[-1].data

    async def test_other_kinds_and_addresses_are_not_merged(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """During a flood from one address, another address, route, user or refusal is written at once."""
        gw = await make_gateway_server(
            upstream_engine.url, trusted_proxies=("127.0.0.1",), audit_coalesce_window=3600.0
        )
        alice, bob = await gw.login(SUPER), await gw.login(ADMIN)
        anonymous = await gw.client()
        await _unauthorized(anonymous, 100, **{"X-Forwarded-For": "192.0.2.1"})
        before = len(gw.audit_records())
        await _unauthorized(anonymous, 1, **{"X-Forwarded-For": "192.0.2.2"})
        await _unauthorized(anonymous, 1, "/api/admin/config", **{"X-Forwarded-For": "192.0.2.1"})
        assert (await bob.client.get("/api/admin/engine/jobs")).status == 401
        assert (await alice.client.post("/api/admin/engine/jobs", json={"type": "demo.echo"})).status == 403
        new = gw.audit_records()[before:]
        assert [(r.action, r.actor, r.source, r.data["path"], r.data["reason"]) for r in new] == [
            (ACCESS_DENIED, "(anonymous)", "192.0.2.2", "/api/admin/engine/jobs", "no_session"),
            (ACCESS_DENIED, "(anonymous)", "192.0.2.1", "/api/admin/config", "no_session"),
            (ACCESS_DENIED, ADMIN, "127.0.0.1", "/api/admin/engine/jobs", "role"),
            (CSRF_REFUSED, SUPER, "127.0.0.1", "/api/admin/engine/jobs", "missing_token"),
        ]
        await gw.server.close()
        summaries = [r for r in gw.audit_records() if "repeated" in r.data]
        assert [(r.source, r.data["repeated"]) for r in summaries] == [("192.0.2.1", 99)]

    async def test_open_windows_are_bounded(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """Past the cap of open windows the oldest is closed, its summary written, to make room for a new one."""
        gw = await make_gateway_server(
            upstream_engine.url, trusted_proxies=("127.0.0.1",), audit_coalesce_window=3600.0
        )
        gw.app[AUDIT].coalesce(3600.0, gw.clock, max_open=2)
        client = await gw.client()
        await _unauthorized(client, 10, **{"X-Forwarded-For": "192.0.2.1"})
        await _unauthorized(client, 1, **{"X-Forwarded-For": "192.0.2.2"})
        before = len(gw.audit_records())
        await _unauthorized(client, 1, **{"X-Forwarded-For": "192.0.2.3"})
        new = gw.audit_records()[before:]
        assert [(r.source, r.data.get("repeated")) for r in new] == [("192.0.2.1", 9), ("192.0.2.3", None)]
