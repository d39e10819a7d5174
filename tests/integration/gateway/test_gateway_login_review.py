"""Follow-ups of the security review of the gateway's login code (issue 11).

Malformed device cookies, coalesced pre-check refusals, fairness in the
password-check queue, IPv6 throttled per /64 and the login form's cookie
cleared at sign-in. Every test drives the real gateway in front of the real
engine, both on ephemeral ports; X-Forwarded-For from the test client (a
trusted proxy) names the client's address.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from admin_gateway.audit.trail import AUDIT, NAME_SAMPLE
from admin_gateway.auth.device_cookies import COOKIE_NAME
from admin_gateway.auth.password_checks import PASSWORD_CHECKS
from admin_gateway.auth.sessions import FORM_COOKIE_NAME
from admin_gateway.auth.throttle import LoginThrottle
from shared.journal.tools import verify
from tests.integration.gateway.harness import (
    PASSWORD,
    PROXY,
    SUPER,
    WRONG,
    GatewayServer,
    MakeGatewayServer,
    UpstreamEngine,
    attempt_login,
    device_cookie,
    login_form_token,
    post_login,
)


async def _attempt(
    client: TestClient[web.Request, web.Application], token: str, username: str, password: str, address: str
) -> int:
    """One JSON login from ``address``; its status."""
    return (await attempt_login(client, token, username, password, address)).status


def _login_failures(gw: GatewayServer, reason: str) -> list[Any]:
    return [r for r in gw.audit_records() if r.action == "login_failed" and r.data.get("reason") == reason]


async def _until_pending(gw: GatewayServer, count: int) -> None:
    """Wait (at most 10 s) until ``count`` password checks are running or waiting."""
    async with asyncio.timeout(10):
        while gw.app[PASSWORD_CHECKS].pending < count:
            await asyncio.sleep(0.01)


class TestMalformedDeviceCookie:
    async def test_non_ascii_device_cookie_is_no_device(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """A device cookie with non-ASCII bytes is ignored: the sign-in succeeds (303), no 500."""
        gw = await make_gateway_server(upstream_engine.url)
        client = await gw.client()
        token = await login_form_token(client)
        nonce = next(c.value for c in client.session.cookie_jar if c.key == FORM_COOKIE_NAME)
        client.session.cookie_jar.clear()
        for bad in ("d1.é.x.1.sig", "d1.a b.x.1.sig", "d1.\u202e.x.1.sig"):
            resp = await client.post(
                "/login",
                data={"username": SUPER, "password": PASSWORD, "csrf_token": token},
                headers={"Cookie": f"{FORM_COOKIE_NAME}={nonce}; {COOKIE_NAME}={bad}"},
                allow_redirects=False,
            )
            assert resp.status == 303, (bad, await resp.text())
            client.session.cookie_jar.clear()
        succeeded = [r for r in gw.audit_records() if r.action == "login_succeeded"]
        assert len(succeeded) == 3 and all("trustedDevice" not in r.data for r in succeeded)


class TestPreCheckRefusalsCoalesced:
    async def test_throttled_flood_is_a_few_records(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """Parallel throttled attempts with a new name each: O(1) records whose counts add up to every refusal."""
        gw = await make_gateway_server(
            upstream_engine.url,
            login_limit_per_address_per_hour=2,
            login_hash_per_address=64,
            trusted_proxies=PROXY,
            audit_coalesce_window=3600.0,
        )
        client = await gw.client()
        token = await login_form_token(client)
        flood = 80
        statuses = await asyncio.gather(
            *(_attempt(client, token, f"guess{i}", WRONG, "192.0.2.7") for i in range(flood))
        )
        assert sorted(statuses) == [401] * 2 + [429] * (flood - 2)
        assert len(_login_failures(gw, "bad_credentials")) == 2  # checked passwords: one record each
        assert len(_login_failures(gw, "throttled")) == 1
        await gw.app[AUDIT].flush_windows(everything=True)
        first, summary = _login_failures(gw, "throttled")
        assert first.actor.startswith("guess") and first.data["retryAfter"] > 0 and "repeated" not in first.data
        assert summary.actor == "(anonymous)" and summary.source == first.source == "192.0.2.7"
        assert 1 + summary.data["repeated"] == flood - 2
        assert summary.data["limit"] == "address" and "retryAfter" not in summary.data
        assert summary.data["distinctNames"] == flood - 3
        assert len(summary.data["names"]) == NAME_SAMPLE and first.actor not in summary.data["names"]
        result = verify(gw.audit_dir)
        assert result.ok and result.count == len(gw.audit_records())

    async def test_wrong_passwords_stay_one_record_each(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """Failures that checked a password are never coalesced."""
        gw = await make_gateway_server(upstream_engine.url, audit_coalesce_window=3600.0)
        client = await gw.client()
        token = await login_form_token(client)
        assert [await _attempt(client, token, f"user{i}", WRONG, "x") for i in range(4)] == [401] * 4
        await gw.app[AUDIT].flush_windows(everything=True)
        assert [r.actor for r in _login_failures(gw, "bad_credentials")] == [f"user{i}" for i in range(4)]


class TestPasswordCheckFairness:
    async def test_one_address_cannot_fill_the_queue(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """With its share of check slots in use, an address gets 429 busy; another address still gets checked."""
        gw = await make_gateway_server(
            upstream_engine.url,
            login_hash_workers=1,
            login_hash_queue=16,
            login_hash_per_address=4,
            trusted_proxies=PROXY,
        )
        checks = gw.app[PASSWORD_CHECKS]
        gate = threading.Event()
        greedy = "2001:db8:5::1"
        held = [
            asyncio.ensure_future(checks.run(gate.wait, 30.0, client=LoginThrottle.address_key(greedy)))
            for _ in range(4)
        ]
        try:
            await asyncio.sleep(0)
            assert checks.pending == 4
            client = await gw.client()
            token = await login_form_token(client)
            # Another address of the same /64 is the same client.
            assert await _attempt(client, token, "rotating1", WRONG, "2001:db8:5::99") == 429
            assert await _attempt(client, token, "rotating2", WRONG, "2001:db8:5::99") == 429
            checked = asyncio.ensure_future(_attempt(client, token, SUPER, PASSWORD, "192.0.2.20"))
            await _until_pending(gw, 5)
        finally:
            gate.set()
            await asyncio.gather(*held)
        assert await checked == 200
        busy = _login_failures(gw, "busy")
        assert busy and busy[0].data["limit"] == "address"

    async def test_reserved_slots_admit_trusted_devices(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """When only the reserved slots are free, a stranger gets 429 busy and a known browser signs in."""
        gw = await make_gateway_server(
            upstream_engine.url, login_hash_workers=1, login_hash_queue=3, login_hash_reserved=2
        )
        known = await gw.client()
        assert (await post_login(known, SUPER, PASSWORD)).status == 303
        device = device_cookie(known)
        checks = gw.app[PASSWORD_CHECKS]
        gate = threading.Event()
        held = [asyncio.ensure_future(checks.run(gate.wait, 30.0, client=f"198.51.100.{i}")) for i in range(2)]
        try:
            await asyncio.sleep(0)
            stranger = await post_login(await gw.client(), SUPER, PASSWORD)
            assert (stranger.status, stranger.headers.get("Retry-After")) == (429, "1")
            browser = await gw.client()
            browser.session.cookie_jar.update_cookies({COOKIE_NAME: device}, browser.make_url("/"))
            signing_in = asyncio.ensure_future(post_login(browser, SUPER, PASSWORD))
            await _until_pending(gw, 3)
        finally:
            gate.set()
            await asyncio.gather(*held)
        assert (await signing_in).status == 303


class TestIPv6Prefix:
    async def test_ipv6_counted_per_64_ipv4_per_address(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """The per-address limit covers a whole IPv6 /64; the next /64 and other IPv4 addresses are not held."""
        gw = await make_gateway_server(upstream_engine.url, login_limit_per_address_per_hour=3, trusted_proxies=PROXY)
        client = await gw.client()
        token = await login_form_token(client)
        spread = [await _attempt(client, token, f"v6user{i}", WRONG, f"2001:db8:1:2::{i + 1:x}") for i in range(3)]
        assert spread == [401] * 3
        assert await _attempt(client, token, "v6user9", WRONG, "2001:db8:1:2:ffff::1") == 429
        assert await _attempt(client, token, "v6user9", WRONG, "2001:db8:1:3::1") == 401
        assert [await _attempt(client, token, f"v4user{i}", WRONG, "192.0.2.1") for i in range(4)] == [401] * 3 + [429]
        assert await _attempt(client, token, "v4user9", WRONG, "192.0.2.2") == 401

    async def test_growing_delays_cover_the_64(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """The per-(account, address) delays of an IPv6 client hold for every address of its /64."""
        gw = await make_gateway_server(upstream_engine.url, login_free_attempts=2, trusted_proxies=PROXY)
        client = await gw.client()
        token = await login_form_token(client)
        assert [await _attempt(client, token, SUPER, WRONG, f"2001:db8:7::{i + 1}") for i in range(2)] == [401] * 2
        assert await _attempt(client, token, SUPER, PASSWORD, "2001:db8:7::abcd") == 429
        assert await _attempt(client, token, SUPER, PASSWORD, "2001:db8:8::1") == 200


class TestFormCookieClearedAtSignIn:
    async def test_sign_in_deletes_the_form_cookie(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """The sign-in response deletes gw_form (same path and flags): the form's token is dead afterwards."""
        gw = await make_gateway_server(upstream_engine.url)
        client = await gw.client()
        token = await login_form_token(client)
        resp = await client.post(
            "/login", data={"username": SUPER, "password": PASSWORD, "csrf_token": token}, allow_redirects=False
        )
        assert resp.status == 303
        cleared = [c for c in resp.headers.getall("Set-Cookie") if c.startswith(f"{FORM_COOKIE_NAME}=")]
        assert len(cleared) == 1
        for attribute in ("Max-Age=0", "Path=/", "HttpOnly", "SameSite=Strict"):
            assert attribute in cleared[0]
        assert FORM_COOKIE_NAME not in {c.key for c in client.session.cookie_jar}
