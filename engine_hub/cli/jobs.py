"""``engine-hub jobs ...``: manage the jobs of a running engine over its HTTP API.

Output is a readable table (or the engine's JSON with ``--json``); every
failure is one line on stderr (exit 1 when the engine refused or could not be
reached, 2 for bad arguments).

Everything the engine sends (job names, params, errors, and above all a
job's output) is printed through :func:`shared.text.escape_unprintable`:
control characters, ANSI/OSC sequences and bidi overrides reach the
operator's terminal as visible ``\\uXXXX`` escapes, never as actions.
``jobs logs --raw`` prints a job's output as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine_hub.cli.client import DEFAULT_URL, TIMEOUT, URL_ENV, EngineClient, find_token
from engine_hub.cli.support import PROG, Parser, UsageError, fail
from engine_hub.jobs.catalog import CatalogError, parse_param_text
from engine_hub.settings import DEFAULT_DATA_DIR
from shared.contract import PLAN_ANSWER_WITHIN
from shared.text import escape_unprintable

FINAL = frozenset({"DONE", "FAILED"})


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help=f"engine URL (default ${URL_ENV} or {DEFAULT_URL})")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="engine data directory holding the token file (used when $ENGINE_HUB_TOKEN is unset)",
    )
    parser.add_argument("--actor", default=None, help="name recorded as the acting user (admin token only)")
    parser.add_argument("--json", action="store_true", help="print the engine's JSON instead of a table")


def add_jobs(sub: Any) -> None:
    """Add the ``jobs`` command group to the top-level sub-parsers ``sub``."""
    jobs = sub.add_parser("jobs", help="manage the jobs of a running engine")
    jsub = jobs.add_subparsers(dest="jobs_command", metavar="COMMAND", required=True, parser_class=Parser)
    common = Parser(add_help=False)
    _common(common)

    p = jsub.add_parser("list", parents=[common], help="list jobs, newest first")
    p.add_argument("--status", help="only jobs with this status (READY, RUNNING, DONE, FAILED)")
    p.add_argument("--type", help="only jobs of this type")
    p.add_argument("--limit", type=int, default=None, help="page size (1-1000, default 100)")
    p.add_argument("--before", help="the page after this job id (from the previous page)")
    p.add_argument("--q", help="only jobs whose name contains this text, in any case")
    p.set_defaults(func=_cmd_list)

    p = jsub.add_parser("create", parents=[common], help="create a READY job (it does not run)")
    p.add_argument("type", metavar="TYPE", help="job type (see `engine-hub jobs types`)")
    p.add_argument("--name", help="job name (default: the type)")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="a param value; repeatable")
    p.set_defaults(func=_cmd_create)

    p = jsub.add_parser(
        "plan", parents=[common], help="show what running a READY job would do: its type's plan (admin token)"
    )
    p.add_argument("id", metavar="ID")
    p.add_argument(
        "--raw",
        action="store_true",
        help="print the plan's output as it is, control characters included (default: escaped as \\uXXXX)",
    )
    p.set_defaults(func=_cmd_plan)

    p = jsub.add_parser("run", parents=[common], help="run a READY job (admin token)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--reason", help="why it runs (recorded in its history)")
    p.add_argument("--plan-sha256", help="SHA-256 of the plan you saw (types that need approval)")
    p.set_defaults(func=_cmd_run)

    p = jsub.add_parser(
        "approve", parents=[common], help="approve a job's run request; the last approval starts it (admin token)"
    )
    p.add_argument("id", metavar="ID")
    p.add_argument("--reason", help="why you approve (recorded)")
    p.add_argument("--plan-sha256", help="SHA-256 of the plan you checked (another plan's closes the request)")
    p.set_defaults(func=_cmd_approve)

    p = jsub.add_parser("reject", parents=[common], help="reject a job's run request (admin token)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--reason", required=True, help="why (required; recorded)")
    p.set_defaults(func=_cmd_request_change, verb="reject")

    p = jsub.add_parser("withdraw", parents=[common], help="withdraw your own run request (admin token)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--reason", help="why (recorded)")
    p.set_defaults(func=_cmd_request_change, verb="withdraw")

    p = jsub.add_parser("requests", parents=[common], help="list the jobs whose run request waits for approval")
    p.add_argument("--limit", type=int, default=None, help="at most this many (1-1000, default 100)")
    p.set_defaults(func=_cmd_requests)

    p = jsub.add_parser("cancel", parents=[common], help="stop a RUNNING job (admin token)")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=_cmd_cancel)

    p = jsub.add_parser(
        "copy", parents=[common], help="run again: a new READY job like a finished one (it does not run)"
    )
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=_cmd_copy)

    p = jsub.add_parser("show", parents=[common], help="show one job with its history")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=_cmd_show)

    p = jsub.add_parser("logs", parents=[common], help="print a job's captured output")
    p.add_argument("id", metavar="ID")
    p.add_argument("--after", type=int, default=0, help="only lines after this sequence number")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job has ended")
    p.add_argument(
        "--raw",
        action="store_true",
        help="print the output as it is, control characters included (default: escaped as \\uXXXX)",
    )
    p.set_defaults(func=_cmd_logs)

    p = jsub.add_parser("types", parents=[common], help="list the job types and their params")
    p.set_defaults(func=_cmd_types)


def _client(args: argparse.Namespace, *, timeout: float = TIMEOUT) -> EngineClient:
    url = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    return EngineClient(url, find_token(data_dir=args.data_dir), actor=args.actor, timeout=timeout)


def _safe(text: str) -> str:
    # For multi-line output (log lines, JSON): tabs and line breaks stay, all else unprintable is escaped.
    return escape_unprintable(text, keep="\n\t")


def _json_text(value: Any, *, indent: int | None = 2, raw: bool = False) -> str:
    # Inside a JSON string a \uXXXX escape means the same character, so escaping keeps the JSON valid.
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    return text if raw else _safe(text)


def _print_json(value: Any) -> None:
    print(_json_text(value))


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def _v(value: Any) -> str:
    # One table cell or field: a line break here could forge a row, so it is escaped too.
    return "-" if value is None else escape_unprintable(str(value))


def _cmd_list(args: argparse.Namespace) -> int:
    query: dict[str, str | int] = {}
    for key in ("status", "type", "limit", "before", "q"):
        if getattr(args, key) is not None:
            query[key] = getattr(args, key)
    jobs, headers = _client(args).request("GET", "/api/jobs", query=query)
    if args.json:
        _print_json(jobs)
    else:
        rows = [
            [_v(j[key]) for key in ("id", "type", "name", "status", "createdAt", "runBy", "exitCode")] for j in jobs
        ]
        print(_table(rows, ["ID", "TYPE", "NAME", "STATUS", "CREATED", "RUN BY", "EXIT"]) if rows else "no jobs")
    link = headers.get("Link", "")
    if "before=" in link:
        # On stderr, so that stdout stays a table (or JSON) a script can read.
        cursor = link.split("before=", 1)[1].split(">", 1)[0].split("&", 1)[0]
        same = "".join(
            f" --{key} {getattr(args, key)}" for key in ("status", "type", "limit") if getattr(args, key) is not None
        )
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
    return _run_or_approve(args, "run")


def _cmd_approve(args: argparse.Namespace) -> int:
    return _run_or_approve(args, "approve")


def _run_or_approve(args: argparse.Namespace, verb: str) -> int:
    body = {key: value for key, value in (("reason", args.reason), ("planSha256", args.plan_sha256)) if value}
    answer, _ = _client(args).request("POST", f"/api/jobs/{_id(args.id)}/{verb}", body=body)
    if args.json:
        _print_json(answer)
        return 0
    job = answer["job"]
    request = job["runRequest"]
    if job["status"] == "READY" and request is not None and request["state"] == "open":
        missing = request["required"] - len(request["approvals"])
        print(
            f"job {_v(job['id'])} waits for {missing} more approval(s) by people other than "
            f"{_v(request['by'])}, until {_v(request['expiresAt'])}: {PROG} jobs approve {_v(job['id'])}"
        )
    else:
        print(
            f"job {_v(job['id'])} is {_v(job['status'])} (run by {_v(job['runBy'])}); "
            f"follow it with: {PROG} jobs logs -f {_v(job['id'])}"
        )
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    # A plan may take its whole timeout: wait as long as the engine may take to answer one.
    plan, _ = _client(args, timeout=PLAN_ANSWER_WITHIN).request("POST", f"/api/jobs/{_id(args.id)}/plan", body={})
    if args.json:
        _print_json(plan)
        return 0
    output = plan["output"]
    sys.stdout.write(output if args.raw else _safe(output))
    if output and not output.endswith("\n"):
        print()
    notes = [f"exit code {_v(plan['exitCode'])}", f"sha256 {_v(plan['sha256'])}"]
    if plan["truncated"]:
        notes.append("output cut at 64 KiB")
    print(f"-- plan of job {_v(plan['jobId'])}: {', '.join(notes)}", file=sys.stderr)
    if plan["error"] is not None:
        return fail(f"the plan did not succeed: {_v(plan['error'])}", 1)
    return 0


def _cmd_requests(args: argparse.Namespace) -> int:
    query = {"limit": args.limit} if args.limit is not None else None
    jobs, _ = _client(args).request("GET", "/api/run-requests", query=query)
    if args.json:
        _print_json(jobs)
        return 0
    rows = []
    for job in jobs:
        request = job["runRequest"]
        approvals = f"{len(request['approvals'])}/{request['required']}"
        rows.append(
            [
                _v(job["id"]),
                _v(job["type"]),
                _v(request["by"]),
                _v(request["reason"]),
                approvals,
                _v(request["expiresAt"]),
            ]
        )
    print(_table(rows, ["ID", "TYPE", "REQUESTED BY", "REASON", "APPROVALS", "EXPIRES"]) if rows else "no run requests")
    return 0


def _cmd_request_change(args: argparse.Namespace) -> int:
    body = {"reason": args.reason} if args.reason else {}
    answer, _ = _client(args).request("POST", f"/api/jobs/{_id(args.id)}/{args.verb}", body=body)
    if args.json:
        _print_json(answer)
    else:
        request = answer["job"]["runRequest"]
        print(f"run request of job {_v(answer['jobId'])} is {_v(request['state'])}; the job stays READY")
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    answer, _ = _client(args).request("POST", f"/api/jobs/{_id(args.id)}/cancel", body={})
    if args.json:
        _print_json(answer)
    else:
        print(f"cancellation of job {_v(answer['jobId'])} requested; it ends FAILED once its processes are gone")
    return 0


def _cmd_copy(args: argparse.Namespace) -> int:
    job, _ = _client(args).request("POST", f"/api/jobs/{_id(args.id)}/copy", body={})
    _print_job(job, args.json)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    job, _ = _client(args).request("GET", f"/api/jobs/{_id(args.id)}")
    _print_job(job, args.json)
    return 0


def _print_job(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(job)
        return
    fields = [
        ("id", "id"),
        ("type", "type"),
        ("name", "name"),
        ("status", "status"),
        ("created", "createdAt"),
        ("created by", "createdBy"),
        ("started", "startedAt"),
        ("run by", "runBy"),
        ("run reason", "runReason"),
        ("ended", "endedAt"),
        ("exit code", "exitCode"),
        ("error", "error"),
    ]
    for label, key in fields:
        print(f"{label + ':':<12}{_v(job[key])}")
    # Issue 16's fields, each only when it says something (and absent from older engines' answers).
    for label, key in (("outcome", "outcome"), ("copy of", "copyOf")):
        if job.get(key) is not None:
            print(f"{label + ':':<12}{_v(job[key])}")
    if job.get("copies"):
        print(f"{'copies:':<12}{', '.join(_v(c) for c in job['copies'])}")
    request = job.get("runRequest")
    if request is not None:
        approvals = ", ".join(_v(a["by"]) for a in request["approvals"]) or "none yet"
        print(
            f"{'request:':<12}{_v(request['state'])}, by {_v(request['by'])} ({_v(request['reason'])}), "
            f"approvals {len(request['approvals'])}/{request['required']}: {approvals}; "
            f"expires {_v(request['expiresAt'])}"
        )
    params = ", ".join(f"{_v(k)}={_json_text(v, indent=None)}" for k, v in job["params"].items()) or "-"
    print(f"{'params:':<12}{params}")
    print("history:")
    rows = [[_v(h["at"]), _v(h["status"]), _v(h["by"]), _v(h["reason"])] for h in job["history"]]
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
                print(_json_text(line, indent=None, raw=args.raw))
            else:
                text = f"{line['at']} {line['stream']:<6} {line['text']}"
                print(text if args.raw else _safe(text))
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
                return fail(f"job {job_id} ended FAILED: {_v(job['error'])}", 1)
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
        params = (
            ", ".join(
                f"{p['name']}:{p['type']}" + ("*" if p["required"] else f"={json.dumps(p['default'])}")
                for p in t["params"]
            )
            or "-"
        )
        rows.append(
            [_v(t["name"]), "yes" if t["exclusive"] else "no", f"{t['timeout']:g}s", _v(params), _v(t["description"])]
        )
    print(_table(rows, ["TYPE", "EXCLUSIVE", "TIMEOUT", "PARAMS (*required)", "DESCRIPTION"]))
    return 0


def _id(value: str) -> str:
    # Ids travel in the URL path: refuse what would change the path instead of naming a job.
    if not value or any(c in value for c in "/?#%") or not value.isprintable():
        raise UsageError(f"invalid job id {value!r}")
    return value


#: Functions adding a top-level command group; another group (``audit``) appends itself here.
