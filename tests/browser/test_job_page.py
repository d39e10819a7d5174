"""Reading a job in a real Chromium: the log view, its download, Run again, a cancelled job.

The log comes from a real run of ``demo.echo`` whose message is many known
lines, so the numbers, the hits of a search and the downloaded text are
checked against what the engine itself stored. Run again is checked against
the engine too: a READY copy linked both ways, and nothing ran (an
``e2e.touch`` job leaves a marker file when it runs).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.browser.browsing import login
from tests.browser.test_panel import STATUS_TIMEOUT_MS, expect
from tests.e2e.harness import TOUCH_TYPE, Stack

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

#: The lines of the log every log test reads: 80 of them, so the log box has to scroll.
NEEDLE_LINES = {3: "found the Needle here", 30: "a needle", 55: "NEEDLE in caps", 78: "needle twice: needle"}
LINES = [f"{n:03d} {NEEDLE_LINES.get(n, 'hay')}" for n in range(1, 81)]
#: Case-insensitive hits of "needle" in LINES, in order.
HITS = ["Needle", "needle", "NEEDLE", "needle", "needle"]


def echoed(stack: Stack) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A finished ``demo.echo`` job that printed :data:`LINES`, and its log lines as the engine stored them."""
    api = stack.engine_api()
    job = api.create("demo.echo", {"message": "\n".join(LINES)}, name="log reader")
    api.run(job["id"])
    job = api.wait_status(job["id"])
    assert job["status"] == "DONE", job
    reply = api.request("GET", f"/api/jobs/{job['id']}/logs?after=0&limit=5000")
    assert reply.status == 200, reply
    lines: list[dict[str, Any]] = reply.json()["lines"]
    assert [line["text"] for line in lines] == LINES
    return job, lines


def open_job(page: Page, base: str, job_id: str) -> None:
    """Sign in and open the job's page."""
    login(page, base)
    page.goto(f"{base}/admin/engine/jobs/{job_id}")
    expect(page.get_by_test_id("job-detail")).to_be_visible()


def in_view(node: Locator, box: Locator) -> bool:
    """Whether ``node`` is inside the visible part of the scrolling ``box`` and of the window."""
    inside: bool = node.evaluate(
        """(node, box) => {
            const r = node.getBoundingClientRect(), b = box.getBoundingClientRect();
            // 1 px of slack: the window scrolls by whole pixels, the lines sit on fractional ones.
            return r.top >= b.top - 1 && r.bottom <= b.bottom + 1 && r.top >= -1 && r.bottom <= window.innerHeight + 1;
        }""",
        box.element_handle(),
    )
    return inside


