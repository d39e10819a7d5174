"""Three real engine nodes on one PostgreSQL database: at most once, node loss, fencing, failover (issue 13).

Every test gets a fresh migrated database and its own nodes (:mod:`tests.e2e.cluster`), run from the
installed wheel. Runs are counted by the processes they started (lines in a marker file), never by
answers.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from engine_hub.jobs.cluster import LISTENER_NAME
from engine_hub.store.nodes import NODE_LOST_ERROR
from shared.journal.postgres import verify_chain
from tests.e2e.cluster import COUNT_TYPE, FAMILY_TYPE, HEARTBEAT, LOST_AFTER, Cluster, running_cluster, wait_gone
from tests.e2e.harness import FINAL, http, poll, wait_until
from tests.e2e.install import Installation
from tests.postgres import PostgresServer

#: How long a lost node's runs may take to be failed: the threshold, a sweep's wait, slack for a busy machine.
SWEPT_WITHIN = LOST_AFTER + 4 * HEARTBEAT + 10


@pytest.fixture
def cluster(tmp_path: Path, installed: Installation, postgres_url: str) -> Iterator[Cluster]:
    """Three engine nodes on a fresh database."""
    with running_cluster(tmp_path, installed, store_url=postgres_url, nodes=3) as started:
        yield started


def _pid_of_run(cluster: Cluster, job_id: str) -> int:
    line = poll(
        lambda: (cluster.markers / job_id).read_text() if (cluster.markers / job_id).exists() else "",
        bool,
        timeout=20,
        what=f"job {job_id} started",
    )
    return int(line.split()[1])


class TestAtMostOnce:
    def test_300_concurrent_runs_of_100_jobs_over_three_nodes_start_100_processes(self, cluster: Cluster) -> None:
        """300 RUNs of 100 READY jobs spread over three nodes (legacy route in the mix) start exactly 100 processes."""
        apis = [cluster.api(i) for i in range(3)]
        jobs = [apis[i % 3].create(COUNT_TYPE, {"seconds": 0}) for i in range(100)]
        requests = [("run", job["id"], node) for job in jobs for node in range(3)]
        # The legacy "run" route only ever creates a READY job: in the mix, it must start nothing.
        requests += [("legacy", f"legacy-{i}", i % 3) for i in range(30)]
        random.Random(13).shuffle(requests)

        def send(request: tuple[str, str, int]) -> tuple[str, int, object]:
            kind, target, node = request
            if kind == "run":
                reply = apis[node].request("POST", f"/api/jobs/{target}/run", {})
            else:
                reply = apis[node].request("POST", "/engines/jobs/run", {"engine": COUNT_TYPE, "name": target})
            return kind, reply.status, reply.json() if reply.body else None

        with ThreadPoolExecutor(max_workers=24) as pool:
            answers = list(pool.map(send, requests))
        runs = [(status, body) for kind, status, body in answers if kind == "run"]
        assert sum(status == 202 for status, _ in runs) == 100, [a for a in runs if a[0] not in (202, 409, 400)]
        assert {status for status, _ in runs} <= {202, 409, 400}, [a for a in runs if a[0] == 503][:3]
        for job in jobs:
            assert apis[0].wait_status(job["id"])["status"] == "DONE"
        assert [cluster.runs(job["id"]) for job in jobs] == [1] * 100
        legacy = [body for kind, status, body in answers if kind == "legacy"]
        assert all(isinstance(b, dict) and b["status"] == "READY" and cluster.runs(b["id"]) == 0 for b in legacy)
        time.sleep(1)  # nothing starts late
        assert sum(cluster.runs(job["id"]) for job in jobs) == 100


class TestNodeLoss:
    def test_a_killed_nodes_run_is_failed_node_lost_and_never_rerun(self, cluster: Cluster) -> None:
        """SIGKILL of the running node: its job becomes FAILED "interrupted: node lost" and never runs again."""
        job = cluster.api(0).create(COUNT_TYPE, {"seconds": 120})
        cluster.api(0).run(job["id"])
        pid = _pid_of_run(cluster, job["id"])
        cluster.nodes[0].kill()
        wait_gone(pid, timeout=10)  # runs never outlive their node
        ended = cluster.api(1).wait_status(job["id"], timeout=SWEPT_WITHIN)
        assert (ended["status"], ended["error"]) == ("FAILED", NODE_LOST_ERROR)
        assert ended["history"][-1]["by"] == "system"
        listed = cluster.api(2).request("GET", "/api/jobs").json()
        assert [j for j in listed if j["id"] == job["id"]] == [ended]  # the list's stored JSON was swept too
        time.sleep(2 * HEARTBEAT)
        assert cluster.runs(job["id"]) == 1
        reply = cluster.api(2).request("POST", f"/api/jobs/{job['id']}/run", {})
        assert (reply.status, reply.json()["code"]) == (400, "not_ready")

    def test_a_frozen_node_is_fenced_its_finish_rejected_and_it_registers_again(self, cluster: Cluster) -> None:
        """SIGSTOP past the threshold: job fails node lost; on SIGCONT its finish is refused, the node re-registers."""
        # The run outlasts the time it takes to freeze the node on a busy machine, and ends while frozen.
        job = cluster.api(0).create(COUNT_TYPE, {"seconds": 3})
        cluster.api(0).run(job["id"])
        _pid_of_run(cluster, job["id"])
        first = cluster.wait_event(0, "node_registered", timeout=5)
        os.kill(cluster.nodes[0].pid, signal.SIGSTOP)
        try:
            ended = cluster.api(1).wait_status(job["id"], timeout=SWEPT_WITHIN)
        finally:
            os.kill(cluster.nodes[0].pid, signal.SIGCONT)
        assert (ended["status"], ended["error"]) == ("FAILED", NODE_LOST_ERROR)
        cluster.wait_event(0, "finish_rejected_fenced", job_id=job["id"], timeout=10)
        cluster.wait_event(0, "node_fenced", timeout=10)
        again = cluster.wait_event(0, "node_registered", fenced_before=1, timeout=10)
        assert again["node_id"] != first["node_id"]
        wait_until(lambda: http("GET", cluster.nodes[0].url + "/readyz").status == 200, timeout=10, what="ready")
        after = cluster.api(0).job(job["id"])
        assert (after["status"], after["error"], after["history"]) == ("FAILED", NODE_LOST_ERROR, ended["history"])
        assert cluster.runs(job["id"]) == 1
        # The node works again under its new id: it claims and finishes a new run.
        fresh = cluster.api(0).create(COUNT_TYPE, {"seconds": 0})
        cluster.api(0).run(fresh["id"])
        assert cluster.api(1).wait_status(fresh["id"])["status"] == "DONE"


class TestCancelAcrossNodes:
    def test_a_cancel_sent_to_another_node_ends_the_process_group(self, cluster: Cluster) -> None:
        """A cancel sent to node B kills the job node A runs, grandchildren included, and records who cancelled."""
        job = cluster.api(0).create(FAMILY_TYPE)
        cluster.api(0).run(job["id"])
        pidfile = cluster.markers / f"{job['id']}.pid"
        wait_until(pidfile.exists, timeout=20, what="the grandchild's pid file")
        grandchild = int(pidfile.read_text())
        reply = cluster.api(1).request("POST", f"/api/jobs/{job['id']}/cancel", {})
        assert reply.status == 202, reply
        wait_gone(grandchild, timeout=5)
        ended = cluster.api(2).wait_status(job["id"], timeout=10)
        assert (ended["status"], ended["error"]) == ("FAILED", "cancelled by admin")
        assert ended["history"][-1]["by"] == "admin"

    def test_a_cancel_recorded_while_the_runner_was_not_listening_is_caught_up_by_seq(
        self, cluster: Cluster, postgres_url: str
    ) -> None:
        """A's listener loses its connection; a cancel recorded meanwhile is read by seq on reconnect: killed in 1 s."""
        job = cluster.api(0).create(FAMILY_TYPE)
        cluster.api(0).run(job["id"])
        pidfile = cluster.markers / f"{job['id']}.pid"
        wait_until(pidfile.exists, timeout=20, what="the grandchild's pid file")
        grandchild = int(pidfile.read_text())
        node = cluster.nodes[0]
        # Frozen, node A can neither hear the notification nor reconnect before the cancel is
        # committed; it thaws well within the fencing threshold (2/3 of LOST_AFTER).
        os.kill(node.pid, signal.SIGSTOP)
        try:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                ended = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                    (f"{LISTENER_NAME} {node.pid}",),
                ).fetchone()
            assert ended == (1,)
            assert cluster.api(1).request("POST", f"/api/jobs/{job['id']}/cancel", {}).status == 202
        finally:
            os.kill(node.pid, signal.SIGCONT)
        # The fallback poll is 5 s away: only the catch-up on reconnect can be this quick.
        wait_gone(grandchild, timeout=1.5)
        ended_job = cluster.api(2).wait_status(job["id"], timeout=10)
        assert (ended_job["status"], ended_job["error"]) == ("FAILED", "cancelled by admin")


