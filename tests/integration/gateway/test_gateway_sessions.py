"""Login, sessions (rotation, logout, idle and absolute expiry) and throttling (audit records: test_gateway_audit)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from admin_gateway.auth.guards import USER_STORE
from admin_gateway.auth.session_backends import MemorySessionBackend
from admin_gateway.auth.sessions import SECURE_COOKIE_NAME, SECURE_FORM_COOKIE_NAME, SESSION_STORE
from tests.integration.gateway.harness import (
    ADMIN,
    PASSWORD,
    SUPER,
    GatewayServer,
    MakeGatewayServer,
    UpstreamEngine,
    form_token_in,
    login_form_token,
    post_login,
    session_cookie,
)


async def _signed_in(client: TestClient[web.Request, web.Application]) -> bool:
    resp = await client.get("/api/admin/config")
    assert resp.status in (200, 401), await resp.text()
    return resp.status == 200


def _with_cookie(client: TestClient[web.Request, web.Application], value: str) -> None:
    client.session.cookie_jar.update_cookies({"gw_session": value}, client.make_url("/"))


class TestLogin:
    async def test_login_redirects_to_the_panel(self, gateway_server: GatewayServer) -> None:
        """A correct login answers 303 to /admin/engine/jobs and opens a session."""
        client = await gateway_server.client()
        resp = await post_login(client, SUPER, PASSWORD)
        assert resp.status == 303
        assert resp.headers["Location"] == "/admin/engine/jobs"
        assert await _signed_in(client)

    async def test_wrong_user_and_wrong_password_look_the_same(self, gateway_server: GatewayServer) -> None:
        """An unknown user and a wrong password get the same status and the same page."""
        pages = []
        for username, password in (("nobody", PASSWORD), (SUPER, "wrong password!!")):
            client = await gateway_server.client()
            resp = await post_login(client, username, password)
            assert resp.status == 401
            # Only the per-session CSRF token and the name typed back may differ.
            text = re.sub(r'(value|content)="[^"]*"', r'\1=""', await resp.text())
            pages.append(text)
            assert not await _signed_in(client)
        assert pages[0] == pages[1]
        assert "Invalid username or password." in pages[0]

    async def test_login_page_escapes_the_typed_name(self, gateway_server: GatewayServer) -> None:
        """The name typed into a failed login is shown back escaped, never as markup."""
        client = await gateway_server.client()
        resp = await post_login(client, '"><script>alert(1)</script>', PASSWORD)
        text = await resp.text()
        assert "<script>alert(1)</script>" not in text
        assert "&lt;script&gt;" in text

    async def test_json_login(self, gateway_server: GatewayServer) -> None:
        """A client that accepts only JSON gets JSON answers: 200 with the CSRF token, or 401."""
        client = await gateway_server.client()
        bad = await post_login(client, SUPER, "wrong password!!", Accept="application/json")
        assert bad.status == 401
        assert (await bad.json())["code"] == "unauthorized"
        good = await post_login(client, SUPER, PASSWORD, Accept="application/json")
        assert good.status == 200
        body = await good.json()
        assert body["user"] == SUPER and body["role"] == "super_admin" and body["csrfToken"]

    async def test_signed_in_user_skips_the_form(self, gateway_server: GatewayServer) -> None:
        """GET /login with a live session goes straight to the panel."""
        user = await gateway_server.login()
        resp = await user.client.get("/login", allow_redirects=False)
        assert resp.status == 303
        assert resp.headers["Location"] == "/admin/engine/jobs"

    async def test_rehash_on_login_with_outdated_parameters(self, gateway_server: GatewayServer) -> None:
        """A password stored with weaker argon2 parameters is rehashed with the current ones at login."""
        from argon2 import PasswordHasher

        store = gateway_server.app[USER_STORE]
        store.recheck = 0.0  # see the other store's write at once
        weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
        from admin_gateway.auth.users import UserStore

        UserStore(store.data_dir, hasher=weak).add("carol", "super_admin", PASSWORD)
        assert "m=8192" in store.get("carol").password_hash  # type: ignore[union-attr]
        await gateway_server.login("carol")
        rehashed = store.get("carol")
        assert rehashed is not None and "m=65536" in rehashed.password_hash
        await gateway_server.login("carol")  # the new hash verifies too


def _set_cookie(resp: Any, name: str) -> str:
    """The one ``Set-Cookie`` header of ``resp`` that sets ``name`` (a sign-in also sets the device cookie)."""
    [cookie] = [c for c in resp.headers.getall("Set-Cookie", []) if c.startswith(name + "=")]
    return str(cookie)


class TestSessionLifecycle:
    async def test_session_id_changes_at_login(self, gateway_server: GatewayServer) -> None:
        """A session id planted before login (fixation) is replaced by a new one and never signed in."""
        client = await gateway_server.client()
        token = await login_form_token(client)
        assert session_cookie(client) is None  # the form opens no session
        planted = "planted-by-an-attacker-0123456789"
        _with_cookie(client, planted)
        resp = await client.post(
            "/login", data={"username": SUPER, "password": PASSWORD, "csrf_token": token}, allow_redirects=False
        )
        assert resp.status == 303
        after = session_cookie(client)
        assert after and after != planted
        other = await gateway_server.client()
        _with_cookie(other, planted)
        assert not await _signed_in(other)

    async def test_cookie_attributes(self, gateway_server: GatewayServer) -> None:
        """Session and form cookies are HttpOnly, SameSite=Strict, Path=/ (plain HTTP: no Secure, no __Host-)."""
        client = await gateway_server.client()
        form = (await client.get("/login")).headers["Set-Cookie"]
        resp = await client.post(
            "/login",
            data={"username": SUPER, "password": PASSWORD, "csrf_token": await login_form_token(client)},
            allow_redirects=False,
        )
        session = _set_cookie(resp, "gw_session")
        assert form.startswith("gw_form=")
        for cookie in (form, session):
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
            assert "Secure" not in cookie and "Max-Age" not in cookie and "Domain" not in cookie

    async def test_https_behind_a_trusted_proxy_uses_host_prefix(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """Over HTTPS (a trusted proxy says so) the cookies are ``__Host-``, Secure; an untrusted peer can't say so."""
        trusting = await make_gateway_server(upstream_engine.url, trusted_proxies=("127.0.0.1",))
        client = await trusting.client()
        https = {"X-Forwarded-Proto": "https"}
        resp = await client.get("/login", headers=https)
        form = resp.headers["Set-Cookie"]
        assert form.startswith(SECURE_FORM_COOKIE_NAME + "=")
        assert "Secure" in form and "Path=/" in form and "Domain" not in form
        assert resp.headers["Strict-Transport-Security"]
        token = form_token_in(await resp.text())
        nonce = form.split(";")[0]
        resp = await client.post(
            "/login",
            data={"username": SUPER, "password": PASSWORD, "csrf_token": token},
            headers={**https, "Cookie": nonce},
            allow_redirects=False,
        )
        assert resp.status == 303, await resp.text()
        cookie = _set_cookie(resp, SECURE_COOKIE_NAME)
        assert "Secure" in cookie and "Path=/" in cookie and "Domain" not in cookie
        untrusting = await make_gateway_server(upstream_engine.url)
        client = await untrusting.client()
        resp = await client.get("/login", headers=https)
        assert resp.headers["Set-Cookie"].startswith("gw_form=")

    async def test_logout_kills_a_copied_cookie(self, gateway_server: GatewayServer) -> None:
        """After POST /logout the same cookie, replayed from another client, is refused."""
        user = await gateway_server.login()
        stolen = session_cookie(user.client)
        assert stolen
        thief = await gateway_server.client()
        _with_cookie(thief, stolen)
        assert await _signed_in(thief)
        resp = await user.client.post("/logout", data={"csrf_token": user.csrf}, allow_redirects=False)
        assert resp.status == 303
        assert resp.headers["Location"] == "/login"
        assert not await _signed_in(thief)
        assert not await _signed_in(user.client)

    async def test_idle_timeout(self, gateway_server: GatewayServer) -> None:
        """A session unused for the idle timeout (30 min) is dead; activity keeps it alive until then."""
        user = await gateway_server.login()
        gateway_server.clock.advance(1700)
        assert await _signed_in(user.client)
        gateway_server.clock.advance(1700)  # 1700 s since the last use: still alive
        assert await _signed_in(user.client)
        gateway_server.clock.advance(1800)
        assert not await _signed_in(user.client)

    async def test_absolute_timeout(self, gateway_server: GatewayServer) -> None:
        """A session in constant use still ends 12 hours after login."""
        user = await gateway_server.login()
        for _ in range(int(43200 / 1500) - 1):
            gateway_server.clock.advance(1500)
            assert await _signed_in(user.client)
        gateway_server.clock.advance(43200 - 1500 * (int(43200 / 1500) - 1))
        assert not await _signed_in(user.client)

    async def test_configured_timeouts(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """Idle and absolute lifetimes come from the settings."""
        gw = await make_gateway_server(upstream_engine.url, idle_timeout=60.0, absolute_timeout=150.0)
        user = await gw.login()
        gw.clock.advance(59)
        assert await _signed_in(user.client)
        gw.clock.advance(59)
        assert await _signed_in(user.client)
        gw.clock.advance(59)  # 177 s after login: past the absolute lifetime
        assert not await _signed_in(user.client)

    async def test_password_change_and_removal_end_sessions(self, gateway_server: GatewayServer) -> None:
        """Changing a user's password or removing the user ends their open sessions at once."""
        store = gateway_server.app[USER_STORE]
        sessions = gateway_server.app[SESSION_STORE].backend
        alice = await gateway_server.login(SUPER)
        bob = await gateway_server.login(ADMIN)
        assert isinstance(sessions, MemorySessionBackend)
        held = len(sessions)
        store.set_password(SUPER, "another long password")
        assert not await _signed_in(alice.client)
        assert len(sessions) == held - 1  # deleted on the server, not only refused
        store.remove(ADMIN)
        assert not await _signed_in(bob.client)
        assert len(sessions) == held - 2
        await gateway_server.login(SUPER, "another long password")

    async def test_a_recreated_name_does_not_revive_old_sessions(self, gateway_server: GatewayServer) -> None:
        """A user removed and created again under the same name does not sign in the removed user's cookie."""
        store = gateway_server.app[USER_STORE]
        bob = await gateway_server.login(ADMIN)
        store.remove(ADMIN)  # bob's cookie is not used until the name exists again
        store.add(ADMIN, "super_admin", "a different long password")
        assert not await _signed_in(bob.client)


class TestThrottling:
    async def test_account_is_throttled_after_too_many_failures(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """After the per-account limit, even the right password gets 429 with Retry-After, until the hour passes."""
        gw = await make_gateway_server(upstream_engine.url, login_limit_per_hour=3)
        for _ in range(3):
            resp = await post_login(await gw.client(), SUPER, "wrong password!!")
            assert resp.status == 401
        client = await gw.client()
        resp = await post_login(client, SUPER, PASSWORD)
        assert resp.status == 429
        assert 3500 <= int(resp.headers["Retry-After"]) <= 3600
        assert not await _signed_in(client)
        json_resp = await post_login(client, SUPER.upper(), PASSWORD, Accept="application/json")
        assert json_resp.status == 429
        assert (await json_resp.json())["code"] == "throttled"
        other = await post_login(await gw.client(), ADMIN, PASSWORD)
        assert other.status == 303  # another account is not affected
        gw.clock.advance(3601)
        assert (await post_login(client, SUPER, PASSWORD)).status == 303

    async def test_address_is_throttled_across_accounts(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """Failures on many account names from one address hit the per-address limit."""
        gw = await make_gateway_server(upstream_engine.url, login_limit_per_address_per_hour=4)
        for name in ("u1", "u2", "u3", "u4"):
            assert (await post_login(await gw.client(), name, "wrong password!!")).status == 401
        resp = await post_login(await gw.client(), SUPER, PASSWORD)
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) > 0

    async def test_default_limit_is_100_per_account(self, gateway_server: GatewayServer) -> None:
        """The default per-account limit is 100 failures an hour."""
        assert gateway_server.settings.login_limit_per_hour == 100
