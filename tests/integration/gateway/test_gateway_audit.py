"""The gateway's audit journal: exactly one record per security event, no forged records, fail closed.

Every test drives the real gateway in front of the real engine and reads the
records back from the journal's files (what is durable), then checks the
chain with the same verifier ``admin-gateway audit verify`` uses.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from admin_gateway.audit.trail import ANONYMOUS
from shared.journal.chain import GENESIS, Record, make_record_line
from shared.journal.format import list_segments
from shared.journal.tools import verify
from tests.disk import fill
from tests.integration.gateway.harness import (
    ADMIN,
    ENGINE_TOKEN,
    PASSWORD,
    SUPER,
    GatewayServer,
    MakeGatewayServer,
    UpstreamEngine,
    post_login,
)

CLI = str(Path(sys.executable).parent / "admin-gateway")
REQUEST_FIELDS = ("userAgent", "requestId", "method", "path", "outcome")


def new_records(gw: GatewayServer, before: int) -> list[Record]:
    """The records appended after the first ``before``, checking that the whole chain verifies."""
    result = verify(gw.audit_dir)
    assert result.ok, result.first_bad
    return gw.audit_records()[before:]


def only_new(gw: GatewayServer, before: int, action: str, actor: str, outcome: str) -> Record:
    """Assert exactly one new record, of ``action`` by ``actor`` with ``outcome`` and every field present."""
    records = new_records(gw, before)
    assert [r.action for r in records] == [action], [r.to_json() for r in records]
    return complete(records[0], action, actor, outcome)


def complete(rec: Record, action: str, actor: str, outcome: str) -> Record:
    """Assert ``rec`` is ``action`` by ``actor`` with ``outcome``, from the test client, with all request fields."""
    assert (rec.action, rec.actor, rec.source, rec.data["outcome"]) == (action, actor, "127.0.0.1", outcome)
    for key in REQUEST_FIELDS:
        assert rec.data.get(key), (key, rec.data)
    assert rec.at and len(rec.hash) == 64 and len(rec.prev) == 64
    return rec


class TestSignInRecords:
    async def test_login_success(self, gateway_server: GatewayServer) -> None:
        """A sign-in is one login_succeeded record naming the user and role."""
        client = await gateway_server.client()
        assert (await post_login(client, SUPER, PASSWORD, **{"User-Agent": "Firefox/140"})).status == 303
        rec = only_new(gateway_server, 0, "login_succeeded", SUPER, "accepted")
        assert rec.data["role"] == "super_admin" and rec.data["userAgent"] == "Firefox/140"
        assert rec.data["method"] == "POST" and rec.data["path"] == "/login"

    async def test_login_failure_names_the_user_never_the_password(self, gateway_server: GatewayServer) -> None:
        """A wrong password is one login_failed record with the attempted name; the password is nowhere."""
        resp = await post_login(await gateway_server.client(), SUPER, "wrong password!!")
        assert resp.status == 401
        rec = only_new(gateway_server, 0, "login_failed", SUPER, "refused")
        assert (rec.data["reason"], rec.data["code"], rec.data["status"]) == ("bad_credentials", "unauthorized", 401)
        for segment in list_segments(gateway_server.audit_dir):
            assert b"wrong password" not in segment.path.read_bytes()

    async def test_a_name_that_cannot_be_a_user_is_not_recorded(self, gateway_server: GatewayServer) -> None:
        """An attempted name that is no possible user name (likely a password) is kept out of the record."""
        resp = await post_login(await gateway_server.client(), "my secret pass phrase!", PASSWORD)
        assert resp.status == 401
        rec = only_new(gateway_server, 0, "login_failed", ANONYMOUS, "refused")
        assert rec.data["usernameInvalid"] is True
        assert b"secret pass" not in list_segments(gateway_server.audit_dir)[0].path.read_bytes()

    async def test_throttled_login(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """An attempt refused by the throttle is one login_failed record with reason throttled."""
        gw = await make_gateway_server(upstream_engine.url, login_limit_per_hour=1)
        assert (await post_login(await gw.client(), SUPER, "wrong password!!")).status == 401
        before = len(gw.audit_records())
        assert (await post_login(await gw.client(), SUPER, PASSWORD)).status == 429
        rec = only_new(gw, before, "login_failed", SUPER, "refused")
        assert (rec.data["reason"], rec.data["code"]) == ("throttled", "throttled") and rec.data["retryAfter"] > 0

    async def test_logout(self, gateway_server: GatewayServer) -> None:
        """A logout is one logout record."""
        user = await gateway_server.login()
        before = len(gateway_server.audit_records())
        resp = await user.client.post("/logout", data={"csrf_token": user.csrf}, allow_redirects=False)
        assert resp.status == 303
        only_new(gateway_server, before, "logout", SUPER, "accepted")

    @pytest.mark.parametrize(
        ("settings", "wait", "reason"),
        [
            ({}, 1801, "idle"),
            ({"idle_timeout": 10_000, "absolute_timeout": 3600}, 3601, "absolute"),
        ],
    )
    async def test_session_expiry(
        self,
        upstream_engine: UpstreamEngine,
        make_gateway_server: MakeGatewayServer,
        settings: dict[str, float],
        wait: float,
        reason: str,
    ) -> None:
        """An expired session presented again is one session_expired record with idle or absolute."""
        gw = await make_gateway_server(upstream_engine.url, **settings)
        user = await gw.login()
        before = len(gw.audit_records())
        gw.clock.advance(wait)
        assert (await user.client.get("/login")).status == 200  # the form again: signed out
        rec = only_new(gw, before, "session_expired", SUPER, "expired")
        assert rec.data["reason"] == reason


class TestRefusalRecords:
    @pytest.mark.parametrize(
        ("who", "path", "status", "code"),
        [
            (None, "/api/admin/engine/jobs", 401, "unauthorized"),
            (ADMIN, "/api/admin/engine/jobs", 401, "forbidden"),
            (ADMIN, "/admin/engine/jobs", 403, "forbidden"),
        ],
    )
    async def test_access_denied(
        self, gateway_server: GatewayServer, who: str | None, path: str, status: int, code: str
    ) -> None:
        """A refused read (no session, or the wrong role on the API or a page) is one access_denied record."""
        client = (await gateway_server.login(who)).client if who else await gateway_server.client()
        before = len(gateway_server.audit_records())
        resp = await client.get(path)
        assert resp.status == status
        rec = only_new(gateway_server, before, "access_denied", who or ANONYMOUS, "refused")
        assert (rec.data["status"], rec.data["code"], rec.data["path"]) == (status, code, path)
        assert rec.data["reason"] == ("role" if who else "no_session")

    async def test_csrf_refusal(self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer) -> None:
        """A POST without the CSRF token is one csrf_refused record; the engine is not called."""
        user = await gateway_server.login()
        job_id = await upstream_engine.create()
        before, runs = len(gateway_server.audit_records()), upstream_engine.count("POST", "/run$")
        resp = await user.client.post(f"/api/admin/engine/jobs/{job_id}/run", json={})
        assert resp.status == 403
        rec = only_new(gateway_server, before, "csrf_refused", SUPER, "refused")
        assert (rec.data["reason"], rec.data["code"]) == ("missing_token", "csrf")
        assert upstream_engine.count("POST", "/run$") == runs

    async def test_safe_mode_refusal(
        self, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """A run under SAFE_MODE: one safe_mode_refused record with the job id and the typed reason; no engine call."""
        gw = await make_gateway_server(upstream_engine.url, safe_mode=True)
        user = await gw.login()
        job_id = await upstream_engine.create()
        before = len(gw.audit_records())
        resp = await user.post(f"/api/admin/engine/jobs/{job_id}/run", {"reason": "INC-9: restart the exporter"})
        assert resp.status == 403
        rec = only_new(gw, before, "safe_mode_refused", SUPER, "refused")
        assert rec.job_id == job_id and rec.data["code"] == "safe_mode"
        assert rec.data["reason"] == "INC-9: restart the exporter"
        # A body that cannot be read is still one safe_mode refusal (no reason), never a second record.
        before = len(gw.audit_records())
        resp = await user.client.post(
            f"/api/admin/engine/jobs/{job_id}/run", data=b"{not json", headers={"X-CSRF-Token": user.csrf}
        )
        assert (resp.status, (await resp.json())["code"]) == (403, "safe_mode")
        assert "reason" not in only_new(gw, before, "safe_mode_refused", SUPER, "refused").data
        assert upstream_engine.count("POST", "/run$") == 0


class TestMutationRecords:
    async def test_create_is_an_intent_then_an_outcome(self, gateway_server: GatewayServer) -> None:
        """A create leaves job_create_requested (before the engine call) and job_create with the new id."""
        user = await gateway_server.login()
        before = len(gateway_server.audit_records())
        job = await user.create("demo.echo")
        intent, outcome = new_records(gateway_server, before)
        complete(intent, "job_create_requested", SUPER, "requested")
        complete(outcome, "job_create", SUPER, "accepted")
        assert intent.job_id is None and outcome.job_id == job["id"]
        assert outcome.data["intentSeq"] == intent.seq and outcome.data["status"] == 201

    async def test_run_accepted_then_refused_by_the_engine(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """Each run request is an intent and an outcome: accepted, then refused with the engine's code."""
        user = await gateway_server.login()
        # A job still running at the second RUN (demo.echo could be DONE by then: a 400, not the 409).
        job_id = await upstream_engine.create("demo.sleep", {"seconds": 30})
        before = len(gateway_server.audit_records())
        assert (await user.post(f"/api/admin/engine/jobs/{job_id}/run", {"reason": "deploy 42"})).status == 202
        again = await user.post(f"/api/admin/engine/jobs/{job_id}/run")
        assert again.status == 409
        records = new_records(gateway_server, before)
        assert [(r.action, r.data["outcome"]) for r in records] == [
            ("job_run_requested", "requested"),
            ("job_run", "accepted"),
            ("job_run_requested", "requested"),
            ("job_run", "refused"),
        ]
        for rec in records:
            complete(rec, rec.action, SUPER, rec.data["outcome"])
            assert rec.job_id == job_id
        assert records[0].data["reason"] == records[1].data["reason"] == "deploy 42"
        assert records[3].data["code"] == (await again.json())["code"] and records[3].data["engineStatus"] == 409
        assert [records[1].data["intentSeq"], records[3].data["intentSeq"]] == [records[0].seq, records[2].seq]

    async def test_cancel_refused_by_the_engine(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """A cancel of a READY job is an intent and a refused outcome with the reason given."""
        user = await gateway_server.login()
        job_id = await upstream_engine.create()
        before = len(gateway_server.audit_records())
        resp = await user.post(f"/api/admin/engine/jobs/{job_id}/cancel", {"reason": "oops"})
        assert resp.status == 409
        intent, outcome = new_records(gateway_server, before)
        complete(intent, "job_cancel_requested", SUPER, "requested")
        complete(outcome, "job_cancel", SUPER, "refused")
        assert outcome.data["reason"] == "oops" and outcome.data["code"] == (await resp.json())["code"]

    async def test_engine_down_is_an_error_outcome(
        self, make_gateway_server: MakeGatewayServer, closed_port: int
    ) -> None:
        """With the engine unreachable, a create is an intent and an error outcome (engine_unavailable)."""
        gw = await make_gateway_server(f"http://127.0.0.1:{closed_port}")
        user = await gw.login()
        before = len(gw.audit_records())
        resp = await user.post("/api/admin/engine/jobs", {"type": "demo.echo"})
        assert resp.status == 502
        intent, outcome = new_records(gw, before)
        complete(intent, "job_create_requested", SUPER, "requested")
        complete(outcome, "job_create", SUPER, "error")
        assert outcome.data["code"] == "engine_unavailable" and outcome.data["status"] == 502

    async def test_bad_request_is_one_refused_record_without_an_engine_call(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """A create with an invalid body is one refused job_create record; nothing reaches the engine."""
        user = await gateway_server.login()
        before, creates = len(gateway_server.audit_records()), upstream_engine.count("POST", "^/api/jobs$")
        resp = await user.post("/api/admin/engine/jobs", {"type": 5})
        assert resp.status == 400
        rec = only_new(gateway_server, before, "job_create", SUPER, "refused")
        assert rec.data["code"] == "invalid_field"
        assert upstream_engine.count("POST", "^/api/jobs$") == creates


FORGED = '\n{"hash":"00","action":"login_succeeded","actor":"mallory","outcome":"accepted"}\r\n\u2028\u202e'
ESCAPED = (
    '\\u000a{"hash":"00","action":"login_succeeded","actor":"mallory","outcome":"accepted"}\\u000d\\u000a\\u2028\\u202e'
)
#: What a header can carry (no C0 controls): next-line, a C1 terminal escape, a line separator, a bidi override.
FORGED_HEADER = '\u0085{"action":"login_succeeded","actor":"mallory"}\x9b2J\u2028\u202e'


class TestForging:
    async def test_user_strings_cannot_forge_records_or_lines(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer
    ) -> None:
        """Newlines, JSON, escapes and bidi characters in a user agent, a user name and a reason stay in their field."""
        client = await gateway_server.client()
        resp = await post_login(client, "mallory" + FORGED, PASSWORD, **{"User-Agent": "agent" + FORGED_HEADER})
        assert resp.status == 401
        user = await gateway_server.login()
        job_id = await upstream_engine.create()
        # A cancel reason goes only to the audit record (the engine takes none); this job is READY: 409.
        cancel = await user.post(
            f"/api/admin/engine/jobs/{job_id}/cancel",
            {"reason": "why" + FORGED},
            **{"User-Agent": "ua" + FORGED_HEADER},
        )
        assert cancel.status == 409
        records = new_records(gateway_server, 0)
        assert [r.action for r in records] == ["login_failed", "login_succeeded", "job_cancel_requested", "job_cancel"]
        assert all(r.actor != "mallory" for r in records) and records[0].actor == ANONYMOUS
        lines = list_segments(gateway_server.audit_dir)[0].path.read_bytes().splitlines()
        assert len(lines) == len(records) and all(json.loads(line)["seq"] for line in lines)
        header = '\\u0085{"action":"login_succeeded","actor":"mallory"}\\u009b2J\\u2028\\u202e'
        assert records[0].data["userAgent"] == "agent" + header
        assert records[3].data["reason"] == "why" + ESCAPED and records[3].data["userAgent"] == "ua" + header

    async def test_undecodable_header_bytes_are_escaped_not_a_500(self, gateway_server: GatewayServer) -> None:
        """A User-Agent with bytes that are not UTF-8 is recorded with escapes; the answer is the usual 401."""
        host, port = gateway_server.server.host, gateway_server.server.port
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            b"GET /api/admin/engine/jobs HTTP/1.1\r\nHost: x\r\nUser-Agent: bad\xff\xfe agent\r\n"
            b"Connection: close\r\n\r\n"
        )
        await writer.drain()
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
        rec = only_new(gateway_server, 0, "access_denied", ANONYMOUS, "refused")
        assert rec.data["userAgent"].startswith("bad\\u") and rec.data["userAgent"].endswith(" agent")

    async def test_long_strings_are_capped(self, gateway_server: GatewayServer) -> None:
        """A 5,000-character user agent is stored cut to 512 characters and marked as cut."""
        client = await gateway_server.client()
        assert (await client.get("/api/admin/config", headers={"User-Agent": "A" * 5_000})).status == 401
        rec = only_new(gateway_server, 0, "access_denied", ANONYMOUS, "refused")
        assert rec.data["userAgent"] == "A" * 512 + "…"


class TestFailClosed:
    async def test_full_disk_refuses_changes_keeps_reads_and_heals_without_restart(
        self, tiny_fs: Path, upstream_engine: UpstreamEngine, make_gateway_server: MakeGatewayServer
    ) -> None:
        """ENOSPC: run/create/login answer 503 with no engine call; reads, logout work; freeing space heals it."""
        gw = await make_gateway_server(upstream_engine.url, data_dir=tiny_fs / "gateway")
        user = await gw.login()
        leaving = await gw.login()
        job_id = await upstream_engine.create()
        before = len(gw.audit_records())
        calls = len(upstream_engine.calls)
        filler = fill(tiny_fs)
        for _ in range(30):
            # Refusals are recorded best effort: they use up what the segment's last page has left.
            # (Repeated anonymous 401s would not: they are counted into one record per window.)
            assert (await user.post("/api/admin/engine/jobs", {"type": 5})).status == 400
            if (await (await user.client.get("/healthz")).json())["status"] == "degraded":
                break
        else:
            raise AssertionError("the full disk never failed a write")

        with capture_logs() as logs:
            run = await user.post(f"/api/admin/engine/jobs/{job_id}/run")
            create = await user.post("/api/admin/engine/jobs", {"type": "demo.echo"})
        for resp in (run, create):
            assert resp.status == 503
            assert (await resp.json())["code"] == "journal_unavailable"
        assert len(upstream_engine.calls) == calls  # the engine never heard of them
        assert await upstream_engine.status(job_id) == "READY"
        failed = [e for e in logs if e["event"] == "audit_write_failed"]
        assert failed and all(e["log_level"] == "error" for e in failed)
        assert any(e["event"] == "journal_write_failed" and e["log_level"] == "error" for e in logs)

        health = await (await user.client.get("/healthz")).json()
        assert health["status"] == "degraded"
        listing = await user.client.get("/api/admin/engine/jobs")
        assert listing.status == 200 and job_id in [j["id"] for j in (await listing.json())["jobs"]]

        newcomer = await gw.client()
        assert (await post_login(newcomer, SUPER, PASSWORD)).status == 503
        assert (await newcomer.get("/api/admin/config")).status == 401  # no session was opened
        out = await leaving.client.post("/logout", data={"csrf_token": leaving.csrf}, allow_redirects=False)
        assert out.status == 303
        assert (await leaving.client.get("/api/admin/config")).status == 401  # ended despite the failed record

        filler.unlink()
        run = await user.post(f"/api/admin/engine/jobs/{job_id}/run")
        assert run.status == 202, await run.text()
        assert (await (await user.client.get("/healthz")).json())["status"] == "ok"
        records = new_records(gw, before)
        assert [r.action for r in records][-2:] == ["job_run_requested", "job_run"]
        assert records[0].prev == gw.audit_records()[before - 1].hash  # nothing half-written in between


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``admin-gateway`` console script to completion."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("SAFE_MODE", "ENGINE_HUB_TOKEN")}
    full_env.update(env or {})
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=60, env=full_env, stdin=subprocess.DEVNULL
    )


