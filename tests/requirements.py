"""What a test needs from the machine: skip without it, or fail under the ``REQUIRE_*`` flag CI sets.

``.ci/run`` installs the system tools (chromium, nginx, redis-server, PostgreSQL) and sets
``REQUIRE_BROWSER``, ``REQUIRE_DEPLOY_TOOLS`` and ``REQUIRE_POSTGRES`` to ``1``, so that in CI a
missing tool fails the test instead of skipping it quietly.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(flag: str, what: str) -> NoReturn:
    """Skip the current test because ``what`` is missing, or fail it when ``flag`` is set to ``1``."""
    if os.environ.get(flag) == "1":
        pytest.fail(f"{flag}=1 but {what}", pytrace=False)
    pytest.skip(what)
