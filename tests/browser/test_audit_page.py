"""The audit trail in a real Chromium: the page, its filters and the job page's section, with the CSP in force.

Any console error (a CSP violation included) or uncaught exception fails a
test (see ``conftest.py``).
"""

from __future__ import annotations

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
