"""What ``make run`` starts: every Engine Jobs process for local development.

The processes are listed in :func:`processes`, like a Procfile: the engine,
then the admin gateway in front of it. Before anything starts:

- ``SAFE_MODE`` (if set) must be a recognised value and both ports must be
  free, so a mistake is one clear line, not a crash loop;
- the engine's admin token is generated once into ``var/engine/token``
  (mode 0600), unless ``ENGINE_HUB_TOKEN`` is set; the gateway gets the
  token *file* (``--engine-token-file``), never the token on a command line;
- if the gateway has no user at all, ``admin`` (super_admin) is created
  with a random password, which is printed once.

Each process writes to this terminal (readable console logs on a TTY).
Ctrl-C or SIGTERM stops them all; when one exits on its own the others are
stopped too, and ``make run`` exits with its status. The panel URL is
printed once the gateway answers.

SAFE_MODE stays **on** unless you say otherwise: ``SAFE_MODE=off make run``.
Ports: ``ENGINE_PORT`` (8090) and ``GATEWAY_PORT`` (8080).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Final

import attrs

from admin_gateway.auth.users import UserStore
from admin_gateway.settings import SettingsError, parse_safe_mode
from engine_hub.errors import ConfigError
from engine_hub.http.auth import load_or_create_token_file
from engine_hub.settings import TOKEN_ENV, TOKEN_FILE

ROOT: Final = Path(__file__).resolve().parent.parent
#: How long a process gets to stop after SIGTERM before it is killed.
STOP_GRACE: Final = 15.0


@attrs.frozen(kw_only=True)
class Process:
    """One process to supervise: its name, argv, and the URL that answers once it is up."""

    name: str
    argv: tuple[str, ...]
    port: int
    health_url: str | None = None


@attrs.frozen(kw_only=True)
class Layout:
    """Where a development run keeps its state and which ports it uses."""

    var: Path
    engine_port: int
    gateway_port: int

    @property
    def engine_dir(self) -> Path:
        """The engine's data dir (journal, token)."""
        return self.var / "engine"

    @property
    def gateway_dir(self) -> Path:
        """The gateway's data dir (users)."""
        return self.var / "gateway"


def processes(layout: Layout, *, token_file: Path | None) -> list[Process]:
    """The processes of a development run, in start order.

    ``token_file`` is handed to the gateway; ``None`` means the token comes
    from ``ENGINE_HUB_TOKEN`` in the environment.
    """
    engine_url = f"http://127.0.0.1:{layout.engine_port}"
    gateway = [
        sys.executable,
        "-m",
        "admin_gateway",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(layout.gateway_port),
        "--engine-url",
        engine_url,
        "--data-dir",
        str(layout.gateway_dir),
    ]
    if token_file is not None:
        gateway += ["--engine-token-file", str(token_file)]
    return [
        Process(
            name="engine",
            port=layout.engine_port,
            health_url=f"{engine_url}/healthz",
            argv=(
                sys.executable,
                "-m",
                "engine_hub",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(layout.engine_port),
                "--data-dir",
                str(layout.engine_dir),
            ),
        ),
        Process(
            name="gateway",
            port=layout.gateway_port,
            argv=tuple(gateway),
            health_url=f"http://127.0.0.1:{layout.gateway_port}/healthz",
        ),
    ]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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
    # Stop in reverse start order: the gateway before the engine it talks to.
    for proc in reversed(running.values()):
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for proc in running.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _banner(layout: Layout, *, password: str | None, safe_mode: bool, token_file: Path | None) -> str:
    panel = f"http://127.0.0.1:{layout.gateway_port}/admin/engine/jobs"
    lines = ["", "=" * 76, f"  panel:   {panel}"]
    if password is not None:
        lines += [
            f"  login:   admin / {password}   (shown only this once)",
            f"           change it: .venv/bin/admin-gateway users set-password admin --data-dir {layout.gateway_dir}",
        ]
    lines += [
        "  SAFE_MODE: "
        + (
            "ON: no job can be started (SAFE_MODE=off make run allows runs)"
            if safe_mode
            else "OFF: super admins can start READY jobs"
        ),
        f"  engine:  http://127.0.0.1:{layout.engine_port}   (demo job types: demo.sleep, demo.echo, demo.fail)",
    ]
    if token_file is not None:
        lines.append(f"  token:   {token_file}   export {TOKEN_ENV}=$(cat {token_file})")
    lines += ["  stop:    Ctrl-C", "=" * 76, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Check, prepare, start every process, print where to reach them, and supervise them."""
    parser = argparse.ArgumentParser(prog="make run", description="Run the engine and the admin gateway.")
    parser.add_argument("--var", type=Path, default=ROOT / "var", help="state directory (default ./var)")
    parser.add_argument("--engine-port", type=int, default=int(os.environ.get("ENGINE_PORT", "8090")))
    parser.add_argument("--gateway-port", type=int, default=int(os.environ.get("GATEWAY_PORT", "8080")))
    args = parser.parse_args(argv)
    layout = Layout(var=args.var, engine_port=args.engine_port, gateway_port=args.gateway_port)

    try:
        safe_mode = parse_safe_mode(os.environ["SAFE_MODE"]) if "SAFE_MODE" in os.environ else True
    except SettingsError as exc:
        print(f"devrun: error: {exc}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    token_file: Path | None = None
    if not env.get(TOKEN_ENV):
        token_file = layout.engine_dir / TOKEN_FILE
        try:
            load_or_create_token_file(token_file)  # the engine reads this same file
        except ConfigError as exc:
            print(f"devrun: error: {exc}", file=sys.stderr)
            return 2
    specs = processes(layout, token_file=token_file)
    for spec in specs:
        if not _port_free(spec.port):
            print(
                f"devrun: error: port {spec.port} for the {spec.name} is in use "
                f"(set {spec.name.upper()}_PORT to use another)",
                file=sys.stderr,
            )
            return 2
    password = UserStore(layout.gateway_dir).ensure_admin("admin")

    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # children get the terminal's Ctrl-C themselves
    running: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for spec in specs:
            running[spec.name] = subprocess.Popen(spec.argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
            if spec.health_url is not None and not _wait_healthy(spec.health_url, running[spec.name]):
                if stopping:
                    return 0
                print(f"devrun: error: {spec.name} did not become healthy at {spec.health_url}", file=sys.stderr)
                return 1
        print(_banner(layout, password=password, safe_mode=safe_mode, token_file=token_file), flush=True)
        while not stopping:
            for name, proc in running.items():
                if proc.poll() is not None:
                    print(f"devrun: {name} exited with status {proc.returncode}; stopping the others", file=sys.stderr)
                    return proc.returncode or 1
            time.sleep(0.2)
        return 0
    finally:
        _stop(running)


if __name__ == "__main__":
    raise SystemExit(main())
