"""What the Schemathesis run works with: the processes' credentials, its size and seed, its case
counter, a gateway sign-in and the pool of real jobs (the fixtures are in ``conftest.py``)."""

from __future__ import annotations

import collections
import os
import re
import secrets
import sys
from typing import Any

import attrs
import requests

from tests.e2e.harness import Service

ENGINE_TOKEN = "fuzz-engine-token-" + "0123456789abcdef" * 2
USER = "fuzzer"
PASSWORD = "fuzzing-password-0123456789"
#: Cases per operation and phase in ``make test``; ``make fuzz`` sets FUZZ_MAX_EXAMPLES=2000.
DEFAULT_MAX_EXAMPLES = 60
#: The fewest cases the two processes together must have been sent in a full run.
MIN_TOTAL_CASES = 2000


def max_examples() -> int:
    """Cases per operation and phase (``FUZZ_MAX_EXAMPLES``)."""
    return int(os.environ.get("FUZZ_MAX_EXAMPLES", "") or DEFAULT_MAX_EXAMPLES)


def seed() -> int:
    """The generation seed (``FUZZ_SEED``)."""
    return int(os.environ.get("FUZZ_SEED", "") or 20250601)


def quick_catalog() -> str:
    """The engine's catalog for the run: the demo types and one that waits to be cancelled."""
    python = sys.executable.replace("\\", "\\\\")
    return f'''
include_demo = true

[[types]]
name = "fuzz.echo"
description = "Print the message."
command = ["{python}", "-c", "import os; print(os.environ.get('JOB_PARAM_MESSAGE', ''))"]
timeout = 10
[[types.params]]
name = "message"
type = "str"
default = "hello"
[[types.params]]
name = "count"
type = "int"
default = 1
min = 0
max = 10
[[types.params]]
name = "loud"
type = "bool"
default = false
[[types.params]]
name = "colour"
type = "str"
choices = ["red", "green"]

[[types]]
name = "fuzz.fail"
description = "Fail at once."
command = ["{python}", "-c", "import sys; print('no', file=sys.stderr); sys.exit(3)"]
timeout = 10

[[types]]
name = "fuzz.solo"
description = "Quick, exclusive."
exclusive = true
command = ["{python}", "-c", "print('solo')"]
timeout = 10

[[types]]
name = "fuzz.needs"
description = "Needs a target."
command = ["{python}", "-c", "pass"]
timeout = 10
[[types.params]]
name = "target"
type = "str"
required = true

[[types]]
name = "fuzz.wait"
description = "Waits to be cancelled (it ends by itself after its timeout)."
command = ["{python}", "-c", "import time; print('waiting', flush=True); time.sleep(60)"]
timeout = 20
'''


@attrs.define
class Stats:
    """What the fuzzer sent: cases per process, answers per (process, status)."""

    cases: collections.Counter[str] = attrs.Factory(collections.Counter)
    statuses: collections.Counter[tuple[str, int]] = attrs.Factory(collections.Counter)
    operations: dict[str, set[str]] = attrs.Factory(lambda: collections.defaultdict(set))

    def record(self, process: str, operation: str, status: int) -> None:
        """Count one case and its answer."""
        self.cases[process] += 1
        self.statuses[(process, status)] += 1
        self.operations[process].add(operation)

    def summary(self) -> str:
        """One line per process: cases, operations and the status mix."""
        lines = []
        for process in sorted(self.cases):
            mix = ", ".join(f"{s}: {n}" for (p, s), n in sorted(self.statuses.items()) if p == process)
            lines.append(
                f"{process}: {self.cases[process]} cases over {len(self.operations[process])} operations ({mix})"
            )
        return "\n".join(lines)


def engine_headers() -> dict[str, str]:
    """The admin token, as the fuzzer sends it on every engine request."""
    return {"Authorization": f"Bearer {ENGINE_TOKEN}"}


@attrs.frozen(kw_only=True)
class Login:
    """A signed-in gateway session: the cookie and the CSRF token to send with it."""

    cookies: dict[str, str]
    csrf: str

    def session(self) -> requests.Session:
        """A fresh ``requests`` session carrying the cookie and the CSRF header."""
        session = requests.Session()
        session.cookies.update(self.cookies)
        session.headers["X-CSRF-Token"] = self.csrf
        return session


def login(gateway: Service) -> Login:
    """Sign in through the real form (GET /login for the form's token, then POST /login as JSON)."""
    with requests.Session() as session:
        form = session.get(f"{gateway.url}/login", timeout=10)
        match = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert match, "the login form has no csrf_token field"
        resp = session.post(
            f"{gateway.url}/login",
            timeout=10,
            headers={"Accept": "application/json"},
            data={"username": USER, "password": PASSWORD, "csrf_token": match.group(1)},
        )
        assert resp.status_code == 200, resp.text
        # As dict(session.cookies), a name set twice still raising; a valueless cookie (None) is no cookie to send.
        cookies = {name: value for name in session.cookies.iterkeys() if (value := session.cookies[name]) is not None}
        return Login(cookies=cookies, csrf=resp.json()["csrfToken"])


@attrs.frozen(kw_only=True)
class JobPool:
    """Real job ids to mix into the fuzzer's ``{id}`` parameters."""

    ids: tuple[str, ...]


def make_pool(engine: Service) -> JobPool:
    """Create jobs in every state directly at the engine: READY (to be run), RUNNING (to be cancelled), finished."""
    headers = {**engine_headers(), "X-Engine-Actor": "pool"}

    def create(job_type: str, params: dict[str, Any] | None = None) -> str:
        resp = requests.post(
            f"{engine.url}/api/jobs", json={"type": job_type, "params": params or {}}, headers=headers, timeout=10
        )
        assert resp.status_code == 201, resp.text
        return str(resp.json()["id"])

    def run(job_id: str) -> None:
        resp = requests.post(f"{engine.url}/api/jobs/{job_id}/run", json={}, headers=headers, timeout=10)
        assert resp.status_code == 202, resp.text

    ready = [create("fuzz.echo", {"message": secrets.token_hex(4)}) for _ in range(12)]
    ready += [create("fuzz.solo") for _ in range(3)]
    running = [create("fuzz.wait") for _ in range(3)]
    finished = [create("fuzz.fail") for _ in range(2)] + [create("fuzz.echo") for _ in range(2)]
    for job_id in running + finished:
        run(job_id)
    return JobPool(ids=tuple(ready + running + finished))
