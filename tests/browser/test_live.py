"""The live panel in a real Chromium: pages follow the gateway's event stream, with no reload and no poll.

Two people watch the same list: one runs a job, and the other's row moves
READY → RUNNING → DONE within a second of the engine's recorded times, with
no request for the list after the stream's first re-list. An engine outage
shows on every open page and heals by itself. Where the stream is blocked
the page polls every 5 s and says so; a session that ends says "signed out".
The job page keeps its audit cells through every update (the issue's fix).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.browsing import Pages, login
from tests.e2e.harness import Stack, StackFactory

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page, Request, Route

#: How long a run or a recovery may take on a busy machine; the 1 s bound is measured, not waited.
STATUS_TIMEOUT_MS = 30_000
LIST_API = re.compile(r"/api/admin/engine/jobs\?")
EVENTS_ROUTE = "**/api/admin/engine/events"

#: Records, in the page, when a row of one job first shows each status (Date.now(), same machine clock).
WATCH_ROW = """(jobId) => {
  window.__seen = {};
  const look = () => {
    const row = document.querySelector(`tr[data-testid="job-row"][data-job-id="${jobId}"]`);
    const status = row && row.dataset.status;
    if (status && !(status in window.__seen)) window.__seen[status] = Date.now();
  };
  look();
  new MutationObserver(look).observe(document.body, { subtree: true, childList: true, attributes: true });
}"""

#: Records every moment an audit cell (Actor, From, Action, Details) shows "—" on the job page.
WATCH_AUDIT = """() => {
  window.__blanked = [];
  const look = () => {
    for (const cell of document.querySelectorAll('[data-testid="audit-row"] [data-field]')) {
      if (cell.textContent.trim() === '—') window.__blanked.push(cell.dataset.field);
    }
  };
  new MutationObserver(look).observe(document.querySelector('[data-testid="job-audit"]'),
    { subtree: true, childList: true, characterData: true, attributes: true });
}"""


def expect(target: Any) -> Any:
    """Playwright's ``expect``, imported late so that a machine without Playwright can still collect."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def row(page: Page, job_id: str) -> Locator:
    """The jobs-table row of one job."""
    return page.locator(f'[data-testid="job-row"][data-job-id="{job_id}"]')


def millis(iso: str) -> float:
    """An engine timestamp (RFC 3339, UTC) as milliseconds since the epoch, like ``Date.now()``."""
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000


def count_reads(page: Page, route: re.Pattern[str], event: str = "request") -> list[float]:
    """From now on, the time of every ``event`` (a request, by default) of ``page`` to a URL ``route`` matches."""
    seen: list[float] = []

    def on_request(request: Request) -> None:
        if route.search(request.url):
            seen.append(time.monotonic())

    page.on(event, on_request)  # type: ignore[call-overload]
    return seen


def count_list_reads(page: Page) -> list[float]:
    """From now on, the time of every request ``page`` makes to the list's JSON route."""
    return count_reads(page, LIST_API)


def wait_live(page: Page) -> None:
    """Wait until the page's stream is open (the "Updated …" line says "live")."""
    line = page.get_by_test_id("last-updated")
    expect(line).to_have_attribute("data-mode", "live")
    expect(line).to_contain_text("· live")


def audit_cells(page: Page) -> dict[str, list[str]]:
    """Actor, From, Action and Details of each audit row, by the row's journal and seq."""
    cells: dict[str, list[str]] = page.evaluate("""() => Object.fromEntries(
      [...document.querySelectorAll('[data-testid="audit-row"]')].map((row) => [
        `${row.dataset.journal}#${row.dataset.seq}`,
        ['actor', 'source', 'action', 'details']
          .map((f) => row.querySelector(`[data-field="${f}"]`).textContent.trim()),
      ]))""")
    return cells


