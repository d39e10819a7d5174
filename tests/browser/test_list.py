"""The jobs list in a real Chromium against real processes: filters, name search, rows, outcome badges.

The stack is this module's own: the e2e catalog plus :data:`SLOW_TYPE`, a type
whose one-second timeout ends every run (the only way to see a ``timed_out``
outcome). Every test makes its own jobs, with names carrying a fresh tag, so
the filters and the search see only what the test made.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.browsing import Pages, login
from tests.browser.test_panel import STATUS_TIMEOUT_MS, badge_look, expect, row
from tests.e2e.harness import TOUCH_TYPE, Stack
from tests.e2e.install import Installation

if TYPE_CHECKING:
    from playwright.sync_api import Page

#: A type that sleeps far longer than its timeout: each run ends ``timed_out``.
SLOW_TYPE = "e2e.slow"
CATALOG_TYPES = ["demo.echo", "demo.fail", "demo.guarded", "demo.sleep", SLOW_TYPE, TOUCH_TYPE]


@pytest.fixture(scope="module")
def list_stack(tmp_path_factory: pytest.TempPathFactory, installed: Installation) -> Iterator[Stack]:
    """One engine (catalog + :data:`SLOW_TYPE`) behind one SAFE_MODE-off gateway ``open``."""
    stack = Stack(tmp_path_factory.mktemp("list"), installed)
    with stack.catalog.open("a") as catalog:
        catalog.write(
            "\n[[types]]\n"
            f'name = "{SLOW_TYPE}"\n'
            'description = "Sleeps past its one-second timeout."\n'
            f'command = [{json_str(sys.executable)}, "-c", "import time; time.sleep(60)"]\n'
            "timeout = 1\n"
        )
    try:
        stack.start_engine()
        stack.add_gateway("open", safe_mode=False)
        yield stack
    finally:
        stack.stop()


def json_str(value: str) -> str:
    """``value`` as a TOML basic string (a JSON string is one)."""
    import json

    return json.dumps(value)


def tag() -> str:
    """A fresh word that only this test's job names carry."""
    return uuid.uuid4().hex[:10]


def signed_in(stack: Stack, open_page: Pages, **options: Any) -> tuple[Page, str]:
    """A new page signed in to gateway ``open``, and that gateway's URL."""
    page = open_page(**options)
    base = stack.gateways["open"].url
    login(page, base)
    return page, base


def query_of(url: str) -> dict[str, list[str]]:
    """The parsed query string of ``url``."""
    return parse_qs(urlsplit(url).query)


def listed_ids(page: Page) -> set[str]:
    """The job ids of the rows on the page."""
    return set(page.locator('[data-testid="job-row"]').evaluate_all("(rows) => rows.map((r) => r.dataset.jobId)"))


def refreshed(page: Page) -> None:
    """Press Refresh and wait until the script has drawn the rows of the list it got."""
    with page.expect_response(re.compile(r"/api/admin/engine/jobs\?")):
        page.get_by_test_id("refresh-button").click()
    expect(page.locator('#jobs-table[aria-busy="true"]')).to_have_count(0)


def cancel(stack: Stack, job_id: str) -> None:
    """Cancel a RUNNING job through the engine (as a person would from any panel)."""
    reply = stack.engine_api().request("POST", f"/api/jobs/{job_id}/cancel", {})
    assert reply.status == 202, reply


class TestFilters:
    def test_type_is_a_select_of_the_catalog_applied_on_change(self, list_stack: Stack, open_page: Pages) -> None:
        """The Type filter offers the catalog's types and filters as soon as one is chosen (no Filter press)."""
        api = list_stack.engine_api()
        echo = api.create("demo.echo", name=f"echo {tag()}")
        fail = api.create("demo.fail", name=f"fail {tag()}")
        page, _ = signed_in(list_stack, open_page)

        select = page.get_by_test_id("filter-type")
        values = select.locator("option").evaluate_all("(options) => options.map((o) => o.value)")
        assert values == ["", *CATALOG_TYPES]
        expect(row(page, echo["id"])).to_be_visible()
        select.select_option("demo.fail")
        page.wait_for_url(re.compile(r"[?&]type=demo\.fail"))
        expect(row(page, fail["id"])).to_be_visible()
        expect(row(page, echo["id"])).to_have_count(0)
        expect(page.get_by_test_id("filter-type")).to_have_value("demo.fail")
        assert {t.strip() for t in page.locator('[data-testid="job-row"] td:nth-child(2)').all_inner_texts()} == {
            "demo.fail"
        }

    def test_status_applies_on_change(self, list_stack: Stack, open_page: Pages) -> None:
        """Choosing a status filters at once; the rows left all have it."""
        api = list_stack.engine_api()
        ready = api.create("demo.echo", name=f"ready {tag()}")
        page, _ = signed_in(list_stack, open_page)
        expect(row(page, ready["id"])).to_be_visible()
        page.get_by_test_id("filter-status").select_option("DONE")
        page.wait_for_url(re.compile(r"[?&]status=DONE"))
        expect(row(page, ready["id"])).to_have_count(0)
        statuses = page.locator('[data-testid="job-row"]').evaluate_all("(rows) => rows.map((r) => r.dataset.status)")
        assert set(statuses) <= {"DONE"}


