"""The ``engine-hub`` command: ``serve`` the engine, or manage ``jobs`` of a running one.

Every failure prints exactly one line on stderr (``engine-hub: error: ...``)
and exits non-zero: 2 for bad arguments or configuration, 1 for anything
that went wrong while talking to or running the engine.

Command groups are registered from :data:`COMMAND_GROUPS`, so another group
(``audit``) plugs in with one function that adds its sub-parser.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from engine_hub.catalog import CatalogError, parse_param_text
from engine_hub.client import DEFAULT_URL, URL_ENV, ClientError, EngineClient, find_token
from engine_hub.settings import DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT, Settings

# The server's imports (aiohttp, structlog) are deferred to ``serve``: client commands
# start in a fraction of the time without them.

PROG = "engine-hub"
PORT_ENV = "ENGINE_PORT"
FINAL = frozenset({"DONE", "FAILED"})


class UsageError(Exception):
    """Bad command-line input; the message is the one line to print."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"{PROG}: error: {where}{message} (see --help)\n")


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


# -- serve ---------------------------------------------------------------------------

def _parse_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"invalid port {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535; got {port}")
    return port


def _default_port() -> int | None:
    raw = os.environ.get(PORT_ENV)
    if not raw:
        return None
    try:
        return _parse_port(raw)
    except ValueError as exc:
        raise UsageError(f"{PORT_ENV}: {exc}") from None


def _port(text: str) -> int:
    try:
        return _parse_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 3600; got {text}")
    return value


def _add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the engine", description="Run the engine until SIGINT/SIGTERM.")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=_port, default=None,
                   help=f"port to listen on (default ${PORT_ENV} or {DEFAULT_PORT})")
    p.add_argument("--config", type=Path, default=None, help="job type catalog (TOML); default: the demo types")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help=f"state directory: token file, journal (default {DEFAULT_DATA_DIR})")
    p.add_argument("--ephemeral", action="store_true", help="keep job state in memory only")
    p.add_argument("--kill-grace", type=_positive_float, default=5.0,
                   help="seconds between SIGTERM and SIGKILL when a run is stopped (default 5)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from engine_hub.errors import ConfigError
    from shared.log import configure_logging

    port = args.port if args.port is not None else _default_port()
    if port is None:
        port = DEFAULT_PORT
    settings = Settings(host=args.host, port=port, data_dir=args.data_dir, config=args.config,
                        ephemeral=args.ephemeral, kill_grace=args.kill_grace, log_level=args.log_level)
    configure_logging(level=settings.log_level)
    try:
        asyncio.run(serve(settings))
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except OSError as exc:
        return _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", 1)
    return 0


async def serve(settings: Settings) -> None:
    """Run the engine for ``settings`` until SIGINT or SIGTERM, then stop every run and exit.

    Raises :class:`ConfigError` for a configuration the engine refuses and
    ``OSError`` when the address cannot be bound.
    """
    import structlog
    from aiohttp import web

    from engine_hub.app import create_app

    log = structlog.get_logger("engine.cli")
    runner = web.AppRunner(create_app(settings), access_log=None, handle_signals=False)
    await runner.setup()
    settle_heap()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        for address in runner.addresses:
            host, port = address[0], address[1]
            shown = f"[{host}]" if ":" in host else host
            log.info("engine_listening", url=f"http://{shown}:{port}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("engine_stopping")
    finally:
        await runner.cleanup()


def settle_heap() -> None:
    """Move everything alive after start-up (the replayed store) out of the cyclic GC's reach.

    A full collection walks every tracked object; with 100,000 jobs in memory
    that is a pause of tens of milliseconds at random requests' expense.
    Frozen objects are never scanned; objects created later are collected as usual.
    """
    gc.collect()
    gc.freeze()


# -- jobs ------------------------------------------------------------------------------

def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help=f"engine URL (default ${URL_ENV} or {DEFAULT_URL})")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="engine data directory holding the token file (used when $ENGINE_HUB_TOKEN is unset)")
    parser.add_argument("--actor", default=None, help="name recorded as the acting user (admin token only)")
    parser.add_argument("--json", action="store_true", help="print the engine's JSON instead of a table")


