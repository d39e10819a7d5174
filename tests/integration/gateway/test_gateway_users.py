"""Accounts (issue 16): one-time passwords that must be changed, Change password, ``next=`` on /login,
the Users API (add, role, disable, enable, remove, reset) with its audit records and session ends,
the last active super_admin, and the CLI's one-time passwords."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from admin_gateway.auth import accounts
from admin_gateway.auth.guards import USER_STORE
from admin_gateway.auth.sessions import SESSION_STORE
from admin_gateway.auth.users import UserStore
from tests.integration.gateway.harness import (
    ADMIN,
    PASSWORD,
    SUPER,
    GatewayServer,
    User,
    form_token_in,
    login_form_token,
    post_login,
)

NEW_PASSWORD = "a much better passphrase"
Client = TestClient[web.Request, web.Application]


def _store(gw: GatewayServer) -> UserStore:
    return UserStore(gw.settings.data_dir)


def _actions(gw: GatewayServer, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    return [(r.action, r.data) for r in gw.audit_records() if r.action.startswith(prefix)]


async def _sign_in(gw: GatewayServer, name: str, password: str) -> tuple[Client, Any]:
    client = await gw.client()
    resp = await post_login(client, name, password)
    return client, resp


async def _change_password(client: Client, current: str, new: str, again: str | None = None, **extra: str) -> Any:
    page = await client.get("/admin/password")
    assert page.status == 200, await page.text()
    form = {
        "current_password": current,
        "new_password": new,
        "new_password_again": new if again is None else again,
        "csrf_token": form_token_in(await page.text()),
        **extra,
    }
    return await client.post("/admin/password", data=form, allow_redirects=False)


async def _added(super_user: User, name: str, role: str = "admin") -> str:
    resp = await super_user.post("/api/admin/users", {"name": name, "role": role})
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["user"]["mustChangePassword"] is True
    password: str = body["password"]
    return password


class TestForcedPasswordChange:
    async def test_one_time_password_opens_only_the_password_page(self, gateway_server: GatewayServer) -> None:
        """A user added with a one-time password lands on Change password; pages redirect there, the API says 403."""
        alice = await gateway_server.login()
        password = await _added(alice, "carol", "super_admin")
        carol, resp = await _sign_in(gateway_server, "carol", password)
        assert resp.status == 303 and resp.headers["Location"] == "/admin/password"
        page = await carol.get("/admin/engine/jobs", allow_redirects=False)
        assert page.status == 303 and page.headers["Location"] == "/admin/password"
        api = await carol.get("/api/admin/engine/jobs")
        assert api.status == 403
        assert (await api.json())["code"] == "password_change_required"
        for path in ("/api/admin/config", "/openapi.json", "/api/admin/users"):  # any role's routes too
            assert (await carol.get(path)).status == 403, path
        changed = await _change_password(carol, password, NEW_PASSWORD)
        assert changed.status == 303 and changed.headers["Location"] == "/admin/engine/jobs"
        assert (await carol.get("/api/admin/engine/jobs")).status == 200
        assert _store(gateway_server).get("carol").must_change_password is False  # type: ignore[union-attr]
        changes = [d for _, d in _actions(gateway_server, "password_change")]
        assert changes[-1]["outcome"] == "accepted" and changes[-1]["forced"] is True

    async def test_the_first_admin_must_change_the_generated_password(self, tmp_path: Path) -> None:
        """ensure_admin (make run's first admin) marks its generated password as one to change."""
        store = UserStore(tmp_path)
        password = store.ensure_admin()
        assert password is not None
        assert store.get("admin").must_change_password is True  # type: ignore[union-attr]

    async def test_same_password_again_is_refused(self, gateway_server: GatewayServer) -> None:
        """A one-time password cannot be 'changed' to itself."""
        alice = await gateway_server.login()
        password = await _added(alice, "dave")
        dave, _ = await _sign_in(gateway_server, "dave", password)
        resp = await _change_password(dave, password, password)
        assert resp.status == 400
        assert "must differ" in await resp.text()


class TestChangePassword:
    async def test_change_ends_other_sessions_and_keeps_this_one(self, gateway_server: GatewayServer) -> None:
        """Changing your password ends your other sessions at once; the browser you changed it in stays signed in."""
        here = await gateway_server.login()
        elsewhere = await gateway_server.login()
        resp = await _change_password(here.client, PASSWORD, NEW_PASSWORD)
        assert resp.status == 303
        assert (await elsewhere.client.get("/api/admin/config")).status == 401
        assert (await here.client.get("/api/admin/config")).status == 200
        _, old = await _sign_in(gateway_server, SUPER, PASSWORD)
        assert old.status == 401
        _, new = await _sign_in(gateway_server, SUPER, NEW_PASSWORD)
        assert new.status == 303

    async def test_every_user_has_the_page(self, gateway_server: GatewayServer) -> None:
        """An admin (not super_admin) may change their password too."""
        bob = await gateway_server.login(ADMIN)
        assert (await bob.client.get("/admin/password")).status == 200
        assert (await _change_password(bob.client, PASSWORD, NEW_PASSWORD)).status == 303

    @pytest.mark.parametrize(
        ("current", "new", "again", "status", "text"),
        [
            ("wrong password!!", NEW_PASSWORD, None, 401, "current password is wrong"),
            (PASSWORD, NEW_PASSWORD, "something else entirely", 400, "differ"),
            (PASSWORD, "short", None, 400, "at least 12"),
        ],
    )
    async def test_refusals_keep_the_password(
        self, gateway_server: GatewayServer, current: str, new: str, again: str | None, status: int, text: str
    ) -> None:
        """A wrong current password, a mismatch or a too short one changes nothing and is recorded."""
        alice = await gateway_server.login()
        resp = await _change_password(alice.client, current, new, again)
        assert resp.status == status
        assert text in await resp.text()
        assert _store(gateway_server).verify(SUPER, PASSWORD) is not None
        assert _actions(gateway_server, "password_change")[-1][1]["outcome"] == "refused"

    async def test_without_csrf_token_is_refused(self, gateway_server: GatewayServer) -> None:
        """The form needs its CSRF token."""
        alice = await gateway_server.login()
        resp = await alice.client.post(
            "/admin/password",
            data={"current_password": PASSWORD, "new_password": NEW_PASSWORD, "new_password_again": NEW_PASSWORD},
            allow_redirects=False,
        )
        assert resp.status == 403
        assert _store(gateway_server).verify(SUPER, PASSWORD) is not None


class TestNext:
    async def test_a_job_link_signed_out_lands_on_the_job(self, gateway_server: GatewayServer) -> None:
        """Signed out, a job page redirects to /login?next=…; signing in there lands on the job."""
        client = await gateway_server.client()
        job_path = "/admin/engine/jobs/1234-abcd?tab=log"
        resp = await client.get(job_path, allow_redirects=False)
        assert resp.status == 303
        location = resp.headers["Location"]
        assert location.startswith("/login?next=")
        form = await client.get(location)
        html = await form.text()
        assert 'name="next" value="/admin/engine/jobs/1234-abcd?tab=log"' in html
        signed = await client.post(
            "/login",
            data={"username": SUPER, "password": PASSWORD, "csrf_token": form_token_in(html), "next": job_path},
            allow_redirects=False,
        )
        assert signed.status == 303 and signed.headers["Location"] == job_path

    @pytest.mark.parametrize(
        "target",
        [
            "//evil.example/x",
            "/\\evil.example",
            "https://evil.example/",
            "javascript:alert(1)",
            "/\t/evil.example",
            "admin/engine/jobs",
            "/%0a/x\n",
        ],
    )
    async def test_only_a_same_origin_path_is_followed(self, gateway_server: GatewayServer, target: str) -> None:
        """next= that is not a plain path of this site is ignored: the sign-in lands on the panel."""
        client = await gateway_server.client()
        token = await login_form_token(client)
        resp = await client.post(
            "/login",
            data={"username": SUPER, "password": PASSWORD, "csrf_token": token, "next": target},
            allow_redirects=False,
        )
        assert resp.status == 303 and resp.headers["Location"] == "/admin/engine/jobs"

    async def test_one_time_password_goes_through_the_password_page(self, gateway_server: GatewayServer) -> None:
        """With a one-time password, next= is kept for after the change."""
        alice = await gateway_server.login()
        password = await _added(alice, "erin", "super_admin")
        client = await gateway_server.client()
        token = await login_form_token(client)
        resp = await client.post(
            "/login",
            data={"username": "erin", "password": password, "csrf_token": token, "next": "/admin/audit"},
            allow_redirects=False,
        )
        assert resp.headers["Location"] == "/admin/password?next=/admin/audit"
        changed = await _change_password(client, password, NEW_PASSWORD, next="/admin/audit")
        assert changed.headers["Location"] == "/admin/audit"


class TestUsersApi:
    async def test_list_shows_role_last_sign_in_and_sessions(self, gateway_server: GatewayServer) -> None:
        """The list has every user with role, last sign-in and live sessions, and names the caller."""
        alice = await gateway_server.login()
        await gateway_server.login(ADMIN)
        await gateway_server.login(ADMIN)
        resp = await alice.client.get("/api/admin/users")
        body = await resp.json()
        users = {u["name"]: u for u in body["users"]}
        assert body["you"] == SUPER
        assert users[SUPER]["role"] == "super_admin" and users[ADMIN]["role"] == "admin"
        assert users[ADMIN]["sessions"] == 2 and users[SUPER]["sessions"] == 1
        assert users[ADMIN]["lastSignInAt"] is not None
        assert "hash" not in str(body)

    async def test_add_user_shows_password_once_and_audits(self, gateway_server: GatewayServer) -> None:
        """Add answers the one-time password; the name is taken afterwards; both steps are recorded."""
        alice = await gateway_server.login()
        password = await _added(alice, "frank")
        assert _store(gateway_server).verify("frank", password) is not None
        again = await alice.post("/api/admin/users", {"name": "frank", "role": "admin"})
        assert again.status == 409 and (await again.json())["code"] == "user_exists"
        actions = _actions(gateway_server, "user_add")
        assert [a for a, _ in actions] == ["user_add_requested", "user_add", "user_add_requested", "user_add"]
        assert actions[1][1]["outcome"] == "accepted" and actions[1][1]["targetUser"] == "frank"
        assert actions[3][1]["outcome"] == "refused"
        assert password not in str([r.data for r in gateway_server.audit_records()])

    @pytest.mark.parametrize(
        ("verb", "body", "check"),
        [
            ("disable", {}, lambda rec: rec is not None and rec.disabled),
            ("remove", {}, lambda rec: rec is None),
            ("role", {"role": "super_admin"}, lambda rec: rec is not None and rec.role == "super_admin"),
            ("reset-password", {}, lambda rec: rec is not None and rec.must_change_password),
        ],
    )
    async def test_change_ends_the_users_sessions_at_once(
        self, gateway_server: GatewayServer, verb: str, body: dict[str, str], check: Any
    ) -> None:
        """Disable, remove, a role change and a reset end the user's sessions at once, and are recorded."""
        alice = await gateway_server.login()
        bob = await gateway_server.login(ADMIN)
        assert (await bob.client.get("/api/admin/config")).status == 200
        resp = await alice.post(f"/api/admin/users/{ADMIN}/{verb}", body)
        assert resp.status == 200, await resp.text()
        assert check(_store(gateway_server).get(ADMIN))
        # Deleted from the backend at once, before bob comes back (with Redis: every gateway's; see _redis tests).
        stored = await gateway_server.app[SESSION_STORE].backend.scan()
        assert [key for key, rec in stored if rec.data.get("user") == ADMIN] == []
        assert (await bob.client.get("/api/admin/config")).status == 401
        users = {u["name"]: u for u in (await (await alice.client.get("/api/admin/users")).json())["users"]}
        assert ADMIN not in users or users[ADMIN]["sessions"] == 0
        records = [d for a, d in _actions(gateway_server, "user_") if not a.endswith("_requested")]
        assert records[-1]["outcome"] == "accepted" and records[-1]["targetUser"] == ADMIN

    async def test_disabled_user_cannot_sign_in_until_enabled(self, gateway_server: GatewayServer) -> None:
        """A disabled user's right password is refused ("disabled"); enabled again, it works."""
        alice = await gateway_server.login()
        assert (await alice.post(f"/api/admin/users/{ADMIN}/disable")).status == 200
        _, refused = await _sign_in(gateway_server, ADMIN, PASSWORD)
        assert refused.status == 401 and "disabled" in await refused.text()
        assert (await alice.post(f"/api/admin/users/{ADMIN}/enable")).status == 200
        _, signed = await _sign_in(gateway_server, ADMIN, PASSWORD)
        assert signed.status == 303

    @pytest.mark.parametrize("body", [b"\n\n", b" ", b"null"])
    async def test_body_that_is_not_a_json_object_is_refused(self, gateway_server: GatewayServer, body: bytes) -> None:
        """A body-less change given whitespace or non-object JSON is 400 invalid_json and changes nothing."""
        alice = await gateway_server.login()
        assert (await alice.post(f"/api/admin/users/{ADMIN}/disable")).status == 200
        headers = {**alice.headers(), "Content-Type": "application/json"}
        resp = await alice.client.post(f"/api/admin/users/{ADMIN}/enable", data=body, headers=headers)
        assert (resp.status, (await resp.json())["code"]) == (400, "invalid_json")
        assert _store(gateway_server).get(ADMIN).disabled is True  # type: ignore[union-attr]

    async def test_reset_password_gives_a_new_one_time_password(self, gateway_server: GatewayServer) -> None:
        """After a reset the old password fails and the new one must be changed first."""
        alice = await gateway_server.login()
        resp = await alice.post(f"/api/admin/users/{ADMIN}/reset-password")
        password = (await resp.json())["password"]
        _, old = await _sign_in(gateway_server, ADMIN, PASSWORD)
        assert old.status == 401
        _, new = await _sign_in(gateway_server, ADMIN, password)
        assert new.status == 303 and new.headers["Location"] == "/admin/password"

    async def test_own_account_is_not_changed_here(self, gateway_server: GatewayServer) -> None:
        """A super_admin cannot disable, remove, demote or reset themselves through the Users API."""
        alice = await gateway_server.login()
        for verb, body in (("disable", {}), ("remove", {}), ("role", {"role": "admin"}), ("reset-password", {})):
            resp = await alice.post(f"/api/admin/users/{SUPER}/{verb}", body)
            assert resp.status == 400, verb
        assert (await alice.client.get("/api/admin/config")).status == 200

    async def test_unknown_user_is_404_and_admin_is_refused(self, gateway_server: GatewayServer) -> None:
        """An unknown name is 404; an admin gets 401 forbidden from the Users API."""
        alice = await gateway_server.login()
        assert (await alice.post("/api/admin/users/nobody/disable")).status == 404
        bob = await gateway_server.login(ADMIN)
        assert (await bob.client.get("/api/admin/users")).status == 401
        assert (await bob.post("/api/admin/users", {"name": "x1", "role": "super_admin"})).status == 401

    async def test_changes_need_csrf(self, gateway_server: GatewayServer) -> None:
        """Every change needs the CSRF token."""
        alice = await gateway_server.login()
        resp = await alice.client.post(f"/api/admin/users/{ADMIN}/disable", json={})
        assert resp.status == 403 and (await resp.json())["code"] == "csrf"
        assert _store(gateway_server).get(ADMIN).disabled is False  # type: ignore[union-attr]


class TestLastSuperAdmin:
    def test_store_refuses_to_lose_the_last_active_super_admin(self, tmp_path: Path) -> None:
        """Removing, disabling or demoting the last active super_admin is refused; with another one it is not."""
        store = UserStore(tmp_path)
        store.add("root1", "super_admin", PASSWORD)
        changes: list[Callable[[], object]] = [
            lambda: accounts.remove_user(store, "root1"),
            lambda: accounts.set_disabled(store, "root1", True),
            lambda: accounts.set_role(store, "root1", "admin"),
        ]
        for change in changes:
            with pytest.raises(accounts.LastSuperAdmin):
                change()
        store.add("root2", "super_admin", PASSWORD)
        accounts.set_disabled(store, "root2", True)  # a disabled super_admin does not count
        with pytest.raises(accounts.LastSuperAdmin):
            accounts.set_role(store, "root1", "admin")
        accounts.set_disabled(store, "root2", False)
        accounts.set_role(store, "root1", "admin")
        assert store.get("root1").role == "admin"  # type: ignore[union-attr]

    async def test_two_super_admins_disabling_each_other_leave_one(self, gateway_server: GatewayServer) -> None:
        """Two super_admins disabling each other at the same moment: one change wins, one super_admin stays."""
        await asyncio.to_thread(gateway_server.app[USER_STORE].add, "carol", "super_admin", PASSWORD)
        alice = await gateway_server.login()
        carol = await gateway_server.login("carol")
        answers = await asyncio.gather(
            alice.post("/api/admin/users/carol/disable"), carol.post(f"/api/admin/users/{SUPER}/disable")
        )
        statuses = sorted(r.status for r in answers)
        assert statuses[0] == 200 and statuses[1] in (401, 409), statuses
        assert accounts.active_super_admins(_store(gateway_server).load()) == 1
        refused = [await r.json() for r in answers if r.status == 409]
        assert all(body["code"] == "last_super_admin" for body in refused)

    def test_cli_keeps_the_last_super_admin(self, tmp_path: Path) -> None:
        """The CLI refuses to remove the last active super_admin too."""
        UserStore(tmp_path).add("root1", "super_admin", PASSWORD)
        done = _cli("users", "remove", "root1", "--data-dir", str(tmp_path))
        assert done.returncode == 1 and "last active super_admin" in done.stderr
        assert UserStore(tmp_path).get("root1") is not None


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "admin_gateway", *args], capture_output=True, text=True, timeout=60, check=False
    )


class TestCliOneTimePasswords:
    def test_generated_password_must_be_changed(self, tmp_path: Path) -> None:
        """users add/set-password --generate-password print a one-time password marked to be changed."""
        added = _cli("users", "add", "gina", "--role", "admin", "--generate-password", "--data-dir", str(tmp_path))
        assert added.returncode == 0, added.stderr
        password = added.stdout.split("one-time password: ")[1].split()[0]
        store = UserStore(tmp_path)
        rec = store.verify("gina", password)
        assert rec is not None and rec.must_change_password
        reset = _cli("users", "set-password", "gina", "--generate-password", "--data-dir", str(tmp_path))
        assert reset.returncode == 0, reset.stderr
        again = reset.stdout.split("one-time password for gina: ")[1].split()[0]
        assert UserStore(tmp_path).verify("gina", again) is not None
        assert UserStore(tmp_path).get("gina").must_change_password  # type: ignore[union-attr]