class TestNameSearch:
    def test_search_is_case_insensitive_substring_done_by_the_engine(self, list_stack: Stack, open_page: Pages) -> None:
        """The name box sends q: any case, any part of the name; the script's own refresh keeps it."""
        word = tag()
        api = list_stack.engine_api()
        backup = api.create("demo.echo", name=f"Nightly Backup {word}")
        report = api.create("demo.echo", name=f"nightly report {word}")
        api.create("demo.echo", name=f"Backup elsewhere {tag()}")
        page, _ = signed_in(list_stack, open_page)

        page.get_by_test_id("filter-q").fill(f"BACKUP {word.upper()}")
        page.get_by_test_id("filter-q").press("Enter")
        page.wait_for_url(re.compile(r"[?&]q="))
        assert query_of(page.url)["q"] == [f"BACKUP {word.upper()}"]
        expect(row(page, backup["id"])).to_be_visible()
        assert listed_ids(page) == {backup["id"]}
        expect(page.get_by_test_id("filter-q")).to_have_value(f"BACKUP {word.upper()}")

        with page.expect_request(re.compile(r"/api/admin/engine/jobs\?")) as listing:
            refreshed(page)
        assert query_of(listing.value.url)["q"] == [f"BACKUP {word.upper()}"]
        assert listed_ids(page) == {backup["id"]}

        page.get_by_test_id("filter-q").fill(word)
        page.get_by_test_id("filter-q").press("Enter")
        page.wait_for_url(re.compile(rf"[?&]q={word}(&|$)"))
        expect(row(page, report["id"])).to_be_visible()
        assert listed_ids(page) == {backup["id"], report["id"]}

    def test_paging_links_keep_the_search(self, list_stack: Stack, open_page: Pages) -> None:
        """With more matches than a page holds, Older keeps q, and so does the page after it."""
        word = tag()
        api = list_stack.engine_api()
        older, newer = (api.create("demo.echo", name=f"paged {word} {i}") for i in range(2))
        page, base = signed_in(list_stack, open_page)
        page.goto(f"{base}/admin/engine/jobs?q={word}&limit=1")
        expect(row(page, newer["id"])).to_be_visible()
        link = page.get_by_test_id("older-button")
        expect(link).to_be_visible()
        assert query_of(link.get_attribute("href") or "")["q"] == [word]
        link.click()
        page.wait_for_url(re.compile(r"[?&]before="))
        assert query_of(page.url)["q"] == [word]
        expect(row(page, older["id"])).to_be_visible()
        assert listed_ids(page) == {older["id"]}
        assert query_of(page.get_by_test_id("newest-link").get_attribute("href") or "")["q"] == [word]


