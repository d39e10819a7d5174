"""The job JSON's ``outcome`` (issue 16): how a job ended, on both stores, live and replayed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import attrs

from engine_hub.jobs.catalog import Catalog, JobType
from shared.contract import JOB_FIELDS
from shared.journal.chain import MemoryJournal
from tests.integration.engine.conftest import BOTH_STORES
from tests.integration.engine.harness import EngineServer, MakeEngineServer, auth, make_test_catalog, wait_until

pytestmark = BOTH_STORES

#: Fields added by issue 16, last in the job JSON.
NEW_FIELDS = ("outcome", "copyOf", "copies")


def catalog_with_timeout(tmp_path: Path) -> Catalog:
    """The test catalog plus ``test.slow``: sleeps 60 s under a 0.5 s timeout."""
    catalog = make_test_catalog(tmp_path)
    slow = JobType(
        name="test.slow",
        description="Outlives its timeout.",
        command=(sys.executable, "-c", "import time; time.sleep(60)"),
        timeout=0.5,
    )
    return attrs.evolve(catalog, types={**catalog.types, slow.name: slow})


async def cancel(engine: EngineServer, job_id: str, actor: str = "alice") -> None:
    """Cancel a RUNNING job as ``actor`` (expecting 202)."""
    resp = await engine.client.post(f"/api/jobs/{job_id}/cancel", json={}, headers=auth(actor=actor))
    assert resp.status == 202, await resp.text()


async def started(engine: EngineServer, job_id: str) -> None:
    """Wait until the job's process has printed its first line."""

    async def printed() -> bool:
        resp = await engine.client.get(f"/api/jobs/{job_id}/logs", headers=auth())
        return bool((await resp.json())["lines"])

    await wait_until(printed, what="first output line")


class TestOutcome:
    async def test_each_way_a_job_ends_has_its_outcome(
        self, make_engine_server: MakeEngineServer, tmp_path: Path
    ) -> None:
        """READY and RUNNING have none; DONE succeeded, exit 1 failed, a cancel cancelled, a timeout timed_out."""
        engine = await make_engine_server(catalog=catalog_with_timeout(tmp_path))
        ready = await engine.create("test.count")
        assert ready["outcome"] is None and ready["copyOf"] is None and ready["copies"] == []
        assert list(ready) == list(JOB_FIELDS) and tuple(ready)[-3:] == NEW_FIELDS
        done = await engine.create("test.count")
        await engine.run(done["id"])
        failed = await engine.create("demo.fail")
        await engine.run(failed["id"])
        slow = await engine.create("test.slow")
        await engine.run(slow["id"])
        block = await engine.create("test.block")
        running = await engine.run(block["id"])
        assert running["status"] == "RUNNING" and running["outcome"] is None
        await started(engine, block["id"])
        await cancel(engine, block["id"])
        ended = {key: await engine.wait_for(job["id"]) for key, job in [("d", done), ("f", failed), ("s", slow)]}
        ended["c"] = await engine.wait_for(block["id"])
        assert {k: (j["status"], j["outcome"]) for k, j in ended.items()} == {
            "d": ("DONE", "succeeded"),
            "f": ("FAILED", "failed"),
            "s": ("FAILED", "timed_out"),
            "c": ("FAILED", "cancelled"),
        }
        assert ended["c"]["error"] == "cancelled by alice"
        # The list serves the same bytes as the single reads (both stores keep the JSON as served).
        resp = await engine.client.get("/api/jobs?limit=10", headers=auth())
        listed = {j["id"]: j for j in await resp.json()}
        for job in ended.values():
            assert listed[job["id"]] == await engine.job(job["id"])

    async def test_the_legacy_list_keeps_its_shape_with_the_new_fields(self, engine_server: EngineServer) -> None:
        """GET /engines/jobs answers the same array as /api/jobs: the old fields as they were, plus the new ones."""
        job = await engine_server.create("test.count", name="legacy")
        await engine_server.run(job["id"])
        await engine_server.wait_for(job["id"])
        legacy = await (await engine_server.client.get("/engines/jobs", headers=auth())).read()
        modern = await (await engine_server.client.get("/api/jobs", headers=auth())).read()
        assert legacy == modern
        (item,) = json.loads(legacy)
        assert item["status"] == "DONE" and item["outcome"] == "succeeded"


class TestReplay:
    async def test_a_restart_interrupts_with_outcome_interrupted(self, make_engine_server: MakeEngineServer) -> None:
        """A job RUNNING when the engine stopped replays as FAILED with outcome interrupted (embedded store)."""
        journal = MemoryJournal()
        first = await make_engine_server(journal=journal)
        job = await first.create("test.block")
        await first.run(job["id"])
        second = await make_engine_server(journal=journal)
        after = await second.job(job["id"])
        assert (after["status"], after["error"], after["outcome"]) == (
            "FAILED",
            "interrupted: engine restarted",
            "interrupted",
        )
        await cancel(first, job["id"])  # the first engine's process is still there: end it
        await first.wait_for(job["id"])

    async def test_a_journal_from_before_outcomes_replays_with_the_derived_outcome(
        self, make_engine_server: MakeEngineServer
    ) -> None:
        """job_created records without outcome/copyOf/copies (an older engine's) replay as jobs served live are."""
        journal = MemoryJournal()
        first = await make_engine_server(journal=journal)
        done = await first.create("test.count")
        await first.run(done["id"])
        failed = await first.create("demo.fail")
        await first.run(failed["id"])
        block = await first.create("test.block")
        await first.run(block["id"])
        await started(first, block["id"])
        await cancel(first, block["id"], actor="bob")
        live = {j["id"]: await first.wait_for(j["id"]) for j in (done, failed, block)}
        old = MemoryJournal()
        for record in journal.recent():
            data = {k: v for k, v in record.data.items() if k not in NEW_FIELDS}
            await old.append(
                action=record.action, actor=record.actor, source=record.source, job_id=record.job_id, data=data
            )
        assert not any("outcome" in r.data for r in old.recent())
        second = await make_engine_server(journal=old)
        # (The copy's records have new times: compare what does not depend on them.)
        facts = ("status", "error", "exitCode", *NEW_FIELDS)
        for job_id, job in live.items():
            replayed = await second.job(job_id)
            assert list(replayed) == list(JOB_FIELDS)
            assert [replayed[f] for f in facts] == [job[f] for f in facts]
        assert [live[j["id"]]["outcome"] for j in (done, failed, block)] == ["succeeded", "failed", "cancelled"]
