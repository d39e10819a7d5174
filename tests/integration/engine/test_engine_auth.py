"""Engine authentication: bearer tokens, scopes, the actor header, and where the admin token comes from."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from aiohttp import web

from engine_hub.errors import ConfigError, InvalidField, Unauthorized
from engine_hub.http.app import create_app
from engine_hub.http.auth import Authenticator, check_bind_allowed, is_loopback, load_or_create_token_file
from engine_hub.http.routes import ROUTES
from engine_hub.jobs.demo_types import builtin_catalog
from engine_hub.settings import Settings
from shared.routes import Access
from tests.integration.engine.conftest import BOTH_STORES
from tests.integration.engine.harness import (
    ADMIN_TOKEN,
    CLIENT_NAME,
    CLIENT_TOKEN,
    EngineServer,
    MakeEngineServer,
    auth,
)

#: The contract: every test runs against the embedded store and against PostgreSQL.
pytestmark = BOTH_STORES

JOB = "00000000-0000-4000-8000-000000000000"

#: Every route of the table but the public ones, with a method that reaches it, and an unknown path.
PROTECTED = [
    *((row.method, row.path.replace("{id}", JOB)) for row in ROUTES if row.access is not Access.PUBLIC),
    ("GET", "/no/such/route"),
]


async def _start(settings: Settings) -> None:
    """Start (and stop) an engine app without serving it; start-up errors propagate."""
    runner = web.AppRunner(create_app(settings, environ={}))
    try:
        await runner.setup()
    finally:
        await runner.cleanup()


class TestTokenRequired:
    @pytest.mark.parametrize(("method", "path"), PROTECTED)
    @pytest.mark.parametrize(
        "header",
        [
            None,
            "Bearer wrong-token-0123456789",
            f"Basic {ADMIN_TOKEN}",
            "Bearer",
            f"bearer{ADMIN_TOKEN}",
            "Bearer tøken-with-ünicode-chars",
        ],
    )
    async def test_missing_or_wrong_token_is_401(
        self, engine_server: EngineServer, method: str, path: str, header: str | None
    ) -> None:
        """Every route but /healthz answers 401 with WWW-Authenticate: Bearer without a valid token."""
        headers = {"Authorization": header} if header is not None else {}
        resp = await engine_server.client.request(method, path, headers=headers)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await resp.json())["code"] == "unauthorized"

    async def test_401_changes_nothing(self, engine_server: EngineServer) -> None:
        """An unauthenticated create or run leaves the store untouched."""
        job = await engine_server.create("demo.echo")
        await engine_server.client.post("/api/jobs", json={"type": "demo.echo"})
        await engine_server.client.post(f"/api/jobs/{job['id']}/run", headers={"Authorization": "Bearer nope"})
        assert len(await (await engine_server.client.get("/api/jobs", headers=auth())).json()) == 1
        assert (await engine_server.job(job["id"]))["status"] == "READY"


class TestScopes:
    async def test_client_token_creates_and_reads(self, engine_server: EngineServer) -> None:
        """A submit-scope token creates (recorded as the client) and reads jobs, types and logs."""
        headers = auth(CLIENT_TOKEN)
        job = await engine_server.create("demo.echo", headers=headers)
        assert job["createdBy"] == CLIENT_NAME
        for path in (
            "/api/jobs",
            f"/api/jobs/{job['id']}",
            f"/api/jobs/{job['id']}/logs",
            "/api/types",
            "/engines/jobs",
            "/api/jobs/results",
            "/logs",
        ):
            resp = await engine_server.client.get(path, headers=headers)
            assert resp.status == 200, path
        resp = await engine_server.client.post(
            "/engines/jobs/run", json={"engine": "demo.echo", "name": "x"}, headers=headers
        )
        assert resp.status == 202
        assert (await resp.json())["createdBy"] == CLIENT_NAME

    async def test_client_token_cannot_run_or_cancel(self, engine_server: EngineServer) -> None:
        """A submit-scope token gets 403 forbidden for run and cancel, and the job stays READY."""
        job = await engine_server.create("demo.echo", headers=auth(CLIENT_TOKEN))
        for action in ("run", "cancel"):
            resp = await engine_server.client.post(f"/api/jobs/{job['id']}/{action}", headers=auth(CLIENT_TOKEN))
            assert resp.status == 403, action
            assert (await resp.json())["code"] == "forbidden"
        resp = await engine_server.client.get("/metrics", headers=auth(CLIENT_TOKEN))
        assert resp.status == 403
        assert (await engine_server.job(job["id"]))["status"] == "READY"
        assert not any(r.action == "run_requested" for r in (await engine_server.records()))

    async def test_client_token_cannot_claim_an_actor(self, engine_server: EngineServer) -> None:
        """X-Engine-Actor is refused (403) with a client token: only the admin token names users."""
        resp = await engine_server.client.post(
            "/api/jobs", json={"type": "demo.echo"}, headers=auth(CLIENT_TOKEN, actor="admin")
        )
        assert resp.status == 403
        assert await (await engine_server.client.get("/api/jobs", headers=auth())).json() == []

    async def test_admin_actor_header_is_recorded(self, engine_server: EngineServer) -> None:
        """The admin token's X-Engine-Actor is createdBy/runBy and the journal actor; the peer address is the source."""
        job = await engine_server.create("demo.echo", headers=auth(actor="alice"))
        await engine_server.run(job["id"], headers=auth(actor="bob"))
        done = await engine_server.wait_for(job["id"])
        assert (done["createdBy"], done["runBy"]) == ("alice", "bob")
        records = {r.action: r for r in (await engine_server.records()) if r.job_id == job["id"]}
        assert (records["job_created"].actor, records["run_requested"].actor) == ("alice", "bob")
        assert records["run_requested"].source == "127.0.0.1"

    async def test_forwarded_for_is_not_trusted(self, engine_server: EngineServer) -> None:
        """X-Forwarded-For does not change the recorded source."""
        headers = {**auth(), "X-Forwarded-For": "203.0.113.9"}
        job = await engine_server.create("demo.echo", headers=headers)
        record = next(r for r in (await engine_server.records()) if r.job_id == job["id"])
        assert record.source == "127.0.0.1"

    @pytest.mark.parametrize("actor", ["", "   ", "x" * 129, "zero\u200bwidth", "line\tbreak", "no\u00a0break"])
    async def test_invalid_actor_is_400(self, engine_server: EngineServer, actor: str) -> None:
        """An empty, over-long or non-printable X-Engine-Actor is a 400."""
        resp = await engine_server.client.post("/api/jobs", json={"type": "demo.echo"}, headers=auth(actor=actor))
        assert resp.status == 400
        assert (await resp.json())["code"] == "invalid_field"


