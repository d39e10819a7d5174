"""Benchmark: a signed-in super_admin creating jobs while an anonymous login flood runs.

In one run it starts, as separate processes, the real engine (the one of
``bench.gateway_list``) and the real gateway in front of it, with failed-login
limits raised so far that every flood attempt reaches the password check (a
flood the throttle stops would prove nothing about hashing). Then:

1. ``--creates`` signed-in ``POST /api/admin/engine/jobs``, one at a time, with
   no flood (the baseline);
2. ``--flooders`` clients (in a process of their own) each sending
   wrong-password logins (every one a new user name, JSON) back to back,
   and meanwhile the same creates again.

It reports p50/p99/max of the creates in both phases, and what the flood
got (401: checked, 429: refused at once). Target: p99 < 250 ms under the
flood. Every flooder sends from 127.0.0.1, so the flood is one address to the
gateway: it meets that address's share of password-check slots
(``login_hash_per_address``) and its refusals are coalesced into a few audit
records per window.

Usage: ``python -m bench.login_flood [--flooders 100] [--creates 200]``.
Runs against older gateways too (``--gateway-settings`` takes only settings
they know), which is how the before figure in ``docs/performance.md`` was made.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.gateway_list import PASSWORD, TOKEN, USER, _login, _pct
from bench.load import Server, serve_product

#: A login limit high enough that the throttle never refuses a flood attempt.
UNTHROTTLED = 10**9
CREATE_PATH = "/api/admin/engine/jobs"


async def _serve_gateway(engine_url: str, data_dir: Path, log_path: Path, extra: dict[str, Any]) -> None:
    from admin_gateway.http.app import create_app
    from admin_gateway.settings import Settings
    from shared.log import configure_logging

    with log_path.open("a") as log_file:
        configure_logging(json_output=True, stream=log_file)
        settings = Settings(
            engine_url=engine_url,
            engine_token=TOKEN,
            data_dir=data_dir,
            safe_mode=False,
            login_limit_per_hour=UNTHROTTLED,
            login_limit_per_address_per_hour=UNTHROTTLED,
            **extra,
        )
        await serve_product(create_app(settings), settings=settings)


async def _creates(base: str, cookie: str, count: int, stop_after: float) -> list[float]:
    """Time up to ``count`` sequential creates (stopping after ``stop_after`` seconds)."""
    import aiohttp

    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=600)
    ) as session:
        async with session.get(base + "/api/admin/config", headers={"Cookie": cookie}) as resp:
            csrf = (await resp.json())["csrfToken"]
        headers = {"Cookie": cookie, "X-CSRF-Token": csrf}
        times: list[float] = []
        deadline = time.monotonic() + stop_after
        while len(times) < count and time.monotonic() < deadline:
            started = time.perf_counter()
            async with session.post(base + CREATE_PATH, json={"type": "demo.echo"}, headers=headers) as resp:
                await resp.read()
                if resp.status != 201:
                    raise RuntimeError(f"create answered {resp.status}")
            times.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
        return times


async def _flooder(base: str, index: int, stop: asyncio.Event, statuses: collections.Counter[int]) -> None:
    import re

    import aiohttp

    # unsafe: keep the form's cookies for the gateway's IP address too.
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=600)
    ) as session:
        async with session.get(base + "/login") as resp:
            token = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())
        assert token is not None
        n = 0
        while not stop.is_set():
            n += 1
            form = {"username": f"flood{index}x{n}", "password": "wrong password!!", "csrf_token": token.group(1)}
            async with session.post(base + "/login", data=form, headers={"Accept": "application/json"}) as resp:
                await resp.read()
                statuses[resp.status] += 1


async def _flood(base: str, flooders: int) -> None:
    """Flood until standard input closes, then print the answers' status counts as JSON."""
    stop = asyncio.Event()
    statuses: collections.Counter[int] = collections.Counter()
    tasks = [asyncio.create_task(_flooder(base, i, stop, statuses)) for i in range(flooders)]
    await asyncio.to_thread(sys.stdin.read)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(statuses), flush=True)


