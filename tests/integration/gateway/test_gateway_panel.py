"""The admin panel's pages, served by the real gateway app on an ephemeral port.

Pages are checked as HTML (parsed, not grepped) for what must hold before any
JavaScript runs: who may see them, the RUN/Cancel rendering rules, the
SAFE_MODE and engine-outage banners, escaping, and the absence of anything
inline that the CSP (``default-src 'self'``) would block. Job data comes from
the real engine app, also on an ephemeral port, running real demo jobs.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
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

XSS_NAME = "<img src=x onerror=alert(1)>"
COLUMNS = ["Job", "Type", "Status", "Created", "Duration", "Action"]
PAGES = ("/admin/engine/jobs", "/admin/engine/jobs/00000000-0000-4000-8000-000000000000", "/admin/engine/logs")


# -- a small HTML tree, enough to query by attribute -------------------------------------

_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)


class Node:
    """One element of a parsed page: tag, attributes, children and text."""

    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None) -> None:
        self.tag = tag
        self.attrs = attrs
        self.parent = parent
        self.children: list[Node] = []
        self.parts: list[str | Node] = []

    def text(self) -> str:
        """The element's text content, whitespace collapsed."""
        out: list[str] = []
        for part in self.parts:
            out.append(part if isinstance(part, str) else part.text())
        return " ".join(" ".join(out).split())

    def iter(self) -> list[Node]:
        """This element and every descendant, in document order."""
        found = [self]
        for child in self.children:
            found.extend(child.iter())
        return found

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        """Descendants with ``tag`` whose attributes equal ``attrs`` (``data_testid`` → ``data-testid``)."""
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [
            n
            for n in self.iter()[1:]
            if (tag is None or n.tag == tag) and all(n.attrs.get(k) == v for k, v in wanted.items())
        ]

    def one(self, tag: str | None = None, **attrs: str) -> Node:
        """The single descendant matching; fails the test when there is not exactly one."""
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"expected one {tag or '*'} {attrs}, found {len(found)}"
        return found[0]

    @property
    def hidden(self) -> bool:
        """Whether the element or an ancestor carries the ``hidden`` attribute."""
        node: Node | None = self
        while node is not None:
            if "hidden" in node.attrs:
                return True
            node = node.parent
        return False


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.current = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        self.current.parts.append(node)
        if tag not in _VOID:
            self.current = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        self.current.parts.append(node)

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.parts.append(data)