class TestAuthenticator:
    def test_authenticate_outcomes(self) -> None:
        """The authenticator maps headers to principals or the right error."""
        authn = Authenticator()
        with pytest.raises(Unauthorized):
            authn.authenticate(f"Bearer {ADMIN_TOKEN}", None)  # not configured yet: deny
        authn.configure(admin_token=ADMIN_TOKEN, catalog=builtin_catalog())
        admin = authn.authenticate(f"Bearer {ADMIN_TOKEN}", None)
        assert (admin.name, admin.scope, admin.actor) == ("admin", "admin", "admin")
        assert authn.authenticate(f"Bearer  {ADMIN_TOKEN} ", " alice ").actor == "alice"
        with pytest.raises(Unauthorized):
            authn.authenticate(f"Bearer {ADMIN_TOKEN}x", None)
        with pytest.raises(InvalidField):
            authn.authenticate(f"Bearer {ADMIN_TOKEN}", "a\nb")


class TestAdminTokenSource:
    async def test_generated_token_file_is_private_and_reused(
        self, make_engine_server: MakeEngineServer, tmp_path: Path
    ) -> None:
        """Without a configured token the engine writes <data_dir>/token (0600) once and reuses it."""
        data_dir = tmp_path / "state"
        first = await make_engine_server(token=None, data_dir=data_dir)
        path = data_dir / "token"
        token = path.read_text().strip()
        assert len(token) >= 32
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert (await first.client.get("/api/jobs", headers=auth(token))).status == 200
        second = await make_engine_server(token=None, data_dir=data_dir)
        assert path.read_text().strip() == token
        assert (await second.client.get("/api/jobs", headers=auth(token))).status == 200
        assert (await second.client.get("/api/jobs", headers=auth())).status == 401

    async def test_environment_token_wins_over_file(self, make_engine_server: MakeEngineServer, tmp_path: Path) -> None:
        """ENGINE_HUB_TOKEN is used when set, and no token file is written."""
        env_token = "from-the-environment-0123456789"
        engine_server = await make_engine_server(
            token=None, data_dir=tmp_path / "d", environ={"ENGINE_HUB_TOKEN": env_token}
        )
        assert (await engine_server.client.get("/api/jobs", headers=auth(env_token))).status == 200
        assert not (tmp_path / "d" / "token").exists()

    def test_token_file_creation_is_idempotent(self, tmp_path: Path) -> None:
        """Creating the token file twice yields the same token."""
        path = tmp_path / "a" / "token"
        assert load_or_create_token_file(path) == load_or_create_token_file(path)
        assert [p.name for p in path.parent.iterdir()] == ["token"]  # no temporary file left behind

    @pytest.mark.parametrize("token", ["short", "has space in the middle!", "tab\tinside-the-token-xx"])
    async def test_weak_or_malformed_token_refuses_to_start(self, tmp_path: Path, token: str) -> None:
        """A configured token that is too short or not header-safe stops start-up."""
        with pytest.raises(ConfigError, match="admin token"):
            await _start(Settings(token=token, data_dir=tmp_path, ephemeral=True))


