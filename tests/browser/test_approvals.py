"""Run approvals (two-person rule) in a real Chromium: alice requests, bob approves in his own browser.

One stack per test: an engine and a SAFE_MODE-off gateway ``open`` holding
alice (:data:`USER`) and bob, both super_admin; ``demo.guarded`` needs one
approval besides the requester and has a plan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.browser.browsing import Pages, login
from tests.browser.test_breakglass import SECOND, add_super_admin
from tests.browser.test_panel import STATUS_TIMEOUT_MS, expect, row
from tests.e2e.harness import USER, StackFactory

if TYPE_CHECKING:
    from playwright.sync_api import Page


class TestApprovals:
    def test_alice_requests_bob_approves_with_the_plan_and_the_job_runs(
        self, make_stack: StackFactory, open_page: Pages
    ) -> None:
        """RUN opens a request (badge, no RUN); no Approve on her own; bob sees reason, params and plan; it runs."""
        stack = make_stack(gateways={"open": False})
        add_super_admin(stack, "open")
        job = stack.engine_api().create("demo.guarded", {"message": "rotate keys"})
        base = stack.gateways["open"].url

        alice: Page = open_page()
        login(alice, base)
        row(alice, job["id"]).get_by_test_id("run-button").click()
        run_dialog = alice.get_by_test_id("run-dialog")
        expect(run_dialog.get_by_test_id("run-approval-note")).to_be_visible()
        expect(run_dialog.get_by_test_id("run-plan-output")).to_have_text("would print: rotate keys\n")
        expect(run_dialog.get_by_test_id("run-confirm")).to_have_text("Request run")
        run_dialog.get_by_test_id("run-reason").fill("CHG-7: quarterly key rotation")
        run_dialog.get_by_test_id("run-confirm").click()
        expect(run_dialog).to_be_hidden()
        expect(alice.get_by_test_id("flash")).to_contain_text("waits for a second super_admin")
        alice_row = row(alice, job["id"])
        expect(alice_row.get_by_test_id("approval-badge")).to_have_text("Waiting for approval")
        expect(alice_row).to_have_attribute("data-status", "READY")
        expect(alice_row.get_by_test_id("run-button")).to_have_count(0)
        requested = stack.engine_api().job(job["id"])["runRequest"]
        assert (requested["by"], requested["state"]) == (USER, "open")

        # Her own request: listed, but never with Approve or Reject.
        alice.goto(f"{base}/admin/engine/approvals")
        own = alice.locator(f'[data-testid="approval-row"][data-job-id="{job["id"]}"]')
        expect(own.get_by_test_id("approval-none")).to_have_text("your request")
        expect(own.get_by_test_id("approve-button")).to_have_count(0)
        expect(own.get_by_test_id("reject-button")).to_have_count(0)

        bob: Page = open_page()
        login(bob, base, user=SECOND)
        bob.goto(f"{base}/admin/engine/approvals")
        theirs = bob.locator(f'[data-testid="approval-row"][data-job-id="{job["id"]}"]')
        expect(theirs.get_by_test_id("approval-by")).to_have_text(USER)
        theirs.get_by_test_id("approve-button").click()
        dialog = bob.get_by_test_id("approve-dialog")
        expect(dialog.get_by_test_id("approve-dialog-by")).to_have_text(USER)
        expect(dialog.get_by_test_id("approve-dialog-reason")).to_have_text("CHG-7: quarterly key rotation")
        expect(dialog.get_by_test_id("approve-dialog-params")).to_contain_text("rotate keys")
        expect(dialog.get_by_test_id("approve-plan-output")).to_have_text("would print: rotate keys\n")
        expect(dialog.get_by_test_id("approve-confirm")).to_be_enabled()
        dialog.get_by_test_id("approve-confirm").click()
        expect(dialog).to_be_hidden()
        expect(bob.get_by_test_id("flash")).to_contain_text("started")

        # alice's list follows by itself: the badge goes, the job runs to DONE.
        alice.goto(f"{base}/admin/engine/jobs")
        expect(row(alice, job["id"])).to_have_attribute("data-status", "DONE", timeout=STATUS_TIMEOUT_MS)
        done = stack.engine_api().wait_status(job["id"])
        assert done["runBy"] == USER
        approvals = done["runRequest"]["approvals"]
        assert [a["by"] for a in approvals] == [SECOND]
        # Both people saw the same plan: the request and the approval carry one hash.
        assert done["runRequest"]["planSha256"] is not None
        expect(bob.locator(f'[data-testid="approval-row"][data-job-id="{job["id"]}"]')).to_have_count(0)
