"""Issue 16's audit page: new filters, job names, the audited CSV / JSON Lines export, and the Engine log's paging.

Real servers: the gateway in front of a real in-process engine (its
``GET /api/audit`` and its log), records made by driving the gateway.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from typing import Any

import pytest

from admin_gateway.audit.export import CSV_COLUMNS
from tests.integration.gateway.harness import (
    ADMIN,
    ENGINE_TOKEN,
    SUPER,
    WRONG,
    GatewayServer,
    MakeGatewayServer,
    UpstreamEngine,
    User,
    attempt_login,
    login_form_token,
    wait_for_status,
)
from tests.integration.gateway.test_gateway_audit_view import everything, rows, timeline

EXPORT = "/api/admin/audit/export"
#: Actors (named by an engine client with the admin token) that a spreadsheet would run as formulas.
FORMULAS = ("=HYPERLINK(1)", "+1+1", "-2+3", "@SUM(1)")
_OLDER = re.compile(r'href="([^"]*)" data-testid="older-link"')
_LOG_ROW = re.compile(r'data-testid="engine-log-row"')


async def fail_logins(gateway_server: GatewayServer, *names: str) -> None:
    """One failed sign-in per attempted name (each a gateway record whose actor is that name)."""
    client = await gateway_server.client()
    for name in names:
        answer = await attempt_login(client, await login_form_token(client), name, WRONG)
        assert answer.status == 401, answer


async def jobs_by(upstream_engine: UpstreamEngine, *actors: str) -> None:
    """Create one job at the engine per actor, each named by ``X-Engine-Actor`` (any printable text)."""
    for actor in actors:
        headers = {"Authorization": f"Bearer {ENGINE_TOKEN}", "X-Engine-Actor": actor}
        resp = await upstream_engine.client.post("/api/jobs", json={"type": "demo.echo"}, headers=headers)
        assert resp.status == 201, await resp.text()


async def named_job(user: User, name: str) -> str:
    """Create a job named ``name`` through the gateway and run it to DONE; return its id."""
    resp = await user.post("/api/admin/engine/jobs", {"type": "demo.echo", "name": name})
    assert resp.status == 201, await resp.text()
    job_id = str((await resp.json())["id"])
    assert (await user.post(f"/api/admin/engine/jobs/{job_id}/run", {"reason": "names"})).status == 202
    await wait_for_status(user, job_id, {"DONE"})
    return job_id


async def export(user: User, status: int = 200, **params: str) -> Any:
    """GET the export (expecting ``status``); return the response, its body read."""
    resp = await user.client.get(EXPORT, params=params)
    body = await resp.read()
    assert resp.status == status, body[:500]
    return resp, body.decode()


class TestFilters:
    async def test_actor_prefix_action_and_outcome(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """actor matches a prefix in both journals; action and outcome narrow to exactly those records."""
        user = await gateway_server.login()
        await fail_logins(gateway_server, "alicia", "bob2")
        await named_job(user, "prefix check")
        by_prefix = await everything(user.client, actor="ali")
        assert {r["actor"] for r in by_prefix} == {SUPER, "alicia"}
        assert {r["journal"] for r in by_prefix} == {"engine", "gateway"}
        runs = await everything(user.client, action="job_run")
        assert [(r["journal"], r["action"], r["data"]["outcome"]) for r in runs] == [("gateway", "job_run", "accepted")]
        refused = await everything(user.client, outcome="refused")
        assert sorted(r["actor"] for r in refused) == ["alicia", "bob2"]
        assert {r["action"] for r in refused} == {"login_failed"}
        engine_runs = await everything(user.client, action="run_requested", actor="ali")
        assert [(r["journal"], r["actor"]) for r in engine_runs] == [("engine", SUPER)]
        assert await everything(user.client, actor="ALI") == []

    @pytest.mark.parametrize("since", ["2026-12-04 14:37", "2026-12-04T14:37", "2026-12-04T14:37:00Z", "2026-12-04"])
    async def test_since_accepts_what_the_page_shows_and_rfc3339(
        self, gateway_server: GatewayServer, since: str
    ) -> None:
        """since takes "2026-12-04 14:37" (UTC), the datetime-local form and RFC 3339; the page refills its input."""
        user = await gateway_server.login()
        assert (await timeline(user.client, since=since, until="2999-01-01 00:00"))["records"]
        html = await (await user.client.get("/admin/audit", params={"since": since})).text()
        expected = "2026-12-04T00:00" if since == "2026-12-04" else "2026-12-04T14:37"
        assert f'type="datetime-local" name="since" value="{expected}"' in html

    @pytest.mark.parametrize("params", [{"action": "Job Run"}, {"outcome": "x" * 65}, {"action": "job-run"}])
    async def test_bad_action_or_outcome_is_400(self, gateway_server: GatewayServer, params: dict[str, str]) -> None:
        """An action or outcome that is no journal name is 400 invalid_field, on the API, the page and the export."""
        user = await gateway_server.login()
        resp = await user.client.get("/api/admin/audit", params=params)
        assert (resp.status, (await resp.json())["code"]) == (400, "invalid_field")
        assert (await user.client.get("/admin/audit", params=params)).status == 400
        resp, body = await export(user, 400, format="csv", **params)
        assert json.loads(body)["code"] == "invalid_field"

    async def test_page_filter_form(self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer) -> None:
        """The page offers the known actions and outcomes as selects, keeps the choice, and filters by it."""
        user = await gateway_server.login()
        await named_job(user, "form check")
        html = await (await user.client.get("/admin/audit", params={"action": "job_run", "outcome": "accepted"})).text()
        assert '<option value="job_run" selected>job_run</option>' in html
        assert '<option value="job_created">job_created</option>' in html
        assert '<option value="login_failed">login_failed</option>' in html
        assert '<option value="accepted" selected>accepted</option>' in html
        assert [a for _, _, a in rows(html)] == ["job_run"]
        assert 'data-zone-input data-testid="filter-since"' in html


class TestCompactRows:
    async def test_job_names_next_to_ids_and_details_folded(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """Each row names its job next to the id, and its details sit in a closed <details> with a summary."""
        user = await gateway_server.login()
        job_id = await named_job(user, "nightly <backup>")
        before = upstream_engine.count("GET", rf"^/api/jobs/{job_id}$")
        html = await (await user.client.get("/admin/audit", params={"jobId": job_id})).text()
        names = re.findall(r'data-testid="audit-job-name">([^<]*)<', html)
        assert len(names) == len(rows(html)) > 3 and set(names) == {"nightly &lt;backup&gt;"}
        assert upstream_engine.count("GET", rf"^/api/jobs/{job_id}$") == before + 1  # one read for all rows
        await user.client.get("/admin/audit", params={"jobId": job_id})
        assert upstream_engine.count("GET", rf"^/api/jobs/{job_id}$") == before + 1  # then cached
        assert html.count('<details data-testid="audit-details">') == len(rows(html))
        assert '<details data-testid="audit-details" open' not in html
        assert re.search(r"<summary><span class=\"audit-summary\">[^<]*reason: names", html)

    async def test_names_are_bounded_per_page(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """A page naming more jobs than the bound asks the engine for at most that many names."""
        from admin_gateway.audit.job_names import MAX_LOOKUPS

        user = await gateway_server.login()
        for _ in range(MAX_LOOKUPS + 5):
            await upstream_engine.create()
        before = upstream_engine.count("GET", r"^/api/jobs/[^/?]+$")
        resp = await user.client.get("/admin/audit", params={"journal": "engine", "limit": "200"})
        assert resp.status == 200
        assert upstream_engine.count("GET", r"^/api/jobs/[^/?]+$") - before == MAX_LOOKUPS


class TestExport:
    async def test_csv_streams_the_filter_with_formulas_neutralised(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """CSV: a header, one row per record of the filter (both journals), cells starting = + - @ quoted with '."""
        user = await gateway_server.login()
        await jobs_by(upstream_engine, *FORMULAS)
        await named_job(user, "export me")
        expected = await everything(user.client)
        resp, body = await export(user, format="csv")
        assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert re.fullmatch(r'attachment; filename="audit-\d{8}T\d{6}Z\.csv"', resp.headers["Content-Disposition"])
        assert resp.headers["Cache-Control"] == "no-store" and "Content-Security-Policy" in resp.headers
        table = list(csv.reader(io.StringIO(body)))
        assert table[0] == list(CSV_COLUMNS)
        got = [(r[0], int(r[1])) for r in table[1:]]
        assert got[1:] == [(r["journal"], r["seq"]) for r in expected]  # newest first; the export's intent is first
        assert table[1][5] == "audit_export_requested"
        actors = {r[3] for r in table[1:]}
        assert {"'" + name for name in FORMULAS} <= actors
        assert not any(cell[:1] in "=+-@" for row in table[1:] for cell in row if cell)
        assert all(json.loads(r[8]) == e["data"] for r, e in zip(table[2:], expected, strict=True))

    async def test_jsonl_lines_are_the_api_records_of_the_filter(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """JSON Lines: one timeline record per line, only those the filter selects."""
        user = await gateway_server.login()
        job_id = await named_job(user, "jsonl")
        resp, body = await export(user, format="jsonl", jobId=job_id)
        assert resp.headers["Content-Type"] == "application/jsonl; charset=utf-8"
        assert resp.headers["Content-Disposition"].endswith('.jsonl"')
        lines = [json.loads(line) for line in body.splitlines()]
        assert lines == await everything(user.client, jobId=job_id)
        assert {r["journal"] for r in lines} == {"engine", "gateway"} and all(r["jobId"] == job_id for r in lines)

    async def test_export_is_audited_with_filter_format_and_count(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """An intent (who, filter, format) before the first byte, then audit_export with the count written."""
        user = await gateway_server.login()
        await named_job(user, "audited")
        _, body = await export(user, format="jsonl", action="job_run", actor="al")
        assert len(body.splitlines()) == 1
        # The count is recorded once the last byte is out, so the client may finish first.
        for _ in range(100):
            if gateway_server.audit_records()[-1].action == "audit_export":
                break
            await asyncio.sleep(0.02)
        intent, done = gateway_server.audit_records()[-2:]
        assert (intent.action, intent.actor, done.action, done.actor) == (
            "audit_export_requested",
            SUPER,
            "audit_export",
            SUPER,
        )
        assert intent.data["outcome"] == "requested" and done.data["outcome"] == "accepted"
        for rec in (intent, done):
            assert (rec.data["format"], rec.data["filter"]) == ("jsonl", "actor=al&action=job_run")
        assert (done.data["count"], done.data["intentSeq"]) == (1, intent.seq)
        found = await everything(user.client, action="audit_export")
        assert [r["data"]["count"] for r in found] == [1]

    async def test_engine_down_refuses_rather_than_export_half(
        self, make_gateway_server: MakeGatewayServer, closed_port: int
    ) -> None:
        """With the engine unreachable the export is 502 (JSON), recorded as an error; gateway-only still works."""
        gw = await make_gateway_server(f"http://127.0.0.1:{closed_port}")
        user = await gw.login()
        _, body = await export(user, 502, format="csv")
        assert json.loads(body)["code"] == "engine_unavailable"
        done = gw.audit_records()[-1]
        assert (done.action, done.data["outcome"], done.data["count"]) == ("audit_export", "error", 0)
        resp, body = await export(user, journal="gateway")  # CSV unless told otherwise
        assert resp.headers["Content-Type"].startswith("text/csv") and "login_succeeded" in body

    @pytest.mark.parametrize(
        ("params", "status", "code"),
        [
            ({"format": "CSV"}, 400, "invalid_field"),
            ({"format": "xlsx"}, 400, "invalid_field"),
            ({"format": "csv", "limit": "5"}, 400, "unknown_field"),
        ],
    )
    async def test_bad_requests(
        self, gateway_server: GatewayServer, params: dict[str, str], status: int, code: str
    ) -> None:
        """An unknown format, or a parameter it does not take, is a JSON 400; nothing is recorded."""
        user = await gateway_server.login()
        count = len(gateway_server.audit_records())
        _, body = await export(user, status, **params)
        assert json.loads(body)["code"] == code
        assert len(gateway_server.audit_records()) == count

    async def test_super_admins_only(self, gateway_server: GatewayServer) -> None:
        """Anonymous and admin callers get 401, no file."""
        anon = await gateway_server.client()
        assert (await anon.get(EXPORT, params={"format": "csv"})).status == 401
        bob = await gateway_server.login(ADMIN)
        resp = await bob.client.get(EXPORT, params={"format": "csv"})
        assert (resp.status, (await resp.json())["code"]) == (401, "forbidden")

    async def test_page_export_form_carries_the_filter(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """The page's Export form points at the export with the applied filter as hidden fields."""
        user = await gateway_server.login()
        html = await (await user.client.get("/admin/audit", params={"actor": "ali", "outcome": "refused"})).text()
        form = html[html.index('data-testid="export-form"') - 200 : html.index('data-testid="export-button"')]
        assert 'action="/api/admin/audit/export"' in form
        assert '<input type="hidden" name="actor" value="ali">' in form
        assert '<input type="hidden" name="outcome" value="refused">' in form


def _times(page: str) -> list[str]:
    return re.findall(r'<time datetime="([^"]+)"', page.split('data-testid="engine-logs-table"')[1])


class TestEngineLogPaging:
    async def test_pages_of_fifty_cover_the_log_once(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """60 entries: a first page of 50 (and any sharing its last time) with an Older link, then the rest once."""
        for _ in range(60):
            await upstream_engine.create()
        user = await gateway_server.login()
        first = await (await user.client.get("/admin/engine/logs")).text()
        first_times = _times(first)
        # Creates a third of a millisecond apart share times: the page keeps its boundary time whole.
        assert len(_LOG_ROW.findall(first)) == len(first_times) >= 50 and 'data-testid="newest-link"' not in first
        assert set(first_times[49:]) == {first_times[49]}
        older = _OLDER.search(first)
        assert older, "no Older link"
        resp = await user.client.get(older.group(1).replace("&amp;", "&"))
        second = await resp.text()
        second_times = _times(second)
        assert resp.status == 200 and len(_LOG_ROW.findall(second)) == len(second_times) == 60 - len(first_times)
        assert 'data-testid="newest-link"' in second and not _OLDER.search(second)
        times = first_times + second_times
        assert times == sorted(times, reverse=True) and first_times[-1] > second_times[0]

    async def test_bad_cursor_is_400(self, gateway_server: GatewayServer) -> None:
        """A before that is not a time is the page with an error, 400."""
        user = await gateway_server.login()
        resp = await user.client.get("/admin/engine/logs", params={"before": "yesterday"})
        assert resp.status == 400 and "Cannot page from there" in await resp.text()
