"""Diagnostic: what each per-request feature of the engine costs on ``GET /api/jobs?limit=50``.

In one process it builds the real engine app (10,000 finished jobs) several
times, each time with one feature replaced by a no-op, plus a bare aiohttp
app returning the same page as precomputed bytes, and times
``Application._handle`` on fresh requests (routing, the request wrapper,
the handler, building the response; no socket and no response writing).
Rounds alternate between the apps; the table holds each app's fastest
round, as microseconds of wall time per request on an otherwise idle core.

The features replaced: the JSON request log line, the latency histogram,
the bearer check, the ``Cache-Control`` header, and the list handler
(replaced by one returning the cached page's bytes directly). What is left
when all of them are off is the request wrapper itself (request id,
``X-Request-Id``, the error-mapping frame, timing).

It explains ``bench/engine_list.py``'s ratio; it is not a target.

Usage: ``python -m bench.engine_list_breakdown [--rounds 9] [--requests 3000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bench.engine_list import TOKEN, _prefilled_journal

PATH = "/api/jobs?limit=50"
FEATURES = ("log line", "metrics", "bearer check", "Cache-Control", "list handler")


@contextlib.contextmanager
def _without(features: frozenset[str], page: bytes) -> Iterator[None]:
    """Replace the named features by no-ops while an engine app is built (hooks are bound at build time)."""
    import engine_hub.http.app as engine_app
    import engine_hub.http.jobs as routes
    import engine_hub.metrics as metrics
    from engine_hub.http.routes import ROUTES

    # create_app reads these names from its own module when it runs: patch them there.
    patched: list[tuple[Any, str]] = [
        (engine_app, "authorize"),
        (metrics.Metrics, "observe_request"),
        (engine_app, "_no_store"),
        (engine_app, "ROUTES"),
    ]
    saved = [getattr(owner, name) for owner, name in patched]

    async def cached_page(request: web.Request) -> web.Response:
        return routes.json_bytes(page)

    try:
        if "bearer check" in features:
            setattr(engine_app, "authorize", lambda request, access: None)
        if "metrics" in features:
            setattr(metrics.Metrics, "observe_request", lambda self, request, status, seconds: None)
        if "Cache-Control" in features:
            setattr(engine_app, "_no_store", lambda request, response: None)
        if "list handler" in features:
            table = tuple(
                attrs.evolve(row, handler=cached_page) if row.handler is routes.list_jobs else row for row in ROUTES
            )
            setattr(engine_app, "ROUTES", table)
        yield
    finally:
        for (owner, name), value in zip(patched, saved, strict=True):
            setattr(owner, name, value)


async def _apps(data_dir: Path) -> dict[str, tuple[web.Application, bool]]:
    """The apps to time by label, each with whether its request log line is switched off.

    The bare handler serves the page the full engine answers, taken from it once it has started.
    """
    from engine_hub.http.app import create_app
    from engine_hub.settings import Settings

    journal = await _prefilled_journal(10_000)

    async def engine(features: frozenset[str], page: bytes) -> web.Application:
        with _without(features, page):
            app = create_app(Settings(token=TOKEN, ephemeral=True, data_dir=data_dir), journal=journal, environ={})
        await web.AppRunner(app).setup()  # runs start-up (replay, token), freezes the router
        return app

    full = await engine(frozenset(), b"")
    page = bytes((await full._handle(_request(full))).body)  # type: ignore[attr-defined]

    async def bare(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="application/json")

    bare_app = web.Application()
    bare_app.router.add_get("/api/jobs", bare)
    await web.AppRunner(bare_app).setup()
    apps: dict[str, tuple[web.Application, bool]] = {"bare handler": (bare_app, False), "engine": (full, False)}
    for feature in FEATURES:
        apps[f"engine without {feature}"] = (
            await engine(frozenset({feature} - {"log line"}), page),
            feature == "log line",
        )
    apps["engine without all five"] = (await engine(frozenset(FEATURES) - {"log line"}, page), True)
    return apps


def _request(app: web.Application) -> web.Request:
    """A fresh ``GET PATH`` with the admin token, as the benchmark sends it."""
    return make_mocked_request("GET", PATH, headers={"Authorization": f"Bearer {TOKEN}", "Host": "bench"}, app=app)


async def _time(app: web.Application, no_log: bool, requests: int) -> float:
    """Microseconds per request of ``app._handle`` over ``requests`` fresh requests."""
    import shared.web

    batch = [_request(app) for _ in range(requests)]
    log_request = getattr(shared.web, "log_request")
    if no_log:
        setattr(shared.web, "log_request", lambda **_: None)
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]] = app._handle
    try:
        started = time.perf_counter()
        for request in batch:
            response = await handle(request)
            if response.status != 200:
                raise RuntimeError(f"{PATH} answered {response.status}")
        return (time.perf_counter() - started) / requests * 1e6
    finally:
        setattr(shared.web, "log_request", log_request)


async def run(rounds: int, requests: int) -> dict[str, float]:
    """Return each app's fastest round in µs per request."""
    from shared.log import configure_logging, flush_logs

    with tempfile.TemporaryDirectory(prefix="bench-breakdown-") as tmp, open(Path(tmp) / "log", "a") as log:
        configure_logging(json_output=True, stream=log)
        apps = await _apps(Path(tmp))
        best: dict[str, float] = {}
        for i in range(rounds):
            for label, (app, no_log) in list(apps.items()) if i % 2 == 0 else list(apps.items())[::-1]:
                took = await _time(app, no_log, requests)
                best[label] = min(best.get(label, took), took)
        flush_logs()  # before the log file closes
        return best


def main(argv: list[str] | None = None) -> int:
    """Print the Markdown table for ``docs/performance.md``."""
    parser = argparse.ArgumentParser(prog="python -m bench.engine_list_breakdown", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args(argv)
    best = asyncio.run(run(args.rounds, args.requests))
    engine = best["engine"]
    print(f"`Application._handle`, fresh requests, fastest of {args.rounds} rounds of {args.requests:,}:\n")
    print("| app | µs per request | engine minus this |\n|---|---|---|")
    for label, us in best.items():
        print(f"| {label} | {us:.2f} | {engine - us:+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
