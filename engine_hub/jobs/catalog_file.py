"""The catalog file: a TOML file (``--config``) declaring job types and client tokens.

Every declaration is checked when the file is loaded, so a typo stops the engine
at start-up with a message naming the file and the key.

File format (see ``deploy/catalog.example.toml`` for a commented example)::

    include_demo = false            # optional: also offer demo.sleep/echo/fail

    [[types]]
    name = "search.reindex"
    description = "Rebuild one search index"
    command = ["/opt/search/bin/reindex"]   # argv, never a shell
    timeout = 1800                  # seconds
    exclusive = true                # at most one RUNNING job of this type
    plan = ["/opt/search/bin/reindex", "--dry-run"]   # optional: what a run would do
    plan_timeout = 30               # optional: seconds (default 30, at most 120)
    cwd = "/opt/search"             # optional; relative paths are from the file
    env = { SEARCH_URL = "http://127.0.0.1:9200" }   # optional static env
    approval = "required"           # optional: "none" (default) or "required": a RUN opens a
                                    # run request that other people must approve
    approvers = 2                   # optional, with approval = "required": approvals needed
                                    # besides the requester, 1 to 5 (default 1)

    [[types.params]]
    name = "index"
    type = "str"                    # "str" | "int" | "bool"
    required = true
    choices = ["products", "orders"]

    [[clients]]
    name = "legacy-crm"
    scope = "submit"
    token_sha256 = "<sha256 hex of the token>"

Param values become environment variables of the job (``JOB_PARAM_<NAME>``),
so they are kept small and free of NUL bytes.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from engine_hub.jobs.catalog import (
    ADMIN_NAME,
    APPROVAL_POLICIES,
    DEFAULT_PLAN_TIMEOUT,
    MAX_APPROVERS,
    MIN_APPROVERS,
    Catalog,
    ClientToken,
    JobType,
)
from engine_hub.jobs.demo_types import builtin_catalog, demo_types
from engine_hub.jobs.params import PARAM_TYPES, CatalogError, ParamSpec, type_label

__all__ = ["load_catalog", "parse_catalog"]

_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_TOP_KEYS: Final = frozenset({"include_demo", "types", "clients"})
_TYPE_KEYS: Final = frozenset(
    {
        "name",
        "description",
        "command",
        "timeout",
        "exclusive",
        "params",
        "cwd",
        "env",
        "plan",
        "plan_timeout",
        "approval",
        "approvers",
    }
)
_PARAM_KEYS: Final = frozenset({"name", "type", "required", "default", "choices", "min", "max", "description"})
_CLIENT_KEYS: Final = frozenset({"name", "scope", "token_sha256"})


class _Table:
    """A TOML table being read, which remembers its path for error messages."""

    def __init__(self, data: object, where: str, allowed: frozenset[str]) -> None:
        if not isinstance(data, dict):
            raise CatalogError(f"{where}: must be a table; got {type_label(data)}")
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise CatalogError(f"{where}.{unknown[0]}: unknown key; allowed keys: {', '.join(sorted(allowed))}")
        self.data: dict[str, Any] = data
        self.where = where

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def has(self, name: str) -> bool:
        return name in self.data

    def required(self, name: str) -> object:
        if name not in self.data:
            raise CatalogError(f"{self.key(name)}: missing required key")
        return self.data[name]

    def get_str(self, name: str, default: str | None = None) -> str:
        value = self.data.get(name, default) if default is not None else self.required(name)
        if not isinstance(value, str):
            raise CatalogError(f"{self.key(name)}: must be a string; got {type_label(value)}")
        return value

    def get_bool(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise CatalogError(f"{self.key(name)}: must be true or false; got {type_label(value)}")
        return value

    def get_int_or_none(self, name: str) -> int | None:
        value = self.data.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise CatalogError(f"{self.key(name)}: must be an integer; got {type_label(value)}")
        return value

    def get_list(self, name: str) -> list[Any]:
        value = self.data.get(name, [])
        if not isinstance(value, list):
            raise CatalogError(f"{self.key(name)}: must be an array; got {type_label(value)}")
        return value


def _parse_param(data: object, where: str) -> ParamSpec:
    t = _Table(data, where, _PARAM_KEYS)
    kind = t.get_str("type")
    if kind not in PARAM_TYPES:
        raise CatalogError(f"{t.key('type')}: must be one of str, int, bool; got {kind!r}")
    choices = None
    if t.has("choices"):
        choices = tuple(t.get_list("choices"))
    try:
        return ParamSpec(
            name=t.get_str("name"),
            type=kind,  # checked against PARAM_TYPES above
            required=t.get_bool("required", False),
            default=t.data.get("default"),
            choices=choices,
            min=t.get_int_or_none("min"),
            max=t.get_int_or_none("max"),
            description=t.get_str("description", ""),
        )
    except CatalogError as exc:
        if str(exc).startswith(where):
            raise
        raise CatalogError(f"{where}: {exc}") from None


def _argv(t: _Table, key: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise CatalogError(f"{t.key(key)}: must be an array of strings (argv; no shell)")
    return value


def _seconds(t: _Table, key: str, value: object) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CatalogError(f"{t.key(key)}: must be a number of seconds; got {type_label(value)}")
    return value


def _parse_type(data: object, where: str, base: Path) -> JobType:
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        where = f"{where} ({data['name']})"  # name the type in every message about it
    t = _Table(data, where, _TYPE_KEYS)
    name = t.get_str("name")
    command = _argv(t, "command", t.required("command"))
    timeout = _seconds(t, "timeout", t.required("timeout"))
    plan = _argv(t, "plan", t.data["plan"]) if t.has("plan") else []
    if t.has("plan") and not plan:
        # JobType reads an empty plan as "none"; in a file, an empty array is a mistake.
        raise CatalogError(f"{t.key('plan')}: must be a non-empty argv list (or leave the key out)")
    plan_timeout = _seconds(t, "plan_timeout", t.data.get("plan_timeout", DEFAULT_PLAN_TIMEOUT))
    if t.has("plan_timeout") and not plan:
        raise CatalogError(f"{t.key('plan_timeout')}: the type declares no plan")
    cwd = None
    if t.has("cwd"):
        cwd = Path(t.get_str("cwd"))
        if not cwd.is_absolute():
            cwd = base / cwd
    env = t.data.get("env", {})
    if not isinstance(env, dict):
        raise CatalogError(f"{t.key('env')}: must be a table of strings; got {type_label(env)}")
    params = tuple(_parse_param(p, f"{t.where}.params[{i}]") for i, p in enumerate(t.get_list("params")))
    approval = t.get_str("approval", "none")
    if approval not in APPROVAL_POLICIES:
        raise CatalogError(f'{t.key("approval")}: must be "none" or "required"; got {approval!r}')
    approvers = t.get_int_or_none("approvers")
    if approvers is not None and approval != "required":
        raise CatalogError(f'{t.key("approvers")}: only with approval = "required"')
    if approvers is not None and not MIN_APPROVERS <= approvers <= MAX_APPROVERS:
        raise CatalogError(
            f"{t.key('approvers')}: must be from {MIN_APPROVERS} to {MAX_APPROVERS} "
            f"(approvals needed besides the requester); got {approvers}"
        )
    try:
        return JobType(
            name=name,
            description=t.get_str("description", ""),
            command=tuple(command),
            timeout=float(timeout),
            exclusive=t.get_bool("exclusive", False),
            params=params,
            cwd=cwd,
            env=env,
            plan=tuple(plan),
            plan_timeout=float(plan_timeout),
            approval=approval,
            approvers=MIN_APPROVERS if approvers is None else approvers,
        )
    except CatalogError as exc:
        if str(exc).startswith(t.where):
            raise
        raise CatalogError(f"{t.where}: {exc}") from None


def _parse_client(data: object, where: str) -> ClientToken:
    t = _Table(data, where, _CLIENT_KEYS)
    name = t.get_str("name")
    if not _CLIENT_NAME.fullmatch(name):
        raise CatalogError(f"{t.key('name')}: {name!r} must match [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}")
    if name == ADMIN_NAME:
        raise CatalogError(f"{t.key('name')}: {ADMIN_NAME!r} is the admin token's name; choose another")
    scope = t.get_str("scope")
    if scope != "submit":
        raise CatalogError(f'{t.key("scope")}: must be "submit" (create and read only); got {scope!r}')
    digest = t.get_str("token_sha256").strip().lower()
    if not _SHA256_HEX.fullmatch(digest):
        raise CatalogError(
            f"{t.key('token_sha256')}: must be 64 hex digits (sha256 of the token), never the token itself"
        )
    return ClientToken(name=name, scope="submit", token_sha256=digest)


def parse_catalog(data: Mapping[str, Any], *, base: Path) -> Catalog:
    """Build a catalog from parsed TOML ``data``; relative ``cwd`` paths resolve from ``base``.

    Raises :class:`CatalogError` naming the offending key.
    """
    top = _Table(dict(data), "", _TOP_KEYS)
    include_demo = top.get_bool("include_demo", False)
    types: dict[str, JobType] = {}
    if include_demo:
        types.update((t.name, t) for t in demo_types())
    for i, raw in enumerate(top.get_list("types")):
        job_type = _parse_type(raw, f"types[{i}]", base)
        if job_type.name in types:
            origin = "a built-in demo type" if include_demo and job_type.name.startswith("demo.") else "declared twice"
            raise CatalogError(f"types[{i}].name: type {job_type.name!r} is {origin}")
        types[job_type.name] = job_type
    if not types:
        raise CatalogError("no job types: declare at least one [[types]] or set include_demo = true")
    clients: list[ClientToken] = []
    for i, raw in enumerate(top.get_list("clients")):
        client = _parse_client(raw, f"clients[{i}]")
        if any(c.name == client.name for c in clients):
            raise CatalogError(f"clients[{i}].name: client {client.name!r} is declared twice")
        if any(c.token_sha256 == client.token_sha256 for c in clients):
            raise CatalogError(f"clients[{i}].token_sha256: the same token is already given to another client")
        clients.append(client)
    return Catalog(types=types, clients=tuple(clients))


def load_catalog(path: Path | None) -> Catalog:
    """Load the catalog file at ``path``; ``None`` gives :func:`builtin_catalog`.

    Any problem (unreadable file, bad TOML, unknown or missing keys, wrong
    types, contradictory declarations) raises :class:`CatalogError` whose
    message starts with the file name and names the offending key.
    """
    if path is None:
        return builtin_catalog()
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise CatalogError(f"catalog {path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"catalog {path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise CatalogError(f"catalog {path}: invalid TOML: not UTF-8 text") from None
    try:
        return parse_catalog(data, base=path.resolve().parent)
    except CatalogError as exc:
        raise CatalogError(f"catalog {path}: {exc}") from None