def parse(html: str) -> Node:
    """Parse a page into a :class:`Node` tree."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


# -- harness ----------------------------------------------------------------------------


async def get_page(user: User | TestClient[Any, Any], path: str, status: int = 200) -> Node:
    """GET a page, check its status and HTML type, return it parsed."""
    client = user.client if isinstance(user, User) else user
    resp = await client.get(path, allow_redirects=False)
    body = await resp.text()
    assert resp.status == status, body[:500]
    assert resp.content_type == "text/html"
    return parse(body)


async def create(user: User, job_type: str = "demo.echo", name: str = "nightly", **params: Any) -> str:
    """Create a READY job through the gateway's API (as the panel's form does); return its id."""
    resp = await user.post("/api/admin/engine/jobs", {"type": job_type, "name": name, "params": params})
    assert resp.status == 201, await resp.text()
    job_id: str = (await resp.json())["id"]
    return job_id


@pytest.fixture
def down(make_gateway_server: MakeGatewayServer, closed_port: int) -> Callable[..., Awaitable[GatewayServer]]:
    """Return ``async make(**settings)``: a gateway whose engine refuses connections."""

    async def make(**overrides: Any) -> GatewayServer:
        return await make_gateway_server(f"http://127.0.0.1:{closed_port}", **overrides)

    return make


MakeDown = Callable[..., Awaitable[GatewayServer]]


def _rows(page: Node) -> list[Node]:
    return page.one("table", data_testid="jobs-table").find_all("tr", data_testid="job-row")


# -- tests ------------------------------------------------------------------------------


class TestAccess:
    """Who may see the panel's pages."""

    @pytest.mark.parametrize("path", PAGES)
    async def test_anonymous_is_sent_to_login(self, down: MakeDown, path: str) -> None:
        """Without a session every panel page redirects to /login and shows nothing."""
        gw = await down()
        client = await gw.client()
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 303
        assert resp.headers["Location"] == f"/login?next={path}"  # back to the page after signing in
        assert "jobs-table" not in await resp.text()

    async def test_root_redirects_to_jobs(self, down: MakeDown) -> None:
        """``/`` leads to the jobs list."""
        user = await (await down()).login()
        resp = await user.client.get("/", allow_redirects=False)
        assert resp.status == 303
        assert resp.headers["Location"] == "/admin/engine/jobs"

    @pytest.mark.parametrize("path", PAGES)
    async def test_admin_role_gets_no_access_page(self, down: MakeDown, path: str) -> None:
        """An ``admin`` (not super_admin) gets a 403 "no access" page, with no job data or actions."""
        user = await (await down()).login(ADMIN)
        page = await get_page(user, path, status=403)
        assert "No access" in page.one(data_testid="no-access").text()
        assert not page.find_all(data_testid="jobs-table")
        assert not page.find_all(data_testid="run-button")
        # They can still sign out.
        assert page.one("button", data_testid="logout-button")

    async def test_super_admin_gets_the_table_with_its_columns(self, down: MakeDown) -> None:
        """A super_admin sees the jobs table with exactly the columns Job, Type, Status, Created, Duration, Action."""
        user = await (await down()).login()
        page = await get_page(user, "/admin/engine/jobs")
        table = page.one("table", data_testid="jobs-table")
        assert [th.text() for th in table.one("thead").find_all("th")] == COLUMNS
        assert page.one(data_testid="current-user").text().startswith(f"Signed in as {SUPER}")

    async def test_logout_form_posts_with_csrf_token(self, down: MakeDown) -> None:
        """The logout button is a POST form to /logout carrying the session's CSRF token, and it works."""
        user = await (await down()).login()
        page = await get_page(user, "/admin/engine/jobs")
        button = page.one("button", data_testid="logout-button")
        form = button.parent
        assert form is not None and form.tag == "form"
        assert (form.attrs["method"], form.attrs["action"]) == ("post", "/logout")
        token = form.one("input", name="csrf_token").attrs["value"]
        assert token == page.one("meta", name="csrf-token").attrs["content"] == user.csrf
        resp = await user.client.post("/logout", data={"csrf_token": token}, allow_redirects=False)
        assert resp.status == 303
        resp = await user.client.get("/admin/engine/jobs", allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/login?next=/admin/engine/jobs"


class TestBanners:
    """SAFE_MODE and engine-outage states are visible and distinct from an empty list."""

    async def test_engine_down_is_not_no_jobs(self, down: MakeDown) -> None:
        """With the engine unreachable the page is 200 with the outage banner, not the "No jobs yet" state."""
        user = await (await down()).login()
        page = await get_page(user, "/admin/engine/jobs")
        assert not page.one(data_testid="engine-down-banner").hidden
        assert "Engine unreachable" in page.one(data_testid="engine-down-banner").text()
        assert not page.one(data_testid="jobs-unavailable").hidden
        assert page.one(data_testid="empty-state").hidden
        assert not _rows(page)

    async def test_engine_down_on_job_and_log_pages(self, down: MakeDown) -> None:
        """The job and engine-log pages also answer with the outage banner instead of failing."""
        user = await (await down()).login()
        job = await get_page(user, PAGES[1])
        assert not job.one(data_testid="engine-down-banner").hidden
        assert job.one(data_testid="job-unavailable")
        logs = await get_page(user, "/admin/engine/logs")
        assert not logs.one(data_testid="engine-down-banner").hidden
        assert logs.one(data_testid="logs-unavailable")

    async def test_empty_engine_shows_no_jobs_yet(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """A reachable engine with no jobs shows "No jobs yet" and no outage banner."""
        user = await (await make_gateway_server(upstream_engine.url)).login()
        page = await get_page(user, "/admin/engine/jobs")
        assert page.one(data_testid="engine-down-banner").hidden
        assert not page.one(data_testid="empty-state").hidden
        assert "No jobs yet" in page.one(data_testid="empty-state").text()
        assert page.one(data_testid="jobs-unavailable").hidden

    @pytest.mark.parametrize("safe_mode", [True, False])
    async def test_safe_mode_state_always_shown(self, down: MakeDown, safe_mode: bool) -> None:
        """The header pill names the SAFE_MODE state on every page; the banner appears only when it is on."""
        user = await (await down(safe_mode=safe_mode)).login()
        for path in PAGES:
            page = await get_page(user, path)
            pill = page.one(data_testid="safe-mode-pill")
            assert pill.text() == ("SAFE_MODE: ON" if safe_mode else "SAFE_MODE: OFF")
            assert page.one(data_testid="safe-mode-banner").hidden is not safe_mode
            assert page.one("body").attrs["data-safe-mode"] == ("on" if safe_mode else "off")

    async def test_refresh_interval_reaches_the_page(self, down: MakeDown) -> None:
        """The configured polling interval (live updates unavailable) reaches the script as a data attribute."""
        user = await (await down(refresh_interval=0.5)).login()
        page = await get_page(user, "/admin/engine/jobs")
        assert page.one("body").attrs["data-refresh-interval"] == "0.5"
        assert page.one(data_testid="refresh-button").tag == "button"


class TestRunButtonRules:
    """RUN only for a super_admin, SAFE_MODE off, on READY jobs; Cancel on RUNNING jobs."""

    async def _jobs_in_every_status(self, upstream_engine: UpstreamEngine, user: User) -> dict[str, str]:
        ready = await create(user, name="ready one")
        done = await create(user, name="done one")
        failed = await create(user, "demo.fail", name="failed one")
        running = await create(user, "demo.sleep", name="running one", seconds=60)
        for job_id in (done, failed, running):
            await upstream_engine.run(job_id)
        await wait_for_status(user, done, {"DONE"})
        await wait_for_status(user, failed, {"FAILED"})
        await wait_for_status(user, running, {"RUNNING"})
        return {"READY": ready, "DONE": done, "FAILED": failed, "RUNNING": running}

    async def test_safe_mode_off_run_only_on_ready(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """With SAFE_MODE off: RUN on the READY row only, Cancel on the RUNNING row only, none on DONE/FAILED."""
        user = await (await make_gateway_server(upstream_engine.url, safe_mode=False)).login()
        ids = await self._jobs_in_every_status(upstream_engine, user)
        page = await get_page(user, "/admin/engine/jobs")
        rows = {row.attrs["data-job-id"]: row for row in _rows(page)}
        assert set(rows) == set(ids.values())
        for status, job_id in ids.items():
            row = rows[job_id]
            assert row.attrs["data-status"] == status
            assert row.one(data_testid="status-badge").attrs["class"] == f"badge badge-{status.lower()}"
            runs = row.find_all("button", data_testid="run-button")
            cancels = row.find_all("button", data_testid="cancel-button")
            assert len(runs) == (1 if status == "READY" else 0), status
            assert len(cancels) == (1 if status == "RUNNING" else 0), status
            # Every row links to its job page.
            assert row.one("a", data_testid="job-link").attrs["href"] == f"/admin/engine/jobs/{job_id}"
        run = rows[ids["READY"]].one("button", data_testid="run-button")
        assert run.attrs["type"] == "button"
        assert run.attrs["aria-label"] == f"Run job {ids['READY']}"
        resp = await user.post(f"/api/admin/engine/jobs/{ids['RUNNING']}/cancel")  # don't leave it sleeping
        assert resp.status == 202

    async def test_safe_mode_on_renders_no_run_anywhere(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """With SAFE_MODE on no page renders a RUN button, while Cancel stays available on RUNNING jobs."""
        user = await (await make_gateway_server(upstream_engine.url, safe_mode=True)).login()
        ids = await self._jobs_in_every_status(upstream_engine, user)
        pages = [await get_page(user, "/admin/engine/jobs")]
        pages += [await get_page(user, f"/admin/engine/jobs/{job_id}") for job_id in ids.values()]
        for page in pages:
            assert not page.find_all(data_testid="run-button")
            assert not page.one(data_testid="safe-mode-banner").hidden
        assert len(pages[0].find_all("button", data_testid="cancel-button")) == 1
        running_page = await get_page(user, f"/admin/engine/jobs/{ids['RUNNING']}")
        assert len(running_page.find_all("button", data_testid="cancel-button")) == 1
        resp = await user.post(f"/api/admin/engine/jobs/{ids['RUNNING']}/cancel")
        assert resp.status == 202

    async def test_job_page_run_button_on_ready_job(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """The job page of a READY job offers RUN with the job's data for the confirmation dialog."""
        user = await (await make_gateway_server(upstream_engine.url, safe_mode=False)).login()
        job_id = await create(user, "demo.sleep", name="nightly backup", seconds=2)
        page = await get_page(user, f"/admin/engine/jobs/{job_id}")
        detail = page.one(data_testid="job-detail")
        assert detail.attrs["data-job-id"] == job_id
        assert detail.attrs["data-status"] == "READY"
        assert detail.attrs["data-job-params"] == '{"seconds": 2}'
        assert len(page.find_all("button", data_testid="run-button")) == 1
        # The script finds the job's data on the button's nearest [data-job-id] holder.
        assert len(detail.find_all("button", data_testid="run-button")) == 1
        dialog = page.one("dialog", data_testid="run-dialog")
        assert dialog.one("textarea", data_testid="run-reason")
        assert dialog.one("button", data_testid="run-confirm").attrs["type"] == "submit"


class TestJobPage:
    """One job's page: fields, status history with who/when/why, and the log hook."""

    async def test_history_shows_who_and_why(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """After a run through the gateway API with a reason, the page shows it in the fields and history."""
        user = await (await make_gateway_server(upstream_engine.url, safe_mode=False)).login()
        job_id = await create(user, "demo.echo", name="say hi", message="hi")
        page = await get_page(user, f"/admin/engine/jobs/{job_id}")
        token = page.one("meta", name="csrf-token").attrs["content"] or ""
        resp = await user.client.post(
            f"/api/admin/engine/jobs/{job_id}/run", json={"reason": "ticket OPS-42"}, headers={"X-CSRF-Token": token}
        )
        assert resp.status == 202, await resp.text()
        await wait_for_status(user, job_id, {"DONE"})
        page = await get_page(user, f"/admin/engine/jobs/{job_id}")
        assert page.one(data_testid="job-field-runBy").text() == SUPER
        assert page.one(data_testid="job-field-runReason").text() == "ticket OPS-42"
        assert page.one(data_testid="job-field-exitCode").text() == "0"
        history = page.one(data_testid="job-history").find_all("tr", data_testid="history-row")
        assert [row.attrs["data-status"] for row in history] == ["READY", "RUNNING", "DONE"]
        running = history[1].find_all("td")
        assert running[2].text() == SUPER
        assert running[3].text() == "ticket OPS-42"
        when = running[1].one("time")
        assert (when.attrs["datetime"] or "").endswith("Z")  # UTC kept for the script to localise
        assert page.one(data_testid="job-log").attrs["id"] == "job-log"
        assert not page.find_all(data_testid="run-button")

    async def test_unknown_job_is_404_page(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """An id the engine does not know gives a 404 page saying so, not an outage banner."""
        user = await (await make_gateway_server(upstream_engine.url)).login()
        page = await get_page(user, PAGES[1], status=404)
        assert page.one(data_testid="job-not-found")
        assert page.one(data_testid="engine-down-banner").hidden

    async def test_malformed_id_is_404_without_engine_call(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """An id with characters no job id has is a 404 page, and the engine is not asked."""
        user = await (await make_gateway_server(upstream_engine.url)).login()
        page = await get_page(user, "/admin/engine/jobs/..%2F..%2Fapi%2Fjobs", status=404)
        assert page.one(data_testid="job-not-found")
        assert upstream_engine.count("GET", r"^/api/jobs/") == 0


class TestEscaping:
    """Strings from users and the engine are escaped, never markup."""

    async def test_job_name_is_escaped(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """A job named like an XSS payload appears as text on the list and the job page."""
        user = await (await make_gateway_server(upstream_engine.url)).login()
        job_id = await create(user, "demo.echo", name=XSS_NAME, message="<script>alert(2)</script>")
        for path in ("/admin/engine/jobs", f"/admin/engine/jobs/{job_id}"):
            html = await (await user.client.get(path)).text()
            assert XSS_NAME not in html
            assert "<script>alert(2)</script>" not in html
            assert "&lt;img src=x onerror=alert(1)&gt;" in html
            page = parse(html)
            assert not page.find_all("img", src="x")
            # The raw name survives only as an attribute value, for the RUN dialog's textContent.
            assert [n for n in page.iter() if n.attrs.get("data-job-name") == XSS_NAME]

    async def test_filter_values_are_escaped(self, down: MakeDown) -> None:
        """Query parameters echoed into the filter form are escaped."""
        user = await (await down()).login()
        evil = '"><script>alert(3)</script>'
        resp = await user.client.get("/admin/engine/jobs", params={"type": evil, "q": evil})
        html = await resp.text()
        assert "<script>alert(3)" not in html
        page = parse(html)
        assert "selected" in page.one("option", value=evil).attrs
        assert page.one("input", name="q").attrs["value"] == evil


class TestPagination:
    """The "Older" link follows the engine's cursor."""

    async def test_older_link_uses_before_cursor(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """With more jobs than fit a page, "Older" leads to the next page via ``before`` and ends there."""
        user = await (await make_gateway_server(upstream_engine.url)).login()
        created = [await create(user, name=f"job {i}") for i in range(3)]
        first = await get_page(user, "/admin/engine/jobs?limit=2")
        assert [row.attrs["data-job-id"] for row in _rows(first)] == [created[2], created[1]]  # newest first
        older = first.one("a", data_testid="older-button")
        assert not older.hidden
        assert older.attrs["href"] == f"/admin/engine/jobs?limit=2&before={created[1]}"
        second = await get_page(user, older.attrs["href"] or "")
        assert [row.attrs["data-job-id"] for row in _rows(second)] == [created[0]]
        assert second.one("a", data_testid="older-button").hidden
        assert not second.one("a", data_testid="newest-link").hidden


class TestEngineLogPage:
    """The engine's own log."""

    async def test_log_entries_link_to_jobs(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """After a run, the engine log page lists entries newest first, with links to the job."""
        user = await (await make_gateway_server(upstream_engine.url)).login()
        job_id = await create(user, "demo.fail", name="will fail")
        await upstream_engine.run(job_id)
        await wait_for_status(user, job_id, {"FAILED"})
        page = await get_page(user, "/admin/engine/logs")
        rows = page.one(data_testid="engine-logs-table").find_all("tr", data_testid="engine-log-row")
        assert rows
        links = [a.attrs["href"] for row in rows for a in row.find_all("a")]
        assert f"/admin/engine/jobs/{job_id}" in links
        stamps = [row.one("time").attrs["datetime"] or "" for row in rows]
        assert stamps == sorted(stamps, reverse=True)  # newest first
        assert rows[0].attrs["data-level"] == "ERROR"  # the failure is the latest entry


class TestCsp:
    """Nothing inline, nothing external: the CSP ``default-src 'self'`` holds on every page."""

    async def _all_pages(self, gw: GatewayServer) -> dict[str, str]:
        anonymous = await gw.client()
        pages = {"login": await (await anonymous.get("/login")).text()}
        user = await gw.login()
        for path in PAGES:
            pages[path] = await (await user.client.get(path)).text()
        admin = await gw.login(ADMIN)
        pages["no access"] = await (await admin.client.get("/admin/engine/jobs")).text()
        return pages

    async def test_no_inline_script_style_or_handlers(self, down: MakeDown) -> None:
        """No <script> without src, no <style>, no style= or on*= attributes, no external URLs on any page."""
        pages = await self._all_pages(await down())
        for name, html in pages.items():
            for node in parse(html).iter():
                assert node.tag != "style", name
                if node.tag == "script":
                    assert node.attrs.get("src"), f"inline script on {name}"
                    assert node.text() == "", name
                for attr in node.attrs:
                    assert attr != "style", f"style= on <{node.tag}> of {name}"
                    assert not attr.startswith("on"), f"{attr}= on <{node.tag}> of {name}"
                for attr in ("href", "src", "action"):
                    value = node.attrs.get(attr) or ""
                    assert not value.lower().startswith(("javascript:", "data:", "http:", "https:", "//")), (
                        f"{attr}={value!r} on {name}"
                    )

    async def test_every_referenced_asset_is_served(self, down: MakeDown) -> None:
        """Every stylesheet, script, module import, icon and CSS url() the pages use answers 200."""
        gw = await down()
        pages = await self._all_pages(gw)
        client = await gw.client()
        todo: set[str] = set()
        for html in pages.values():
            for node in parse(html).iter():
                for attr in ("href", "src"):
                    value = node.attrs.get(attr) or ""
                    if value.startswith("/static/") or value == "/favicon.ico":
                        todo.add(value)
        seen: set[str] = set()
        while todo:
            path = todo.pop()
            seen.add(path)
            resp = await client.get(path)
            assert resp.status == 200, path
            base = path.rsplit("/", 1)[0]
            if path.endswith(".js"):
                refs = re.findall(r"""^import\b[^'"]*['"](\.[^'"]+)['"]""", await resp.text(), re.M)
            elif path.endswith(".css"):
                refs = re.findall(r"""url\(["']?([^"')]+)["']?\)""", await resp.text())
            else:
                refs = []
            for ref in refs:
                assert not ref.startswith(("http:", "https:", "//", "data:")), f"{ref} in {path}"
                target = str(Path(base, ref)).replace("/./", "/")
                if target not in seen:
                    todo.add(target)
        assert {"/static/js/jobs.js", "/static/icons/spinner.svg", "/favicon.ico"} <= seen


class TestStatic:
    """Static assets: right content types, the favicon, and nothing outside the static folder."""

    @pytest.mark.parametrize(
        ("path", "content_type"),
        [
            ("/static/js/main.js", ("application/javascript", "text/javascript")),
            ("/static/panel.css", ("text/css",)),
            ("/static/icons/clock.svg", ("image/svg+xml",)),
            ("/static/favicon.svg", ("image/svg+xml",)),
            ("/favicon.ico", ("image/x-icon", "image/vnd.microsoft.icon")),
        ],
    )
    async def test_content_types(self, down: MakeDown, path: str, content_type: tuple[str, ...]) -> None:
        """Assets are served (no session needed) with a content type that nosniff browsers accept."""
        client = await (await down()).client()
        resp = await client.get(path)
        assert resp.status == 200
        assert resp.content_type in content_type
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]

    async def test_favicon_is_an_icon(self, down: MakeDown) -> None:
        """/favicon.ico is a real ICO file (a 404 there is a console error in Chromium)."""
        client = await (await down()).client()
        body = await (await client.get("/favicon.ico")).read()
        assert body[:4] == b"\x00\x00\x01\x00"

    @pytest.mark.parametrize(
        "path",
        [
            "/static/../pages.py",
            "/static/%2e%2e/pages.py",
            "/static/../templates/base.html",
            "/static/nope.js",
        ],
    )
    async def test_nothing_outside_static(self, down: MakeDown, path: str) -> None:
        """Traversal out of the static folder and unknown files are 404, never source code."""
        client = await (await down()).client()
        resp = await client.get(path)
        assert resp.status in (403, 404)
        assert "import" not in await resp.text()