def _phases(base: str, cookie: str, *, flooders: int, creates: int, max_seconds: float) -> dict[str, Any]:
    baseline = asyncio.run(_creates(base, cookie, creates, max_seconds))
    # The flood runs in its own process, so that its clients do not delay the timed ones.
    flood = subprocess.Popen(
        [sys.executable, "-m", "bench.login_flood", "--flood", base, "--flooders", str(flooders)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert flood.stdin is not None
    started = time.monotonic()
    try:
        time.sleep(2.0)  # let the flood fill the password checks' queue first
        flooded = asyncio.run(_creates(base, cookie, creates, max_seconds))
    finally:
        out, _ = flood.communicate("", timeout=600)
    statuses = {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}
    return {"baseline": baseline, "flooded": flooded, "statuses": statuses, "flood_seconds": time.monotonic() - started}


def run(*, flooders: int, creates: int, max_seconds: float, gateway_settings: dict[str, Any]) -> dict[str, Any]:
    """Start engine and gateway, time creates without and with the flood; return the raw figures."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-login-flood-"))
    servers: list[Server] = []
    try:
        from admin_gateway.auth.users import UserStore

        UserStore(tmp / "gateway").add(USER, "super_admin", PASSWORD)
        engine = Server("engine", "bench.gateway_list", ["--serve-engine", "--log", str(tmp / "engine.log")], "/")
        servers.append(engine)
        gateway = Server(
            "gateway",
            "bench.login_flood",
            [
                "--serve-gateway",
                engine.base,
                "--data-dir",
                str(tmp / "gateway"),
                "--log",
                str(tmp / "gateway.log"),
                "--gateway-settings",
                json.dumps(gateway_settings),
            ],
            "/",
        )
        servers.append(gateway)
        cookie = _login(gateway)
        return _phases(gateway.base, cookie, flooders=flooders, creates=creates, max_seconds=max_seconds)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def report(figures: dict[str, Any], *, flooders: int) -> str:
    """Return the results as Markdown."""
    lines = ["| creates | n | p50 | p99 | max |", "|---|---|---|---|---|"]
    for name in ("baseline", "flooded"):
        t = figures[name]
        label = "no flood" if name == "baseline" else f"{flooders} flooders"
        lines.append(
            f"| {label} | {len(t)} | {_pct(t, 0.5) * 1e3:.1f} ms | {_pct(t, 0.99) * 1e3:.1f} ms "
            f"| {max(t) * 1e3:.1f} ms |"
        )
    statuses = figures["statuses"]
    total = sum(statuses.values())
    rate = total / figures["flood_seconds"]
    p99 = _pct(figures["flooded"], 0.99)
    lines += [
        "",
        f"Flood: {total:,} attempts in {figures['flood_seconds']:.1f} s ({rate:,.0f}/s); answers "
        + ", ".join(f"{k}: {v:,}" for k, v in sorted(statuses.items()))
        + ".",
        f"Create p99 under the flood: **{p99 * 1e3:.1f} ms**; target < 250 ms: {'met' if p99 < 0.25 else 'NOT met'}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: run the benchmark (exit status 0 once figures are printed), or serve its gateway."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--flooders", type=int, default=100)
    parser.add_argument("--creates", type=int, default=200)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per phase")
    parser.add_argument("--gateway-settings", default="{}", help="JSON: extra gateway settings")
    parser.add_argument("--json", action="store_true", help="print raw figures as JSON too")
    parser.add_argument("--serve-gateway", metavar="ENGINE_URL", help=argparse.SUPPRESS)
    parser.add_argument("--flood", metavar="GATEWAY_URL", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    extra = json.loads(args.gateway_settings)
    if args.serve_gateway:
        asyncio.run(_serve_gateway(args.serve_gateway, args.data_dir, args.log, extra))
        return 0
    if args.flood:
        asyncio.run(_flood(args.flood, args.flooders))
        return 0
    import admin_gateway

    print(f"gateway code: {Path(admin_gateway.__file__).parent}", file=sys.stderr)
    figures = run(flooders=args.flooders, creates=args.creates, max_seconds=args.max_seconds, gateway_settings=extra)
    if args.json:
        print(json.dumps(figures))
    print(report(figures, flooders=args.flooders))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
