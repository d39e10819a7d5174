"""Accessibility of every panel page in a real Chromium: axe-core finds nothing serious, dialogs keep the keyboard.

axe-core is the one bundled with the ``axe-playwright-python`` wheel (nothing
is fetched at test time): it is injected into each page of :data:`PAGES`,
once with ``prefers-color-scheme: light`` and once with ``dark``, and any
violation of impact "serious" or "critical" (colour contrast, names of
controls, landmarks, ...) fails the test with axe's own report.

To check a new page, add its path to :data:`PAGES` (``{ready}``, ``{running}``,
``{done}``, ``{failed}`` and ``{cancelled}`` stand for the ids of the seeded
jobs, see :func:`tests.browser.seeding.seed_jobs`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.browsing import Pages, login
from tests.browser.seeding import seed_jobs
from tests.browser.test_panel import expect, row
from tests.e2e.harness import Stack

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

#: (gateway, path) of every page axe checks, signed in. Gateway "safe" has SAFE_MODE on (its banner
#: and held RUN buttons are on the page), "open" has it off (RUN and Cancel buttons).
PAGES: list[tuple[str, str]] = [
    ("open", "/admin/engine/jobs"),
    ("safe", "/admin/engine/jobs"),
    ("open", "/admin/engine/jobs/{running}"),
    ("open", "/admin/engine/jobs/{failed}"),
    ("safe", "/admin/engine/jobs/{ready}"),
    ("open", "/admin/engine/approvals"),
    ("open", "/admin/audit"),
    ("open", "/admin/engine/logs"),
]
#: Pages checked signed out.
SIGNED_OUT_PAGES: list[tuple[str, str]] = [("open", "/login")]
SCHEMES = ["light", "dark"]
#: The impacts that fail a page; "moderate" and "minor" are axe's advice, not a refusal.
BLOCKING = {"serious", "critical"}


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Run the bundled axe-core on ``page`` and return its violations of a :data:`BLOCKING` impact."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    violations: list[dict[str, Any]] = results.response["violations"]
    return [v for v in violations if v.get("impact") in BLOCKING]


def report(violations: list[dict[str, Any]]) -> str:
    """A readable list of ``violations``: rule, impact, help and the elements concerned."""
    lines = []
    for violation in violations:
        lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']}")
        for node in violation["nodes"][:8]:
            lines.append(f"    {', '.join(map(str, node['target']))}: {node.get('failureSummary', '')!r}")
    return "\n".join(lines)


def settled(page: Page) -> None:
    """Wait until the page's script has drawn it: nothing busy, no "Loading…" placeholder left."""
    page.wait_for_load_state("load")
    page.wait_for_function(
        """() => !document.querySelector('[aria-busy="true"]')
            && !document.querySelector('[data-testid="approvals-loading"]')"""
    )


@pytest.fixture(scope="module")
def seeded(panel_stack: Stack) -> dict[str, str]:
    """The ids of one job per state, created once for the module, by state name."""
    return {state: job["id"] for state, job in seed_jobs(panel_stack).items()}


@pytest.fixture(params=SCHEMES)
def scheme(request: pytest.FixtureRequest) -> str:
    """Each colour scheme in turn."""
    return str(request.param)


