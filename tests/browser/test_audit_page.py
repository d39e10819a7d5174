"""The audit trail in a real Chromium: the page, its filters and the job page's section, with the CSP in force.

Any console error (a CSP violation included) or uncaught exception fails a
test (see ``conftest.py``).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.browser.browsing import login
from tests.e2e.harness import USER, Stack

if TYPE_CHECKING:
    from playwright.sync_api import Page

TIMEOUT_MS = 30_000


def expect(target: Any) -> Any:
    """Playwright's ``expect``, imported late so that a machine without Playwright can still collect."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


class TestAuditPage:
    def test_timeline_filters_and_job_section(self, panel_stack: Stack, page: Page) -> None:
        """The Audit nav item opens both journals' records; filtering by job narrows them; the job page lists them."""
        panel = panel_stack.panel("open")
        job = panel.create("demo.echo")
        assert panel.run(job["id"], "browser audit check").status == 202
        panel_stack.engine_api().wait_status(job["id"])
        base = panel_stack.gateways["open"].url
        login(page, base)

        page.get_by_role("link", name="Audit").click()
        page.wait_for_url(f"{base}/admin/audit")
        rows = page.get_by_test_id("audit-row")
        expect(rows.first).to_be_visible()
        expect(page.locator('[data-testid="audit-row"][data-journal="engine"]').first).to_be_visible()
        expect(page.locator('[data-testid="audit-row"][data-action="login_succeeded"]').first).to_contain_text(USER)

        page.get_by_test_id("filter-job").fill(job["id"])
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url(f"{base}/admin/audit?**")
        run = page.locator('[data-testid="audit-row"][data-journal="gateway"][data-action="job_run"]')
        expect(run).to_contain_text("browser audit check")
        expect(run).to_contain_text("accepted")
        for action in page.locator('[data-testid="audit-row"]').all():
            expect(action).to_contain_text(job["id"])

        page.goto(f"{base}/admin/engine/jobs/{job['id']}")
        section = page.get_by_test_id("job-audit")
        expect(section.locator('[data-journal="engine"]').first).to_be_visible(timeout=TIMEOUT_MS)
        expect(section.locator('[data-action="job_run_requested"]')).to_have_count(1)


def signed_in_at(panel_stack: Stack, page: Page, path: str, *, jobs: int = 0) -> tuple[str, dict[str, Any]]:
    """Fill the trail (:func:`fill_audit`), sign in and open ``path``; return the base URL and the named job."""
    named = fill_audit(panel_stack, jobs)
    base = panel_stack.gateways["open"].url
    login(page, base)
    page.goto(f"{base}{path}")
    return base, named


def fill_audit(panel_stack: Stack, jobs: int) -> dict[str, Any]:
    """A named job run through the gateway plus ``jobs`` more created at the engine; return the named job."""
    engine = panel_stack.engine_api()
    named = engine.create("demo.echo", name="nightly backup")
    panel = panel_stack.panel("open")
    assert panel.run(named["id"], "compact rows check").status == 202
    engine.wait_status(named["id"])
    for _ in range(jobs):
        engine.create("demo.echo")
    return named


