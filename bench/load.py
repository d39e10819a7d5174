"""What the benchmarks share: server subprocesses that announce their port, and ``wrk`` runs with server CPU time."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time consumed so far by process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    url: str, headers: Mapping[str, str], *, duration: float, connections: int, pid: int | None = None
) -> dict[str, float]:
    """Run ``wrk -t1 --latency`` against ``url`` with ``headers``.

    Returns requests/s, p50 and p99 (seconds), the non-2xx count, the number
    of requests and, given the server's ``pid``, its CPU microseconds per
    request (steadier than req/s on a busy machine; 0 without a pid).
    """
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - cpu_before if pid is not None else 0.0
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _seconds(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _seconds(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "rps": rps,
        "p50": p50,
        "p99": p99,
        "non2xx": float(bad.group(1)) if bad else 0.0,
        "requests": float(total),
        "cpu_us": cpu / total * 1e6 if total else 0.0,
    }


async def listen(runner: Any) -> None:
    """Serve an aiohttp ``AppRunner`` on a free loopback port, announce ``LISTENING <port>``, wait forever.

    For the bare baselines. Our own processes are served by :func:`serve_product`.
    """
    from aiohttp import web

    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"LISTENING {runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


async def serve_product(app: Any, *, settings: Any = None, after_setup: Any = None) -> None:
    """Serve one of our apps as ``engine-hub serve`` / ``admin-gateway serve`` do, on a free loopback port.

    That is :func:`shared.server.serving` with the connection limits of
    ``settings`` (the defaults without), so a figure includes the connection
    layer operators run. A checkout from before that helper existed (a
    "before" figure) is served by a plain ``AppRunner``. Announces
    ``LISTENING <port>`` and waits forever.
    """
    try:
        from shared.connection_limits import ConnectionLimits
        from shared.server import serving
    except ImportError:
        from aiohttp import web

        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        if after_setup is not None:
            after_setup()
        await listen(runner)
        return
    limits = ConnectionLimits.of(settings) if settings is not None else ConnectionLimits()
    async with serving(app, host="127.0.0.1", port=0, limits=limits, after_setup=after_setup) as server:
        print(f"LISTENING {server.urls[0].rsplit(':', 1)[1]}", flush=True)
        await asyncio.Event().wait()


class Server:
    """A benchmark server subprocess: ``python -m module *args``, which serves through :func:`listen`.

    ``base`` is its root URL and ``url`` that plus ``path``.
    """

    def __init__(self, name: str, module: str, args: list[str], path: str) -> None:
        self.name = name
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("LISTENING "):
            self.proc.kill()
            raise RuntimeError(f"{name} did not start: {line!r}")
        self.base = f"http://127.0.0.1:{int(line.split()[1])}"
        self.url = self.base + path

    def stop(self) -> None:
        """Stop the server process."""
        self.proc.terminate()
        self.proc.wait(timeout=10)
