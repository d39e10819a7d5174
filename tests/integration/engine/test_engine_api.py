"""The engine's HTTP contract: job shape, listing and pagination, bad input, compat routes, metrics."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest

from shared.contract import JOB_FIELDS
from shared.log import flush_logs
from tests.integration.engine.conftest import BOTH_STORES
from tests.integration.engine.harness import ADMIN_TOKEN, RFC3339_UTC, EngineServer, auth

#: The contract: every test runs against the embedded store and against PostgreSQL.
pytestmark = BOTH_STORES


class TestJobShape:
    async def test_new_job_has_nulls_until_set(self, engine_server: EngineServer) -> None:
        """A created job is READY with every field present, unset ones null, times RFC 3339 UTC."""
        resp = await engine_server.client.post("/api/jobs", json={"type": "demo.sleep"}, headers=auth(actor="alice"))
        assert resp.status == 201
        job = await resp.json()
        assert resp.headers["Location"] == f"/api/jobs/{job['id']}"
        assert tuple(job) == JOB_FIELDS
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", job["id"])
        assert (job["type"], job["engine"], job["name"], job["status"]) == ("demo.sleep",) * 3 + ("READY",)
        assert job["params"] == {"seconds": 3}
        assert job["createdBy"] == "alice"
        assert re.fullmatch(RFC3339_UTC, job["createdAt"])
        for field in ("startedAt", "runBy", "runReason", "endedAt", "exitCode", "error"):
            assert job[field] is None, field
        assert job["history"] == [{"status": "READY", "at": job["createdAt"], "by": "alice", "reason": None}]

    async def test_run_fills_in_times_and_history(self, engine_server: EngineServer) -> None:
        """A finished run has startedAt <= endedAt, runBy, runReason, exitCode 0 and three history entries."""
        job = await engine_server.create("demo.echo", name="greeting")
        resp = await engine_server.client.post(
            f"/api/jobs/{job['id']}/run", json={"reason": "ticket 42"}, headers=auth(actor="bob")
        )
        assert resp.status == 202
        answer = await resp.json()
        assert {k: answer[k] for k in ("status", "jobId", "message")} == {
            "status": "accepted",
            "jobId": job["id"],
            "message": "Job execution started",
        }
        assert answer["job"]["status"] == "RUNNING"
        assert answer["job"]["runBy"] == "bob"
        done = await engine_server.wait_for(job["id"])
        assert (done["status"], done["exitCode"], done["error"]) == ("DONE", 0, None)
        assert (done["runBy"], done["runReason"], done["name"]) == ("bob", "ticket 42", "greeting")
        for field in ("createdAt", "startedAt", "endedAt"):
            assert re.fullmatch(RFC3339_UTC, done[field]), field
        assert done["createdAt"] <= done["startedAt"] <= done["endedAt"]
        assert [(h["status"], h["by"], h["reason"]) for h in done["history"]] == [
            ("READY", "admin", None),
            ("RUNNING", "bob", "ticket 42"),
            ("DONE", "system", None),
        ]
        assert [h["at"] for h in done["history"]][1:] == [done["startedAt"], done["endedAt"]]

    async def test_types_lists_catalog_with_params(self, engine_server: EngineServer) -> None:
        """GET /api/types lists every type with its param declarations but never its command."""
        types = await (await engine_server.client.get("/api/types", headers=auth())).json()
        by_name = {t["name"]: t for t in types}
        assert {"demo.sleep", "demo.echo", "demo.fail", "test.block"} <= set(by_name)
        sleep = by_name["demo.sleep"]["params"][0]
        assert (sleep["name"], sleep["type"], sleep["default"], sleep["min"], sleep["max"]) == (
            "seconds",
            "int",
            3,
            0,
            3600,
        )
        assert by_name["test.block"]["exclusive"] is True
        assert all("command" not in t for t in types)


class TestListing:
    async def _make(self, engine_server: EngineServer, n: int, type_name: str = "demo.echo") -> list[str]:
        return [(await engine_server.create(type_name))["id"] for _ in range(n)]

    async def test_newest_first_with_default_limit(self, engine_server: EngineServer) -> None:
        """GET /api/jobs is a bare array, newest first, 100 by default, with a next link past that."""
        ids = await self._make(engine_server, 105)
        resp = await engine_server.client.get("/api/jobs", headers=auth())
        jobs = await resp.json()
        assert [j["id"] for j in jobs] == ids[::-1][:100]
        assert resp.headers["Link"] == f'</api/jobs?limit=100&before={ids[5]}>; rel="next"'

    async def test_pages_follow_link_header_to_the_end(self, engine_server: EngineServer) -> None:
        """Following rel=next from limit=10 pages visits every job once, and the last page has no link."""
        ids = await self._make(engine_server, 25)
        seen: list[str] = []
        url: str | None = "/api/jobs?limit=10"
        pages = 0
        while url is not None:
            resp = await engine_server.client.get(url, headers=auth())
            assert resp.status == 200
            seen += [j["id"] for j in await resp.json()]
            pages += 1
            link = resp.headers.get("Link")
            url = re.fullmatch(r'<([^>]+)>; rel="next"', link).group(1) if link else None  # type: ignore[union-attr]
        assert pages == 3
        assert seen == ids[::-1]

    async def test_exact_multiple_has_no_dangling_link(self, engine_server: EngineServer) -> None:
        """When the store holds exactly ``limit`` jobs there is no next link."""
        await self._make(engine_server, 5)
        resp = await engine_server.client.get("/api/jobs?limit=5", headers=auth())
        assert len(await resp.json()) == 5
        assert "Link" not in resp.headers

    async def test_status_and_type_filters_page_together(self, engine_server: EngineServer) -> None:
        """status and type filter the list, combine, and carry into the next link."""
        echoes = await self._make(engine_server, 6, "demo.echo")
        fails = await self._make(engine_server, 3, "demo.fail")
        await engine_server.run(echoes[1])
        await engine_server.wait_for(echoes[1])
        resp = await engine_server.client.get("/api/jobs?type=demo.echo&status=READY&limit=2", headers=auth())
        assert [j["id"] for j in await resp.json()] == [echoes[5], echoes[4]]
        assert resp.headers["Link"] == f'</api/jobs?limit=2&status=READY&type=demo.echo&before={echoes[4]}>; rel="next"'
        page2 = await engine_server.client.get(
            f"/api/jobs?type=demo.echo&status=READY&limit=2&before={echoes[4]}", headers=auth()
        )
        assert [j["id"] for j in await page2.json()] == [echoes[3], echoes[2]]
        page3 = await engine_server.client.get(
            f"/api/jobs?type=demo.echo&status=READY&limit=2&before={echoes[2]}", headers=auth()
        )
        assert [j["id"] for j in await page3.json()] == [echoes[0]]
        assert "Link" not in page3.headers
        done = await (await engine_server.client.get("/api/jobs?status=done", headers=auth())).json()
        assert [j["id"] for j in done] == [echoes[1]]
        failed_type = await (await engine_server.client.get("/api/jobs?type=demo.fail", headers=auth())).json()
        assert [j["id"] for j in failed_type] == fails[::-1]

    async def test_cursor_job_outside_the_filter_still_works(self, engine_server: EngineServer) -> None:
        """``before`` may name a job that does not match the filter (it changed status meanwhile)."""
        echoes = await self._make(engine_server, 3, "demo.echo")
        fail = (await self._make(engine_server, 1, "demo.fail"))[0]
        more = await self._make(engine_server, 2, "demo.echo")
        resp = await engine_server.client.get(f"/api/jobs?type=demo.echo&before={fail}", headers=auth())
        assert [j["id"] for j in await resp.json()] == echoes[::-1]
        assert more  # newer jobs are not on a page before the cursor

    async def test_legacy_list_is_the_same_list(self, engine_server: EngineServer) -> None:
        """GET /engines/jobs serves the same jobs, with its own path in the next link."""
        ids = await self._make(engine_server, 3)
        resp = await engine_server.client.get("/engines/jobs?limit=2", headers=auth())
        assert [j["id"] for j in await resp.json()] == ids[::-1][:2]
        assert resp.headers["Link"].startswith("</engines/jobs?limit=2&before=")


BIG = "x" * (64 * 1024 + 1)

#: (method, path, body, expected status, expected code). ``{id}`` is a READY job, ``{done}`` a DONE one.
BAD_INPUT: list[tuple[str, str, Any, int, str]] = [
    ("POST", "/api/jobs", b"{not json", 400, "invalid_json"),
    ("POST", "/api/jobs", b"[1, 2]", 400, "invalid_json"),
    ("POST", "/api/jobs", b"", 400, "invalid_json"),
    ("POST", "/api/jobs", b"\xff\xfe", 400, "invalid_json"),
    ("POST", "/api/jobs", {"type": "demo.echo", "bogus": 1}, 400, "unknown_field"),
    ("POST", "/api/jobs", {"name": "no type"}, 400, "invalid_field"),
    ("POST", "/api/jobs", {"type": 7}, 400, "invalid_field"),
    ("POST", "/api/jobs", {"type": "no.such.type"}, 400, "unknown_type"),
    ("POST", "/api/jobs", {"type": "demo.sleep", "params": {"seconds": "5"}}, 400, "invalid_param"),
    ("POST", "/api/jobs", {"type": "demo.sleep", "params": {"seconds": 3601}}, 400, "invalid_param"),
    ("POST", "/api/jobs", {"type": "demo.sleep", "params": {"seconds": True}}, 400, "invalid_param"),
    ("POST", "/api/jobs", {"type": "demo.sleep", "params": {"minutes": 1}}, 400, "invalid_param"),
    ("POST", "/api/jobs", {"type": "demo.sleep", "params": [1]}, 400, "invalid_param"),
    ("POST", "/api/jobs", {"type": "test.required"}, 400, "invalid_param"),
    ("POST", "/api/jobs", {"type": "demo.echo", "name": "x" * 201}, 400, "invalid_field"),
    ("POST", "/api/jobs", {"type": "demo.echo", "name": 5}, 400, "invalid_field"),
    ("POST", "/api/jobs", {"type": "demo.echo", "name": "two\nlines"}, 400, "invalid_field"),
    ("POST", "/api/jobs", {"type": "demo.echo", "name": BIG}, 413, "payload_too_large"),
    ("GET", "/api/jobs?limit=-1", None, 400, "invalid_field"),
    ("GET", "/api/jobs?limit=0", None, 400, "invalid_field"),
    ("GET", "/api/jobs?limit=1001", None, 400, "invalid_field"),
    ("GET", "/api/jobs?limit=99999999999999999999999", None, 400, "invalid_field"),
    ("GET", "/api/jobs?limit=ten", None, 400, "invalid_field"),
    ("GET", "/api/jobs?limit=", None, 400, "invalid_field"),
    ("GET", "/api/jobs?status=QUEUED", None, 400, "invalid_field"),
    ("GET", "/api/jobs?type=no.such.type", None, 400, "invalid_field"),
    ("GET", "/api/jobs?before=00000000-0000-4000-8000-000000000000", None, 400, "invalid_field"),
    ("GET", "/api/jobs?stauts=READY", None, 400, "unknown_field"),
    ("GET", "/engines/jobs?limit=-5", None, 400, "invalid_field"),
    ("GET", "/api/jobs/00000000-0000-4000-8000-000000000000", None, 404, "not_found"),
    ("GET", "/api/jobs/not-a-uuid", None, 404, "not_found"),
    ("POST", "/api/jobs/00000000-0000-4000-8000-000000000000/run", None, 404, "not_found"),
    ("POST", "/api/jobs/00000000-0000-4000-8000-000000000000/cancel", None, 404, "not_found"),
    ("GET", "/api/jobs/00000000-0000-4000-8000-000000000000/logs", None, 404, "not_found"),
    ("POST", "/api/jobs/{id}/run", {"reason": "ok", "force": True}, 400, "unknown_field"),
    ("POST", "/api/jobs/{id}/run", {"reason": 42}, 400, "invalid_field"),
    ("POST", "/api/jobs/{id}/run", b"{", 400, "invalid_json"),
    ("POST", "/api/jobs/{id}/run", {"reason": BIG}, 413, "payload_too_large"),
    ("POST", "/api/jobs/{id}/cancel", {"now": True}, 400, "unknown_field"),
    ("POST", "/api/jobs/00000000-0000-4000-8000-000000000000/plan", None, 404, "not_found"),
    ("POST", "/api/jobs/{id}/plan", {"reason": "x"}, 400, "unknown_field"),
    ("POST", "/api/jobs/{id}/plan", b"{", 400, "invalid_json"),
    ("POST", "/api/jobs/{id}/plan", {"reason": BIG}, 413, "payload_too_large"),
    ("POST", "/api/jobs/{done}/plan", None, 409, "not_ready"),
    ("POST", "/api/jobs/{id}", {}, 405, "method_not_allowed"),
    ("DELETE", "/api/jobs/{id}", None, 405, "method_not_allowed"),
    ("POST", "/api/jobs/{done}/run", None, 400, "not_ready"),
    ("GET", "/api/jobs/{id}/logs?after=-1", None, 400, "invalid_field"),
    ("GET", "/api/jobs/{id}/logs?after=x", None, 400, "invalid_field"),
    ("GET", "/api/jobs/{id}/logs?limit=0", None, 400, "invalid_field"),
    ("GET", "/api/jobs/results?limit=-1", None, 400, "invalid_field"),
    ("GET", "/engines/jobs/results?limit=abc", None, 400, "invalid_field"),
    ("GET", "/api/engines/logs?limit=501", None, 400, "invalid_field"),
    ("GET", "/engines/logs?limit=0", None, 400, "invalid_field"),
    ("GET", "/logs?limit=-20", None, 400, "invalid_field"),
    ("POST", "/engines/jobs/run", b"nope", 400, "invalid_json"),
    ("POST", "/engines/jobs/run", {}, 400, "invalid_field"),
    ("POST", "/engines/jobs/run", {"engine": "demo.echo"}, 400, "invalid_field"),
    ("POST", "/engines/jobs/run", {"name": "x"}, 400, "invalid_field"),
    ("POST", "/engines/jobs/run", {"engine": "", "name": "x"}, 400, "invalid_field"),
    ("POST", "/engines/jobs/run", {"engine": ["demo.echo"], "name": "x"}, 400, "invalid_field"),
    ("POST", "/engines/jobs/run", {"engine": "no.such", "name": "x"}, 400, "unknown_type"),
    ("POST", "/engines/jobs/run", {"engine": "demo.echo", "name": "x", "params": {}}, 400, "unknown_field"),
    ("GET", "/no/such/route", None, 404, "not_found"),
]


class TestListFreshness:
    async def test_same_page_reflects_every_change_at_once(self, engine_server: EngineServer) -> None:
        """The same list query, repeated, shows each create, run and finish as soon as it is acknowledged."""

        async def page(path: str = "/api/jobs?limit=5") -> list[dict[str, Any]]:
            resp = await engine_server.client.get(path, headers=auth())
            assert resp.status == 200
            jobs: list[dict[str, Any]] = await resp.json()
            return jobs

        assert await page() == await page()
        before = await page()
        job = await engine_server.create("test.count")
        first = (await page())[0]
        assert first["id"] == job["id"] and first["status"] == "READY"
        assert next(j["id"] for j in await page("/engines/jobs?limit=5")) == job["id"]
        await engine_server.run(job["id"])
        assert (await page())[0]["status"] in ("RUNNING", "DONE")
        await engine_server.wait_for(job["id"])
        assert (await page())[0]["status"] == "DONE"
        assert (await page("/api/jobs?limit=5&status=DONE"))[0]["id"] == job["id"]
        assert [j["id"] for j in await page()][1:] == [j["id"] for j in before][:4]


class TestListCacheKeys:
    async def test_queries_that_decode_alike_are_validated_apart(self, engine_server: EngineServer) -> None:
        """A valid ``limit=%35`` served from the cache does not stand in for the invalid ``limit=%2535``."""
        await engine_server.create("test.count")
        assert (await engine_server.client.get("/api/jobs?limit=%35", headers=auth())).status == 200
        resp = await engine_server.client.get("/api/jobs?limit=%2535", headers=auth())
        assert resp.status == 400
        assert (await resp.json())["code"] == "invalid_field"


class TestHead:
    async def test_head_of_the_list_and_a_job(self, engine_server: EngineServer) -> None:
        """HEAD answers like GET without a body, cached page included, and needs a token like GET."""
        job = await engine_server.create("test.count")
        for path in ("/api/jobs?limit=5", "/api/jobs?limit=5", f"/api/jobs/{job['id']}"):
            resp = await engine_server.client.head(path, headers=auth())
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/json")
            assert await resp.read() == b""
        assert (await engine_server.client.head("/api/jobs")).status == 401

    async def test_405_lists_exactly_the_allowed_methods(self, engine_server: EngineServer) -> None:
        """DELETE /api/jobs is a JSON 405 whose Allow header names exactly GET, HEAD and POST."""
        resp = await engine_server.client.delete("/api/jobs", headers=auth())
        assert resp.status == 405
        assert (await resp.json())["code"] == "method_not_allowed"
        assert {m.strip() for m in resp.headers["Allow"].split(",")} == {"GET", "HEAD", "POST"}


class TestBadInput:
    @pytest.mark.parametrize(
        ("method", "path", "body", "status", "code"), BAD_INPUT, ids=[f"{m} {p} {s}" for m, p, _, s, _ in BAD_INPUT]
    )
    async def test_bad_input_gets_json_4xx(
        self, engine_server: EngineServer, method: str, path: str, body: Any, status: int, code: str
    ) -> None:
        """Each kind of bad input gets its 4xx with a JSON {error, code} body, and the engine keeps serving."""
        ready = await engine_server.create("demo.echo")
        done = await engine_server.create("demo.echo")
        await engine_server.run(done["id"])
        await engine_server.wait_for(done["id"])
        path = path.replace("{id}", ready["id"]).replace("{done}", done["id"])
        kwargs: dict[str, Any] = {"headers": auth()}
        if isinstance(body, bytes):
            kwargs["data"] = body
        elif body is not None:
            kwargs["json"] = body
        resp = await engine_server.client.request(method, path, **kwargs)
        assert resp.status == status, await resp.text()
        assert resp.content_type == "application/json"
        answer = await resp.json()
        assert set(answer) == {"error", "code"}
        assert answer["code"] == code
        assert answer["error"]
        after = await engine_server.job(ready["id"])
        assert after["status"] == "READY"
        listed = await (await engine_server.client.get("/api/jobs", headers=auth())).json()
        assert len(listed) == 2

    async def test_error_messages_say_what_is_allowed(self, engine_server: EngineServer) -> None:
        """Unknown types and bad params name what is allowed."""
        resp = await engine_server.client.post("/api/jobs", json={"type": "nope"}, headers=auth())
        assert "demo.echo" in (await resp.json())["error"]
        resp = await engine_server.client.post(
            "/api/jobs", json={"type": "demo.sleep", "params": {"seconds": -1}}, headers=auth()
        )
        assert "between 0 and 3600" in (await resp.json())["error"]


class TestCompatRoutes:
    async def test_results_and_engine_logs(self, engine_server: EngineServer) -> None:
        """Results and EngineLogs have the original shapes on every legacy path, oldest first, limited."""
        jobs = [await engine_server.create("demo.echo", name=f"n{i}") for i in range(3)]
        for job in jobs:
            await engine_server.run(job["id"])
            await engine_server.wait_for(job["id"])
        for path in ("/api/jobs/results", "/engines/jobs/results"):
            results = await (await engine_server.client.get(f"{path}?limit=2", headers=auth())).json()
            assert [r["jobId"] for r in results] == [jobs[1]["id"], jobs[2]["id"]]
            assert set(results[0]) == {"jobId", "engine", "name", "output", "createdAt"}
            assert (results[0]["engine"], results[0]["name"], results[0]["output"]) == (
                "demo.echo",
                "n1",
                "Job completed successfully",
            )
        for path in ("/api/engines/logs", "/engines/logs", "/logs"):
            logs = await (await engine_server.client.get(path, headers=auth())).json()
            assert all(set(entry) == {"level", "message", "jobId", "timestamp"} for entry in logs)
            mine = [(e["message"], e["level"]) for e in logs if e["jobId"] == jobs[2]["id"]]
            assert mine == [("Job created", "INFO"), ("Job started", "INFO"), ("Job finished", "INFO")]
            last = await (await engine_server.client.get(f"{path}?limit=1", headers=auth())).json()
            assert last == logs[-1:]

    async def test_engine_log_is_a_ring_of_500(self, engine_server: EngineServer) -> None:
        """The EngineLog buffer keeps the newest 500 entries."""
        for _ in range(510):
            await engine_server.create("demo.echo")
        logs = await (await engine_server.client.get("/logs?limit=500", headers=auth())).json()
        assert len(logs) == 500
        newest = await (await engine_server.client.get("/api/jobs?limit=1", headers=auth())).json()
        assert logs[-1]["jobId"] == newest[0]["id"]


class TestHealthAndMetrics:
    async def test_healthz_needs_no_token(self, engine_server: EngineServer) -> None:
        """/healthz answers ok without a token."""
        resp = await engine_server.client.get("/healthz")
        assert (resp.status, await resp.json()) == (200, {"status": "ok"})

    async def test_metrics_count_jobs_and_runs(self, engine_server: EngineServer) -> None:
        """/metrics reports jobs by status, run counters and request latency."""
        ok = await engine_server.create("demo.echo")
        bad = await engine_server.create("demo.fail")
        await engine_server.create("demo.echo")
        for job in (ok, bad):
            await engine_server.run(job["id"])
            await engine_server.wait_for(job["id"])
        resp = await engine_server.client.get("/metrics", headers=auth())
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
        values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
        assert values['engine_jobs{status="READY"}'] == "1"
        assert values['engine_jobs{status="DONE"}'] == "1"
        assert values['engine_jobs{status="FAILED"}'] == "1"
        assert values["engine_runs_started_total"] == "2"
        assert values["engine_runs_finished_total"] == "1"
        assert values["engine_runs_failed_total"] == "1"
        assert int(values['engine_request_duration_seconds_count{method="POST",route="/api/jobs"}']) == 3
        assert values['engine_request_duration_seconds_bucket{method="POST",route="/api/jobs",le="+Inf"}'] == "3"
        assert 'route="/api/jobs/{id}"' in text  # the template, not each job's path

    async def test_latency_labels_stay_bounded(self, engine_server: EngineServer) -> None:
        """Requests count under (method, route template); unknown paths are 'unmatched', odd methods 'other'."""
        job = await engine_server.create("demo.echo")
        for _ in range(3):
            assert (await engine_server.client.get(f"/api/jobs/{job['id']}", headers=auth())).status == 200
            assert (await engine_server.client.get("/api/jobs/no-such-job", headers=auth())).status == 404
            assert (await engine_server.client.get(f"/nowhere/{_}", headers=auth())).status == 404
            assert (
                await engine_server.client.request("PROPFIND", f"/api/jobs/{job['id']}", headers=auth())
            ).status == 405
            assert (await engine_server.client.request("MKCOL", "/api/jobs", headers=auth())).status == 405
        text = await (await engine_server.client.get("/metrics", headers=auth())).text()
        counts = {
            line.split("{", 1)[1].rsplit("}", 1)[0]: int(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("engine_request_duration_seconds_count{")
        }
        assert counts['method="GET",route="/api/jobs/{id}"'] == 6
        assert counts['method="GET",route="unmatched"'] == 3
        assert counts['method="other",route="unmatched"'] == 6
        assert not any("PROPFIND" in labels or "MKCOL" in labels or "nowhere" in labels for labels in counts)


class TestLogging:
    async def test_one_summary_line_per_request_and_one_event_per_transition(
        self, engine_server: EngineServer, json_log: io.StringIO
    ) -> None:
        """Each request logs one ``request`` line (id, method, path, status, ms); each transition one event."""
        job = await engine_server.create("demo.echo")
        resp = await engine_server.client.post(
            f"/api/jobs/{job['id']}/run", headers={**auth(), "X-Request-Id": "abc-123"}
        )
        await engine_server.wait_for(job["id"])
        await engine_server.client.get("/api/jobs?limit=-1", headers=auth())
        flush_logs()
        events = [json.loads(line) for line in json_log.getvalue().splitlines()]
        requests = [e for e in events if e["event"] == "request"]
        run = [e for e in requests if e["path"].endswith("/run")]
        assert len(run) == 1
        assert (run[0]["request_id"], run[0]["method"], run[0]["status"]) == ("abc-123", "POST", 202)
        assert resp.headers["X-Request-Id"] == "abc-123"
        assert isinstance(run[0]["ms"], float)
        assert [e["status"] for e in requests if e["path"] == "/api/jobs" and e["method"] == "GET"] == [400]
        assert len({e["request_id"] for e in requests}) == len(requests)
        transitions = [
            (e["from_status"], e["to_status"])
            for e in events
            if e["event"] == "job_transition" and e["job_id"] == job["id"]
        ]
        assert transitions == [("READY", "RUNNING"), ("RUNNING", "DONE")]
        assert ADMIN_TOKEN not in json_log.getvalue()