def _add_jobs(sub: Any) -> None:
    jobs = sub.add_parser("jobs", help="manage the jobs of a running engine")
    jsub = jobs.add_subparsers(dest="jobs_command", metavar="COMMAND", required=True, parser_class=_Parser)
    common = _Parser(add_help=False)
    _common(common)

    p = jsub.add_parser("list", parents=[common], help="list jobs, newest first")
    p.add_argument("--status", help="only jobs with this status (READY, RUNNING, DONE, FAILED)")
    p.add_argument("--type", help="only jobs of this type")
    p.add_argument("--limit", type=int, default=None, help="page size (1-1000, default 100)")
    p.add_argument("--before", help="the page after this job id (from the previous page)")
    p.set_defaults(func=_cmd_list)

    p = jsub.add_parser("create", parents=[common], help="create a READY job (it does not run)")
    p.add_argument("type", metavar="TYPE", help="job type (see `engine-hub jobs types`)")
    p.add_argument("--name", help="job name (default: the type)")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="a param value; repeatable")
    p.set_defaults(func=_cmd_create)

    p = jsub.add_parser("run", parents=[common], help="run a READY job (admin token)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--reason", help="why it runs (recorded in its history)")
    p.set_defaults(func=_cmd_run)

    p = jsub.add_parser("cancel", parents=[common], help="stop a RUNNING job (admin token)")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=_cmd_cancel)

    p = jsub.add_parser("show", parents=[common], help="show one job with its history")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=_cmd_show)

    p = jsub.add_parser("logs", parents=[common], help="print a job's captured output")
    p.add_argument("id", metavar="ID")
    p.add_argument("--after", type=int, default=0, help="only lines after this sequence number")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job has ended")
    p.set_defaults(func=_cmd_logs)

    p = jsub.add_parser("types", parents=[common], help="list the job types and their params")
    p.set_defaults(func=_cmd_types)


def _client(args: argparse.Namespace) -> EngineClient:
    url = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    return EngineClient(url, find_token(data_dir=args.data_dir), actor=args.actor)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def _v(value: Any) -> str:
    return "-" if value is None else str(value)


def _cmd_list(args: argparse.Namespace) -> int:
    query: dict[str, str | int] = {}
    for key in ("status", "type", "limit", "before"):
        if getattr(args, key) is not None:
            query[key] = getattr(args, key)
    jobs, headers = _client(args).request("GET", "/api/jobs", query=query)
    if args.json:
        _print_json(jobs)
    else:
        rows = [[j["id"], j["type"], j["name"], j["status"], _v(j["createdAt"]), _v(j["runBy"]), _v(j["exitCode"])]
                for j in jobs]
        print(_table(rows, ["ID", "TYPE", "NAME", "STATUS", "CREATED", "RUN BY", "EXIT"]) if rows else "no jobs")
    link = headers.get("Link", "")
    if "before=" in link:
        # On stderr, so that stdout stays a table (or JSON) a script can read.
        cursor = link.split("before=", 1)[1].split(">", 1)[0].split("&", 1)[0]
        same = "".join(f" --{key} {getattr(args, key)}" for key in ("status", "type", "limit")
                       if getattr(args, key) is not None)
        print(f"more: {PROG} jobs list{same} --before {cursor}", file=sys.stderr)
    return 0


def _param_values(client: EngineClient, type_name: str, pairs: Sequence[str]) -> dict[str, Any]:
    raw: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--param must be KEY=VALUE; got {pair!r}")
        if key in raw:
            raise UsageError(f"--param {key} is given twice")
        raw[key] = value
    if not raw:
        return {}
    types, _ = client.request("GET", "/api/types")
    declared = {p["name"]: p["type"] for t in types if t["name"] == type_name for p in t["params"]}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        # Unknown types and params go as text: the engine's answer says what is allowed.
        kind = declared.get(key, "str")
        try:
            out[key] = parse_param_text(kind, value, name=key)
        except CatalogError as exc:
            raise UsageError(str(exc)) from None
    return out


