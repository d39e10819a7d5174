"""Login throttling under concurrency, device cookies, growing delays and a login flood (issue 11 points 2, 3, 5).

Every test drives the real gateway in front of the real engine, both on
ephemeral ports. Bursts are sent with ``asyncio.gather`` so that their
password checks overlap, as an attacker's would.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from admin_gateway.audit.trail import AUDIT
from admin_gateway.auth.device_cookies import COOKIE_NAME, LIFETIME
from admin_gateway.auth.password_checks import PASSWORD_CHECKS
from tests.integration.gateway.harness import (
    _CSRF_FIELD,
    ADMIN,
    PASSWORD,
    PROXY,
    SUPER,
    WRONG,
    GatewayServer,
    LoginAnswer,
    MakeGatewayServer,
    UpstreamEngine,
    attempt_login,
    device_cookie,
    login_form_token,
    post_login,
)


async def _burst(gw: GatewayServer, attempts: list[tuple[str, str | None]], password: str = WRONG) -> list[LoginAnswer]:
    """Send every (username, address) attempt at once from one client; return the answers in order."""
    client = await gw.client()
    token = await login_form_token(client)
    return list(
        await asyncio.gather(*(attempt_login(client, token, name, password, address) for name, address in attempts))
    )


def _statuses(answers: list[LoginAnswer]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for a in answers:
        counts[a.status] = counts.get(a.status, 0) + 1
    return counts


async def _throttled_records(gw: GatewayServer, reason: str) -> list[dict[str, Any]]:
    """The refusals with ``reason`` on the record, a coalesced summary standing for its ``repeated`` refusals."""
    await gw.app[AUDIT].flush_windows(everything=True)
    return [
        r.data
        for r in gw.audit_records()
        if r.action == "login_failed" and r.data.get("reason") == reason
        for _ in range(int(r.data.get("repeated", 1)))
    ]


async def _with_device(gw: GatewayServer, value: str) -> TestClient[web.Request, web.Application]:
    """A fresh browser (no session) holding only the device cookie ``value``."""
    client = await gw.client()
    client.session.cookie_jar.update_cookies({COOKIE_NAME: value}, client.make_url("/"))
    return client


class TestParallelBursts:
    async def test_burst_over_the_address_limit(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """Parallel wrong logins from one address: every attempt past the per-address limit gets 429."""
        gw = await make_gateway_server(
            upstream_engine.url, login_limit_per_address_per_hour=12, login_hash_queue=64, login_hash_per_address=64
        )
        answers = await _burst(gw, [(f"user{i}", None) for i in range(30)])
        assert _statuses(answers) == {401: 12, 429: 18}
        assert all(
            a.retry_after and int(a.retry_after) > 0 and a.code == "throttled" for a in answers if a.status == 429
        )
        assert [r["limit"] for r in (await _throttled_records(gw, "throttled"))] == ["address"] * 18

    async def test_burst_over_the_account_limit(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """Parallel wrong logins on one account from many addresses: every one past the account limit gets 429."""
        gw = await make_gateway_server(
            upstream_engine.url, login_limit_per_hour=8, login_hash_queue=64, trusted_proxies=PROXY
        )
        answers = await _burst(gw, [(SUPER, f"198.51.100.{i}") for i in range(20)])
        assert _statuses(answers) == {401: 8, 429: 12}
        assert {r["limit"] for r in (await _throttled_records(gw, "throttled"))} == {"account"}

    async def test_burst_on_one_account_from_one_address(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """Parallel wrong logins on one account from one address: only the free attempts are checked."""
        gw = await make_gateway_server(upstream_engine.url, login_free_attempts=3, login_hash_queue=64)
        answers = await _burst(gw, [(SUPER, None)] * 10)
        assert _statuses(answers) == {401: 3, 429: 7}
        assert {r["limit"] for r in (await _throttled_records(gw, "throttled"))} == {"account_address"}


class TestGrowingDelays:
    async def test_delays_grow_per_account_and_address(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """After the free attempts each failure doubles the wait, for that account from that address only."""
        gw = await make_gateway_server(upstream_engine.url, login_free_attempts=2, trusted_proxies=PROXY)
        client = await gw.client()
        token = await login_form_token(client)
        here, elsewhere = "203.0.113.1", "203.0.113.2"
        assert [(await attempt_login(client, token, SUPER, WRONG, here)).status for _ in range(2)] == [401, 401]
        waits = []
        for _ in range(3):
            refused = await attempt_login(client, token, SUPER, PASSWORD, here)
            assert refused.status == 429 and refused.retry_after is not None
            waits.append(int(refused.retry_after))
            gw.clock.advance(int(refused.retry_after))
            assert (await attempt_login(client, token, SUPER, WRONG, here)).status == 401
        assert waits == [1, 2, 4]
        assert (await attempt_login(client, token, SUPER, WRONG, elsewhere)).status == 401
        assert (await attempt_login(client, token, ADMIN, WRONG, here)).status == 401
        gw.clock.advance(8)
        assert (await post_login(await gw.client(), SUPER, PASSWORD, **{"X-Forwarded-For": here})).status == 303
        # The success ended the streak: the free attempts are free again.
        assert [(await attempt_login(client, token, SUPER, WRONG, here)).status for _ in range(2)] == [401, 401]


class TestDeviceCookies:
    async def test_a_known_browser_signs_in_after_the_account_budget_is_burned(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """After an attacker used up the account limit, a browser that signed in before still gets in."""
        gw = await make_gateway_server(upstream_engine.url, login_limit_per_hour=3, trusted_proxies=PROXY)
        earlier = await gw.client()
        assert (await post_login(earlier, SUPER, PASSWORD, **{"X-Forwarded-For": "192.0.2.10"})).status == 303
        device = device_cookie(earlier)
        attack = await _burst(gw, [(SUPER, f"198.51.100.{i}") for i in range(6)])
        assert _statuses(attack) == {401: 3, 429: 3}

        # From yet another address: a new browser is held by the account limit, the known one is not.
        stranger = await post_login(await gw.client(), SUPER, PASSWORD, **{"X-Forwarded-For": "192.0.2.99"})
        assert stranger.status == 429
        known = await _with_device(gw, device)
        assert (await post_login(known, SUPER, PASSWORD, **{"X-Forwarded-For": "192.0.2.99"})).status == 303
        records = [r for r in gw.audit_records() if r.action == "login_succeeded"]
        assert records[-1].data.get("trustedDevice") is True

    async def test_device_cookie_is_bound_to_its_account(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """A device cookie earned by bob does not let that browser past alice's limit."""
        gw = await make_gateway_server(upstream_engine.url, login_limit_per_hour=2, trusted_proxies=PROXY)
        bob = await gw.client()
        assert (await post_login(bob, ADMIN, PASSWORD)).status == 303
        await _burst(gw, [(SUPER, f"198.51.100.{i}") for i in range(2)])
        browser = await _with_device(gw, device_cookie(bob))
        assert (await post_login(browser, SUPER, PASSWORD)).status == 429

    async def test_a_failing_device_is_locked(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """A device cookie that keeps failing is refused in turn; other browsers are not affected."""
        gw = await make_gateway_server(upstream_engine.url, login_limit_per_device_per_hour=2, trusted_proxies=PROXY)
        first = await gw.client()
        assert (await post_login(first, SUPER, PASSWORD)).status == 303
        known = await _with_device(gw, device_cookie(first))
        token = await login_form_token(known)
        assert [(await attempt_login(known, token, SUPER, WRONG, f"192.0.2.{i}")).status for i in range(2)] == [
            401,
            401,
        ]
        locked = await attempt_login(known, token, SUPER, PASSWORD, "192.0.2.50")
        assert (locked.status, locked.code) == (429, "throttled")
        assert (await _throttled_records(gw, "throttled"))[-1]["limit"] == "device"
        assert (await post_login(await gw.client(), SUPER, PASSWORD)).status == 303

    async def test_cookie_attributes(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """The device cookie is HttpOnly, SameSite=Strict, expiring; over HTTPS it is __Host- and Secure."""
        gw = await make_gateway_server(upstream_engine.url, trusted_proxies=PROXY)
        plain = await post_login(await gw.client(), SUPER, PASSWORD)
        cookie = next(c for c in plain.headers.getall("Set-Cookie") if c.startswith(f"{COOKIE_NAME}="))
        for attribute in ("HttpOnly", "SameSite=Strict", f"Max-Age={LIFETIME}", "Path=/"):
            assert attribute in cookie
        assert "Secure" not in cookie and "Domain" not in cookie
        # Over HTTPS (said by the trusted proxy) the form's cookies are Secure: the client sends them by hand.
        client, https = await gw.client(), {"X-Forwarded-Proto": "https"}
        form = await client.get("/login", headers=https)
        sent = "; ".join(f"{m.key}={m.value}" for m in form.cookies.values())
        token = _CSRF_FIELD.search(await form.text())
        assert token is not None
        tls = await client.post(
            "/login",
            data={"username": SUPER, "password": PASSWORD, "csrf_token": token.group(1)},
            headers={**https, "Cookie": sent},
            allow_redirects=False,
        )
        assert tls.status == 303
        secure = next(c for c in tls.headers.getall("Set-Cookie") if c.startswith("__Host-gw_device="))
        assert "Secure" in secure and "HttpOnly" in secure


class TestPasswordCheckQueue:
    async def test_full_queue_answers_429_at_once(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """With every check thread busy and the queue full, a sign-in gets 429 busy at once, form and JSON alike."""
        gw = await make_gateway_server(
            upstream_engine.url, login_hash_workers=1, login_hash_queue=1, login_hash_reserved=0
        )
        checks = gw.app[PASSWORD_CHECKS]
        gate = threading.Event()
        held = [asyncio.ensure_future(checks.run(gate.wait, 30.0)) for _ in range(checks.capacity)]
        try:
            client = await gw.client()
            page = await post_login(client, SUPER, PASSWORD)
            assert (page.status, page.headers.get("Retry-After")) == (429, "1")
            assert "Try again in a moment" in await page.text()
            answer = await attempt_login(client, await login_form_token(client), SUPER, PASSWORD)
            assert (answer.status, answer.code, answer.retry_after) == (429, "throttled", "1")
        finally:
            gate.set()
            await asyncio.gather(*held)
        assert [r.get("limit") for r in (await _throttled_records(gw, "busy"))] == [None, None]
        # Nothing was checked, so nothing was counted: the right password gets in now.
        assert (await post_login(await gw.client(), SUPER, PASSWORD)).status == 303


class TestLoginFlood:
    async def test_signed_in_create_during_a_flood(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """While a login flood saturates the password checks, a signed-in create completes promptly."""
        gw = await make_gateway_server(
            upstream_engine.url,
            login_hash_workers=1,
            login_hash_queue=4,
            login_hash_reserved=0,
            login_limit_per_address_per_hour=100_000,
        )
        alice = await gw.login()
        flooder = await gw.client()
        token = await login_form_token(flooder)
        flood = [asyncio.ensure_future(attempt_login(flooder, token, f"flood{i}", WRONG)) for i in range(300)]
        first = await next(asyncio.as_completed(flood))  # the flood is under way
        started = time.monotonic()
        job = await alice.create()
        took = time.monotonic() - started
        answers = [first, *await asyncio.gather(*flood)]
        assert job["status"] == "READY"
        assert took < 5.0, f"create took {took:.2f}s during the flood"
        busy = [a for a in answers if a.status == 429]
        assert len(busy) >= 200, _statuses(answers)
        assert all(a.retry_after == "1" and a.code == "throttled" for a in busy)
        assert max(a.seconds for a in busy) < 5.0
