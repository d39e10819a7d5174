"""Benchmark: ``GET /api/admin/engine/jobs?limit=50`` through the gateway against a bare aiohttp proxy.

In one run it starts, as separate processes:

- the real engine app (``engine_hub.http.app.create_app``) holding 1,000 jobs;
- the real gateway app (``admin_gateway.http.app.create_app``: session, role
  check, the shared middleware with its JSON request line, hardening
  headers) in front of it, with a signed-in super_admin session;
- a bare aiohttp proxy: one shared ``ClientSession`` forwarding the same
  engine request and returning the engine's bytes, with no session, guards
  or logging;

loads each with ``wrk`` (``-t1 -c16 --latency``), alternating the order over
several rounds and keeping the median, and then measures unloaded latency
(one request at a time) of the gateway, the bare proxy and the engine
itself. It reports:

- gateway throughput relative to the bare proxy (target >= 0.75x);
- the p50 and p99 the gateway adds over a direct engine call.

Usage: ``python -m bench.gateway_list [--duration 5] [--rounds 3]``. Needs
``wrk`` on PATH. The figures go to ``docs/performance.md`` with the command.
"""

from __future__ import annotations

import argparse
import asyncio
import http.cookiejar
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from bench.load import Server, listen, serve_product, wrk

TOKEN = "bench-engine-token-0123456789abcdef"
USER, PASSWORD = "alice", "bench password long enough"
ENGINE_PATH = "/api/jobs?limit=50"
GATEWAY_PATH = "/api/admin/engine/jobs?limit=50"
JOBS = 1_000


# -- server processes ----------------------------------------------------------------


async def _serve_engine(log_path: Path) -> None:
    from engine_hub.http.app import create_app
    from engine_hub.settings import Settings
    from shared.log import configure_logging

    with log_path.open("a") as log_file:
        configure_logging(json_output=True, stream=log_file)
        settings = Settings(token=TOKEN, ephemeral=True, port=0, data_dir=log_path.parent / "engine")
        await serve_product(create_app(settings, environ={}), settings=settings)


async def _serve_gateway(engine_url: str, data_dir: Path, log_path: Path) -> None:
    from admin_gateway.http.app import create_app
    from admin_gateway.settings import Settings
    from shared.log import configure_logging

    with log_path.open("a") as log_file:
        configure_logging(json_output=True, stream=log_file)
        settings = Settings(engine_url=engine_url, engine_token=TOKEN, data_dir=data_dir, safe_mode=False)
        await serve_product(create_app(settings), settings=settings)