def _cmd_create(args: argparse.Namespace) -> int:
    client = _client(args)
    body: dict[str, Any] = {"type": args.type, "params": _param_values(client, args.type, args.param)}
    if args.name is not None:
        body["name"] = args.name
    job, _ = client.request("POST", "/api/jobs", body=body)
    _print_job(job, args.json)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    body = {"reason": args.reason} if args.reason is not None else {}
    answer, _ = _client(args).request("POST", f"/api/jobs/{_id(args.id)}/run", body=body)
    if args.json:
        _print_json(answer)
    else:
        job = answer["job"]
        print(f"job {job['id']} is {job['status']} (run by {job['runBy']}); "
              f"follow it with: {PROG} jobs logs -f {job['id']}")
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    answer, _ = _client(args).request("POST", f"/api/jobs/{_id(args.id)}/cancel", body={})
    if args.json:
        _print_json(answer)
    else:
        print(f"cancellation of job {answer['jobId']} requested; it ends FAILED once its processes are gone")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    job, _ = _client(args).request("GET", f"/api/jobs/{_id(args.id)}")
    _print_job(job, args.json)
    return 0


def _print_job(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(job)
        return
    fields = [("id", "id"), ("type", "type"), ("name", "name"), ("status", "status"),
              ("created", "createdAt"), ("created by", "createdBy"), ("started", "startedAt"),
              ("run by", "runBy"), ("run reason", "runReason"), ("ended", "endedAt"),
              ("exit code", "exitCode"), ("error", "error")]
    for label, key in fields:
        print(f"{label + ':':<12}{_v(job[key])}")
    params = ", ".join(f"{k}={json.dumps(v)}" for k, v in job["params"].items()) or "-"
    print(f"{'params:':<12}{params}")
    print("history:")
    rows = [[h["at"], h["status"], h["by"], _v(h["reason"])] for h in job["history"]]
    print("  " + _table(rows, ["AT", "STATUS", "BY", "REASON"]).replace("\n", "\n  "))


def _cmd_logs(args: argparse.Namespace) -> int:
    client = _client(args)
    job_id = _id(args.id)
    if args.after < 0:
        raise UsageError("--after must be 0 or more")

    def pump(after: int) -> tuple[int, bool]:
        page, _ = client.request("GET", f"/api/jobs/{job_id}/logs", query={"after": after})
        for line in page["lines"]:
            if args.json:
                print(json.dumps(line, ensure_ascii=False))
            else:
                print(f"{line['at']} {line['stream']:<6} {line['text']}")
        sys.stdout.flush()
        return int(page["next"]), bool(page["lines"])

    after, got = pump(args.after)
    while args.follow:
        if not got:
            job, _ = client.request("GET", f"/api/jobs/{job_id}")
            if job["status"] in FINAL:
                # Drain what was written between the last read and the end of the run.
                after, got = pump(after)
                if got:
                    continue
                if job["status"] == "DONE":
                    return 0
                return _fail(f"job {job_id} ended FAILED: {job['error']}", 1)
            time.sleep(1.0)
        after, got = pump(after)
    return 0


def _cmd_types(args: argparse.Namespace) -> int:
    types, _ = _client(args).request("GET", "/api/types")
    if args.json:
        _print_json(types)
        return 0
    rows = []
    for t in types:
        params = ", ".join(f"{p['name']}:{p['type']}" + ("*" if p["required"] else f"={json.dumps(p['default'])}")
                           for p in t["params"]) or "-"
        rows.append([t["name"], "yes" if t["exclusive"] else "no", f"{t['timeout']:g}s", params, t["description"]])
    print(_table(rows, ["TYPE", "EXCLUSIVE", "TIMEOUT", "PARAMS (*required)", "DESCRIPTION"]))
    return 0


def _id(value: str) -> str:
    # Ids travel in the URL path: refuse what would change the path instead of naming a job.
    if not value or any(c in value for c in "/?#%") or not value.isprintable():
        raise UsageError(f"invalid job id {value!r}")
    return value


#: Functions adding a top-level command group; another group (``audit``) appends itself here.
COMMAND_GROUPS: list[Callable[[Any], None]] = [_add_serve, _add_jobs]


def build_parser() -> argparse.ArgumentParser:
    """Return the full ``engine-hub`` argument parser."""
    parser = _Parser(prog=PROG, description="Engine Jobs: run operational jobs manually, guarded and auditably.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for add in COMMAND_GROUPS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 failure, 2 bad usage or configuration)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except UsageError as exc:
        return _fail(str(exc), 2)
    except ClientError as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130
    return status
