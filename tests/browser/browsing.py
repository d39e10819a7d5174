"""What the browser tests share: where Chromium is, how pages are opened and watched, signing in.

:class:`Pages` opens each page in a fresh browser context and records, per
page, the console errors and uncaught exceptions (:class:`Console`);
:meth:`Pages.save_artifacts` writes a screenshot and the HTML of every page
to ``test-artifacts/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.e2e.harness import PASSWORD, USER

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Error, Page

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
#: Headless, as root, and without any attempt to reach the network.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
#: Generous: the machine is shared and slow at times; conditions are waited on, never slept on.
TIMEOUT_MS = 20_000
VIEWPORT = {"width": 1280, "height": 800}
#: Chromium's console text for any answer with an error status, even one the page handles.
FAILED_RESOURCE = "Failed to load resource"


class Console:
    """The console errors and uncaught exceptions of one page."""

    def __init__(self, page: Page) -> None:
        self.errors: list[tuple[str, str]] = []
        self.expected: list[re.Pattern[str]] = []
        page.on("console", self._on_console)
        page.on("pageerror", self._on_page_error)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append((message.text, str(message.location.get("url", ""))))

    def _on_page_error(self, error: Error) -> None:
        self.errors.append((f"uncaught exception: {error.message}", ""))

    def expect_failed_resource(self, url_pattern: str) -> None:
        """Declare that answers with an error status from URLs matching ``url_pattern`` are part of the test."""
        self.expected.append(re.compile(url_pattern))

    def failed_resources(self) -> list[str]:
        """URLs of the declared failed resources that Chromium reported."""
        return [
            url
            for text, url in self.errors
            if text.startswith(FAILED_RESOURCE) and any(p.search(url) for p in self.expected)
        ]

    def unexpected(self) -> list[tuple[str, str]]:
        """Every error not declared with :meth:`expect_failed_resource`."""
        return [
            (text, url)
            for text, url in self.errors
            if not (text.startswith(FAILED_RESOURCE) and any(p.search(url) for p in self.expected))
        ]


class Pages:
    """Opens pages, each in a fresh browser context (its own cookies), and watches their consoles."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.opened: list[tuple[Page, Console]] = []

    def __call__(self, **context_options: Any) -> Page:
        """A new page in a new context (laptop-size viewport unless told otherwise)."""
        context_options.setdefault("viewport", VIEWPORT)
        context = self.browser.new_context(**context_options)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        self.opened.append((page, Console(page)))
        return page

    def console(self, page: Page) -> Console:
        """The console record of ``page``."""
        return next(console for opened, console in self.opened if opened is page)

    def save_artifacts(self, name: str, why: str) -> None:
        """Write a screenshot and the HTML of every open page to ``test-artifacts/``."""
        ARTIFACTS.mkdir(exist_ok=True)
        for i, (page, console) in enumerate(self.opened):
            if page.is_closed():
                continue
            stem = f"{name}-{i}" if len(self.opened) > 1 else name
            try:
                page.screenshot(path=str(ARTIFACTS / f"{stem}.png"), full_page=True)
                html = page.content()
            except Exception as exc:  # a crashed page: say so instead of hiding the test's own failure
                html = f"<!-- could not capture the page: {exc} -->"
            errors = "\n".join(f"<!-- console: {text} ({url}) -->" for text, url in console.errors)
            (ARTIFACTS / f"{stem}.html").write_text(f"<!-- {why}: {page.url} -->\n{errors}\n{html}")

    def close(self) -> None:
        """Close every context."""
        for page, _ in self.opened:
            page.context.close()


def login(page: Page, base_url: str, user: str = USER, password: str = PASSWORD) -> None:
    """Sign in through the login form, as a person would, and wait for the jobs page."""
    page.goto(f"{base_url}/login")
    page.locator("#username").fill(user)
    page.locator("#password").fill(password)
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(f"{base_url}/admin/engine/jobs")
