"""``make run-cluster`` (``python -m deploy.devrun --cluster``): PostgreSQL, two nodes, one gateway, one Ctrl-C.

Run from the dev venv like ``make run`` (see tests/e2e/test_devrun.py). The
state directory is not pytest's ``tmp_path``: that is private to its owner
(0700), and as root the throwaway PostgreSQL runs as another user, who must
enter it (as under ``./var`` in a checkout).
"""

from __future__ import annotations

import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local_postgres import BINDIR_ENV, MISSING
from tests.e2e.harness import wait_until
from tests.e2e.test_devrun import Admin, DevRun, gone
from tests.postgres import require_bindir


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A fresh directory anyone may enter (mode 0755), deleted afterwards."""
    path = Path(tempfile.mkdtemp(prefix="run-cluster-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _status(url: str, token: str | None = None) -> int:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
        status: int = resp.status
        return status


class TestRunCluster:
    def test_without_postgres_binaries_it_is_one_line(self, tmp_path: Path) -> None:
        """With no initdb/pg_ctl, it says to install Debian's `postgresql`, exits non-zero, and creates nothing."""
        empty = tmp_path / "bin"
        empty.mkdir()
        run = DevRun(tmp_path, env={BINDIR_ENV: str(empty)}, cluster=True)
        assert run.proc.wait(timeout=30) != 0
        assert run.text().strip() == f"devrun: error: {MISSING}"
        assert not (tmp_path / "var").exists()

    def test_two_nodes_share_postgres_behind_one_gateway_and_ctrl_c_stops_all(self, state_dir: Path) -> None:
        """Gateway and both nodes serve one store, its password in no argv; Ctrl-C ends them all and postgres."""
        require_bindir()
        run = DevRun(state_dir, env={}, cluster=True)
        cluster = state_dir / "var" / "cluster"
        try:
            text = run.wait_for_banner()
            url = f"http://127.0.0.1:{run.gateway_port}"
            assert f"{url}/admin/engine/jobs" in text and "login:   admin / " in text
            for port in run.engine_ports:
                assert f"http://127.0.0.1:{port}" in text
            postmaster = int((cluster / "pg" / "data" / "postmaster.pid").read_text().split()[0])

            admin = Admin(url, text)
            job = admin.post("/api/admin/engine/jobs", {"type": "demo.echo"})
            listed = admin.get("/api/admin/engine/jobs")
            assert listed["engine"] == "up"
            assert job["id"] in [j["id"] for j in listed["jobs"]]
            token = (cluster / "engine" / "token").read_text().strip()
            for port in run.engine_ports:
                assert _status(f"http://127.0.0.1:{port}/healthz") == 200
                # One store: a job created through the gateway is there on either node.
                assert _status(f"http://127.0.0.1:{port}/api/jobs/{job['id']}", token) == 200
            pids = run.child_pids()
            assert len(pids) == 3
            # The store's password reaches the nodes in their environment, never on a command line.
            secret = (cluster / "pg" / "pwfile").read_text().strip()
            assert secret not in text
            for pid in pids:
                assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        finally:
            status = run.interrupt()
        assert status == 0
        wait_until(lambda: all(gone(pid) for pid in [*pids, postmaster]), timeout=10, what="nodes, gateway, postgres")
        assert not (cluster / "pg").exists()
