"""Fixtures of the browser suite: Debian's Chromium, driven by Playwright, against the real processes.

The processes come from the two-process harness (:mod:`tests.e2e.harness`):
``panel_stack`` is one engine with a SAFE_MODE-on gateway ``safe`` and a
SAFE_MODE-off gateway ``open``, with their default settings: the panel follows
the live event stream, and polls (every 5 s) only where the stream is impossible. Like
the e2e suite's, they run from the session's installation of the wheel
(``installed``, :mod:`tests.e2e.install`), so the browser loads exactly the
static files an operator's install serves.

Chromium is never downloaded: it is ``/usr/bin/chromium`` (``apt-get install
chromium``). Without it, or without Playwright, the tests are skipped with
the reason, unless ``REQUIRE_BROWSER=1`` (set by ``.ci/run``): then they fail.

Every page a test opens (``open_page``; ``page`` is the first one) records
its console errors and uncaught exceptions, and the test fails on any that
it did not declare with :meth:`Console.expect_failed_resource`. When a test
fails, a screenshot and the HTML of each of its pages go to
``test-artifacts/``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING

import pytest

from tests import requirements
from tests.browser.browsing import ARTIFACTS, CHROMIUM, LAUNCH_ARGS, Pages
from tests.e2e.harness import Stack, attach_logs, running_stack
from tests.e2e.install import Installation

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

#: The pages a test opened, for the failure hook.
PAGES = pytest.StashKey["Pages"]()


def _browser_missing() -> str | None:
    """Why the browser tests cannot run here, or ``None`` when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="session", autouse=True)
def _browser_required() -> None:
    """Skip every browser test (or fail it, with ``REQUIRE_BROWSER=1``) before any process starts."""
    missing = _browser_missing()
    if missing is not None:
        requirements.missing("REQUIRE_BROWSER", f"the browser tests cannot run: {missing}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for one test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def panel_stack(tmp_path_factory: pytest.TempPathFactory, installed: Installation) -> Iterator[Stack]:
    """An engine with gateways ``safe`` (SAFE_MODE on) and ``open`` (off), default settings."""
    with running_stack(tmp_path_factory.mktemp("panel"), installed, gateways={"safe": True, "open": False}) as started:
        yield started


def _artifact_name(item: pytest.Item) -> str:
    # "tests/browser/test_panel.py::TestRun::test_x" -> "test_panel-TestRun-test_x"
    return re.sub(r"[^A-Za-z0-9_-]+", "-", item.nodeid.split("/")[-1].replace(".py::", "::")).strip("-")


@pytest.fixture
def open_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Pages]:
    """``open_page()`` → a new page in a fresh context; the test fails on any undeclared console error."""
    pages = Pages(browser)
    request.node.stash[PAGES] = pages
    try:
        yield pages
        problems = [(page.url, text, url) for page, console in pages.opened for text, url in console.unexpected()]
        if problems:
            pages.save_artifacts(_artifact_name(request.node), "console errors")
            listed = "\n".join(f"  on {where}: {text} [{url}]" for where, text, url in problems)
            pytest.fail(f"console errors or uncaught exceptions in the page:\n{listed}", pytrace=False)
    finally:
        pages.close()


@pytest.fixture
def page(open_page: Pages) -> Page:
    """A new page in a fresh context."""
    return open_page()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failed test, save its pages (screenshot + HTML) and attach the processes' output."""
    report: pytest.TestReport = yield
    attach_logs(item, report)
    pages = item.stash.get(PAGES, None)
    if report.failed and report.when == "call" and pages is not None:
        pages.save_artifacts(_artifact_name(item), "test failed")
        report.sections.append(("browser artifacts", f"screenshots and HTML in {ARTIFACTS}"))
    return report
