"""Jobs in every state, for the tests that look at whole pages (accessibility, phone width, screenshots).

:func:`seed_jobs` fills an engine through its API with one job per state the
panel draws differently: READY, RUNNING, DONE, FAILED and cancelled, with
long names and params so that narrow screens are tried with real text.
"""

from __future__ import annotations

from typing import Any

from tests.e2e.harness import Stack

#: A name long enough to push a narrow layout: it must wrap or be cut with an ellipsis, never widen the page.
LONG_NAME = "rebuild-search-index-for-every-storefront-region-after-the-catalog-migration"


def seed_jobs(stack: Stack) -> dict[str, dict[str, Any]]:
    """Create one job per state (keys ``ready``, ``running``, ``done``, ``failed``, ``cancelled``); return them."""
    api = stack.engine_api()
    done = api.create("demo.echo", {"message": "caches warmed for every region"}, name="warm-caches")
    api.run(done["id"], reason="before the launch")
    failed = api.create("demo.fail", name="export-invoices")
    api.run(failed["id"], reason="month end")
    cancelled = api.create("demo.sleep", {"seconds": 600}, name="stuck-import")
    api.run(cancelled["id"], reason="nightly")
    api.wait_status(cancelled["id"], {"RUNNING"})
    answer = api.request("POST", f"/api/jobs/{cancelled['id']}/cancel", {})
    assert answer.status < 300, answer
    running = api.create("demo.sleep", {"seconds": 600}, name=LONG_NAME)
    api.run(running["id"], reason="search results are stale")
    ready = api.create("demo.echo", {"message": "hello"}, name="say-hello")
    jobs = {
        "done": api.wait_status(done["id"]),
        "failed": api.wait_status(failed["id"]),
        "cancelled": api.wait_status(cancelled["id"]),
        "running": api.wait_status(running["id"], {"RUNNING"}),
        "ready": ready,
    }
    return jobs
