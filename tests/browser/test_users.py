"""Accounts in a real Chromium: the Users page, one-time passwords, Change password, ``next=``, an old tab.

One stack per test (users change): an engine and a SAFE_MODE-off gateway
``open`` holding alice (:data:`USER`, super_admin) and bob (super_admin).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from tests.browser.browsing import Pages, login
from tests.browser.test_breakglass import SECOND, add_super_admin
from tests.browser.test_panel import expect
from tests.e2e.harness import PASSWORD, USER, Stack, StackFactory

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

NEW_PASSWORD = "my own long passphrase"


def _stack(make_stack: StackFactory) -> Stack:
    stack = make_stack(gateways={"open": False})
    add_super_admin(stack, "open")
    return stack


def _user_row(page: Page, name: str) -> Locator:
    return page.locator(f'[data-testid="user-row"][data-user="{name}"]')


def _sign_in(page: Page, base: str, user: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.locator("#username").fill(user)
    page.locator("#password").fill(password)
    page.get_by_test_id("login-submit").click()


def _change_password(page: Page, current: str, new: str) -> None:
    page.locator("#current-password").fill(current)
    page.locator("#new-password").fill(new)
    page.locator("#new-password-again").fill(new)
    page.get_by_test_id("password-submit").click()


def _add_user(page: Page, base: str, name: str, role: str) -> str:
    page.goto(f"{base}/admin/users")
    page.get_by_test_id("add-user-button").click()
    dialog = page.get_by_test_id("add-user-dialog")
    dialog.get_by_test_id("add-user-name").fill(name)
    dialog.get_by_test_id("add-user-role").select_option(role)
    dialog.get_by_test_id("add-user-submit").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_test_id("one-time-user")).to_have_text(name)
    password = page.get_by_test_id("one-time-value").inner_text()
    assert len(password) >= 20
    return password


def _confirm(page: Page, name: str, action: str) -> None:
    _user_row(page, name).get_by_test_id(f"user-action-{action}").click()
    dialog = page.get_by_test_id("user-confirm-dialog")
    dialog.get_by_test_id("user-confirm-submit").click()
    expect(dialog).to_be_hidden()


class TestUsersPage:
    def test_added_user_changes_the_one_time_password_first(self, make_stack: StackFactory, open_page: Pages) -> None:
        """Add user shows a one-time password once; its first sign-in lands on Change password, then the panel."""
        stack = _stack(make_stack)
        base = stack.gateways["open"].url
        alice: Page = open_page()
        login(alice, base)
        expect(alice.get_by_test_id("nav-users")).to_be_visible()
        password = _add_user(alice, base, "carol", "super_admin")
        expect(_user_row(alice, "carol").get_by_test_id("user-state")).to_have_text("must change password")
        alice.get_by_test_id("one-time-dismiss").click()
        expect(alice.get_by_test_id("one-time-password")).to_be_hidden()

        carol: Page = open_page()
        _sign_in(carol, base, "carol", password)
        carol.wait_for_url(f"{base}/admin/password")
        expect(carol.get_by_test_id("password-forced")).to_be_visible()
        carol.goto(f"{base}/admin/engine/jobs")  # any other page sends her back
        carol.wait_for_url(f"{base}/admin/password")
        _change_password(carol, password, NEW_PASSWORD)
        carol.wait_for_url(f"{base}/admin/engine/jobs")
        alice.reload()
        expect(_user_row(alice, "carol").get_by_test_id("user-state")).to_have_text("active")
        expect(_user_row(alice, "carol").get_by_test_id("user-sessions")).to_have_text("1")

    def test_disable_role_reset_remove_end_the_users_sessions(self, make_stack: StackFactory, open_page: Pages) -> None:
        """Each change on the page takes effect at once: bob's open page is signed out; the list follows."""
        stack = _stack(make_stack)
        base = stack.gateways["open"].url
        alice: Page = open_page()
        login(alice, base)
        bob: Page = open_page()
        login(bob, base, user=SECOND)
        open_page.console(bob).expect_failed_resource(r"/login$")  # the disabled account's sign-in: 401
        alice.goto(f"{base}/admin/users")
        expect(_user_row(alice, SECOND).get_by_test_id("user-sessions")).to_have_text("1")
        expect(_user_row(alice, "alice").get_by_test_id("user-action-disable")).to_have_count(0)  # never yourself

        _confirm(alice, SECOND, "disable")
        expect(_user_row(alice, SECOND).get_by_test_id("user-state")).to_have_text("disabled")
        expect(_user_row(alice, SECOND).get_by_test_id("user-sessions")).to_have_text("0")
        bob.reload()
        bob.wait_for_url(re.compile(r".*/login\?next="))
        _sign_in(bob, base, SECOND, PASSWORD)
        expect(bob.get_by_test_id("login-error")).to_contain_text("disabled")

        _confirm(alice, SECOND, "enable")
        expect(_user_row(alice, SECOND).get_by_test_id("user-state")).to_have_text("active")
        _user_row(alice, SECOND).get_by_test_id("user-action-role").click()
        dialog = alice.get_by_test_id("user-confirm-dialog")
        dialog.get_by_test_id("user-role-select").select_option("admin")
        dialog.get_by_test_id("user-confirm-submit").click()
        expect(dialog).to_be_hidden()
        expect(_user_row(alice, SECOND).get_by_test_id("user-role")).to_have_text("admin")

        _confirm(alice, SECOND, "reset")
        expect(alice.get_by_test_id("one-time-user")).to_have_text(SECOND)
        one_time = alice.get_by_test_id("one-time-value").inner_text()
        _sign_in(bob, base, SECOND, one_time)
        bob.wait_for_url(f"{base}/admin/password")

        _confirm(alice, SECOND, "remove")
        expect(_user_row(alice, SECOND)).to_have_count(0)
        bob.reload()
        bob.wait_for_url(re.compile(r".*/login"))