class TestAuditCli:
    async def test_verify_an_intact_and_a_tampered_copy(
        self, upstream_engine: UpstreamEngine, gateway_server: GatewayServer, tmp_path: Path
    ) -> None:
        """``audit verify`` exits 0 with the count on the live journal and 1 naming the altered record."""
        user = await gateway_server.login()
        await user.create("demo.echo")
        count = len(gateway_server.audit_records())
        ok = run_cli("audit", "verify", "--data-dir", str(gateway_server.settings.data_dir))
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith(f"ok: {count} records intact")

        copy = tmp_path / "copy"
        shutil.copytree(gateway_server.settings.data_dir, copy)
        segment = list_segments(copy / "audit")[0].path
        lines = segment.read_bytes().splitlines(keepends=True)
        lines[1] = lines[1].replace(b'"actor":"alice"', b'"actor":"alicf"')
        segment.write_bytes(b"".join(lines))
        bad = run_cli("audit", "verify", "--data-dir", str(copy))
        assert bad.returncode == 1
        assert f"FAILED: first bad record at {segment.name} line 2 (seq 2)" in bad.stdout

        head = run_cli("audit", "head", "--json", "--data-dir", str(gateway_server.settings.data_dir))
        assert json.loads(head.stdout)["seq"] == count
        export = run_cli("audit", "export", "--data-dir", str(gateway_server.settings.data_dir))
        assert [json.loads(line)["action"] for line in export.stdout.splitlines()] == [
            r.action for r in gateway_server.audit_records()
        ]

    async def test_serve_refuses_a_broken_journal_with_one_line(self, tmp_path: Path) -> None:
        """``serve`` on a data dir whose audit chain is broken stops before listening, naming the record."""
        journal = tmp_path / "gw" / "audit"
        journal.mkdir(parents=True)
        good, prev = b"", GENESIS
        for seq in (1, 2):
            rec, line = make_record_line(
                seq=seq,
                prev=prev,
                action="logout",
                actor="alice",
                source="::1",
                job_id=None,
                data={"outcome": "accepted"},
            )
            good, prev = good + line, rec.hash
        (journal / "segment-000000000001.jsonl").write_bytes(good.replace(b"alice", b"mallo", 1))
        with socket.socket() as sock:  # a free port, in case the start got as far as listening
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = run_cli(
            "serve", "--data-dir", str(tmp_path / "gw"), "--port", str(port), env={"ENGINE_HUB_TOKEN": ENGINE_TOKEN}
        )
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith(
            "admin-gateway: error: audit journal: journal corrupt at segment-000000000001.jsonl line 1 (seq 1)"
        )
        assert "admin-gateway audit verify" in lines[-1] and "Traceback" not in proc.stderr
