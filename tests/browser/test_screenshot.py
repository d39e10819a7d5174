"""Pictures of the jobs panel for the README, on a laptop and on a phone (``docs/`` holds copies).

Writes ``test-artifacts/panel.png`` (jobs in every state, SAFE_MODE off,
1280×800) and ``test-artifacts/panel-mobile.png`` (the same states at 390×844,
rows as cards). To refresh the README's copies, run these tests and copy the
files to ``docs/`` after looking at them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.browser.browsing import ARTIFACTS, VIEWPORT, Pages, login
from tests.browser.seeding import seed_jobs
from tests.browser.test_mobile import PHONE
from tests.e2e.harness import StackFactory

if TYPE_CHECKING:
    from playwright.sync_api import Page

SHOT = ARTIFACTS / "panel.png"
MOBILE_SHOT = ARTIFACTS / "panel-mobile.png"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class TestScreenshot:
    def test_panel_screenshot(self, make_stack: StackFactory, page: Page) -> None:
        """The panel with READY, RUNNING, DONE and FAILED jobs renders fully and is saved as a PNG."""
        from playwright.sync_api import expect

        stack = make_stack(gateways={"open": False})
        api = stack.engine_api()
        # Oldest first: the panel lists newest first.
        done = api.create("demo.echo", {"message": "caches warmed"}, name="warm-caches")
        api.run(done["id"], reason="before the launch")
        failed = api.create("demo.fail", name="export-invoices")
        api.run(failed["id"], reason="month end")
        for job in (done, failed):
            api.wait_status(job["id"])
        running = api.create("demo.sleep", {"seconds": 600}, name="reindex-products")
        api.run(running["id"], reason="search results are stale")
        api.create("demo.sleep", {"seconds": 30}, name="nightly-report")
        api.create("demo.echo", {"message": "hello"}, name="say-hello")

        login(page, stack.gateways["open"].url)
        rows = page.get_by_test_id("job-row")
        expect(rows).to_have_count(5)
        statuses = [rows.nth(i).get_attribute("data-status") for i in range(5)]
        assert statuses == ["READY", "READY", "RUNNING", "FAILED", "DONE"]
        expect(page.get_by_test_id("run-button")).to_have_count(2)
        expect(page.get_by_test_id("cancel-button")).to_have_count(1)
        expect(page.get_by_test_id("safe-mode-pill")).to_have_text("SAFE_MODE: OFF")
        assert page.viewport_size == VIEWPORT

        ARTIFACTS.mkdir(exist_ok=True)
        # Blur the focus ring away from the form and freeze the spinner for a stable picture.
        page.mouse.move(0, 0)
        page.screenshot(path=str(SHOT), animations="disabled")
        data = SHOT.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000

    def test_panel_mobile_screenshot(self, make_stack: StackFactory, open_page: Pages) -> None:
        """The jobs list at phone size, jobs in every state as cards, is saved as a PNG."""
        from playwright.sync_api import expect

        stack = make_stack(gateways={"open": False})
        seed_jobs(stack)
        page = open_page(viewport=PHONE)
        login(page, stack.gateways["open"].url)
        rows = page.get_by_test_id("job-row")
        expect(rows).to_have_count(5)
        expect(rows.first).to_have_css("display", "flex")

        ARTIFACTS.mkdir(exist_ok=True)
        page.mouse.move(0, 0)
        page.screenshot(path=str(MOBILE_SHOT), animations="disabled")
        data = MOBILE_SHOT.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