class TestDatabaseRestart:
    def test_pg_restart_under_load_loses_no_acknowledged_change(
        self, cluster: Cluster, postgres_server: PostgresServer
    ) -> None:
        """pg restart under writes from three nodes: every 2xx is kept, listeners reconnect, cancels work."""
        acknowledged_creates: list[str] = []
        acknowledged_runs: list[str] = []
        refused: list[int] = []
        stop = threading.Event()

        def load(node: int) -> None:
            api = cluster.api(node)
            while not stop.is_set():
                reply = api.request("POST", "/api/jobs", {"type": COUNT_TYPE, "params": {"seconds": 0}})
                if reply.status != 201:
                    refused.append(reply.status)
                    continue
                job_id = reply.json()["id"]
                acknowledged_creates.append(job_id)
                reply = api.request("POST", f"/api/jobs/{job_id}/run", {})
                if reply.status == 202:
                    acknowledged_runs.append(job_id)
                else:
                    refused.append(reply.status)

        threads = [threading.Thread(target=load, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        try:
            time.sleep(1)
            postgres_server.restart()
            time.sleep(2)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        assert acknowledged_runs
        assert set(refused) <= {503}, refused  # store_unavailable while it was down, nothing else
        api = cluster.api(2)
        for job_id in acknowledged_creates:
            status = api.job(job_id)["status"]
            assert status != "READY" or job_id not in acknowledged_runs
        for job_id in acknowledged_runs:
            assert api.wait_status(job_id, FINAL, timeout=30)["status"] in ("DONE", "FAILED")
        for node in range(3):
            wait_until(
                lambda node=node: sum(e.get("event") == "listener_connected" for e in cluster.events(node)) >= 2,
                timeout=15,
                what=f"node{node} listening again",
            )
        job = cluster.api(0).create(FAMILY_TYPE)
        cluster.api(0).run(job["id"])
        pidfile = cluster.markers / f"{job['id']}.pid"
        wait_until(pidfile.exists, timeout=20, what="the grandchild's pid file")
        assert cluster.api(1).request("POST", f"/api/jobs/{job['id']}/cancel", {}).status == 202
        wait_gone(int(pidfile.read_text()), timeout=5)

    def test_database_down_answers_503_and_the_gateway_says_the_engine_is_unavailable(
        self, cluster: Cluster, postgres_server: PostgresServer
    ) -> None:
        """Database stopped: reads (logs too) and changes answer 503 store_unavailable; the panel says down."""
        cluster.add_gateway("gw", nodes=[0, 1])
        panel = cluster.panel("gw")
        job = cluster.api(0).create(COUNT_TYPE)
        postgres_server.halt()
        try:
            for method, path, body in (
                ("GET", "/api/jobs", None),
                ("GET", f"/api/jobs/{job['id']}", None),
                ("GET", f"/api/jobs/{job['id']}/logs", None),
                ("POST", "/api/jobs", {"type": COUNT_TYPE}),
            ):
                reply = cluster.api(0).request(method, path, body)
                assert (reply.status, reply.json()["code"]) == (503, "store_unavailable"), reply
            listing = panel.jobs().json()
            assert (listing["engine"], listing["jobs"]) == ("down", [])
            assert "does not mean there are no jobs" in listing["warning"]
        finally:
            assert postgres_server.start().returncode == 0
        listing = poll(lambda: panel.jobs().json(), lambda body: body["engine"] == "up", timeout=20, what="list up")
        assert len(listing["jobs"]) == 1


class TestGatewayFailover:
    def test_a_gateway_with_two_engines_keeps_listing_and_running_when_one_is_killed(self, cluster: Cluster) -> None:
        """Kill the gateway's first engine: the list, a create and a run keep working through the second."""
        cluster.add_gateway("gw", nodes=[0, 1])
        panel = cluster.panel("gw")
        before = panel.create(COUNT_TYPE, {"seconds": 0})
        cluster.nodes[0].kill()
        started = time.monotonic()
        listing = panel.jobs().json()
        assert listing["engine"] == "up" and before["id"] in [j["id"] for j in listing["jobs"]]
        assert time.monotonic() - started < 5
        job = panel.create(COUNT_TYPE, {"seconds": 0})
        assert panel.run(job["id"]).status == 202
        assert panel.wait_status(job["id"])["status"] == "DONE"
        assert cluster.runs(job["id"]) == 1


class TestAuditChain:
    def test_concurrent_writes_from_three_nodes_keep_one_verifiable_chain(
        self, cluster: Cluster, postgres_url: str
    ) -> None:
        """Concurrent changes on three nodes make one chain that verifies, and fails to after an edit."""

        def work(node: int) -> None:
            api = cluster.api(node)
            for _ in range(15):
                job = api.create(COUNT_TYPE, {"seconds": 0})
                api.run(job["id"])

        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(work, range(3)))
        wait_until(
            lambda: all(j["status"] in FINAL for j in cluster.api(0).request("GET", "/api/jobs?limit=200").json()),
            timeout=30,
            what="every run ended",
        )
        result = asyncio.run(verify_chain(postgres_url, "engine"))
        assert result.ok and result.count >= 45 * 4, result
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("UPDATE audit_events SET actor = 'mallory' WHERE chain = 'engine' AND seq = 10")
        broken = asyncio.run(verify_chain(postgres_url, "engine"))
        assert not broken.ok and broken.first_bad is not None and broken.first_bad.seq == 10