class TestBindAddress:
    @pytest.mark.parametrize(
        ("host", "loopback"),
        [
            ("127.0.0.1", True),
            ("localhost", True),
            ("::1", True),
            ("127.1.2.3", True),
            ("0.0.0.0", False),
            ("::", False),
            ("192.168.1.10", False),
            ("example.com", False),
            ("", False),
        ],
    )
    def test_loopback_detection(self, host: str, loopback: bool) -> None:
        """Only loopback addresses count as local."""
        assert is_loopback(host) is loopback

    def test_public_bind_needs_explicit_token(self, tmp_path: Path) -> None:
        """A non-loopback bind without a configured token is refused; with one it is allowed."""
        with pytest.raises(ConfigError, match="ENGINE_HUB_TOKEN"):
            check_bind_allowed(Settings(host="0.0.0.0", data_dir=tmp_path), {})
        check_bind_allowed(Settings(host="0.0.0.0", data_dir=tmp_path), {"ENGINE_HUB_TOKEN": ADMIN_TOKEN})
        check_bind_allowed(Settings(host="0.0.0.0", token=ADMIN_TOKEN, data_dir=tmp_path), {})
        check_bind_allowed(Settings(host="127.0.0.1", data_dir=tmp_path), {})

    async def test_app_refuses_public_bind_without_token(self, tmp_path: Path) -> None:
        """The app itself refuses to start for a public host without a configured token."""
        with pytest.raises(ConfigError, match="non-loopback"):
            await _start(Settings(host="0.0.0.0", data_dir=tmp_path, ephemeral=True))
        assert not (tmp_path / "token").exists()


class TestForbiddenIsNotUnauthorized:
    async def test_forbidden_has_no_challenge(self, engine_server: EngineServer) -> None:
        """A 403 (valid token, wrong scope) carries no WWW-Authenticate challenge."""
        resp = await engine_server.client.post(f"/api/jobs/{JOB}/run", headers=auth(CLIENT_TOKEN))
        assert resp.status == 403
        assert "WWW-Authenticate" not in resp.headers
