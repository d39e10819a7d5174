"""Harness of the gateway's integration tests: a real engine app and a real gateway app, each on an ephemeral port.

The fixtures that start them are in this folder's ``conftest.py``. The
upstream engine (:class:`UpstreamEngine`) is
``engine_hub.http.app.create_app`` with the demo job types; every request it
answers is counted by an ``on_response_prepare`` signal (no middleware, no
change to its behaviour), so a test can prove the gateway did *not* call it.
Users are written once per test run (argon2 is slow on purpose) and copied
into each gateway's data dir.
"""

from __future__ import annotations

import asyncio
import functools
import re
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
from aiohttp import CookieJar, DummyCookieJar, web
from aiohttp.test_utils import TestClient, TestServer

from admin_gateway.audit.trail import AUDIT_SUBDIR
from admin_gateway.auth.device_cookies import COOKIE_NAME as DEVICE_COOKIE_NAME
from admin_gateway.auth.users import USERS_FILE, UserStore
from admin_gateway.settings import Settings
from engine_hub.http.app import create_app as create_engine_app
from engine_hub.jobs.catalog import Catalog
from engine_hub.jobs.demo_types import demo_types
from engine_hub.settings import Settings as EngineSettings
from shared.journal.chain import AuditQuery, Record
from shared.journal.tools import newest_first_from_files

ENGINE_TOKEN = "gateway-tests-engine-token-0123456789abcdef"
PASSWORD = "correct horse battery staple"
SUPER = "alice"
ADMIN = "bob"
#: A start time far from the real clock: nothing may depend on ``time.time()``.
EPOCH = 2_000_000_000.0


class FakeClock:
    """An injectable clock that moves only when told to."""

    def __init__(self, now: float = EPOCH) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@functools.cache
def users_file_text(*extra: tuple[str, str]) -> str:
    """The users file of alice and bob plus ``extra`` ``(name, role)`` users, all with :data:`PASSWORD` (cached)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = UserStore(Path(tmp))
        store.add(SUPER, "super_admin", PASSWORD)
        store.add(ADMIN, "admin", PASSWORD)
        for name, role in extra:
            store.add(name, role, PASSWORD)
        return (Path(tmp) / USERS_FILE).read_text()


def seed_users(data_dir: Path) -> None:
    """Write the standard users (alice: super_admin, bob: admin; both with :data:`PASSWORD`)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / USERS_FILE
    path.write_text(users_file_text())
    path.chmod(0o600)


@attrs.define
class UpstreamEngine:
    """A running real engine and the requests it has answered (method, path, headers)."""

    server: TestServer
    client: TestClient[web.Request, web.Application]
    calls: list[tuple[str, str, dict[str, str]]]  #: (method, path with query, headers)

    @property
    def url(self) -> str:
        """Base URL of the engine."""
        return str(self.server.make_url("/"))

    def count(self, method: str, pattern: str) -> int:
        """How many requests with ``method`` and a path matching ``pattern`` (regex) it answered."""
        rx = re.compile(pattern)
        return sum(1 for m, p, _ in self.calls if m == method and rx.search(p))

    async def create(self, job_type: str = "demo.echo", params: dict[str, Any] | None = None) -> str:
        """Create a job directly at the engine (as ``setup``) and return its id."""
        resp = await self.client.post(
            "/api/jobs", json={"type": job_type, "params": params or {}}, headers=_engine_auth()
        )
        assert resp.status == 201, await resp.text()
        job_id: str = (await resp.json())["id"]
        return job_id

    async def run(self, job_id: str) -> None:
        """Run a job directly at the engine (as ``setup``)."""
        resp = await self.client.post(f"/api/jobs/{job_id}/run", json={}, headers=_engine_auth())
        assert resp.status == 202, await resp.text()

    async def job(self, job_id: str) -> dict[str, Any]:
        """Read a job directly from the engine."""
        resp = await self.client.get(f"/api/jobs/{job_id}", headers=_engine_auth())
        assert resp.status == 200, await resp.text()
        job: dict[str, Any] = await resp.json()
        return job

    async def status(self, job_id: str) -> str:
        """The job's status, read directly from the engine."""
        return str((await self.job(job_id))["status"])


def _engine_auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ENGINE_TOKEN}", "X-Engine-Actor": "setup"}


async def start_upstream_engine(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, *, catalog: Catalog | None = None, **settings: Any
) -> UpstreamEngine:
    """Start the real engine (demo job types unless ``catalog`` is given, in-memory journal) on an ephemeral port.

    ``settings`` are more engine settings, e.g. ``store_url`` for a node of a PostgreSQL store.
    """
    app = create_engine_app(
        EngineSettings(token=ENGINE_TOKEN, data_dir=tmp_path / "engine", ephemeral=True, kill_grace=0.5, **settings),
        catalog=catalog if catalog is not None else Catalog(types={t.name: t for t in demo_types()}, clients=()),
        environ={},
    )
    calls: list[tuple[str, str, dict[str, str]]] = []

    async def count(request: web.Request, response: web.StreamResponse) -> None:
        calls.append((request.method, request.path_qs, dict(request.headers)))

    app.on_response_prepare.append(count)
    server = await aiohttp_server(app)
    return UpstreamEngine(server=server, client=await aiohttp_client(server), calls=calls)