class TestLiveList:
    def test_a_run_reaches_another_page_within_a_second_without_poll_or_reload(
        self, panel_stack: Stack, open_page: Pages
    ) -> None:
        """Page 1 runs a job; page 2 shows RUNNING, then DONE, within 1 s of the engine's times, by the stream alone."""
        base = panel_stack.gateways["open"].url
        job = panel_stack.engine_api().create("demo.sleep", {"seconds": 1})
        runner, watcher = open_page(), open_page()
        reads = count_list_reads(watcher)
        login(runner, base)
        login(watcher, base)
        wait_live(runner)
        wait_live(watcher)
        # The stream's "ready" makes one re-list (the page was rendered before the stream opened).
        expect(watcher.get_by_test_id("jobs-table")).to_be_visible()
        deadline = time.monotonic() + 10
        while not reads and time.monotonic() < deadline:
            watcher.wait_for_timeout(50)
        assert len(reads) == 1, f"expected the one re-list on ready, saw {len(reads)} list reads"
        watcher.evaluate("window.__sameDocument = true")
        watcher.evaluate(WATCH_ROW, job["id"])
        expect(row(watcher, job["id"])).to_have_attribute("data-status", "READY")
        expect(row(watcher, job["id"]).get_by_test_id("run-button")).to_have_count(1)

        row(runner, job["id"]).get_by_test_id("run-button").click()
        runner.get_by_test_id("run-confirm").click()

        watched = row(watcher, job["id"])
        expect(watched).to_have_attribute("data-status", "RUNNING", timeout=STATUS_TIMEOUT_MS)
        expect(watched.get_by_test_id("run-button")).to_have_count(0)
        expect(watched.get_by_test_id("cancel-button")).to_have_count(1)
        expect(watched).to_have_attribute("data-status", "DONE", timeout=STATUS_TIMEOUT_MS)
        expect(watched.get_by_test_id("status-badge")).to_have_text("DONE")
        expect(watched.get_by_test_id("cancel-button")).to_have_count(0)
        expect(row(runner, job["id"])).to_have_attribute("data-status", "DONE")

        engine_job = panel_stack.engine_api().job(job["id"])
        seen: dict[str, float] = watcher.evaluate("window.__seen")
        started, ended = millis(engine_job["startedAt"]), millis(engine_job["endedAt"])
        # The engine's clock and the page's are the same machine's: the lag is the stream's.
        assert -50 <= seen["RUNNING"] - started <= 1000, (seen, engine_job["startedAt"])
        assert -50 <= seen["DONE"] - ended <= 1000, (seen, engine_job["endedAt"])
        assert len(reads) == 1, f"page 2 polled the list: {len(reads)} list reads"
        assert watcher.evaluate("window.__sameDocument") is True, "page 2 was reloaded"
        expect(watcher.get_by_test_id("last-updated")).to_have_attribute("data-mode", "live")


class TestLiveOutage:
    def test_both_pages_show_the_engine_down_and_recover_by_themselves(
        self, make_stack: StackFactory, open_page: Pages
    ) -> None:
        """Killing the engine shows the engine-down banner on both pages; restarting it heals both, no reload."""
        stack = make_stack(gateways={"open": False})
        job = stack.engine_api().create("demo.echo")
        base = stack.gateways["open"].url
        pages = [open_page(), open_page()]
        for page in pages:
            login(page, base)
            wait_live(page)
            expect(row(page, job["id"])).to_have_attribute("data-status", "READY")
            page.evaluate("window.__sameDocument = true")

        stack.engine.kill()
        for page in pages:
            expect(page.get_by_test_id("engine-down-banner")).to_be_visible(timeout=STATUS_TIMEOUT_MS)
            expect(page.get_by_test_id("engine-down-banner")).to_contain_text("Engine unreachable")
            expect(page.get_by_test_id("jobs-unavailable")).to_be_visible()
            expect(page.get_by_test_id("error-banner")).to_be_hidden()

        stack.start_engine()
        for page in pages:
            expect(page.get_by_test_id("engine-down-banner")).to_be_hidden(timeout=STATUS_TIMEOUT_MS)
            expect(page.get_by_test_id("jobs-unavailable")).to_be_hidden()
            expect(row(page, job["id"])).to_have_attribute("data-status", "READY")
            expect(row(page, job["id"]).get_by_test_id("run-button")).to_have_count(1)
            assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"

    @pytest.mark.parametrize("where", ["list", "job page"])
    def test_a_read_answered_before_the_engine_died_does_not_hide_the_banner(
        self, make_stack: StackFactory, open_page: Pages, where: str
    ) -> None:
        """A read answered "up" but delivered after the stream's "down" is read again, and the banner stays."""
        stack = make_stack(gateways={"open": False})
        job = stack.engine_api().create("demo.echo")
        page = open_page()
        base = stack.gateways["open"].url
        read = LIST_API if where == "list" else re.compile(rf"/api/admin/engine/jobs/{job['id']}$")
        started, finished = count_reads(page, read), count_reads(page, read, "requestfinished")
        login(page, base)
        if where == "job page":
            page.goto(f"{base}/admin/engine/jobs/{job['id']}")
        wait_live(page)
        # The re-list the stream's "ready" asks for must be over: the read held below is Refresh's alone.
        deadline = time.monotonic() + 10
        while (not started or len(finished) < len(started)) and time.monotonic() < deadline:
            page.wait_for_timeout(20)
        page.wait_for_timeout(100)
        assert started and len(finished) == len(started), "the page did not re-list when its stream opened"
        held: list[Route] = []

        def hold_the_first(route: Route) -> None:
            if held:
                route.continue_()
            else:
                held.append(route)

        page.route(read, hold_the_first)
        page.get_by_test_id("refresh-button").click()
        deadline = time.monotonic() + 10
        while not held and time.monotonic() < deadline:
            page.wait_for_timeout(20)
        assert held, "Refresh did not read the list"
        answer = held[0].fetch()  # the engine is up: the answer says so
        assert answer.status == 200
        if where == "list":
            assert b'"engine":"up"' in answer.body()

        open_page.console(page).expect_failed_resource(r"/api/admin/engine/jobs/")  # the job page's reads: 502
        stack.engine.kill()
        expect(page.get_by_test_id("engine-down-banner")).to_be_visible(timeout=STATUS_TIMEOUT_MS)
        reads = count_reads(page, read)
        held[0].fulfill(response=answer)
        deadline = time.monotonic() + 10
        while not reads and time.monotonic() < deadline:
            page.wait_for_timeout(20)
        assert reads, "the stale answer was not followed by a second read"
        page.wait_for_timeout(500)
        expect(page.get_by_test_id("engine-down-banner")).to_be_visible()
        if where == "list":
            expect(page.get_by_test_id("jobs-unavailable")).to_be_visible()
            expect(row(page, job["id"])).to_have_count(0)