async def _serve_bare_proxy(engine_url: str) -> None:
    """One shared ClientSession forwarding the request to the engine and its bytes back; nothing else."""
    import aiohttp
    from aiohttp import web

    session: aiohttp.ClientSession | None = None
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def handler(request: web.Request) -> web.Response:
        assert session is not None
        async with session.get(engine_url.rstrip("/") + "/api/jobs", params=request.query, headers=headers) as resp:
            body = await resp.read()
            return web.Response(body=body, status=resp.status, content_type="application/json")

    async def client_ctx(app: web.Application) -> Any:
        nonlocal session
        session = aiohttp.ClientSession()
        yield
        await session.close()

    app = web.Application()
    app.cleanup_ctx.append(client_ctx)
    app.router.add_get("/api/admin/engine/jobs", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await listen(runner)


# -- setup over HTTP -----------------------------------------------------------------------


def _engine_request(engine: Server, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        engine.base + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _login(gateway: Server) -> str:
    """Sign in through the real login form; return the session cookie header value."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(gateway.base + "/login", timeout=30) as resp:
        token = re.search(r'name="csrf_token" value="([^"]+)"', resp.read().decode())
    assert token is not None
    form = urllib.parse.urlencode({"username": USER, "password": PASSWORD, "csrf_token": token.group(1)}).encode()
    with opener.open(urllib.request.Request(gateway.base + "/login", data=form, method="POST"), timeout=30) as resp:
        assert resp.status == 200  # followed the 303 to the panel
    cookies = [f"{c.name}={c.value}" for c in jar]
    assert cookies, "no session cookie after login"
    return "; ".join(cookies)


# -- load ---------------------------------------------------------------------------------


async def _sequential(targets: dict[str, tuple[str, dict[str, str]]], count: int) -> dict[str, list[float]]:
    """Time ``count`` one-at-a-time requests per target, interleaved so drift hits all alike."""
    import aiohttp

    times: dict[str, list[float]] = {name: [] for name in targets}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        for _ in range(50):  # warm-up: connections, caches
            for url, headers in targets.values():
                async with session.get(url, headers=headers) as resp:
                    await resp.read()
        for _ in range(count):
            for name, (url, headers) in targets.items():
                started = time.perf_counter()
                async with session.get(url, headers=headers) as resp:
                    await resp.read()
                    assert resp.status == 200, name
                times[name].append(time.perf_counter() - started)
    return times


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(*, duration: float, rounds: int, connections: int, sequential: int) -> dict[str, Any]:
    """Start the servers, load them in alternating rounds, then time unloaded requests."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-list-"))
    servers: list[Server] = []
    try:
        from admin_gateway.auth.users import UserStore

        UserStore(tmp / "gateway").add(USER, "super_admin", PASSWORD)
        engine = Server(
            "engine", "bench.gateway_list", ["--serve-engine", "--log", str(tmp / "engine.log")], ENGINE_PATH
        )
        servers.append(engine)
        for i in range(JOBS):
            _engine_request(engine, "POST", "/api/jobs", {"type": "demo.echo", "name": f"nightly report {i}"})
        gateway = Server(
            "gateway",
            "bench.gateway_list",
            ["--serve-gateway", engine.base, "--data-dir", str(tmp / "gateway"), "--log", str(tmp / "gateway.log")],
            GATEWAY_PATH,
        )
        servers.append(gateway)
        bare = Server("bare proxy", "bench.gateway_list", ["--serve-bare-proxy", engine.base], GATEWAY_PATH)
        servers.append(bare)
        cookie = _login(gateway)
        targets = {
            "bare proxy": (bare.url, {}),
            "gateway": (gateway.url, {"Cookie": cookie}),
            "engine direct": (engine.url, {"Authorization": f"Bearer {TOKEN}"}),
        }
        # The process whose CPU a target's requests cost (besides the engine's, which all share).
        pids = {"bare proxy": bare.proc.pid, "gateway": gateway.proc.pid, "engine direct": engine.proc.pid}
        page = json.loads(
            urllib.request.urlopen(urllib.request.Request(gateway.url, headers={"Cookie": cookie}), timeout=30).read()
        )
        assert len(page["jobs"]) == 50 and page["engine"] == "up", page.get("warning")
        for url, headers in targets.values():  # warm up
            wrk(url, headers, duration=1, connections=connections)
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        order = list(targets)
        for i in range(rounds):
            for name in order if i % 2 == 0 else order[::-1]:
                url, headers = targets[name]
                result = wrk(url, headers, duration=duration, connections=connections, pid=pids[name])
                if result["non2xx"]:
                    raise RuntimeError(f"{name}: {result['non2xx']:.0f} non-2xx answers")
                samples[name].append(result)
                print(
                    f"round {i + 1} {name}: {result['rps']:,.0f} req/s p50 {result['p50'] * 1e3:.2f} ms "
                    f"p99 {result['p99'] * 1e3:.2f} ms",
                    file=sys.stderr,
                )
        loaded = {
            name: {k: statistics.median(s[k] for s in runs) for k in ("rps", "p50", "p99", "cpu_us")}
            for name, runs in samples.items()
        }
        # Gateway / bare proxy per round: the two ran back to back, so drift in the machine's
        # load (other work on a shared box) hits both sides of each ratio alike.
        paired = statistics.median(
            g["rps"] / b["rps"] for g, b in zip(samples["gateway"], samples["bare proxy"], strict=True)
        )
        times = asyncio.run(_sequential(targets, sequential))
        unloaded = {name: {"p50": _pct(t, 0.50), "p99": _pct(t, 0.99)} for name, t in times.items()}
        log_lines = sum(1 for _ in (tmp / "gateway.log").open())
        print(f"gateway wrote {log_lines:,} JSON log lines", file=sys.stderr)
        return {"loaded": loaded, "unloaded": unloaded, "paired_ratio": paired}
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def report(figures: dict[str, Any], *, duration: float, rounds: int, connections: int, sequential: int) -> str:
    """Return the results as Markdown: the loaded table, the unloaded table and the target check."""
    loaded, unloaded = figures["loaded"], figures["unloaded"]
    lines = [
        f"`wrk -t1 -c{connections} -d{duration:g}s --latency`, median of {rounds} rounds, "
        f"`GET {GATEWAY_PATH}` (engine: `GET {ENGINE_PATH}`), {JOBS:,} jobs in the engine:",
        "",
        "| server | req/s | p50 | p99 | its own CPU per request |",
        "|---|---|---|---|---|",
    ]
    for name in ("bare proxy", "gateway", "engine direct"):
        f = loaded[name]
        lines.append(
            f"| {name} | {f['rps']:,.0f} | {f['p50'] * 1e3:.2f} ms | {f['p99'] * 1e3:.2f} ms | {f['cpu_us']:.0f} µs |"
        )
    ratio = loaded["gateway"]["rps"] / loaded["bare proxy"]["rps"]
    paired = figures["paired_ratio"]
    lines += [
        "",
        f"Gateway / bare proxy throughput: **{ratio:.2f}x** (medians), **{paired:.2f}x** (median of "
        f"the per-round ratios); target >= 0.75x: {'met' if min(ratio, paired) >= 0.75 else 'NOT met'}.",
        "",
        f"Unloaded, {sequential:,} sequential requests each (interleaved):",
        "",
        "| target | p50 | p99 |",
        "|---|---|---|",
    ]
    for name in ("engine direct", "bare proxy", "gateway"):
        f = unloaded[name]
        lines.append(f"| {name} | {f['p50'] * 1e3:.3f} ms | {f['p99'] * 1e3:.3f} ms |")
    added50 = (unloaded["gateway"]["p50"] - unloaded["engine direct"]["p50"]) * 1e3
    added99 = (unloaded["gateway"]["p99"] - unloaded["engine direct"]["p99"]) * 1e3
    proxy50 = (unloaded["bare proxy"]["p50"] - unloaded["engine direct"]["p50"]) * 1e3
    lines += [
        "",
        f"The gateway adds **{added50:.3f} ms at p50** and **{added99:.3f} ms at p99** over a direct "
        f"engine call (the bare proxy adds {proxy50:.3f} ms at p50).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: run the benchmark (exit status 0 once figures are printed), or serve one of its servers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="print raw figures as JSON too")
    parser.add_argument("--serve-engine", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-gateway", metavar="ENGINE_URL", help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare-proxy", metavar="ENGINE_URL", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_engine:
        asyncio.run(_serve_engine(args.log))
    elif args.serve_gateway:
        asyncio.run(_serve_gateway(args.serve_gateway, args.data_dir, args.log))
    elif args.serve_bare_proxy:
        asyncio.run(_serve_bare_proxy(args.serve_bare_proxy))
    else:
        figures = run(
            duration=args.duration, rounds=args.rounds, connections=args.connections, sequential=args.sequential
        )
        if args.json:
            print(json.dumps(figures, indent=2))
        print(
            report(
                figures,
                duration=args.duration,
                rounds=args.rounds,
                connections=args.connections,
                sequential=args.sequential,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
