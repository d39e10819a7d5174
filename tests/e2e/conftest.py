"""Fixtures of the two-process suite: real ``engine-hub serve`` and ``admin-gateway serve`` subprocesses.

They run from the session's installation of the wheel (``installed``, see
:mod:`tests.e2e.install`), not from the dev venv.

``stack`` (one per module) is an engine with two gateways in front of it:
``safe`` (SAFE_MODE on) and ``open`` (SAFE_MODE off). Tests that kill or
restart the engine take ``make_stack`` and get processes of their own. When
a test fails, the last lines each process printed are added to its report.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from tests.e2e.harness import Stack, attach_logs, running_stack
from tests.e2e.install import Installation


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, installed: Installation) -> Iterator[Stack]:
    """An engine, a SAFE_MODE-on gateway ``safe`` and a SAFE_MODE-off gateway ``open``, shared by a module."""
    with running_stack(tmp_path_factory.mktemp("stack"), installed, gateways={"safe": True, "open": False}) as started:
        yield started


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the processes' output to the report of a failed test."""
    report: pytest.TestReport = yield
    attach_logs(item, report)
    return report
