"""A node logged in as the application role that docs/scale-out.md tells the owner to create.

The role is made by running the documentation's own SQL block, so the
documented grants are proven enough to serve (create, run, cancel, logs,
heartbeats, the sweep's locks) and proven too little to rewrite the audit
chain or move where it starts. Log retention runs as that role too.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.integration.engine.harness import MakeEngineServer, auth, wait_until

DOC = Path(__file__).resolve().parents[3] / "docs" / "scale-out.md"
#: The role name and password placeholder the documented block uses.
DOC_ROLE, DOC_PASSWORD = "engine_app", "CHANGE-ME"


def documented_role_sql() -> str:
    """The ```sql block of docs/scale-out.md that creates the application role."""
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    (block,) = [b for b in blocks if f"CREATE ROLE {DOC_ROLE}" in b]
    return "\n".join(line.strip() for line in block.splitlines())


@pytest.fixture
def app_url(postgres_url: str) -> str:
    """A URL of the test database for a fresh role made by the documented block (roles are per cluster)."""
    role, password = f"engine_app_{secrets.token_hex(4)}", secrets.token_hex(12)
    sql = documented_role_sql().replace(DOC_ROLE, role).replace(DOC_PASSWORD, password)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.encode())
    params = conninfo_to_dict(postgres_url)
    return f"postgresql://{role}:{password}@{params['host']}:{params['port']}/{params['dbname']}"


@pytest.fixture
def engine_store(app_url: str) -> str:
    """Every engine here is a node logged in as the application role."""
    return app_url


class TestApplicationRole:
    async def test_a_node_serves_everything_with_the_documented_grants(
        self, make_engine_server: MakeEngineServer
    ) -> None:
        """As the app role a node creates, runs, logs, cancels, lists and shows the audit trail."""
        server = await make_engine_server()
        done = await server.create("test.chatty", {"lines": 3})
        await server.run(done["id"])
        assert (await server.wait_for(done["id"]))["status"] == "DONE"
        logs = await server.client.get(f"/api/jobs/{done['id']}/logs", headers=auth())
        assert [line["text"] for line in (await logs.json())["lines"]] == ["line 0", "line 1", "line 2"]
        blocked = await server.create("test.block", {"seconds": 60})
        await server.run(blocked["id"])
        reply = await server.client.post(f"/api/jobs/{blocked['id']}/cancel", json={}, headers=auth())
        assert reply.status == 202, await reply.text()
        assert (await server.wait_for(blocked["id"]))["error"] == "cancelled by admin"
        audit = await server.client.get("/api/audit", headers=auth())
        assert audit.status == 200 and len(await audit.json()) >= 8

    async def test_the_app_role_cannot_rewrite_or_trim_the_chain(
        self, make_engine_server: MakeEngineServer, app_url: str
    ) -> None:
        """UPDATE, DELETE, TRUNCATE of audit_events and moving the chain's start are refused to the app role."""
        server = await make_engine_server()
        await server.create("test.count")
        refused = (
            "UPDATE audit_events SET actor = 'mallory'",
            "DELETE FROM audit_events WHERE seq = 1",
            "TRUNCATE audit_events",
            "UPDATE audit_head SET first_seq = 2",
            "DELETE FROM audit_head",
        )
        with psycopg.connect(app_url, autocommit=True) as conn:
            for statement in refused:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement.encode())


class TestLogRetention:
    async def test_two_nodes_expire_a_finished_log_once_and_keep_a_running_one(
        self, make_engine_server: MakeEngineServer, app_url: str
    ) -> None:
        """Past the retention, a finished job's lines go after one log_expired record (two nodes sweeping)."""
        days = 0.00002  # 1.7 s; sweeps every second
        node_a = await make_engine_server(log_retention_days=days)
        node_b = await make_engine_server(log_retention_days=days)
        done = await node_a.create("test.chatty", {"lines": 3})
        await node_a.run(done["id"])
        assert (await node_a.wait_for(done["id"]))["status"] == "DONE"
        running = await node_a.create("test.block", {"seconds": 60})
        await node_a.run(running["id"])

        async def expired() -> bool:
            reply = await node_b.client.get(f"/api/jobs/{done['id']}/logs", headers=auth())
            return reply.status == 404 and (await reply.json())["code"] == "log_expired"

        await wait_until(expired, timeout=15, what="the finished job's log expired")
        records = [r for r in await node_a.records() if r.action == "log_expired"]
        assert [(r.job_id, r.actor, r.data) for r in records] == [
            (done["id"], "system", {"bytes": len("line 0\n") * 3, "retentionDays": days})
        ]
        with psycopg.connect(app_url) as conn:
            left = conn.execute("SELECT count(*) FROM job_log_lines WHERE job_id = %s", (done["id"],)).fetchone()
        assert left == (0,)
        kept = await node_b.client.get(f"/api/jobs/{running['id']}/logs", headers=auth())
        assert [line["text"] for line in (await kept.json())["lines"]] == ["started"]
