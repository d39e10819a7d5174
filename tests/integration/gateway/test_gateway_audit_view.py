"""Reading the audit trail: ``GET /api/admin/audit``, the ``/admin/audit`` page and the job page's section.

The engine's records come from the real engine's ``GET /api/audit``; the
gateway's from its own journal. Both are produced by driving the gateway.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.integration.gateway.harness import (
    ADMIN,
    SUPER,
    GatewayServer,
    MakeGatewayServer,
    UpstreamEngine,
    User,
    wait_for_status,
)

API = "/api/admin/audit"
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'
_ROW = re.compile(r'<tr data-testid="audit-row" data-journal="(\w+)" data-seq="(\d+)" data-action="([^"]*)">')


async def timeline(client: TestClient[web.Request, web.Application], **params: str) -> dict[str, Any]:
    """GET one page of the API (expecting 200, never cached) and return it."""
    resp = await client.get(API, params=params)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    page: dict[str, Any] = await resp.json()
    return page


async def everything(client: TestClient[web.Request, web.Application], **params: str) -> list[dict[str, Any]]:
    """Follow ``next`` from the newest page to the last and return every record."""
    records: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(200):
        page = await timeline(client, **params, **({"before": cursor} if cursor else {}))
        records += page["records"]
        cursor = page["next"]
        if cursor is None:
            return records
    raise AssertionError("paging never ended")


def rows(html: str) -> list[tuple[str, int, str]]:
    """The (journal, seq, action) of every audit row in a page."""
    return [(j, int(s), a) for j, s, a in _ROW.findall(html)]


async def a_run_job(upstream_engine: UpstreamEngine, user: User) -> str:
    """Create (through the gateway) and run a job to DONE; return its id."""
    job = await user.create("demo.echo")
    assert (await user.post(f"/api/admin/engine/jobs/{job['id']}/run", {"reason": "nightly"})).status == 202
    await wait_for_status(user, job["id"], {"DONE"})
    return str(job["id"])


class TestAccess:
    @pytest.mark.parametrize(("who", "status", "code"), [(None, 401, "unauthorized"), (ADMIN, 401, "forbidden")])
    async def test_api_is_for_super_admins_only(
        self, gateway_server: GatewayServer, who: str | None, status: int, code: str
    ) -> None:
        """Anonymous and admin callers get 401 (unauthorized / forbidden), not cached."""
        client = (await gateway_server.login(who)).client if who else await gateway_server.client()
        resp = await client.get(API)
        assert resp.status == status
        assert (await resp.json())["code"] == code
        assert resp.headers["Cache-Control"] == "no-store"

    async def test_page_access_matrix(self, gateway_server: GatewayServer) -> None:
        """/admin/audit: anonymous → /login, admin → the no-access page (403), super_admin → the page and nav item."""
        anon = await gateway_server.client()
        resp = await anon.get("/admin/audit", allow_redirects=False)
        assert (resp.status, resp.headers["Location"]) == (303, "/login?next=/admin/audit")
        bob = await gateway_server.login(ADMIN)
        resp = await bob.client.get("/admin/audit")
        assert resp.status == 403 and 'data-testid="no-access"' in await resp.text()
        alice = await gateway_server.login()
        resp = await alice.client.get("/admin/audit")
        html = await resp.text()
        assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
        assert '<a href="/admin/audit" aria-current="page">Audit</a>' in html
        # Seq 1: bob signs in, 2: bob is denied the page, 3: alice signs in.
        assert rows(html)[:3] == [
            ("gateway", 3, "login_succeeded"),
            ("gateway", 2, "access_denied"),
            ("gateway", 1, "login_succeeded"),
        ]

    @pytest.mark.parametrize(
        "params",
        [
            {"since": "yesterday"},
            {"until": "2025-13-01"},
            {"jobId": "../etc"},
            {"limit": "0"},
            {"limit": "501"},
            {"before": "12"},
            {"journal": "both-ish"},
            {"since": "2025-02-01", "until": "2025-01-01"},
            {"actor": "a\u0000b"},
            {"since": "0001-01-01T00:00:00+01:00"},
            {"before": "e\u0663.g"},
        ],
    )
    async def test_bad_filters_are_400(self, gateway_server: GatewayServer, params: dict[str, str]) -> None:
        """A bad filter value is 400 invalid_field with a message, on the API and as the page's error banner."""
        user = await gateway_server.login()
        resp = await user.client.get(API, params=params)
        assert resp.status == 400
        body = await resp.json()
        assert body["code"] == "invalid_field" and body["error"]
        page = await user.client.get("/admin/audit", params=params)
        assert page.status == 400 and "Cannot filter by that" in await page.text()

    async def test_unknown_parameter_is_400(self, gateway_server: GatewayServer) -> None:
        """A parameter the API does not know is refused, not ignored."""
        user = await gateway_server.login()
        resp = await user.client.get(API, params={"job_id": "x"})
        assert resp.status == 400 and (await resp.json())["code"] == "unknown_field"