class TestFallback:
    def test_a_blocked_stream_falls_back_to_polling_every_5_s_and_says_so(
        self, panel_stack: Stack, open_page: Pages
    ) -> None:
        """With the events route blocked the list polls its JSON every ~5 s, says so, and still follows a run."""
        base = panel_stack.gateways["open"].url
        page = open_page()
        open_page.console(page).expect_failed_resource(r"/api/admin/engine/events$")
        page.route(EVENTS_ROUTE, lambda route: route.abort())
        reads = count_list_reads(page)
        login(page, base)
        line = page.get_by_test_id("last-updated")
        expect(line).to_have_attribute("data-mode", "polling", timeout=STATUS_TIMEOUT_MS)
        expect(line).to_contain_text("polling every 5 s (live updates unavailable)")

        start = len(reads)
        job = panel_stack.engine_api().create("demo.echo")
        deadline = time.monotonic() + 25
        while len(reads) < start + 3 and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        gaps = [b - a for a, b in zip(reads[start:], reads[start + 1 :], strict=False)]
        assert len(gaps) >= 2, f"the page did not poll: {len(reads) - start} list reads in 25 s"
        assert all(4.5 <= gap <= 7.5 for gap in gaps), f"polls not ~5 s apart: {gaps}"
        expect(row(page, job["id"])).to_have_attribute("data-status", "READY")
        expect(line).to_contain_text("polling every 5 s")


class TestSignedOut:
    def test_signing_out_elsewhere_shows_signed_out_and_stops_the_stream(
        self, panel_stack: Stack, open_page: Pages
    ) -> None:
        """Logging out in another tab of the same browser: the live page says "Signed out" with a sign-in link."""
        base = panel_stack.gateways["open"].url
        page = open_page()
        login(page, base)
        wait_live(page)
        other = page.context.new_page()
        other.goto(f"{base}/admin/engine/jobs")
        other.get_by_test_id("logout-button").click()
        other.wait_for_url(f"{base}/login")

        banner = page.get_by_test_id("error-banner")
        expect(banner).to_be_visible(timeout=STATUS_TIMEOUT_MS)
        expect(banner).to_contain_text("Signed out — sign in again")
        expect(banner.get_by_test_id("sign-in-again")).to_have_attribute("href", "/login")
        expect(page.get_by_test_id("last-updated")).to_have_attribute("data-mode", "signed-out")
        # Closed, not reconnecting: no new request to the events route.
        events: list[str] = []
        page.on("request", lambda request: events.append(request.url) if "/engine/events" in request.url else None)
        page.wait_for_timeout(4000)
        assert events == [], events


class TestJobPageAudit:
    def test_audit_cells_survive_refresh_and_live_updates(self, panel_stack: Stack, page: Page) -> None:
        """Refresh and a run followed live keep every audit cell's value; the run's records appear live."""
        base = panel_stack.gateways["open"].url
        panel = panel_stack.panel("open")
        job = panel.create("demo.sleep", {"seconds": 1})
        login(page, base)
        page.goto(f"{base}/admin/engine/jobs/{job['id']}")
        wait_live(page)
        before = audit_cells(page)
        assert before, "the job has no audit records to check"
        for cells in before.values():
            assert "—" not in cells[:3] and all(cells[:3]), cells
        page.evaluate(WATCH_AUDIT)

        page.get_by_test_id("refresh-button").click()
        expect(page.get_by_test_id("refresh-button")).not_to_have_attribute("aria-busy", "true")
        page.wait_for_timeout(500)
        assert audit_cells(page) == before
        assert page.evaluate("window.__blanked") == []

        page.evaluate("window.__sameDocument = true")
        assert panel.run(job["id"], reason="browser e2e: audit survives").status == 202
        expect(page.get_by_test_id("job-detail")).to_have_attribute("data-status", "DONE", timeout=STATUS_TIMEOUT_MS)
        expect(page.get_by_test_id("job-field-runReason")).to_have_text("browser e2e: audit survives")
        # The run's records arrive without a reload, and the old rows keep their values.
        page.wait_for_function(
            "(n) => document.querySelectorAll('[data-testid=\"audit-row\"]').length > n",
            arg=len(before),
            timeout=STATUS_TIMEOUT_MS,
        )
        after = audit_cells(page)
        assert {key: after.get(key) for key in before} == before
        assert page.evaluate("window.__blanked") == []
        assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