class TestLogView:
    def test_lines_are_numbered_with_the_full_date_and_time_on_hover(self, panel_stack: Stack, page: Page) -> None:
        """Each line shows its number (the engine's seq) and, on hover, its full date and time."""
        job, lines = echoed(panel_stack)
        open_job(page, panel_stack.gateways["open"].url, job["id"])
        shown = page.get_by_test_id("log-line")
        expect(shown).to_have_count(len(LINES))
        expect(page.get_by_test_id("log-line-number")).to_have_text([str(line["seq"]) for line in lines])
        assert [line["seq"] for line in lines] == list(range(1, len(LINES) + 1))
        expect(shown.nth(2).locator(".log-text")).to_have_text(LINES[2])

        time_node = shown.first.get_by_test_id("log-line-time").locator("time")
        expect(time_node).to_have_attribute("datetime", lines[0]["at"])
        at = dt.datetime.fromisoformat(lines[0]["at"].replace("Z", "+00:00"))
        title = time_node.get_attribute("title") or ""
        # The zone may move the hour (and the day); the year, minutes and seconds are the same anywhere.
        assert str(at.year) in title and f"{at.minute:02d}:{at.second:02d}" in title, title

    def test_search_marks_every_hit_counts_them_and_jumps_between_them(self, panel_stack: Stack, page: Page) -> None:
        """Typing marks every case-insensitive hit; Enter, Shift+Enter and the buttons show the current one."""
        job, _ = echoed(panel_stack)
        open_job(page, panel_stack.gateways["open"].url, job["id"])
        log = page.get_by_test_id("job-log")
        expect(page.get_by_test_id("log-line")).to_have_count(len(LINES))
        search = page.get_by_test_id("log-search")
        count = page.get_by_test_id("log-search-count")
        hits = log.get_by_test_id("log-hit")
        current = log.locator("mark.log-hit-current")

        search.fill("needle")
        expect(hits).to_have_text(HITS)
        expect(count).to_have_text(f"1 of {len(HITS)}")
        expect(current).to_have_count(1)
        expect(current).to_have_text("Needle")
        # The marks wrap the text: the line reads the same.
        expect(page.get_by_test_id("log-line").nth(77).locator(".log-text")).to_have_text(LINES[77])

        search.press("Enter")
        expect(count).to_have_text(f"2 of {len(HITS)}")
        page.get_by_test_id("log-search-next").click()
        page.get_by_test_id("log-search-next").click()
        expect(count).to_have_text(f"4 of {len(HITS)}")
        # The 4th hit is on line 78, far below the first screen of the log box: it was scrolled to.
        expect(current).to_have_count(1)
        assert current.evaluate("(node) => node.closest('li').dataset.seq") == "78"
        assert in_view(current, log), "the current hit is scrolled into view"
        assert not in_view(hits.first, log), "the first hit is out of view now"

        search.press("Shift+Enter")
        expect(count).to_have_text(f"3 of {len(HITS)}")
        for _ in range(3):
            page.get_by_test_id("log-search-prev").click()
        expect(count).to_have_text(f"{len(HITS)} of {len(HITS)}")  # wraps around
        page.get_by_test_id("log-search-next").click()
        expect(count).to_have_text(f"1 of {len(HITS)}")
        assert in_view(current, log), "back at the first hit, in view"

        search.fill("no such text")
        expect(count).to_have_text("No matches")
        expect(hits).to_have_count(0)
        expect(page.get_by_test_id("log-search-next")).to_be_disabled()
        search.fill("NEEDLE")
        expect(hits).to_have_count(len(HITS))
        search.press("Escape")
        expect(search).to_have_value("")
        expect(hits).to_have_count(0)
        expect(count).to_have_text("")

    def test_download_serves_the_raw_log_as_text_with_a_filename(
        self, panel_stack: Stack, page: Page, tmp_path: Path
    ) -> None:
        """Download saves job-<id>.log, served as text/plain with a filename, holding exactly the log's lines."""
        job, _ = echoed(panel_stack)
        base = panel_stack.gateways["open"].url
        open_job(page, base, job["id"])
        link = page.get_by_test_id("log-download")
        expect(link).to_have_text("Download")
        href = link.get_attribute("href")
        assert href == f"/api/admin/engine/jobs/{job['id']}/logs.txt"

        # What the server says, with this signed-in browser's cookies.
        answer = page.request.get(f"{base}{href}")
        assert answer.status == 200, answer.text()
        assert answer.headers["content-type"] == "text/plain; charset=utf-8"
        disposition = answer.headers["content-disposition"]
        assert disposition == f'attachment; filename="job-{job["id"]}.log"', disposition
        assert answer.text() == "\n".join(LINES)

        with page.expect_download() as waiting:
            link.click()
        download = waiting.value
        assert download.suggested_filename == f"job-{job['id']}.log"
        saved = tmp_path / "saved.log"
        download.save_as(saved)
        assert saved.read_text(encoding="utf-8") == "\n".join(LINES)


