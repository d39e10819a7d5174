"""The one rule for time, in a real Chromium against real processes (static/js/time.js).

The browser runs in Europe/Berlin (``timezone_id``), where December is UTC+1,
so a time shown in UTC and the same time shown in local time differ by an hour.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from tests.browser.browsing import Pages, login
from tests.browser.test_panel import expect, row
from tests.e2e.harness import Stack

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

ZONE = "Europe/Berlin"
STORAGE_KEY = "engineJobs.timeZone"


def shown(iso: str, zone: str = "UTC") -> str:
    """``iso`` as the panel writes it in ``zone``: ``2026-12-04 14:37:05``."""
    return dt.datetime.fromisoformat(iso).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


def berlin_page(open_page: Pages, **options: Any) -> Page:
    """A new page whose browser lives in :data:`ZONE`."""
    return open_page(timezone_id=ZONE, **options)


def expect_time_in(node: Locator, zone: str = "UTC") -> None:
    """``node`` (a <time data-local-time>) shows its own datetime in ``zone``: as text unless relative, on hover.

    Each try reads the node at once: a live update may redraw it (a new datetime) between two reads.
    """
    deadline = time.monotonic() + 5
    while True:
        iso, text, title, relative = node.evaluate(
            "(n) => [n.getAttribute('datetime'), n.textContent, n.title, n.hasAttribute('data-relative')]"
        )
        if (relative or text == shown(iso, zone)) and title == f"{shown(iso, zone)} {zone}":
            return
        assert time.monotonic() < deadline, (zone, iso, text, title)
        time.sleep(0.1)


def created_time(page: Page, job_id: str) -> Any:
    """The <time> of a row's Created cell."""
    return row(page, job_id).locator("td").nth(3).locator("time")


class TestZone:
    def test_utc_by_default_and_the_zone_is_named(self, panel_stack: Stack, open_page: Pages) -> None:
        """A new browser sees every time in UTC, whatever its own zone, and the header says "Times in UTC"."""
        job = panel_stack.engine_api().create("demo.echo")
        page = berlin_page(open_page)
        login(page, panel_stack.gateways["open"].url)
        expect(page.get_by_test_id("time-zone-switch")).to_have_text("Times in UTC")
        expect(created_time(page, job["id"])).to_have_attribute("title", f"{shown(job['createdAt'])} UTC")
        expect_time_in(page.get_by_test_id("last-updated").locator("time"))

    def test_switch_to_local_time_is_remembered_on_every_page(self, panel_stack: Stack, open_page: Pages) -> None:
        """The header switch shows local time, names the zone, and every page of this browser keeps the choice."""
        job = panel_stack.engine_api().create("demo.echo")
        base = panel_stack.gateways["open"].url
        page = berlin_page(open_page)
        login(page, base)
        switch = page.get_by_test_id("time-zone-switch")
        switch.click()
        expect(switch).to_have_text(f"Times in {ZONE}")
        assert page.evaluate(f"localStorage.getItem('{STORAGE_KEY}')") == "local"
        expect(created_time(page, job["id"])).to_have_attribute("title", f"{shown(job['createdAt'], ZONE)} {ZONE}")
        expect_time_in(page.get_by_test_id("last-updated").locator("time"), ZONE)

        page.reload()
        expect(page.get_by_test_id("time-zone-switch")).to_have_text(f"Times in {ZONE}")
        expect(created_time(page, job["id"])).to_have_attribute("title", f"{shown(job['createdAt'], ZONE)} {ZONE}")

        page.goto(f"{base}/admin/engine/jobs/{job['id']}")
        expect(page.get_by_test_id("time-zone-switch")).to_have_text(f"Times in {ZONE}")
        times = page.locator("main time[data-local-time]")
        expect(times.first).to_be_visible()
        for node in times.all():
            expect_time_in(node, ZONE)

        for path in ("/admin/engine/logs", "/admin/audit", "/admin/engine/approvals"):
            page.goto(base + path)
            expect(page.get_by_test_id("time-zone-switch")).to_have_text(f"Times in {ZONE}")
            for node in page.locator("main time[data-local-time]:not([data-relative])").all():
                expect_time_in(node, ZONE)
        # The approvals page's own "Updated" line too (drawn by its script, not the live list's).
        expect_time_in(page.get_by_test_id("last-updated").locator("time"), ZONE)

        # A second tab of the same browser follows the choice too, and back to UTC.
        other = page.context.new_page()
        other.goto(f"{base}/admin/engine/jobs")
        expect(other.get_by_test_id("time-zone-switch")).to_have_text(f"Times in {ZONE}")
        other.get_by_test_id("time-zone-switch").click()
        expect(other.get_by_test_id("time-zone-switch")).to_have_text("Times in UTC")
        expect(page.get_by_test_id("time-zone-switch")).to_have_text("Times in UTC")
        other.close()

    def test_without_javascript_the_server_writes_utc(self, panel_stack: Stack, open_page: Pages) -> None:
        """With scripts off the page still shows readable UTC times, not raw RFC 3339."""
        job = panel_stack.engine_api().create("demo.echo")
        page = berlin_page(open_page, java_script_enabled=False)
        login(page, panel_stack.gateways["open"].url)
        expect(created_time(page, job["id"])).to_have_text(f"{shown(job['createdAt'])} UTC")
        expect(page.get_by_test_id("time-zone-switch")).to_have_text("Times in UTC")


ZONE_FORM = """() => {
  const form = document.createElement('form');
  form.method = 'get';
  form.action = '/admin/audit';
  form.id = 'zone-form';
  const input = document.createElement('input');
  input.type = 'datetime-local';
  input.name = 'since';
  input.id = 'zone-input';
  input.setAttribute('data-zone-input', '');
  input.value = '2026-12-04T14:37';
  form.append(input);
  document.querySelector('main').append(form);
}"""


class TestZoneInputs:
    def test_a_zone_input_is_shown_and_sent_in_the_chosen_zone(self, panel_stack: Stack, open_page: Pages) -> None:
        """Any datetime-local marked data-zone-input shows the server's UTC value in local time and sends RFC 3339."""
        base = panel_stack.gateways["open"].url
        page = berlin_page(open_page)
        login(page, base)
        page.get_by_test_id("time-zone-switch").click()
        expect(page.get_by_test_id("time-zone-switch")).to_have_text(f"Times in {ZONE}")

        page.evaluate(ZONE_FORM)
        field = page.locator("#zone-input")
        expect(field).to_have_value("2026-12-04T15:37")  # 14:37 UTC is 15:37 in Berlin
        sent = page.evaluate("() => new FormData(document.getElementById('zone-form')).get('since')")
        assert sent == "2026-12-04T14:37:00Z"

        field.fill("2026-12-04T16:00")
        page.get_by_test_id("time-zone-switch").click()  # back to UTC: the same instant, in UTC
        expect(field).to_have_value("2026-12-04T15:00")
        page.get_by_test_id("time-zone-switch").click()
        expect(field).to_have_value("2026-12-04T16:00")
        page.evaluate("() => document.getElementById('zone-form').requestSubmit()")
        page.wait_for_url(re.compile(r"/admin/audit\?"))
        assert parse_qs(urlsplit(page.url).query)["since"] == ["2026-12-04T15:00:00Z"]
