"""What ``make run`` starts: every Engine Jobs process for local development.

The processes are listed in :func:`processes`, like a Procfile: add one
entry to start another process (the admin gateway joins here). They share
one admin token: it is generated once into ``var/engine/token`` (mode 0600)
and handed to every process as ``ENGINE_HUB_TOKEN``.

Each process writes to this terminal (readable console logs). Ctrl-C or
SIGTERM stops them all; when one exits on its own the others are stopped
too, and ``make run`` exits with its status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Final

import attrs

from engine_hub.auth import load_or_create_token_file
from engine_hub.errors import ConfigError
from engine_hub.settings import TOKEN_ENV, TOKEN_FILE

ROOT: Final = Path(__file__).resolve().parent.parent
DATA_DIR: Final = ROOT / "var" / "engine"
#: How long a process gets to stop after SIGTERM before it is killed.
STOP_GRACE: Final = 15.0


@attrs.frozen(kw_only=True)
class Process:
    """One process to supervise: its name, argv, and the URL that answers once it is up."""

    name: str
    argv: tuple[str, ...]
    health_url: str | None = None


def processes(env: dict[str, str]) -> list[Process]:
    """The processes of a development run (ports from ``ENGINE_PORT``, default 8090)."""
    engine_port = env.get("ENGINE_PORT", "8090")
    return [
        Process(name="engine",
                argv=(sys.executable, "-m", "engine_hub", "serve", "--host", "127.0.0.1", "--port", engine_port,
                      "--data-dir", str(DATA_DIR)),
                health_url=f"http://127.0.0.1:{engine_port}/healthz"),
    ]


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def _stop(running: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in running.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for proc in running.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    """Start every process, print where to reach them, and supervise them until one ends or a signal."""
    try:
        token = load_or_create_token_file(DATA_DIR / TOKEN_FILE)
    except ConfigError as exc:
        print(f"devrun: error: {exc}", file=sys.stderr)
        return 2
    env = {**os.environ, TOKEN_ENV: token}
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # children get the terminal's Ctrl-C themselves
    running: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for spec in processes(env):
            running[spec.name] = subprocess.Popen(spec.argv, env=env, cwd=ROOT)
            if spec.health_url is not None and not _wait_healthy(spec.health_url, running[spec.name]):
                print(f"devrun: error: {spec.name} did not become healthy at {spec.health_url}", file=sys.stderr)
                return 1
        engine_url = processes(env)[0].health_url.removesuffix("/healthz")  # type: ignore[union-attr]
        token_path = (DATA_DIR / TOKEN_FILE).relative_to(ROOT)
        print(f"\n  engine:  {engine_url}   (demo job types: demo.sleep, demo.echo, demo.fail)\n"
              f"  token:   {token_path}   export {TOKEN_ENV}=$(cat {token_path})\n"
              f"  try:     .venv/bin/engine-hub jobs create demo.sleep --param seconds=5\n"
              f"           .venv/bin/engine-hub jobs list\n"
              f"  stop:    Ctrl-C\n", flush=True)
        while not stopping:
            for name, proc in running.items():
                if proc.poll() is not None:
                    print(f"devrun: {name} exited with status {proc.returncode}; stopping the others",
                          file=sys.stderr)
                    return proc.returncode or 1
            time.sleep(0.2)
        return 0
    finally:
        _stop(running)


if __name__ == "__main__":
    raise SystemExit(main())
