"""Run again: ``POST /api/jobs/{id}/copy`` (issue 16), on both stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.journal.chain import MemoryJournal
from tests.integration.engine.conftest import BOTH_STORES
from tests.integration.engine.harness import CLIENT_TOKEN, EngineServer, MakeEngineServer, auth

pytestmark = BOTH_STORES


async def copy(
    engine: EngineServer, job_id: str, *, actor: str = "carol", token: str | None = None
) -> tuple[int, dict[str, Any]]:
    """POST /copy as ``actor`` (or with a client ``token``); the status and JSON body."""
    headers = auth(token) if token is not None else auth(actor=actor)
    resp = await engine.client.post(f"/api/jobs/{job_id}/copy", headers=headers)
    body: dict[str, Any] = await resp.json()
    if resp.status == 201:
        assert resp.headers["Location"] == f"/api/jobs/{body['id']}"
    return resp.status, body


async def finished(engine: EngineServer, tmp_path: Path, name: str = "nightly") -> dict[str, Any]:
    """A DONE test.count job named ``name`` with its own counter file."""
    job = await engine.create("test.count", {"counter": str(tmp_path / f"{name}.txt")}, name=name)
    await engine.run(job["id"])
    return await engine.wait_for(job["id"])


class TestCopy:
    async def test_a_finished_job_is_copied_ready_and_linked_both_ways(
        self, engine_server: EngineServer, tmp_path: Path
    ) -> None:
        """201: a READY job of the same type, name and params, copyOf the old; the old lists it in copies."""
        old = await finished(engine_server, tmp_path)
        status, new = await copy(engine_server, old["id"])
        assert status == 201
        assert (new["status"], new["type"], new["name"], new["params"]) == (
            "READY",
            old["type"],
            "nightly",
            old["params"],
        )
        assert (new["copyOf"], new["copies"], new["outcome"], new["createdBy"]) == (old["id"], [], None, "carol")
        assert [h["status"] for h in new["history"]] == ["READY"]
        status, second = await copy(engine_server, old["id"])
        assert status == 201
        again = await engine_server.job(old["id"])
        assert again["copies"] == [new["id"], second["id"]]
        assert {k: v for k, v in again.items() if k != "copies"} == {k: v for k, v in old.items() if k != "copies"}
        # Nothing ran: the counter has the one line of the original run.
        assert (tmp_path / "nightly.txt").read_text() == "ran\n"
        assert (await engine_server.job(new["id"]))["status"] == "READY"
        listed = await (await engine_server.client.get("/api/jobs?limit=3", headers=auth())).json()
        assert [j["id"] for j in listed] == [second["id"], new["id"], old["id"]]
        assert listed[2] == again
        records = [r for r in await engine_server.records() if r.job_id == new["id"]]
        assert [(r.action, r.actor, r.data["copyOf"]) for r in records] == [("job_created", "carol", old["id"])]

    async def test_a_copy_runs_on_its_own_and_can_be_copied_again(
        self, engine_server: EngineServer, tmp_path: Path
    ) -> None:
        """The copy needs its own RUN; once finished it can be copied in turn (a chain of copyOf)."""
        old = await finished(engine_server, tmp_path)
        _, new = await copy(engine_server, old["id"])
        await engine_server.run(new["id"])
        done = await engine_server.wait_for(new["id"])
        assert done["outcome"] == "succeeded" and (tmp_path / "nightly.txt").read_text() == "ran\nran\n"
        status, third = await copy(engine_server, new["id"])
        assert status == 201 and third["copyOf"] == new["id"]
        assert (await engine_server.job(new["id"]))["copies"] == [third["id"]]

    async def test_only_finished_jobs_are_copied(self, engine_server: EngineServer) -> None:
        """READY and RUNNING jobs answer 409 not_finished; an unknown id 404; nothing is created."""
        ready = await engine_server.create("test.count")
        status, body = await copy(engine_server, ready["id"])
        assert (status, body["code"]) == (409, "not_finished")
        block = await engine_server.create("test.block")
        await engine_server.run(block["id"])
        status, body = await copy(engine_server, block["id"])
        assert (status, body["code"]) == (409, "not_finished")
        status, body = await copy(engine_server, "00000000-0000-4000-8000-000000000000")
        assert (status, body["code"]) == (404, "not_found")
        listed = await (await engine_server.client.get("/api/jobs", headers=auth())).json()
        assert len(listed) == 2 and all(j["copies"] == [] for j in listed)
        resp = await engine_server.client.post(f"/api/jobs/{block['id']}/cancel", json={}, headers=auth())
        assert resp.status == 202
        await engine_server.wait_for(block["id"])

    async def test_a_failed_job_is_copied_and_a_body_field_is_refused(self, engine_server: EngineServer) -> None:
        """A FAILED job can be run again; a body with any field is 400 unknown_field."""
        failed = await engine_server.create("demo.fail", name="broken")
        await engine_server.run(failed["id"])
        await engine_server.wait_for(failed["id"])
        resp = await engine_server.client.post(f"/api/jobs/{failed['id']}/copy", json={"name": "x"}, headers=auth())
        assert resp.status == 400 and (await resp.json())["code"] == "unknown_field"
        status, new = await copy(engine_server, failed["id"])
        assert status == 201 and new["name"] == "broken" and new["type"] == "demo.fail"

    async def test_a_submit_client_may_copy(self, engine_server: EngineServer, tmp_path: Path) -> None:
        """A client token of scope submit may run again as it may create (its name is the creator)."""
        old = await finished(engine_server, tmp_path)
        status, new = await copy(engine_server, old["id"], token=CLIENT_TOKEN)
        assert status == 201 and new["copyOf"] == old["id"]


class TestCopyReplay:
    async def test_a_replay_rebuilds_both_links(self, make_engine_server: MakeEngineServer, tmp_path: Path) -> None:
        """The journal's one record per copy replays into the same two jobs, byte for byte (embedded store)."""
        journal = MemoryJournal()
        first = await make_engine_server(journal=journal)
        old = await finished(first, tmp_path)
        _, new = await copy(first, old["id"])
        before = [
            await (await first.client.get(f"/api/jobs/{j}", headers=auth())).read() for j in (old["id"], new["id"])
        ]
        second = await make_engine_server(journal=journal)
        after = [
            await (await second.client.get(f"/api/jobs/{j}", headers=auth())).read() for j in (old["id"], new["id"])
        ]
        assert after == before