class TestSignInAndPassword:
    def test_job_link_opened_signed_out_lands_on_the_job(self, make_stack: StackFactory, open_page: Pages) -> None:
        """A job's link opened signed out goes to sign-in and, once signed in, to that job."""
        stack = _stack(make_stack)
        base = stack.gateways["open"].url
        job = stack.engine_api().create("demo.echo", {"message": "hi"})
        page: Page = open_page()
        page.goto(f"{base}/admin/engine/jobs/{job['id']}")
        page.wait_for_url(re.compile(r".*/login\?next="))
        page.locator("#username").fill("alice")
        page.locator("#password").fill(PASSWORD)
        page.get_by_test_id("login-submit").click()
        page.wait_for_url(f"{base}/admin/engine/jobs/{job['id']}")

    def test_change_password_page_keeps_this_session_ends_the_other(
        self, make_stack: StackFactory, open_page: Pages
    ) -> None:
        """Change password from the nav: this browser stays in, another browser of the same user is signed out."""
        stack = _stack(make_stack)
        base = stack.gateways["open"].url
        here: Page = open_page()
        login(here, base)
        there: Page = open_page()
        login(there, base)
        here.get_by_test_id("nav-password").click()
        here.wait_for_url(f"{base}/admin/password")
        _change_password(here, PASSWORD, NEW_PASSWORD)
        here.wait_for_url(f"{base}/admin/engine/jobs")
        there.reload()
        there.wait_for_url(re.compile(r".*/login"))


def _replace_session(old: Page, base: str) -> Page:
    """Sign out and in again in a new tab of ``old``'s browser (``old``'s token is dead); mark ``old``."""
    new = old.context.new_page()
    new.goto(f"{base}/admin/engine/jobs")
    new.get_by_test_id("logout-button").click()
    new.wait_for_url(re.compile(r".*/login"))
    login(new, base)
    old.evaluate("window.__beforeReload = true")
    return new


def _wait_for_reload(page: Page) -> None:
    """Wait until ``page`` reloaded: it forgets the ``window.__beforeReload`` marker set before."""
    from playwright.sync_api import Error

    deadline = time.monotonic() + 20
    while True:
        try:
            if not page.evaluate("() => window.__beforeReload === true"):
                return
        except Error:  # asked while the reload replaced the page: ask the new one
            pass
        assert time.monotonic() < deadline, "the tab did not reload"
        time.sleep(0.1)


class TestOldTab:
    def test_csrf_death_says_session_changed_and_reloads(self, make_stack: StackFactory, open_page: Pages) -> None:
        """An old tab whose session was replaced says "Your session changed; reloading" and reloads, working again."""
        stack = _stack(make_stack)
        base = stack.gateways["open"].url
        old: Page = open_page()
        login(old, base)
        old.goto(f"{base}/admin/users")
        expect(_user_row(old, SECOND)).to_be_visible()
        open_page.console(old).expect_failed_resource(r"/api/admin/users/bob/disable")
        _replace_session(old, base)
        _user_row(old, SECOND).get_by_test_id("user-action-disable").click()
        old.get_by_test_id("user-confirm-submit").click()
        expect(old.get_by_test_id("user-confirm-error")).to_contain_text("Your session changed; reloading")
        expect(old.get_by_test_id("error-banner")).to_contain_text("Your session changed; reloading")
        expect(old.get_by_text(re.compile("CSRF", re.IGNORECASE))).to_have_count(0)
        _wait_for_reload(old)
        expect(_user_row(old, SECOND).get_by_test_id("user-state")).to_have_text("active")
        # Reloaded, the tab works with the live session's token.
        _confirm(old, SECOND, "disable")
        expect(_user_row(old, SECOND).get_by_test_id("user-state")).to_have_text("disabled")

    def test_log_out_from_an_old_tab_says_session_changed_then_works(
        self, make_stack: StackFactory, open_page: Pages
    ) -> None:
        """Log out in a tab whose session was replaced: "Your session changed; reloading", then Log out works."""
        stack = _stack(make_stack)
        base = stack.gateways["open"].url
        old: Page = open_page()
        login(old, base)
        open_page.console(old).expect_failed_resource(r"/logout")
        new = _replace_session(old, base)
        old.get_by_test_id("logout-button").click()
        expect(old.get_by_test_id("error-banner")).to_contain_text("Your session changed; reloading")
        expect(old.get_by_text(re.compile("CSRF", re.IGNORECASE))).to_have_count(0)
        _wait_for_reload(old)
        expect(old.get_by_test_id("current-user")).to_contain_text(USER)
        # A relist in flight when the session ends is answered 401 (the page is leaving for /login).
        open_page.console(old).expect_failed_resource(r"/api/admin/engine/jobs")
        old.get_by_test_id("logout-button").click()
        old.wait_for_url(re.compile(r".*/login"))
        new.goto(f"{base}/admin/engine/jobs")
        new.wait_for_url(re.compile(r".*/login.*"))  # the one session of this browser ended