class TestAxe:
    @pytest.mark.parametrize(("gateway", "path"), PAGES)
    def test_page_has_no_serious_violations(
        self, panel_stack: Stack, seeded: dict[str, str], open_page: Pages, scheme: str, gateway: str, path: str
    ) -> None:
        """A signed-in page, in this colour scheme, has no serious or critical axe-core violation."""
        page = open_page(color_scheme=scheme)
        base = panel_stack.gateways[gateway].url
        login(page, base)
        page.goto(base + path.format(**seeded))
        settled(page)
        violations = axe_violations(page)
        assert not violations, f"{path} ({scheme}):\n{report(violations)}"

    @pytest.mark.parametrize(("gateway", "path"), SIGNED_OUT_PAGES)
    def test_signed_out_page_has_no_serious_violations(
        self, panel_stack: Stack, open_page: Pages, scheme: str, gateway: str, path: str
    ) -> None:
        """A page seen signed out, in this colour scheme, has no serious or critical axe-core violation."""
        page = open_page(color_scheme=scheme)
        page.goto(panel_stack.gateways[gateway].url + path)
        settled(page)
        violations = axe_violations(page)
        assert not violations, f"{path} ({scheme}):\n{report(violations)}"

    def test_open_dialog_has_no_serious_violations(
        self, panel_stack: Stack, seeded: dict[str, str], open_page: Pages, scheme: str
    ) -> None:
        """The RUN dialog, open over the list with its plan shown, has no serious or critical violation."""
        page = open_page(color_scheme=scheme)
        base = panel_stack.gateways["open"].url
        login(page, base)
        row(page, seeded["ready"]).get_by_test_id("run-button").click()
        dialog = page.get_by_test_id("run-dialog")
        expect(dialog.locator("#run-confirm")).to_be_enabled()
        violations = axe_violations(page)
        assert not violations, f"run dialog ({scheme}):\n{report(violations)}"


def focused_inside(dialog: Locator) -> bool:
    """Whether the element that has the focus is inside ``dialog`` (and is not the dialog itself)."""
    return bool(dialog.evaluate("(d) => d !== document.activeElement && d.contains(document.activeElement)"))


def tabbable_count(dialog: Locator) -> int:
    """How many elements of ``dialog`` Tab can reach (enabled, shown, not tabindex=-1)."""
    return int(
        dialog.evaluate(
            """(d) => [...d.querySelectorAll('a[href], button, input, select, textarea, [tabindex]')]
                .filter((n) => !n.disabled && n.tabIndex >= 0 && n.getClientRects().length).length"""
        )
    )


def walk_focus(page: Page, dialog: Locator, key: str) -> list[str]:
    """Press ``key`` twice around the dialog's tab order; return where the focus went at each step."""
    steps: list[str] = []
    for _ in range(2 * tabbable_count(dialog) + 2):
        page.keyboard.press(key)
        assert focused_inside(dialog), f"after {key} x{len(steps) + 1}, the focus left the dialog: {steps}"
        steps.append(str(page.evaluate("document.activeElement.id || document.activeElement.textContent")))
    return steps


class TestDialogKeyboard:
    def test_run_dialog_focus_trap_and_return(self, panel_stack: Stack, seeded: dict[str, str], page: Page) -> None:
        """RUN's dialog focuses its reason field, keeps Tab and Shift+Tab inside, and gives the focus back on Esc."""
        base = panel_stack.gateways["open"].url
        login(page, base)
        opener = row(page, seeded["ready"]).get_by_test_id("run-button")
        opener.focus()
        page.keyboard.press("Enter")
        dialog = page.get_by_test_id("run-dialog")
        expect(dialog).to_be_visible()
        expect(dialog.get_by_test_id("run-reason")).to_be_focused()
        expect(dialog.locator("#run-confirm")).to_be_enabled()
        forward = walk_focus(page, dialog, "Tab")
        backward = walk_focus(page, dialog, "Shift+Tab")
        # Both ways go round the same stops, in opposite orders.
        assert set(forward) == set(backward) and "run-confirm" in forward and "run-reason" in forward
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        expect(opener).to_be_focused()

    def test_new_job_dialog_focuses_type_and_close_returns_to_new_job(
        self, panel_stack: Stack, seeded: dict[str, str], page: Page
    ) -> None:
        """New job focuses the Type field once the types arrive; Close and Esc give the focus back to New job."""
        base = panel_stack.gateways["open"].url
        login(page, base)
        opener = page.get_by_test_id("new-job-button")
        dialog = page.get_by_test_id("new-job-dialog")
        for close in ("button", "Escape"):
            opener.focus()
            page.keyboard.press("Enter")
            expect(dialog).to_be_visible()
            expect(dialog.get_by_test_id("new-job-type")).to_be_focused()
            walk_focus(page, dialog, "Shift+Tab")
            if close == "button":
                dialog.get_by_test_id("new-job-dismiss").click()
            else:
                page.keyboard.press("Escape")
            expect(dialog).to_be_hidden()
            expect(opener).to_be_focused()