class TestAuditPageDaily:
    def test_fifty_compact_rows_expand_and_name_their_jobs(self, panel_stack: Stack, page: Page) -> None:
        """50 rows fit on about two screens, each one line with its details folded; job names sit next to ids."""
        base, named = signed_in_at(panel_stack, page, "/admin/audit", jobs=55)
        rows = page.get_by_test_id("audit-row")
        expect(rows).to_have_count(50)
        height = rows.evaluate_all("(rows) => rows.reduce((h, r) => h + r.getBoundingClientRect().height, 0)")
        viewport = page.viewport_size
        assert viewport is not None and height <= 2 * viewport["height"], (height, viewport)
        details = page.get_by_test_id("audit-details").first
        expect(details.locator("dl")).to_be_hidden()
        details.locator("summary").click()
        expect(details.locator("dl")).to_be_visible()
        expect(details.locator('[data-field="source"]')).to_be_visible()

        page.get_by_test_id("filter-job").fill(named["id"])
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url(f"{base}/admin/audit?**")
        run = page.locator('[data-testid="audit-row"][data-action="run_requested"]')
        expect(run.locator(".job-id")).to_have_text(named["id"])
        expect(run.get_by_test_id("audit-job-name")).to_have_text("nightly backup")

    def test_filters_by_action_outcome_actor_and_time(self, panel_stack: Stack, page: Page) -> None:
        """The selects and the actor prefix narrow the rows; a since in the future leaves none."""
        signed_in_at(panel_stack, page, "/admin/audit")
        page.get_by_test_id("filter-action").select_option("job_run")
        page.get_by_test_id("filter-outcome").select_option("accepted")
        page.get_by_test_id("filter-actor").fill(USER[:3])
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url("**action=job_run**")
        rows = page.get_by_test_id("audit-row")
        expect(rows.first).to_be_visible()
        for row in rows.all():
            expect(row).to_have_attribute("data-action", "job_run")
            expect(row.locator('[data-field="actor"]')).to_have_text(USER)
            expect(row).to_contain_text("accepted")
        expect(page.get_by_test_id("filter-action")).to_have_value("job_run")

        since = page.get_by_test_id("filter-since")
        assert since.get_attribute("type") == "datetime-local" and since.get_attribute("data-zone-input") is not None
        since.fill("2999-01-01T00:00")
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url("**since=**")
        expect(page.get_by_test_id("audit-empty")).to_contain_text("No audit records match")
        expect(page.get_by_test_id("filter-since")).to_have_value("2999-01-01T00:00")

    def test_export_downloads_the_current_filter(self, panel_stack: Stack, page: Page) -> None:
        """Export saves the filtered records as CSV and as JSON Lines, and the export shows up in the trail."""
        base, _ = signed_in_at(panel_stack, page, "/admin/audit?action=job_run")
        with page.expect_download() as info:
            page.get_by_test_id("export-button").click()
        download = info.value
        assert re.fullmatch(r"audit-\d{8}T\d{6}Z\.csv", download.suggested_filename)
        table = list(csv.reader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
        assert table[0][:6] == ["journal", "seq", "at", "actor", "source", "action"]
        assert len(table) > 1 and {row[5] for row in table[1:]} == {"job_run"}

        page.get_by_test_id("export-format").select_option("jsonl")
        with page.expect_download() as info:
            page.get_by_test_id("export-button").click()
        lines = Path(info.value.path()).read_text(encoding="utf-8").splitlines()
        assert lines and {json.loads(line)["action"] for line in lines} == {"job_run"}

        exports = page.get_by_test_id("audit-row")
        for _ in range(20):  # each count is recorded once its last byte is out: the download may finish first
            page.goto(f"{base}/admin/audit?action=audit_export")
            if exports.count() == 2:
                break
            page.wait_for_timeout(100)
        expect(exports).to_have_count(2)
        expect(exports.first).to_contain_text("count: ")


class TestEngineLogPaging:
    def test_older_and_newest_links(self, panel_stack: Stack, page: Page) -> None:
        """With more than 50 entries the Engine log shows 50, an Older link to the rest, and Newest back."""
        base, _ = signed_in_at(panel_stack, page, "/admin/audit", jobs=55)
        page.get_by_role("link", name="Engine log").click()
        rows = page.get_by_test_id("engine-log-row")
        expect(rows).to_have_count(50)
        newest = rows.first.inner_text()
        page.get_by_test_id("older-link").click()
        page.wait_for_url("**before=**")
        expect(rows.first).to_be_visible()
        assert rows.first.inner_text() != newest
        page.get_by_test_id("newest-link").click()
        page.wait_for_url(f"{base}/admin/engine/logs")
        expect(rows).to_have_count(50)
