"""``make run`` (``python -m deploy.devrun``): both processes, the first admin, the panel URL, one Ctrl-C.

Unlike the rest of this suite, these tests run ``deploy.devrun`` from the dev
venv (editable install, in the checkout), as ``make run`` does: it is the
developer's edit-and-reload loop, and what it supervises is not packaging.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.harness import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


class DevRun:
    """A running ``deploy.devrun`` (``--cluster``: two nodes on PostgreSQL) with its output in a file."""

    def __init__(self, tmp: Path, *, env: dict[str, str], cluster: bool = False) -> None:
        self.engine_port, self.gateway_port = free_port(), free_port()
        self.engine_ports = [self.engine_port, free_port()] if cluster else [self.engine_port]
        self.out = tmp / f"devrun-{self.gateway_port}.log"
        full_env = {k: v for k, v in os.environ.items() if k not in ("SAFE_MODE", "ENGINE_HUB_TOKEN")}
        full_env.update(env)
        mode = ["--cluster", "--engine-port-2", str(self.engine_ports[1])] if cluster else []
        with self.out.open("w") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "deploy.devrun",
                    "--var",
                    str(tmp / "var"),
                    "--engine-port",
                    str(self.engine_port),
                    "--gateway-port",
                    str(self.gateway_port),
                    *mode,
                ],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
            )

    def text(self) -> str:
        """Everything printed so far."""
        return self.out.read_text(errors="replace")

    def wait_for_banner(self) -> str:
        """Wait until the panel URL is printed; return the output."""

        def ready() -> bool:
            assert self.proc.poll() is None, self.text()
            return "panel:   http://" in self.text()

        wait_until(ready, timeout=60, what="the panel URL")
        return self.text()

    def child_pids(self) -> list[int]:
        """The pids of devrun's child processes (the engine and the gateway)."""
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                children.append(int(stat.parent.name))
        return children

    def interrupt(self) -> int:
        """SIGINT to devrun alone (a terminal's Ctrl-C would reach the children too); return its status."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=30)


class Admin:
    """The first admin logged in to the panel of a running ``deploy.devrun``: JSON calls with the CSRF token."""

    def __init__(self, url: str, banner: str) -> None:
        password = re.search(r"login:   admin / (\S+)", banner)
        assert password, banner
        self.url = url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        page = self.opener.open(url + "/login", timeout=10).read().decode()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert csrf
        form = urllib.parse.urlencode(
            {"username": "admin", "password": password.group(1), "csrf_token": csrf.group(1)}
        ).encode()
        landed = self.opener.open(urllib.request.Request(url + "/login", data=form), timeout=10)
        # The printed password is a one-time password: the sign-in lands on Change password first.
        assert landed.url == url + "/admin/password", landed.url
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', landed.read().decode())
        assert csrf
        change = urllib.parse.urlencode(
            {
                "current_password": password.group(1),
                "new_password": "the first admin's own passphrase",
                "new_password_again": "the first admin's own passphrase",
                "csrf_token": csrf.group(1),
            }
        ).encode()
        changed = self.opener.open(urllib.request.Request(url + "/admin/password", data=change), timeout=10)
        assert changed.url == url + "/admin/engine/jobs", changed.url
        self.config: dict[str, Any] = self.get("/api/admin/config")

    def get(self, path: str) -> Any:
        """GET ``path``'s JSON."""
        return json.loads(self.opener.open(self.url + path, timeout=10).read())

    def post(self, path: str, body: dict[str, str]) -> Any:
        """POST ``body`` as JSON to ``path``; return the answer's JSON."""
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "X-CSRF-Token": self.config["csrfToken"]},
        )
        return json.loads(self.opener.open(req, timeout=10).read())


def gone(pid: int) -> bool:
    """The process ``pid`` has exited (a zombie counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it is gone if /proc says so.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


class TestDevRun:
    def test_one_command_runs_both_and_one_ctrl_c_stops_both(self, tmp_path: Path) -> None:
        """The banner shows the URL and the first admin's password; that admin can run a job; Ctrl-C ends all."""
        run = DevRun(tmp_path, env={"SAFE_MODE": "off"})
        try:
            text = run.wait_for_banner()
            url = f"http://127.0.0.1:{run.gateway_port}"
            assert f"{url}/admin/engine/jobs" in text
            assert "SAFE_MODE: OFF" in text
            token_file = tmp_path / "var" / "engine" / "token"
            assert oct(token_file.stat().st_mode & 0o777) == "0o600"
            assert token_file.read_text().strip() not in text

            admin = Admin(url, text)
            assert admin.config["isSuperAdmin"] is True and admin.config["safeMode"] is False
            job = admin.post("/api/admin/engine/jobs", {"type": "demo.echo"})
            assert admin.post(f"/api/admin/engine/jobs/{job['id']}/run", {})["status"] == "accepted"
            pids = run.child_pids()
            assert len(pids) == 2
        finally:
            status = run.interrupt()
        assert status == 0
        wait_until(lambda: all(gone(pid) for pid in pids), timeout=10, what="engine and gateway to exit")

    def test_second_start_prints_no_password(self, tmp_path: Path) -> None:
        """Once a user exists, no password is created or printed; SAFE_MODE is on by default."""
        first = DevRun(tmp_path, env={})
        try:
            assert "login:   admin / " in first.wait_for_banner()
        finally:
            first.interrupt()
        second = DevRun(tmp_path, env={})
        try:
            text = second.wait_for_banner()
            assert "login:" not in text
            assert "SAFE_MODE: ON" in text
        finally:
            second.interrupt()

    def test_bad_safe_mode_is_one_line(self, tmp_path: Path) -> None:
        """An unrecognised SAFE_MODE stops ``make run`` before anything starts."""
        run = DevRun(tmp_path, env={"SAFE_MODE": "sometimes"})
        assert run.proc.wait(timeout=30) == 2
        assert "SAFE_MODE='sometimes' is not recognised" in run.text()
        assert not (tmp_path / "var" / "gateway").exists()
