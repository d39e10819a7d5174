"""The Engine Jobs panel in a real Chromium, against real engine and gateway processes.

Jobs are seeded through the engine's API (each test makes its own and finds
them by id), then the panel is used as a person would: sign in through the
form, read the table, press RUN, confirm in the dialog, watch the row move
on by itself. Any console error or uncaught exception fails the test (see
``conftest.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from tests.browser.browsing import Pages, login
from tests.e2e.harness import USER, Stack, StackFactory, job_pids, poll

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

#: Long enough for a run to be seen on a busy machine, well under any test timeout.
STATUS_TIMEOUT_MS = 30_000


def expect(target: Any) -> Any:
    """Playwright's ``expect``, imported late so that a machine without Playwright can still collect."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def row(page: Page, job_id: str) -> Locator:
    """The jobs-table row of one job."""
    return page.locator(f'[data-testid="job-row"][data-job-id="{job_id}"]')


def finished(stack: Stack, job_type: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create and run a job through the engine; return it once it has ended."""
    api = stack.engine_api()
    job = api.create(job_type, params)
    api.run(job["id"])
    return api.wait_status(job["id"])


#: Badge background colour by status: (test on (r, g, b), what the issue asks for).
BADGE_COLOURS: dict[str, tuple[Callable[[int, int, int], bool], str]] = {
    "READY": (lambda r, g, b: b > r and b > g, "blue"),
    "RUNNING": (lambda r, g, b: r > b + 20 and g > b + 20, "yellow"),
    "DONE": (lambda r, g, b: g > r and g > b, "green"),
    "FAILED": (lambda r, g, b: r > g + 10 and r > b + 10, "red"),
}
BADGE_ICONS = {"READY": "clock.svg", "RUNNING": "spinner.svg", "DONE": "check.svg", "FAILED": "cross.svg"}


def badge_look(badge: Locator) -> tuple[tuple[int, int, int], str]:
    """The badge's background colour and the icon its ``::before`` shows."""
    look: dict[str, str] = badge.evaluate("""(node) => ({
        background: getComputedStyle(node).backgroundColor,
        icon: getComputedStyle(node, '::before').maskImage || getComputedStyle(node, '::before').webkitMaskImage,
    })""")
    r, g, b = (int(x) for x in re.findall(r"\d+", look["background"])[:3])
    return (r, g, b), look["icon"]


class TestSignInAndTable:
    def test_login_form_then_jobs_table_with_columns_and_badges(self, panel_stack: Stack, page: Page) -> None:
        """The panel sends an anonymous visitor to the form; after signing in, the table has its columns and badges."""
        ready = panel_stack.engine_api().create("demo.echo")
        done = finished(panel_stack, "demo.echo")
        failed = finished(panel_stack, "demo.fail")
        base = panel_stack.gateways["open"].url

        page.goto(f"{base}/admin/engine/jobs")
        page.wait_for_url(re.compile(r"/login"))
        expect(page.get_by_test_id("login-form")).to_be_visible()
        login(page, base)

        table = page.get_by_test_id("jobs-table")
        expect(table).to_be_visible()
        headers = [text.strip() for text in table.locator("thead th").all_text_contents()]
        assert headers == ["Job", "Type", "Status", "Created", "Duration", "Action"]
        expect(page.get_by_test_id("current-user")).to_contain_text(USER)

        for job, status in ((ready, "READY"), (done, "DONE"), (failed, "FAILED")):
            job_row = row(page, job["id"])
            expect(job_row).to_have_attribute("data-status", status)
            badge = job_row.get_by_test_id("status-badge")
            expect(badge).to_have_text(status)
            colour, icon = badge_look(badge)
            looks_right, name = BADGE_COLOURS[status]
            assert looks_right(*colour), f"{status} badge should be {name}, is rgb{colour}"
            assert BADGE_ICONS[status] in icon, f"{status} badge icon: {icon}"
            expect(job_row.get_by_test_id("job-link")).to_have_attribute("href", f"/admin/engine/jobs/{job['id']}")
            expect(job_row.locator("td").nth(1)).to_have_text(job["type"])
            # Shown in the viewer's local time, not as the raw RFC 3339 string.
            created = job_row.locator("td").nth(3).locator("time")
            expect(created).to_have_attribute("datetime", job["createdAt"])
            assert created.inner_text().strip() != job["createdAt"]

    def test_wrong_password_shows_the_form_again(self, panel_stack: Stack, open_page: Pages) -> None:
        """A wrong password keeps the visitor on the form with one message, and no session."""
        page = open_page()
        console = open_page.console(page)
        base = panel_stack.gateways["open"].url
        # The refusal is a 401 document: Chromium reports it as a failed resource.
        console.expect_failed_resource(rf"^{re.escape(base)}/login$")
        page.goto(f"{base}/login")
        page.locator("#username").fill(USER)
        page.locator("#password").fill("not the password at all")
        page.get_by_test_id("login-submit").click()
        expect(page.get_by_test_id("login-error")).to_have_text("Invalid username or password.")
        assert page.url == f"{base}/login"
        assert console.failed_resources() == [f"{base}/login"]
        page.goto(f"{base}/admin/engine/jobs")
        page.wait_for_url(re.compile(r"/login"))


class TestSafeMode:
    def test_banner_and_no_run_button_anywhere(self, panel_stack: Stack, page: Page) -> None:
        """SAFE_MODE on: the banner shows; no usable RUN, but a held RUN that says why on hover and focus."""
        ready = panel_stack.engine_api().create("demo.sleep", {"seconds": 1})
        base = panel_stack.gateways["safe"].url
        login(page, base)

        expect(page.get_by_test_id("safe-mode-banner")).to_be_visible()
        expect(page.get_by_test_id("safe-mode-pill")).to_have_text("SAFE_MODE: ON")
        expect(row(page, ready["id"])).to_have_attribute("data-status", "READY")
        expect(page.get_by_test_id("run-button")).to_have_count(0)
        held = row(page, ready["id"]).get_by_test_id("run-held")
        expect(held).to_have_attribute("aria-disabled", "true")
        expect(held).to_have_attribute("title", re.compile("SAFE_MODE is on"))
        held.focus()
        expect(held).to_be_focused()
        tip = held.evaluate("(node) => getComputedStyle(node, '::after').content")
        assert "SAFE_MODE is on" in tip, tip
        held.click(force=True)  # aria-disabled: a click does nothing
        expect(page.get_by_test_id("run-dialog")).to_be_hidden()

        # The rows the page renders itself after a refresh follow the same rule.
        page.get_by_test_id("refresh-button").click()
        expect(page.get_by_test_id("last-updated").locator("time")).to_be_visible()
        expect(row(page, ready["id"])).to_be_visible()
        expect(page.get_by_test_id("run-button")).to_have_count(0)
        expect(row(page, ready["id"]).get_by_test_id("run-held")).to_have_attribute("title", re.compile("SAFE_MODE"))

        row(page, ready["id"]).get_by_test_id("job-link").click()
        page.wait_for_url(f"{base}/admin/engine/jobs/{ready['id']}")
        expect(page.get_by_test_id("job-detail")).to_be_visible()
        expect(page.get_by_test_id("safe-mode-banner")).to_be_visible()
        expect(page.get_by_test_id("run-button")).to_have_count(0)
        assert panel_stack.engine_api().job(ready["id"])["status"] == "READY"


class TestRun:
    def test_run_with_reason_then_running_then_done_without_reload(self, panel_stack: Stack, page: Page) -> None:
        """RUN opens the dialog with id, type and params; confirming starts the job; the row reaches DONE by itself."""
        base = panel_stack.gateways["open"].url
        login(page, base)
        expect(page.get_by_test_id("safe-mode-banner")).to_be_hidden()
        expect(page.get_by_test_id("safe-mode-pill")).to_have_text("SAFE_MODE: OFF")

        # Create the job through the "New job" form, built from the engine's catalog.
        page.get_by_test_id("new-job-button").click()
        dialog = page.get_by_test_id("new-job-dialog")
        expect(dialog).to_be_visible()
        dialog.get_by_test_id("new-job-type").select_option("demo.sleep")
        dialog.get_by_test_id("param-seconds").fill("2")
        dialog.get_by_test_id("new-job-submit").click()
        expect(dialog).to_be_hidden()
        flash = page.get_by_test_id("flash")
        expect(flash).to_contain_text("(READY)")
        created = re.search(r"Created job (\S+) \(READY\)", flash.inner_text())
        assert created, flash.inner_text()
        job_id = created.group(1)
        job_row = row(page, job_id)
        expect(job_row).to_have_attribute("data-status", "READY")
        assert panel_stack.engine_api().job(job_id)["params"] == {"seconds": 2}

        # A marker that a reload would wipe out.
        page.evaluate("window.__sameDocument = true")
        job_row.get_by_test_id("run-button").click()
        run_dialog = page.get_by_test_id("run-dialog")
        expect(run_dialog).to_be_visible()
        expect(run_dialog.get_by_test_id("run-dialog-id")).to_have_text(job_id)
        expect(run_dialog.get_by_test_id("run-dialog-type")).to_have_text("demo.sleep")
        expect(run_dialog.get_by_test_id("run-dialog-params")).to_contain_text("seconds")
        expect(run_dialog.get_by_test_id("run-dialog-params")).to_contain_text("2")
        # demo.sleep has a plan: the dialog shows what the run would do before it can be confirmed.
        expect(run_dialog.get_by_test_id("run-plan-output")).to_have_text("would sleep 2 s\n")
        expect(run_dialog.get_by_test_id("run-plan-status")).to_contain_text("Plan made")
        expect(run_dialog.get_by_test_id("run-confirm")).to_be_enabled()
        run_dialog.get_by_test_id("run-reason").fill("browser e2e: quarterly reindex")
        run_dialog.get_by_test_id("run-confirm").click()
        expect(run_dialog).to_be_hidden()

        expect(job_row).to_have_attribute("data-status", "RUNNING", timeout=STATUS_TIMEOUT_MS)
        expect(job_row.get_by_test_id("run-button")).to_have_count(0)
        expect(job_row).to_have_attribute("data-status", "DONE", timeout=STATUS_TIMEOUT_MS)
        expect(job_row.get_by_test_id("status-badge")).to_have_text("DONE")
        expect(job_row.get_by_test_id("run-button")).to_have_count(0)
        expect(page.get_by_test_id("last-updated")).to_have_attribute("data-mode", "live")
        assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"

        job = panel_stack.engine_api().job(job_id)
        assert job["status"] == "DONE"
        assert job["runBy"] == USER and job["runReason"] == "browser e2e: quarterly reindex"

    def test_a_type_without_a_plan_shows_none(self, panel_stack: Stack, page: Page) -> None:
        """The run dialog of a type with no plan shows no plan section and can be confirmed at once."""
        job = panel_stack.engine_api().create("demo.fail")
        login(page, panel_stack.gateways["open"].url)
        row(page, job["id"]).get_by_test_id("run-button").click()
        run_dialog = page.get_by_test_id("run-dialog")
        expect(run_dialog.get_by_test_id("run-confirm")).to_be_enabled()
        expect(run_dialog.get_by_test_id("run-plan")).to_be_hidden()
        run_dialog.get_by_test_id("run-dismiss").click()

    def test_only_ready_rows_have_a_run_button(self, panel_stack: Stack, page: Page) -> None:
        """With SAFE_MODE off, READY rows offer RUN; DONE and FAILED rows do not."""
        ready = panel_stack.engine_api().create("demo.echo")
        done = finished(panel_stack, "demo.echo")
        failed = finished(panel_stack, "demo.fail")
        login(page, panel_stack.gateways["open"].url)

        expect(row(page, ready["id"]).get_by_test_id("run-button")).to_have_count(1)
        for job in (done, failed):
            expect(row(page, job["id"])).to_have_attribute("data-status", job["status"])
            expect(row(page, job["id"]).get_by_test_id("run-button")).to_have_count(0)
            expect(row(page, job["id"]).get_by_test_id("cancel-button")).to_have_count(0)

    def test_cancel_from_the_list(self, panel_stack: Stack, page: Page) -> None:
        """Cancel asks for a reason (recorded); confirmed, the job ends FAILED and its processes are gone."""
        api = panel_stack.engine_api()
        job = api.create("demo.sleep", {"seconds": 600})
        api.run(job["id"])
        login(page, panel_stack.gateways["open"].url)
        job_row = row(page, job["id"])
        expect(job_row).to_have_attribute("data-status", "RUNNING")
        job_row.get_by_test_id("cancel-button").click()
        dialog = page.get_by_test_id("cancel-dialog")
        expect(dialog.get_by_test_id("cancel-dialog-id")).to_have_text(job["id"])
        expect(dialog.get_by_test_id("cancel-reason")).to_be_focused()
        dialog.get_by_test_id("cancel-reason").fill("wrong index picked: stop it")
        dialog.get_by_test_id("cancel-confirm").click()
        expect(job_row).to_have_attribute("data-status", "FAILED", timeout=STATUS_TIMEOUT_MS)
        assert api.job(job["id"])["error"] == f"cancelled by {USER}"
        audit = panel_stack.panel("open").request("GET", f"/api/admin/audit?jobId={job['id']}&journal=gateway").json()
        cancels = [r for r in audit["records"] if r["action"] == "job_cancel" and r["data"]["outcome"] == "accepted"]
        assert [r["data"]["reason"] for r in cancels] == ["wrong index picked: stop it"]
        poll(lambda: job_pids(job["id"]), lambda pids: not pids, timeout=15, what="the job's processes to end")


class TestJobPage:
    def test_history_and_log_follow_a_run_live(self, panel_stack: Stack, page: Page) -> None:
        """The job page follows a run: log lines arrive and the status reaches DONE; history has who and why."""
        panel = panel_stack.panel("open")
        job = panel.create("demo.sleep", {"seconds": 2})
        base = panel_stack.gateways["open"].url
        login(page, base)
        assert panel.run(job["id"], reason="browser e2e: check the log").status == 202
        page.goto(f"{base}/admin/engine/jobs/{job['id']}")
        page.evaluate("window.__sameDocument = true")

        detail = page.get_by_test_id("job-detail")
        expect(detail).to_have_attribute("data-status", "DONE", timeout=STATUS_TIMEOUT_MS)
        lines = page.get_by_test_id("log-line")
        expect(lines).to_have_count(4)
        texts = [text.strip() for text in page.locator('[data-testid="log-line"] .log-text').all_inner_texts()]
        assert texts == [f"sleeping 2s (job {job['id']})", "slept 1/2s", "slept 2/2s", "done"]
        expect(page.get_by_test_id("log-state")).to_have_text("Complete (4 lines).")

        history = page.get_by_test_id("history-row")
        expect(history).to_have_count(3)
        assert [history.nth(i).get_attribute("data-status") for i in range(3)] == ["READY", "RUNNING", "DONE"]
        running = history.nth(1)
        expect(running).to_contain_text(USER)
        expect(running).to_contain_text("browser e2e: check the log")
        expect(page.get_by_test_id("job-field-runReason")).to_have_text("browser e2e: check the log")
        expect(page.get_by_test_id("job-field-exitCode")).to_have_text("0")
        expect(page.get_by_test_id("run-button")).to_have_count(0)
        assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"


class TestEngineOutage:
    def test_engine_unreachable_banner_not_a_blank_page(self, make_stack: StackFactory, open_page: Pages) -> None:
        """Killing the engine under open pages: "Engine unreachable", pages kept, recovery, outcome unknown."""
        stack = make_stack(gateways={"open": False})
        api = stack.engine_api()
        job = api.create("demo.sleep", {"seconds": 600})
        api.run(job["id"])
        base = stack.gateways["open"].url
        page, follower = open_page(), open_page()
        login(page, base)
        expect(row(page, job["id"])).to_have_attribute("data-status", "RUNNING")
        expect(page.get_by_test_id("last-updated")).to_have_attribute("data-mode", "live")
        expect(page.get_by_test_id("engine-down-banner")).to_be_hidden()
        # A second person follows the job's log on its page.
        login(follower, base)
        follower.goto(f"{base}/admin/engine/jobs/{job['id']}")
        expect(follower.get_by_test_id("log-line").first).to_be_visible()
        # The job page's own reads answer 502 during the outage, which Chromium reports; only those.
        job_api = rf"^{re.escape(base)}/api/admin/engine/jobs/{job['id']}(/logs\?after=\d+)?$"
        open_page.console(follower).expect_failed_resource(job_api)

        stack.engine.kill()
        follower_banner = follower.get_by_test_id("engine-down-banner")
        expect(follower_banner).to_be_visible(timeout=STATUS_TIMEOUT_MS)
        expect(follower.get_by_test_id("job-detail")).to_be_visible()
        expect(follower.get_by_test_id("log-line").first).to_be_visible()
        follower.context.close()
        # No click: the live stream says the engine is down.
        banner = page.get_by_test_id("engine-down-banner")
        expect(banner).to_be_visible(timeout=STATUS_TIMEOUT_MS)
        expect(banner).to_contain_text("Engine unreachable")
        expect(page.get_by_test_id("jobs-unavailable")).to_be_visible()
        expect(page.get_by_test_id("empty-state")).to_be_hidden()
        expect(page.get_by_test_id("jobs-table")).to_be_visible()
        expect(page.locator("h1")).to_have_text("Jobs")
        expect(page.get_by_test_id("error-banner")).to_be_hidden()

        # A page loaded during the outage says so too.
        page.goto(f"{base}/admin/engine/jobs")
        expect(page.get_by_test_id("engine-down-banner")).to_be_visible()
        expect(page.get_by_test_id("jobs-unavailable")).to_be_visible()
        page.goto(f"{base}/admin/engine/jobs/{job['id']}")
        expect(page.get_by_test_id("job-unavailable")).to_be_visible()
        expect(page.get_by_test_id("engine-down-banner")).to_be_visible()

        stack.start_engine()
        # The job page served during the outage asks the server again by itself once the engine is back.
        expect(page.get_by_test_id("job-detail")).to_be_visible(timeout=STATUS_TIMEOUT_MS)
        page.goto(f"{base}/admin/engine/jobs")
        expect(page.get_by_test_id("engine-down-banner")).to_be_hidden()
        expect(page.get_by_test_id("jobs-unavailable")).to_be_hidden()

        # The run the outage interrupted may have done its work: FAILED, outcome unknown, as the
        # server renders it and as the page's script renders it after a refresh.
        badge = row(page, job["id"]).get_by_test_id("status-badge")
        expect(badge).to_have_text("FAILED · outcome unknown")
        expect(badge).to_have_attribute("data-outcome", "unknown")
        badge.evaluate("node => { node.dataset.served = 'yes'; }")
        page.get_by_test_id("refresh-button").click()
        expect(row(page, job["id"]).locator("[data-served]")).to_have_count(0)
        expect(badge).to_have_text("FAILED · outcome unknown")
        expect(badge).to_have_attribute("title", re.compile(r"^interrupted: engine restarted: the run may have done"))


class TestLogout:
    def test_old_cookie_is_dead_after_logout(self, panel_stack: Stack, open_page: Pages) -> None:
        """After logout the copied session cookie opens nothing: pages go to /login and the API says 401."""
        page = open_page()
        base = panel_stack.gateways["open"].url
        login(page, base)
        cookies = page.context.cookies()
        assert cookies, "no session cookie after signing in"

        # While signed in, the same cookie in another browser opens the panel (so the check below can fail).
        twin = open_page()
        twin.context.add_cookies(cast(Any, cookies))
        twin.goto(f"{base}/admin/engine/jobs")
        expect(twin.get_by_test_id("jobs-table")).to_be_visible()
        # Leave the panel first: its live page would otherwise read the list once more without the cookie.
        twin.goto("about:blank")
        twin.context.clear_cookies()

        page.get_by_test_id("logout-button").click()
        page.wait_for_url(f"{base}/login")
        expect(page.get_by_test_id("login-form")).to_be_visible()

        stale = open_page()
        console = open_page.console(stale)
        console.expect_failed_resource(rf"^{re.escape(base)}/api/admin/config$")
        stale.context.add_cookies(cast(Any, cookies))
        stale.goto(f"{base}/admin/engine/jobs")
        stale.wait_for_url(f"{base}/login?next=/admin/engine/jobs")
        expect(stale.get_by_test_id("login-form")).to_be_visible()
        status = stale.evaluate("fetch('/api/admin/config', {credentials: 'same-origin'}).then((r) => r.status)")
        assert status == 401
        assert console.failed_resources() == [f"{base}/api/admin/config"]