@attrs.define
class GatewayServer:
    """A running gateway app; :meth:`client` opens a browser-like client with its own cookies."""

    server: TestServer
    settings: Settings
    clock: FakeClock
    make_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]]

    @property
    def app(self) -> web.Application:
        """The gateway application."""
        return self.server.app

    @property
    def origin(self) -> str:
        """The gateway's own origin, as a browser would send it."""
        return str(self.server.make_url("")).rstrip("/")

    @property
    def audit_dir(self) -> Path:
        """The gateway's audit journal directory."""
        return self.settings.data_dir / AUDIT_SUBDIR

    def audit_records(self) -> list[Record]:
        """Every record of the gateway's audit journal, oldest first, as read back from its files."""
        return newest_first_from_files(self.audit_dir, AuditQuery(limit=1_000_000))[::-1]

    async def client(self) -> TestClient[web.Request, web.Application]:
        """A new client (own cookie jar, cookies for IP hosts allowed)."""
        return await self.make_client(self.server, cookie_jar=CookieJar(unsafe=True))

    async def login(self, user: str = SUPER, password: str = PASSWORD) -> User:
        """A new client signed in as ``user`` through the real login form."""
        client = await self.client()
        csrf = await login(client, user, password)
        return User(client=client, csrf=csrf, name=user)


@attrs.define
class User:
    """A signed-in client and its CSRF token."""

    client: TestClient[web.Request, web.Application]
    csrf: str
    name: str

    def headers(self, **extra: str) -> dict[str, str]:
        """Headers for a fetch-style POST: the CSRF token (plus ``extra``)."""
        return {"X-CSRF-Token": self.csrf, **extra}

    async def post(self, path: str, body: Any = None, **extra: str) -> Any:
        """POST JSON with the CSRF header; returns the response."""
        return await self.client.post(path, json=body if body is not None else {}, headers=self.headers(**extra))

    async def create(self, job_type: str = "demo.echo", params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create a job through the gateway (expecting 201) and return it."""
        body: dict[str, Any] = {"type": job_type}
        if params is not None:
            body["params"] = params
        resp = await self.post("/api/admin/engine/jobs", body)
        assert resp.status == 201, await resp.text()
        job: dict[str, Any] = await resp.json()
        return job

    async def job(self, job_id: str) -> dict[str, Any]:
        """Read a job through the gateway (expecting 200)."""
        resp = await self.client.get(f"/api/admin/engine/jobs/{job_id}")
        assert resp.status == 200, await resp.text()
        job: dict[str, Any] = await resp.json()
        return job


#: A wrong password, for failed sign-ins.
WRONG = "wrong password!!"
#: ``trusted_proxies`` for login tests: the test client is the trusted proxy, so X-Forwarded-For names the address.
PROXY = ("127.0.0.1",)


@attrs.frozen
class LoginAnswer:
    """What one login attempt got."""

    status: int
    retry_after: str | None
    code: str | None
    seconds: float


async def attempt_login(
    client: TestClient[web.Request, web.Application],
    token: str,
    username: str,
    password: str,
    address: str | None = None,
    **headers: str,
) -> LoginAnswer:
    """POST one JSON login with the form token ``token``; ``address`` goes in X-Forwarded-For."""
    if address is not None:
        headers["X-Forwarded-For"] = address
    started = time.monotonic()
    resp = await client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token},
        headers={"Accept": "application/json", **headers},
        allow_redirects=False,
    )
    body: Any = await resp.json() if resp.content_type == "application/json" else {}
    return LoginAnswer(
        status=resp.status,
        retry_after=resp.headers.get("Retry-After"),
        code=body.get("code"),
        seconds=time.monotonic() - started,
    )


def device_cookie(client: TestClient[web.Request, web.Application]) -> str:
    """The value of the client's device cookie (set by a successful sign-in)."""
    for cookie in client.session.cookie_jar:
        if cookie.key == DEVICE_COOKIE_NAME:
            return cookie.value
    raise AssertionError("no device cookie")


_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def form_token_in(page: str) -> str:
    """The CSRF token of the form in the HTML ``page``."""
    match = _CSRF_FIELD.search(page)
    assert match, "the page has no csrf_token field"
    return match.group(1)


async def login_form_token(client: TestClient[web.Request, web.Application]) -> str:
    """GET /login and return the CSRF token of its form."""
    resp = await client.get("/login")
    assert resp.status == 200, await resp.text()
    return form_token_in(await resp.text())


async def post_login(
    client: TestClient[web.Request, web.Application], username: str, password: str, **headers: str
) -> Any:
    """POST the login form (with a fresh form token) and return the response, redirects not followed."""
    token = await login_form_token(client)
    return await client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token},
        allow_redirects=False,
        headers=headers,
    )


