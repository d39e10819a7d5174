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
from tests.browser.test_panel import BADGE_COLOURS, BADGE_ICONS, badge_look, expect, row
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
    ("open", "/admin/users"),
    ("open", "/admin/password"),
]
#: Pages checked signed out.
SIGNED_OUT_PAGES: list[tuple[str, str]] = [("open", "/login")]
SCHEMES = ["light", "dark"]
#: The impacts that fail a page; "moderate" and "minor" are axe's advice, not a refusal.
BLOCKING = {"serious", "critical"}


def axe_violations(page: Page, tries: int = 3) -> list[dict[str, Any]]:
    """Run the bundled axe-core on ``page``, once :func:`settled`, and return its :data:`BLOCKING` violations.

    A live event may start a reload while axe-core runs: the table is dimmed (``aria-busy``) for that
    moment, which axe measures as low contrast. So a page with violations is settled and asked again;
    a real violation is there on every try.
    """
    from axe_playwright_python.sync_playwright import Axe

    blocking: list[dict[str, Any]] = []
    for _ in range(tries):
        settled(page)
        violations: list[dict[str, Any]] = Axe().run(page).response["violations"]
        blocking = [v for v in violations if v.get("impact") in BLOCKING]
        if not blocking:
            break
    return blocking


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
            && !document.querySelector('[data-testid="approvals-loading"]:not([hidden])')
            && !document.querySelector('[data-testid="users-loading"]')"""
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
        violations = axe_violations(page)
        assert not violations, f"{path} ({scheme}):\n{report(violations)}"

    @pytest.mark.parametrize(("gateway", "path"), SIGNED_OUT_PAGES)
    def test_signed_out_page_has_no_serious_violations(
        self, panel_stack: Stack, open_page: Pages, scheme: str, gateway: str, path: str
    ) -> None:
        """A page seen signed out, in this colour scheme, has no serious or critical axe-core violation."""
        page = open_page(color_scheme=scheme)
        page.goto(panel_stack.gateways[gateway].url + path)
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

    def test_break_glass_dialog_traps_tab_and_returns_focus(self, panel_stack: Stack, page: Page) -> None:
        """The break-glass request dialog (SAFE_MODE on) focuses its reason, keeps Tab inside, Close returns focus."""
        login(page, panel_stack.gateways["safe"].url)
        opener = page.get_by_test_id("override-request-button")
        expect(opener).to_be_visible()
        opener.focus()
        page.keyboard.press("Enter")
        dialog = page.get_by_test_id("override-dialog")
        expect(dialog.get_by_test_id("override-reason")).to_be_focused()
        walk_focus(page, dialog, "Tab")
        walk_focus(page, dialog, "Shift+Tab")
        dialog.get_by_role("button", name="Close").click()
        expect(dialog).to_be_hidden()
        expect(opener).to_be_focused()


def rgb(css: str) -> tuple[int, int, int]:
    """``rgb(r, g, b)`` or ``rgba(...)`` as three integers."""
    r, g, b = (int(float(x)) for x in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    return r, g, b


def luminance(colour: tuple[int, int, int]) -> float:
    """WCAG relative luminance of an sRGB colour (0 black .. 1 white)."""

    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else float(((c + 0.055) / 1.055) ** 2.4)

    r, g, b = (channel(v) for v in colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """WCAG contrast ratio of two colours (1 .. 21; text needs 4.5)."""
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def colours(page: Page, selector: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Background and text colour of the first element matching ``selector``."""
    seen: dict[str, str] = page.locator(selector).first.evaluate(
        "(n) => ({ bg: getComputedStyle(n).backgroundColor, fg: getComputedStyle(n).color })"
    )
    return rgb(seen["bg"]), rgb(seen["fg"])


class TestDarkMode:
    def test_dark_scheme_dark_page_same_badges_and_banner(
        self, panel_stack: Stack, seeded: dict[str, str], open_page: Pages
    ) -> None:
        """Dark scheme: dark page and table, readable text; badges and the SAFE_MODE banner keep hue and icon."""
        page = open_page(color_scheme="dark")
        login(page, panel_stack.gateways["safe"].url)
        expect(page.get_by_test_id("safe-mode-banner")).to_be_visible()
        for selector in ("html", ".table-wrap", "th"):
            background, text = colours(page, selector)
            # Dark page (the light scheme's is near white: luminance above 0.9), text readable on it.
            assert luminance(background) < 0.05 and contrast(background, text) >= 4.5, (selector, background, text)
        for status, (hue, name) in BADGE_COLOURS.items():
            # A plain one: a cancelled or interrupted FAILED job has a badge of its own (data-outcome).
            plain = f'[data-testid="status-badge"][data-status="{status}"]:not([data-outcome])'
            badge = page.locator(plain).first
            background, icon = badge_look(badge)
            assert hue(*background), f"{status} badge is not {name} in the dark scheme: {background}"
            assert BADGE_ICONS[status] in icon, (status, icon)
            _, text = colours(page, plain)
            assert luminance(background) < 0.1 and contrast(background, text) >= 4.5, (status, background, text)
        banner, banner_text = colours(page, '[data-testid="safe-mode-banner"]')
        amber = banner[0] > banner[2] + 10 and banner[1] > banner[2]
        assert amber and luminance(banner) < 0.05 and contrast(banner, banner_text) >= 4.5, (banner, banner_text)

    def test_light_scheme_stays_light(self, panel_stack: Stack, seeded: dict[str, str], open_page: Pages) -> None:
        """prefers-color-scheme: light keeps the light page: dark text on a near-white page and table."""
        page = open_page(color_scheme="light")
        login(page, panel_stack.gateways["safe"].url)
        for selector in ("html", ".table-wrap", "th"):
            background, text = colours(page, selector)
            assert luminance(background) > 0.9 and contrast(background, text) >= 4.5, (selector, background, text)