class TestRows:
    def test_name_is_the_main_text_and_a_missing_name_is_said(self, list_stack: Stack, open_page: Pages) -> None:
        """A row's link is the job's name; created without one it says "(no name)" muted, not the type again."""
        api = list_stack.engine_api()
        named = api.create("demo.echo", name=f"Quarterly reindex {tag()}")
        unnamed = api.create("demo.fail")
        page, _ = signed_in(list_stack, open_page)
        for rendered_by in ("server", "script"):
            if rendered_by == "script":
                refreshed(page)
            link = row(page, named["id"]).get_by_test_id("job-link")
            expect(link).to_have_text(named["name"])
            expect(row(page, named["id"]).get_by_test_id("job-id")).to_have_text(named["id"])
            none = row(page, unnamed["id"]).get_by_test_id("job-link")
            expect(none).to_have_text("(no name)")
            expect(none).to_have_class(re.compile(r"\bjob-title-none\b"))
            muted = page.evaluate("() => getComputedStyle(document.querySelector('.muted') || document.body).color")
            # Retried: a live relist may replace the row between finding the link and reading its style.
            expect(none).to_have_css("color", muted)
            expect(row(page, unnamed["id"]).locator("td").nth(1)).to_have_text("demo.fail")

    def test_duration_ticks_while_running_and_is_the_total_once_finished(
        self, list_stack: Stack, open_page: Pages
    ) -> None:
        """RUNNING: the elapsed time counts up by itself; finished: the run's total, from start to end."""
        api = list_stack.engine_api()
        running = api.create("demo.sleep", {"seconds": 30}, name=f"long {tag()}")
        api.run(running["id"])
        short = api.create("demo.sleep", {"seconds": 1}, name=f"short {tag()}")
        api.run(short["id"])
        done = api.wait_status(short["id"])
        page, _ = signed_in(list_stack, open_page)

        clock = row(page, running["id"]).get_by_test_id("duration")
        expect(clock).to_have_text(re.compile(r"^\d+s$"))
        first = clock.inner_text()
        expect(clock).not_to_have_text(first, timeout=5_000)
        expect(clock).to_have_attribute("title", re.compile(r"^Running since "))

        started = dt.datetime.fromisoformat(done["startedAt"])
        ended = dt.datetime.fromisoformat(done["endedAt"])
        total = row(page, short["id"]).get_by_test_id("duration")
        expect(total).to_have_text(f"{int((ended - started).total_seconds())}s")  # a short run: whole seconds
        expect(total).to_have_attribute("title", re.compile(r"^From .+ UTC to .+ UTC$"))
        cancel(list_stack, running["id"])
        ready = api.create("demo.echo")
        page.reload()
        expect(row(page, ready["id"]).get_by_test_id("duration")).to_have_text("—")

    def test_created_is_relative_with_the_exact_time_on_hover(self, list_stack: Stack, open_page: Pages) -> None:
        """Created reads "just now" / "N min ago"; hovering shows the exact time with its zone."""
        job = list_stack.engine_api().create("demo.echo", name=f"fresh {tag()}")
        page, _ = signed_in(list_stack, open_page)
        created = row(page, job["id"]).locator("td").nth(3).locator("time")
        expect(created).to_have_text(re.compile(r"^(just now|\d+ s ago|\d+ min ago)$"))
        exact = dt.datetime.fromisoformat(job["createdAt"]).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        created.hover()
        expect(created).to_have_attribute("title", exact)
        expect(created).to_have_attribute("datetime", job["createdAt"])

    def test_a_row_drawn_live_is_relative_from_the_start(self, list_stack: Stack, open_page: Pages) -> None:
        """A row the live list adds shows "just now" as it appears, not the exact time until the next tick."""
        page, _ = signed_in(list_stack, open_page)
        # The Created texts of job rows as they are added (observers run before the next timer task).
        page.evaluate(
            """() => {
              window.createdAsAdded = [];
              new MutationObserver((changes) => {
                for (const change of changes) for (const node of change.addedNodes) {
                  if (node.nodeType !== 1) continue;
                  const rows = node.matches('[data-testid=job-row]') ? [node]
                    : [...node.querySelectorAll('[data-testid=job-row]')];
                  for (const tr of rows) {
                    window.createdAsAdded.push([tr.dataset.jobId, tr.querySelectorAll('td')[3].textContent]);
                  }
                }
              }).observe(document.body, { childList: true, subtree: true });
            }"""
        )
        job = list_stack.engine_api().create("demo.echo", name=f"live row {tag()}")
        expect(row(page, job["id"])).to_be_visible()
        added = [text for job_id, text in page.evaluate("window.createdAsAdded") if job_id == job["id"]]
        assert added and all(re.fullmatch(r"just now|\d+ s ago", text) for text in added), added


class TestOutcomeBadges:
    def test_a_cancelled_job_shows_cancelled_not_a_red_failed(self, list_stack: Stack, open_page: Pages) -> None:
        """Cancelled: the row turns "Cancelled" live, in a neutral colour; the server's badge says the same."""
        api = list_stack.engine_api()
        job = api.create("demo.sleep", {"seconds": 600}, name=f"to cancel {tag()}")
        api.run(job["id"])
        failed = api.create("demo.fail", name=f"plain failure {tag()}")
        api.run(failed["id"])
        api.wait_status(failed["id"])
        page, base = signed_in(list_stack, open_page)
        expect(row(page, job["id"])).to_have_attribute("data-status", "RUNNING")
        cancel(list_stack, job["id"])

        badge = row(page, job["id"]).get_by_test_id("status-badge")
        expect(badge).to_have_text("Cancelled", timeout=STATUS_TIMEOUT_MS)
        expect(badge).to_have_attribute("data-outcome", "cancelled")
        (r, g, b), _ = badge_look(badge)
        assert not (r > g + 10 and r > b + 10), f"the Cancelled badge is red: rgb({r}, {g}, {b})"
        expect(row(page, failed["id"]).get_by_test_id("status-badge")).to_have_text("FAILED")
        script_badge = badge.evaluate("(node) => node.outerHTML")

        quiet = open_page(java_script_enabled=False)
        login(quiet, base)
        server_badge = row(quiet, job["id"]).get_by_test_id("status-badge")
        expect(server_badge).to_have_text("Cancelled")
        assert server_badge.evaluate("(node) => node.outerHTML") == script_badge

    def test_a_run_its_timeout_ended_says_timed_out(self, list_stack: Stack, open_page: Pages) -> None:
        """A run killed by its type's timeout shows "FAILED · timed out", rendered alike by server and script."""
        api = list_stack.engine_api()
        job = api.create(SLOW_TYPE, name=f"too slow {tag()}")
        api.run(job["id"])
        assert api.wait_status(job["id"])["outcome"] == "timed_out"
        page, _ = signed_in(list_stack, open_page)
        badge = row(page, job["id"]).get_by_test_id("status-badge")
        expect(badge).to_have_text("FAILED · timed out")
        expect(badge).to_have_attribute("data-outcome", "timed_out")
        server = badge.evaluate("(node) => node.outerHTML")
        refreshed(page)
        expect(badge).to_have_text("FAILED · timed out")
        assert badge.evaluate("(node) => node.outerHTML") == server