async def login(client: TestClient[web.Request, web.Application], user: str, password: str) -> str:
    """Sign in through the form (expecting 303 to the panel) and return the session's CSRF token."""
    token = await login_form_token(client)
    resp = await client.post(
        "/login", data={"username": user, "password": password, "csrf_token": token}, allow_redirects=False
    )
    assert resp.status == 303, await resp.text()
    assert resp.headers["Location"] == "/admin/engine/jobs"
    config = await client.get("/api/admin/config")
    assert config.status == 200, await config.text()
    csrf: str = (await config.json())["csrfToken"]
    return csrf


#: What each kind of :func:`anonymous_flood` request must be answered. A wrong password may also
#: meet the login throttle or a full password-check queue (429, 503): none of them opens a session.
FLOOD_STATUSES = {
    "form": {200},
    "form_with_cookie": {200},
    "config": {401},
    "bad_cookie": {401},
    "panel": {303},
    "logout": {303},
    "no_token_login": {403},
    "wrong_login": {401, 429, 503},
}


def check_flood_answers(statuses: dict[str, list[int]]) -> None:
    """Every kind of :func:`anonymous_flood` request was sent and answered as :data:`FLOOD_STATUSES` says."""
    assert set(statuses) == set(FLOOD_STATUSES)
    for kind, seen in statuses.items():
        assert set(seen) <= FLOOD_STATUSES[kind], (kind, sorted(set(seen)))


async def anonymous_flood(
    gw: GatewayServer, *, rounds: int = 100, wrong_logins: int = 10, parallel: int = 32
) -> dict[str, list[int]]:
    """Send a bounded, parallel flood of anonymous traffic; return the statuses by kind.

    Kinds (``rounds`` of each, at most ``parallel`` requests in flight): the
    login form without cookies (several times per round) and with a random
    session cookie, the config API, a panel page and ``POST /logout`` with
    random or malformed session cookies, ``POST /login`` without a token;
    plus ``wrong_logins`` complete form logins with a wrong password. No
    cookie is kept between requests.
    """
    client = await gw.make_client(gw.server, cookie_jar=DummyCookieJar())
    gate = asyncio.Semaphore(parallel)
    statuses: dict[str, list[int]] = {}

    def random_cookie() -> dict[str, str]:
        return {"Cookie": f"gw_session={secrets.token_urlsafe(32)}"}

    async def send(kind: str, method: str, path: str, **kwargs: Any) -> None:
        async with gate:
            resp = await client.request(method, path, allow_redirects=False, **kwargs)
            await resp.read()
            statuses.setdefault(kind, []).append(resp.status)

    async def wrong_login() -> None:
        async with gate:
            form = await client.get("/login")
            token = form_token_in(await form.text())
            cookie = "; ".join(f"{c.key}={c.value}" for c in form.cookies.values())
            resp = await client.post(
                "/login",
                data={"username": SUPER, "password": "wrong password!!", "csrf_token": token},
                headers={"Cookie": cookie},
            )
            statuses.setdefault("wrong_login", []).append(resp.status)

    jobs = [wrong_login() for _ in range(wrong_logins)]
    for _ in range(rounds):
        jobs += [send("form", "GET", "/login") for _ in range(4)]
        jobs += [
            send("form_with_cookie", "GET", "/login", headers=random_cookie()),
            send("config", "GET", "/api/admin/config", headers=random_cookie()),
            send("bad_cookie", "GET", "/api/admin/config", headers={"Cookie": "gw_session=not*an!id%00"}),
            send("panel", "GET", "/admin/engine/jobs", headers=random_cookie()),
            send("logout", "POST", "/logout", headers=random_cookie()),
            send("no_token_login", "POST", "/login", data={"username": SUPER, "password": "x"}),
        ]
    await asyncio.gather(*jobs)
    return statuses


def session_cookie(client: TestClient[web.Request, web.Application]) -> str | None:
    """The value of the client's gateway session cookie, if any."""
    for cookie in client.session.cookie_jar:
        if cookie.key == "gw_session":
            return cookie.value
    return None


async def wait_for_status(user: User, job_id: str, statuses: set[str], timeout: float = 20.0) -> dict[str, Any]:
    """Poll a job through the gateway until its status is in ``statuses``."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = await user.job(job_id)
        if job["status"] in statuses:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} not in {statuses} after {timeout}s: {job}")


MakeGatewayServer = Callable[..., Awaitable[GatewayServer]]