class TestRunAgain:
    def test_run_again_makes_a_ready_copy_linked_both_ways_and_runs_nothing(
        self, panel_stack: Stack, page: Page
    ) -> None:
        """Run again on a finished job opens a READY copy (same type, name, params), linked both ways, not run."""
        api = panel_stack.engine_api()
        original = api.create(TOUCH_TYPE, name="touch the marker")
        api.run(original["id"])
        assert api.wait_status(original["id"])["status"] == "DONE"
        assert panel_stack.ran(original["id"])
        base = panel_stack.gateways["open"].url  # SAFE_MODE off: a run would be allowed here
        open_job(page, base, original["id"])
        expect(page.get_by_test_id("copy-of-link")).to_have_count(0)
        expect(page.get_by_test_id("copy-link")).to_have_count(0)

        page.get_by_test_id("run-again-button").click()
        page.wait_for_url(re.compile(rf"{re.escape(base)}/admin/engine/jobs/(?!{re.escape(original['id'])}$)[^/]+$"))
        copy_id = page.url.rsplit("/", 1)[1]
        expect(page.locator("#job-status-badge")).to_contain_text("READY")
        expect(page.get_by_test_id("job-field-name")).to_have_text("touch the marker")
        expect(page.get_by_test_id("job-field-type")).to_have_text(TOUCH_TYPE)
        expect(page.get_by_test_id("copy-of-link")).to_have_text(original["id"])
        expect(page.get_by_test_id("run-again-button")).to_have_count(0)  # not on a READY job
        expect(page.get_by_test_id("run-button")).to_be_visible()  # the copy gets its own RUN

        copy = api.job(copy_id)
        assert copy["status"] == "READY" and copy["copyOf"] == original["id"], copy
        assert (copy["type"], copy["name"], copy["params"]) == (original["type"], original["name"], original["params"])
        assert [entry["status"] for entry in copy["history"]] == ["READY"], copy["history"]
        assert api.job(original["id"])["copies"] == [copy_id]

        page.get_by_test_id("copy-of-link").click()
        page.wait_for_url(f"{base}/admin/engine/jobs/{original['id']}")
        expect(page.get_by_test_id("copy-link")).to_have_text([copy_id])
        expect(page.get_by_test_id("job-field-copies")).to_be_visible()
        page.get_by_test_id("copy-link").click()
        page.wait_for_url(f"{base}/admin/engine/jobs/{copy_id}")

        # Nothing ran: no marker, still READY with its one history entry.
        assert not panel_stack.ran(copy_id)
        assert api.job(copy_id)["status"] == "READY"

    def test_run_again_is_offered_on_finished_jobs_only_and_under_safe_mode(
        self, panel_stack: Stack, page: Page
    ) -> None:
        """A READY job has no Run again; a FAILED one has it, on a SAFE_MODE gateway too (a copy starts nothing)."""
        api = panel_stack.engine_api()
        ready = api.create("demo.echo")
        failed = api.create("demo.fail")
        api.run(failed["id"])
        assert api.wait_status(failed["id"])["status"] == "FAILED"
        base = panel_stack.gateways["safe"].url
        open_job(page, base, ready["id"])
        expect(page.get_by_test_id("run-again-button")).to_have_count(0)
        page.goto(f"{base}/admin/engine/jobs/{failed['id']}")
        page.get_by_test_id("run-again-button").click()
        page.wait_for_url(re.compile(rf"{re.escape(base)}/admin/engine/jobs/(?!{re.escape(failed['id'])}$)[^/]+$"))
        expect(page.get_by_test_id("copy-of-link")).to_have_text(failed["id"])
        expect(page.locator("#job-status-badge")).to_contain_text("READY")


class TestCancelled:
    def test_a_cancelled_job_reads_cancelled_not_failed(self, panel_stack: Stack, page: Page) -> None:
        """Cancelling from the job page turns its badge into Cancelled, live and after a reload."""
        api = panel_stack.engine_api()
        job = api.create("demo.sleep", {"seconds": 120})
        api.run(job["id"])
        api.wait_status(job["id"], {"RUNNING"})
        base = panel_stack.gateways["open"].url
        open_job(page, base, job["id"])
        page.get_by_test_id("cancel-button").click()
        dialog = page.get_by_test_id("cancel-dialog")
        dialog.get_by_test_id("cancel-reason").fill("wrong window")
        dialog.get_by_test_id("cancel-confirm").click()
        badge = page.locator("#job-status-badge")
        expect(badge).to_have_text("Cancelled", timeout=STATUS_TIMEOUT_MS)
        assert api.job(job["id"])["outcome"] == "cancelled"
        expect(page.get_by_test_id("job-field-status")).to_have_text("Cancelled")
        page.reload()
        expect(page.locator("#job-status-badge")).to_have_text("Cancelled")
        expect(page.get_by_test_id("job-field-status")).to_have_text("Cancelled")
