"""The ``admin-gateway`` console script as a subprocess: run it to completion, or start ``serve``.

The fixtures built on it (``engine_token_file``, ``gateway_process``) are in this folder's conftest.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

CLI = str(Path(sys.executable).parent / "admin-gateway")


def run(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the console script to completion."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("SAFE_MODE", "ENGINE_HUB_TOKEN")}
    full_env.update(env or {})
    return subprocess.run(
        [CLI, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """Assert the process failed with exactly one line on stderr (no traceback) and return it."""
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StartGateway(Protocol):
    """Start ``admin-gateway serve`` with extra arguments and environment; return its ``gateway_starting`` log line."""

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]: ...


def gateway_processes(tmp_path: Path, token_file: Path) -> Iterator[StartGateway]:
    """Yield a :class:`StartGateway` whose gateways use ``token_file``; stop every one it started at the end."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        port = free_port()
        full_env = {k: v for k, v in os.environ.items() if k not in ("SAFE_MODE", "ENGINE_HUB_TOKEN")}
        full_env.update(env or {})
        log = tmp_path / f"serve-{port}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [
                    CLI,
                    "serve",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(tmp_path / "gw"),
                    "--engine-token-file",
                    str(token_file),
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
                text=True,
                stdin=subprocess.DEVNULL,
            )
        procs.append(proc)
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        # Log lines reach the file within the flush interval (shared.log.FLUSH_INTERVAL), not at once.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for line in log.read_text().splitlines():
                if line.startswith("{") and '"gateway_starting"' in line:
                    started: dict[str, Any] = json.loads(line)
                    return started
            time.sleep(0.05)
        raise AssertionError(log.read_text())

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)