class TestTimeline:
    async def test_engine_and_gateway_records_of_a_job_in_one_timeline(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """A job's records from both journals come back together, newest first, each naming its journal."""
        user = await gateway_server.login()
        job_id = await a_run_job(upstream_engine, user)
        page = await timeline(user.client, jobId=job_id)
        records = page["records"]
        assert page["engine"] == "up" and page["next"] is None
        journals = {r["journal"] for r in records}
        assert journals == {"engine", "gateway"}
        assert all(r["jobId"] == job_id for r in records)
        assert [r["at"] for r in records] == sorted((r["at"] for r in records), reverse=True)
        gateway_actions = [r["action"] for r in records if r["journal"] == "gateway"]
        assert gateway_actions == ["job_run", "job_run_requested", "job_create"]
        engine_side = [r for r in records if r["journal"] == "engine"]
        assert engine_side and all(r["actor"] in (SUPER, "system") for r in engine_side)
        assert {"seq", "at", "actor", "source", "action", "jobId", "data", "prev", "hash"} <= set(engine_side[0])

    async def test_paging_returns_every_record_once_in_order(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """Following next with a small limit yields each record of both journals exactly once, newest first."""
        user = await gateway_server.login()
        for _ in range(3):
            await a_run_job(upstream_engine, user)
        whole = (await timeline(user.client, limit="500"))["records"]
        paged = await everything(user.client, limit="4")
        assert [(r["journal"], r["seq"]) for r in paged] == [(r["journal"], r["seq"]) for r in whole]
        assert len({(r["journal"], r["seq"]) for r in paged}) == len(paged)
        assert {r["journal"] for r in paged} == {"engine", "gateway"}
        assert [r["at"] for r in paged] == sorted((r["at"] for r in paged), reverse=True)

    async def test_filters(self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer) -> None:
        """journal, actor and time filters narrow the timeline."""
        user = await gateway_server.login()
        await gateway_server.login(ADMIN)
        await a_run_job(upstream_engine, user)
        only_gateway = await everything(user.client, journal="gateway")
        assert only_gateway and {r["journal"] for r in only_gateway} == {"gateway"}
        only_engine = await everything(user.client, journal="engine")
        assert only_engine and {r["journal"] for r in only_engine} == {"engine"}
        bob = await everything(user.client, actor=ADMIN)
        assert [(r["journal"], r["action"]) for r in bob] == [("gateway", "login_succeeded")]
        assert await everything(user.client, since="2999-01-01") == []
        newest = only_gateway[0]["at"]
        assert all(r["at"] < newest for r in await everything(user.client, until=newest))

    async def test_engine_down_shows_the_gateways_records_with_a_notice(
        self, make_gateway_server: MakeGatewayServer, closed_port: int
    ) -> None:
        """Engine unreachable: the timeline holds the gateway's records and an "engine audit unavailable" note."""
        gw = await make_gateway_server(f"http://127.0.0.1:{closed_port}")
        user = await gw.login()
        page = await timeline(user.client)
        assert page["engine"] == "down" and "Engine audit unavailable" in page["warning"]
        assert [r["action"] for r in page["records"]] == ["login_succeeded"]
        html = await (await user.client.get("/admin/audit")).text()
        assert 'data-testid="engine-audit-unavailable"' in html
        assert rows(html) == [("gateway", 1, "login_succeeded")]


class TestPages:
    async def test_audit_page_and_job_page_show_both_journals(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """The audit page filtered by job and the job's own page list its engine and gateway records."""
        user = await gateway_server.login()
        job_id = await a_run_job(upstream_engine, user)
        for path in (f"/admin/audit?jobId={job_id}", f"/admin/engine/jobs/{job_id}"):
            resp = await user.client.get(path)
            assert resp.status == 200
            found = rows(await resp.text())
            assert {j for j, _, _ in found} == {"engine", "gateway"}, path
            assert ("gateway", 4, "job_run_requested") in found  # 1: sign-in, 2-3: create, 4-5: run
        html = await (await user.client.get(f"/admin/engine/jobs/{job_id}")).text()
        assert 'data-testid="job-audit"' in html and f'href="/admin/audit?jobId={job_id}"' in html

    async def test_user_supplied_strings_are_escaped(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """A hostile cancel reason and user agent appear as text on the audit and job pages, never as markup."""
        user = await gateway_server.login()
        job_id = await upstream_engine.create()
        resp = await user.post(f"/api/admin/engine/jobs/{job_id}/cancel", {"reason": XSS}, **{"User-Agent": XSS})
        assert resp.status == 409
        for path in ("/admin/audit", f"/admin/engine/jobs/{job_id}"):
            html = await (await user.client.get(path)).text()
            assert "<script>alert" not in html and "<img src=x" not in html
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
            assert "<script" not in html.replace('<script type="module" src="/static/js/main.js"></script>', "")

    async def test_older_link_pages_through(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """With more records than fit, the page links to older ones and the pages do not overlap."""
        user = await gateway_server.login()
        await a_run_job(upstream_engine, user)
        first = await (await user.client.get("/admin/audit", params={"limit": "3"})).text()
        match = re.search(r'href="(/admin/audit\?[^"]*)" data-testid="older-link"', first)
        assert match, "no Older link"
        second = await (await user.client.get(match.group(1).replace("&amp;", "&"))).text()
        assert rows(first) and rows(second) and not set(rows(first)) & set(rows(second))
        assert 'data-testid="newest-link"' in second
