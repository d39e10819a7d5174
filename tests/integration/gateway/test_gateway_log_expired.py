"""Log retention seen from the gateway: a sweep in-process, and the expired log passing through as 404 log_expired."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from engine_hub.http.app import create_app as create_engine_app
from engine_hub.jobs.catalog import Catalog, demo_types
from engine_hub.run.log_retention import LOG_RETENTION
from engine_hub.settings import Settings as EngineSettings
from shared.contract import utcnow
from tests.integration.gateway.harness import (
    ENGINE_TOKEN,
    MakeGatewayServer,
    UpstreamEngine,
    wait_for_status,
)


async def durable_engine(aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path) -> tuple[UpstreamEngine, Any]:
    """A real durable engine (journal and log files under ``tmp_path``) keeping job logs 30 days; and its app."""
    app = create_engine_app(
        EngineSettings(token=ENGINE_TOKEN, data_dir=tmp_path / "engine", kill_grace=0.5, log_retention_days=30),
        catalog=Catalog(types={t.name: t for t in demo_types()}, clients=()),
        environ={},
    )
    server = await aiohttp_server(app)
    return UpstreamEngine(server=server, client=await aiohttp_client(server), calls=[]), app


class TestLogExpiredThroughTheGateway:
    async def test_sweep_expires_only_past_the_retention_and_the_gateway_passes_404_on(
        self, aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, make_gateway_server: MakeGatewayServer
    ) -> None:
        """A sweep 29 days on keeps a finished job's log, 31 days on deletes it; the panel API says log_expired."""
        upstream_engine, app = await durable_engine(aiohttp_server, aiohttp_client, tmp_path)
        gateway_server = await make_gateway_server(upstream_engine.url)
        user = await gateway_server.login()
        job_id = (await user.create("demo.echo", {"message": "to expire"}))["id"]
        assert (await user.post(f"/api/admin/engine/jobs/{job_id}/run")).status == 202
        await wait_for_status(user, job_id, {"DONE"})
        log_file = tmp_path / "engine" / "logs" / f"{job_id}.log"
        retention = app[LOG_RETENTION]
        assert await retention.sweep(now=utcnow() + dt.timedelta(days=29)) == 0
        resp = await user.client.get(f"/api/admin/engine/jobs/{job_id}/logs")
        assert resp.status == 200 and [line["text"] for line in (await resp.json())["lines"]] == ["to expire"]
        assert await retention.sweep(now=utcnow() + dt.timedelta(days=31)) == 1
        assert not log_file.exists()
        resp = await user.client.get(f"/api/admin/engine/jobs/{job_id}/logs")
        body = await resp.json()
        assert (resp.status, body["code"]) == (404, "log_expired"), body
        assert "log retention" in body["error"]
        assert await retention.sweep(now=utcnow() + dt.timedelta(days=40)) == 0  # recorded once, deleted once
        records = await upstream_engine.client.get(
            f"/api/audit?jobId={job_id}", headers={"Authorization": f"Bearer {ENGINE_TOKEN}"}
        )
        actions = [(r["action"], r["actor"]) for r in await records.json()]
        assert actions.count(("log_expired", "system")) == 1
