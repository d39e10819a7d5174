"""Break-glass for SAFE_MODE in a real Chromium: a second person opens the window, the banner counts down.

Each test has its own stack (the window is the engine's, so it would reach
every other test's SAFE_MODE gateway): one engine, one SAFE_MODE-on gateway
``safe`` holding alice (:data:`USER`) and bob, both super_admin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.browser.browsing import Pages, login
from tests.browser.test_panel import expect, row
from tests.browser.test_time import ZONE, shown
from tests.e2e.harness import ENGINE_TOKEN, PASSWORD, USER, Stack, StackFactory, http, run_cli

if TYPE_CHECKING:
    from playwright.sync_api import Page

SECOND = "bob"
#: Every page reads the window every 5 s; a change shows within that, with room for a busy machine.
WINDOW_SEEN_MS = 15_000


def add_super_admin(stack: Stack, gateway: str, name: str = SECOND) -> None:
    """Add ``name`` as a second super_admin to ``gateway``'s users (through the CLI; the gateway picks it up)."""
    added = run_cli(
        [
            str(stack.install.bin / "admin-gateway"),
            "users",
            "add",
            name,
            "--role",
            "super_admin",
            "--password-stdin",
            "--data-dir",
            str(stack.root / f"gateway-{gateway}"),
        ],
        stdin=PASSWORD + "\n",
        cwd=stack.root,
    )
    assert added.returncode == 0, added.stderr


def _stack_with_two_super_admins(make_stack: StackFactory) -> Stack:
    stack = make_stack(gateways={"safe": True})
    add_super_admin(stack, "safe")
    return stack


def _engine(stack: Stack, method: str, path: str, actor: str, body: Any = None) -> dict[str, Any]:
    reply = http(
        method,
        stack.engine.url + path,
        body=body,
        headers={"Authorization": f"Bearer {ENGINE_TOKEN}", "X-Engine-Actor": actor},
    )
    assert reply.status in (200, 201), reply
    answer: dict[str, Any] = reply.json()
    return answer


class TestBreakGlass:
    def test_request_then_second_person_approves_then_run_then_end(
        self, make_stack: StackFactory, open_page: Pages
    ) -> None:
        """alice requests (no Approve for her), bob approves, RUN appears for both, a run starts, End now re-locks."""
        stack = _stack_with_two_super_admins(make_stack)
        job = stack.engine_api().create("demo.echo", {"message": "hotfix"})
        base = stack.gateways["safe"].url
        alice: Page = open_page()
        login(alice, base)
        expect(row(alice, job["id"]).get_by_test_id("run-button")).to_have_count(0)
        alice.get_by_test_id("override-request-button").click()
        dialog = alice.get_by_test_id("override-dialog")
        expect(dialog).to_be_visible()
        dialog.get_by_test_id("override-reason").fill("INC-42: hotfix the search index")
        dialog.get_by_test_id("override-minutes").fill("10")
        dialog.get_by_test_id("override-submit").click()
        expect(dialog).to_be_hidden()
        banner = alice.get_by_test_id("override-banner")
        expect(banner).to_contain_text("Break-glass requested by alice")
        expect(alice.get_by_test_id("override-approve")).to_be_hidden()
        expect(alice.get_by_test_id("override-withdraw")).to_be_visible()

        bob: Page = open_page()
        login(bob, base, user=SECOND)
        expect(bob.get_by_test_id("override-banner")).to_contain_text("INC-42: hotfix the search index")
        bob.get_by_test_id("override-approve").click()
        approve = bob.get_by_test_id("override-approve-dialog")
        expect(approve.get_by_test_id("override-approve-by")).to_have_text(USER)
        approve.get_by_test_id("override-approve-confirm").click()
        text = "SAFE_MODE overridden by alice (approved by bob) until "
        expect(bob.get_by_test_id("override-text")).to_contain_text(text)
        expect(bob.get_by_test_id("override-text")).to_contain_text("UTC, reason: INC-42: hotfix the search index")
        expect(bob.get_by_test_id("override-countdown")).to_contain_text(" left")
        expect(alice.get_by_test_id("override-text")).to_contain_text(text, timeout=WINDOW_SEEN_MS)

        # RUN is offered inside the window, and the run goes through SAFE_MODE.
        run_button = row(alice, job["id"]).get_by_test_id("run-button")
        expect(run_button).to_be_visible(timeout=WINDOW_SEEN_MS)
        run_button.click()
        run_dialog = alice.get_by_test_id("run-dialog")
        expect(run_dialog.get_by_test_id("run-plan-output")).to_have_text("would print: hotfix\n")
        run_dialog.get_by_test_id("run-confirm").click()
        expect(run_dialog).to_be_hidden()
        expect(row(alice, job["id"])).to_have_attribute("data-status", "DONE", timeout=30_000)

        # Anyone may end it early: the banner goes and RUN is gone again on both pages.
        other = stack.engine_api().create("demo.echo", {"message": "later"})
        bob.get_by_test_id("override-end").click()
        expect(bob.get_by_test_id("override-banner")).to_be_hidden()
        expect(alice.get_by_test_id("override-banner")).to_be_hidden(timeout=WINDOW_SEEN_MS)
        alice.reload()
        expect(row(alice, other["id"])).to_have_attribute("data-status", "READY")
        expect(row(alice, other["id"]).get_by_test_id("run-button")).to_have_count(0)

    def test_countdown_then_the_banner_goes_at_expiry(self, make_stack: StackFactory, open_page: Pages) -> None:
        """A 1-minute window: the banner counts down and disappears by itself at its end, RUN with it."""
        stack = _stack_with_two_super_admins(make_stack)
        job = stack.engine_api().create("demo.echo", {"message": "x"})
        window = _engine(stack, "POST", "/api/safe-mode/override", USER, {"reason": "expiry check", "minutes": 1})
        _engine(stack, "POST", f"/api/safe-mode/override/{window['window']['id']}/approve", SECOND)
        page: Page = open_page()
        login(page, stack.gateways["safe"].url)
        countdown = page.get_by_test_id("override-countdown")
        expect(countdown).to_contain_text(" left")
        first = countdown.inner_text()
        expect(countdown).not_to_have_text(first, timeout=3_000)  # it counts
        expect(row(page, job["id"]).get_by_test_id("run-button")).to_be_visible()
        expect(page.get_by_test_id("override-banner")).to_be_hidden(timeout=75_000)
        expect(row(page, job["id"]).get_by_test_id("run-button")).to_have_count(0, timeout=WINDOW_SEEN_MS)
        expect(page.get_by_test_id("override-request-button")).to_be_visible()

    def test_window_times_follow_the_chosen_zone(self, make_stack: StackFactory, open_page: Pages) -> None:
        """The banner writes the window's end in the zone the header names: local time once switched."""
        stack = _stack_with_two_super_admins(make_stack)
        window = _engine(stack, "POST", "/api/safe-mode/override", USER, {"reason": "zone check", "minutes": 5})
        opened = _engine(stack, "POST", f"/api/safe-mode/override/{window['window']['id']}/approve", SECOND)
        until = opened["window"]["until"]
        page: Page = open_page(timezone_id=ZONE)
        login(page, stack.gateways["safe"].url)
        text = page.get_by_test_id("override-text")
        expect(text).to_contain_text(f"until {shown(until)} UTC, reason: zone check")
        page.get_by_test_id("time-zone-switch").click()
        expect(text).to_contain_text(f"until {shown(until, ZONE)} {ZONE}, reason: zone check")
