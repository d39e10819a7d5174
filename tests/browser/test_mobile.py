"""The panel on a phone (390×844) in a real Chromium: no sideways page scroll, rows as cards, badges whole.

Each page of :data:`PAGES` is opened at the width of a common phone with jobs
in every state (a long job name among them), and checked for what makes a page
unusable at 3 a.m. on a phone: the page scrolling sideways, a table that needs
scrolling sideways inside its box, and a status badge cut by its row or by the
screen's edge. Add a page's path to :data:`PAGES` to check it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.browsing import Pages, login
from tests.browser.seeding import seed_jobs
from tests.browser.test_a11y import axe_violations, report, settled
from tests.browser.test_panel import expect
from tests.e2e.harness import Stack

if TYPE_CHECKING:
    from playwright.sync_api import Page

PHONE = {"width": 390, "height": 844}
#: (gateway, path) of every page checked; ``{running}`` and the like are the ids of the seeded jobs.
PAGES: list[tuple[str, str]] = [
    ("open", "/admin/engine/jobs"),
    ("safe", "/admin/engine/jobs"),
    ("open", "/admin/engine/jobs/{running}"),
    ("open", "/admin/engine/jobs/{failed}"),
    ("open", "/admin/engine/approvals"),
    ("open", "/admin/audit"),
    ("open", "/admin/engine/logs"),
    ("open", "/admin/users"),
    ("open", "/admin/password"),
]
#: Pages that are a form, without a table of rows to turn into cards.
FORM_PAGES = {"/admin/password"}

#: What the page measures about itself: its widths, its tables and every badge with its row.
MEASURE = """() => {
  const root = document.documentElement;
  const box = (n) => { const r = n.getBoundingClientRect(); return { left: r.left, right: r.right }; };
  return {
    scrollWidth: root.scrollWidth,
    innerWidth: window.innerWidth,
    tables: [...document.querySelectorAll('main table:not(.params)')].map((t) => ({
      id: t.id || t.className,
      overflow: t.parentElement.scrollWidth - t.parentElement.clientWidth,
      rows: [...t.querySelectorAll('tbody tr:not([hidden]):not(.placeholder-row)')].map(
        (tr) => getComputedStyle(tr).display),
      header: t.tHead ? t.tHead.getBoundingClientRect().height : 0,
    })),
    badges: [...document.querySelectorAll('main .badge')].filter((b) => b.getClientRects().length).map((b) => ({
      text: b.textContent,
      cut: b.scrollWidth - b.clientWidth,
      box: box(b),
      holder: box(b.closest('tr, .card, .page-head, main')),
    })),
  };
}"""


@pytest.fixture(scope="module")
def seeded(panel_stack: Stack) -> dict[str, str]:
    """One job per state plus an open run request (for the approvals page), by state name."""
    jobs = {state: job["id"] for state, job in seed_jobs(panel_stack).items()}
    guarded = panel_stack.engine_api().create("demo.guarded", {"message": "rotate keys"}, name="rotate-keys")
    answer = panel_stack.panel("open").run(guarded["id"], reason="CHG-7: quarterly key rotation")
    assert answer.status < 300, answer
    jobs["guarded"] = guarded["id"]
    return jobs


def phone(open_page: Pages, panel_stack: Stack, gateway: str) -> Page:
    """A page at phone size, signed in on ``gateway``."""
    page = open_page(viewport=PHONE)
    login(page, panel_stack.gateways[gateway].url)
    return page


class TestPhoneWidth:
    @pytest.mark.parametrize(("gateway", "path"), PAGES)
    def test_no_sideways_scroll_rows_as_cards_badges_whole(
        self, panel_stack: Stack, seeded: dict[str, str], open_page: Pages, gateway: str, path: str
    ) -> None:
        """At 390 px: no sideways scroll, table rows as cards (no header row), no badge cut, no serious axe finding."""
        page = phone(open_page, panel_stack, gateway)
        page.goto(panel_stack.gateways[gateway].url + path.format(**seeded))
        settled(page)
        seen: dict[str, Any] = page.evaluate(MEASURE)
        assert seen["scrollWidth"] <= seen["innerWidth"] == PHONE["width"], seen
        assert seen["tables"] or path in FORM_PAGES, "no table on the page"
        for table in seen["tables"]:
            assert table["overflow"] <= 0, f"table {table['id']} scrolls sideways in its box: {table}"
            assert all(display != "table-row" for display in table["rows"]), f"rows of {table['id']} are not cards"
            assert table["header"] <= 1, f"the header row of {table['id']} still shows: {table}"
        for badge in seen["badges"]:
            assert badge["cut"] <= 0, f"badge {badge['text']!r} cut inside itself: {badge}"
            assert badge["box"]["left"] >= 0 and badge["box"]["right"] <= PHONE["width"], badge
            assert badge["holder"]["left"] <= badge["box"]["left"], badge
            assert badge["box"]["right"] <= badge["holder"]["right"] + 0.5, badge
        # The cards keep what the table said: axe-core finds nothing serious at this width either.
        violations = axe_violations(page)
        assert not violations, f"{path} at phone width:\n{report(violations)}"

    def test_header_and_banner_fit(self, panel_stack: Stack, seeded: dict[str, str], open_page: Pages) -> None:
        """With SAFE_MODE on, the header (nav, pill, user, Log out) and the banner fit the phone's width."""
        page = phone(open_page, panel_stack, "safe")
        expect(page.get_by_test_id("safe-mode-banner")).to_be_visible()
        right = page.evaluate(
            """() => Math.max(...[...document.querySelectorAll('header *, .banner')]
                .filter((n) => n.getClientRects().length).map((n) => n.getBoundingClientRect().right))"""
        )
        assert right <= PHONE["width"], right
