"""An ``engine-hub serve`` subprocess for the CLI tests, and the ``engine-hub`` command run against it.

:class:`CliServer` is the lean sibling of :class:`tests.integration.engine.process.EngineProcess`:
it starts on a throwaway data dir with its generated token file and only needs to be stopped.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import attrs

from tests.integration.engine.process import CLEAN_ENV


def cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m engine_hub ARGS`` and return its result."""
    return subprocess.run(
        [sys.executable, "-m", "engine_hub", *args],
        capture_output=True,
        text=True,
        env={**CLEAN_ENV, **(env or {})},
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int, *needles: str) -> None:
    """The command failed with ``status`` and printed exactly one ``engine-hub: error:`` line naming ``needles``."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("engine-hub: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr


@attrs.define
class CliServer:
    """A running ``engine-hub serve`` subprocess."""

    proc: subprocess.Popen[str]
    url: str
    data_dir: Path
    log: IO[str]

    def args(self, *extra: str) -> list[str]:
        """The connection options for a ``jobs`` command."""
        return ["--url", self.url, "--data-dir", str(self.data_dir), *extra]


def start_server(tmp: Path, *extra: str, env: Mapping[str, str] | None = None) -> CliServer:
    """Start ``engine-hub serve --port 0`` and wait for its ``engine_listening`` log line."""
    data_dir = tmp / "data"
    log_path = tmp / "serve.log"
    out = log_path.open("w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine_hub",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            "--kill-grace",
            "0.5",
            *extra,
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        env={**CLEAN_ENV, **(env or {})},
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            if '"engine_listening"' in line:
                return CliServer(proc=proc, url=json.loads(line)["url"], data_dir=data_dir, log=out)
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}: {log_path.read_text()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"serve did not start: {log_path.read_text()}")


def stop_server(server: CliServer) -> int:
    """SIGTERM the server and return its exit status."""
    server.proc.send_signal(signal.SIGTERM)
    try:
        return server.proc.wait(timeout=30)
    finally:
        server.log.close()


def json_output(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a successful command printed."""
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for_job(server: CliServer, job_id: str, statuses: set[str], timeout: float = 20.0) -> dict[str, Any]:
    """Poll ``jobs show`` until the job's status is in ``statuses``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = json_output(cli("jobs", "show", job_id, "--json", *server.args()))
        if job["status"] in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} stayed {job.get('status')}")
