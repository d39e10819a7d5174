"""``make run``: the engine and the admin gateway together, one command, one Ctrl-C.

What it does, in order:

1. checks that both ports are free and that ``SAFE_MODE`` (if set) is a
   recognised value, so a mistake is one clear line instead of a crash loop;
2. makes sure the engine's admin token exists (``var/engine/token``, 0600;
   or ``$ENGINE_HUB_TOKEN`` if set) and hands the gateway that *file*, so the
   token never appears on a command line;
3. if the gateway has no user at all, creates ``admin`` (super_admin) with a
   random password and prints that password once;
4. runs ``engine-hub serve`` and ``admin-gateway serve`` under honcho (output
   prefixed per process; Ctrl-C or either process ending stops both) and
   prints the panel URL once the gateway answers.

SAFE_MODE stays **on** unless you say otherwise: ``SAFE_MODE=off make run``.
Ports: ``ENGINE_PORT`` (8090) and ``GATEWAY_PORT`` (8080), or the flags.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NoReturn

from admin_gateway.settings import SettingsError, parse_safe_mode
from admin_gateway.users import UserStore
from engine_hub.auth import load_or_create_token_file

BIN = Path(sys.executable).parent


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _fail(message: str) -> NoReturn:
    print(f"make run: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def _announce_when_ready(url: str, lines: list[str], stop: threading.Event) -> None:
    """Print ``lines`` once the gateway answers ``/healthz`` (or give up when ``stop`` is set)."""
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
                if resp.status == 200:
                    print("\n".join(lines), flush=True)
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> None:
    """Start both processes under honcho and block until they stop."""
    parser = argparse.ArgumentParser(prog="make run", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--var", type=Path, default=Path("var"), help="data directory root (default ./var)")
    parser.add_argument("--engine-port", type=int, default=int(os.environ.get("ENGINE_PORT", "8090")))
    parser.add_argument("--gateway-port", type=int, default=int(os.environ.get("GATEWAY_PORT", "8080")))
    args = parser.parse_args(argv)

    try:
        safe_mode = parse_safe_mode(os.environ["SAFE_MODE"]) if "SAFE_MODE" in os.environ else True
    except SettingsError as exc:
        _fail(str(exc))
    for name, port in (("engine", args.engine_port), ("gateway", args.gateway_port)):
        if not _port_free(port):
            _fail(f"port {port} for the {name} is in use (set {name.upper()}_PORT to use another)")

    engine_dir, gateway_dir = args.var / "engine", args.var / "gateway"
    env = dict(os.environ)
    token_args: list[str] = []
    if not env.get("ENGINE_HUB_TOKEN"):
        token_file = engine_dir / "token"
        load_or_create_token_file(token_file)  # the engine would create the same file; do it first
        token_args = ["--engine-token-file", str(token_file)]
    password = UserStore(gateway_dir).ensure_admin("admin")

    engine_cmd = [str(BIN / "engine-hub"), "serve", "--host", "127.0.0.1", "--port", str(args.engine_port),
                  "--data-dir", str(engine_dir)]
    gateway_cmd = [str(BIN / "admin-gateway"), "serve", "--host", "127.0.0.1", "--port", str(args.gateway_port),
                   "--engine-url", f"http://127.0.0.1:{args.engine_port}", "--data-dir", str(gateway_dir),
                   *token_args]

    gateway_url = f"http://127.0.0.1:{args.gateway_port}"
    banner = ["", "=" * 72, f"  Engine Jobs panel: {gateway_url}/admin/engine/jobs"]
    if password is not None:
        banner += [f"  First admin (shown only this once): admin / {password}",
                   f"  Change it: {BIN / 'admin-gateway'} users set-password admin --data-dir {gateway_dir}"]
    banner += [f"  SAFE_MODE is {'ON: no job can be started (SAFE_MODE=off make run to allow runs)' if safe_mode else 'OFF: super admins can start READY jobs'}",
               "  Press Ctrl-C to stop the engine and the gateway.", "=" * 72, ""]

    from honcho.manager import Manager

    manager = Manager()
    # exec: the shell honcho starts becomes the server, so its signals reach the server itself.
    manager.add_process("engine", "exec " + shlex.join(engine_cmd), env=env)
    manager.add_process("gateway", "exec " + shlex.join(gateway_cmd), env=env)
    stop = threading.Event()
    threading.Thread(target=_announce_when_ready, args=(gateway_url, banner, stop), daemon=True).start()
    try:
        manager.loop()
    finally:
        stop.set()
    sys.exit(manager.returncode)


if __name__ == "__main__":
    main()
