"""The job type catalog: which jobs exist, how they run, which params they take.

A catalog is loaded once at start-up from a TOML file (``--config``) or is the
built-in demo catalog. Every declaration is checked when the file is loaded, so
a typo stops the engine at start-up with a message naming the file and the key,
instead of surprising an operator at 3 a.m. when they click "run".

File format (see ``deploy/catalog.example.toml`` for a commented example)::

    include_demo = false            # optional: also offer demo.sleep/echo/fail

    [[types]]
    name = "search.reindex"
    description = "Rebuild one search index"
    command = ["/opt/search/bin/reindex"]   # argv, never a shell
    timeout = 1800                  # seconds
    exclusive = true                # at most one RUNNING job of this type
    cwd = "/opt/search"             # optional; relative paths are from the file
    env = { SEARCH_URL = "http://127.0.0.1:9200" }   # optional static env

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

import hashlib
import hmac
import math
import re
import sys
import tomllib
import types as pytypes
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from engine_hub.jobs.params import (
    MAX_STR_PARAM,
    PARAM_TYPES,
    CatalogError,
    ParamSpec,
    ParamType,
    ParamValue,
    parse_param_text,
    type_label,
)

#: Largest timeout a type may declare (30 days): anything longer is a typo.
MAX_TIMEOUT: Final = 30 * 24 * 3600.0
#: The name the admin token acts under; a client token may not borrow it.
ADMIN_NAME: Final = "admin"

_TYPE_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

__all__ = [
    "ADMIN_NAME",
    "MAX_STR_PARAM",
    "MAX_TIMEOUT",
    "PARAM_TYPES",
    "Catalog",
    "CatalogError",
    "ClientToken",
    "JobType",
    "ParamSpec",
    "ParamType",
    "ParamValue",
    "builtin_catalog",
    "demo_types",
    "hash_token",
    "load_catalog",
    "parse_catalog",
    "parse_param_text",
]


def _freeze_env(value: Mapping[str, str]) -> Mapping[str, str]:
    return pytypes.MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class JobType:
    """One kind of job: what it runs, for how long at most, and which params it takes.

    ``command`` is an argv list run directly (never through a shell); a relative
    ``command[0]`` containing a slash is found relative to ``cwd``. ``timeout``
    is in seconds. ``exclusive`` allows at most one RUNNING job of the type.
    ``env`` holds static environment variables set for every run (not served by
    :meth:`to_json`, as they may hold credentials). Construction raises
    :class:`CatalogError` for an invalid declaration.
    """

    name: str
    description: str = ""
    command: tuple[str, ...]
    timeout: float
    exclusive: bool = False
    params: tuple[ParamSpec, ...] = ()
    cwd: Path | None = None
    env: Mapping[str, str] = attrs.field(factory=dict, converter=_freeze_env)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not _TYPE_NAME.fullmatch(self.name):
            raise CatalogError(f"type name {self.name!r} must match [a-z][a-z0-9_.-]{{0,63}}")
        if not self.command or not self.command[0]:
            raise CatalogError(f"type {self.name!r}: command must be a non-empty argv list")
        if any("\x00" in arg for arg in self.command):
            raise CatalogError(f"type {self.name!r}: command must not contain NUL characters")
        if not (
            isinstance(self.timeout, int | float)
            and not isinstance(self.timeout, bool)
            and math.isfinite(self.timeout)
            and 0 < self.timeout <= MAX_TIMEOUT
        ):
            raise CatalogError(
                f"type {self.name!r}: timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}"
            )
        seen: set[str] = set()
        for spec in self.params:
            if spec.name in seen:
                raise CatalogError(f"type {self.name!r}: param {spec.name!r} is declared twice")
            seen.add(spec.name)
        for key, val in self.env.items():
            if not _ENV_NAME.fullmatch(key):
                raise CatalogError(f"type {self.name!r}: env name {key!r} must match [A-Z_][A-Z0-9_]*")
            if key.startswith("JOB_") or key.startswith("ENGINE_HUB_"):
                raise CatalogError(f"type {self.name!r}: env name {key!r} is reserved (JOB_*, ENGINE_HUB_*)")
            if not isinstance(val, str) or "\x00" in val:
                raise CatalogError(f"type {self.name!r}: env {key!r} must be a string without NUL")

    def param(self, name: str) -> ParamSpec | None:
        """Return the declaration of param ``name``, or ``None``."""
        for spec in self.params:
            if spec.name == name:
                return spec
        return None

    def validate_params(self, raw: object) -> dict[str, Any]:
        """Check job params against the declarations and fill in defaults.

        ``raw`` must be a JSON object (a ``dict`` with str keys); ``None``
        means ``{}``. Values must have exactly the declared JSON type: ``true``
        is not an int and ``"5"`` is not an int (the API never converts; the
        CLI converts with :meth:`ParamSpec.parse_text`). Missing optional params
        take their default (or stay absent when they have none). Raises
        :class:`CatalogError` naming the param and what it allows.
        """
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise CatalogError(f"params must be a JSON object; got {type_label(raw)}")
        allowed = ", ".join(s.name for s in self.params) or "none"
        for key in raw:
            if not isinstance(key, str) or self.param(key) is None:
                raise CatalogError(f"unknown param {key!r} for type {self.name!r}; allowed params: {allowed}")
        result: dict[str, Any] = {}
        for spec in self.params:
            if spec.name in raw:
                result[spec.name] = spec.check(raw[spec.name])
            elif spec.required:
                raise CatalogError(f"param {spec.name!r} is required for type {self.name!r}: {spec.allowed()}")
            elif spec.default is not None:
                result[spec.name] = spec.default
        return result

    def to_json(self) -> dict[str, Any]:
        """Return the type as served by ``GET /api/types`` (no command, cwd or env)."""
        return {
            "name": self.name,
            "description": self.description,
            "timeout": self.timeout,
            "exclusive": self.exclusive,
            "params": [spec.to_json() for spec in self.params],
        }


@attrs.frozen(kw_only=True)
class ClientToken:
    """A named client token from the catalog file; only its SHA-256 is kept.

    ``scope`` is always ``"submit"``: create and read jobs, never run or cancel.
    """

    name: str
    scope: Literal["submit"]
    token_sha256: str


def hash_token(token: str) -> str:
    """Return the SHA-256 hex digest of ``token`` (UTF-8), as stored in ``token_sha256``.

    A fast hash is right here: tokens are long random strings, so there is
    nothing to brute-force and no need for a slow password hash.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _freeze_types(value: Mapping[str, JobType]) -> Mapping[str, JobType]:
    return pytypes.MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class Catalog:
    """The job types and client tokens an engine serves (immutable)."""

    types: Mapping[str, JobType] = attrs.field(converter=_freeze_types)
    clients: tuple[ClientToken, ...] = ()

    def get(self, name: str) -> JobType | None:
        """Return the job type called ``name``, or ``None`` if there is none."""
        return self.types.get(name)

    def find_client(self, presented: str) -> ClientToken | None:
        """Return the client whose token is ``presented``, comparing in constant time.

        Every client is compared (no early exit), so timing does not reveal
        which or how many clients exist.
        """
        digest = hash_token(presented)
        found: ClientToken | None = None
        for client in self.clients:
            if hmac.compare_digest(digest, client.token_sha256):
                found = client
        return found

    def to_json(self) -> list[dict[str, Any]]:
        """Return every type, sorted by name, as served by ``GET /api/types``."""
        return [self.types[name].to_json() for name in sorted(self.types)]


# --------------------------------------------------------------------------- demo

DEMO_SLEEP_MAX: Final = 3600


def demo_types() -> tuple[JobType, ...]:
    """Return the built-in demo types, run by this interpreter as real subprocesses.

    The command runs ``demo.py`` by its file path (not ``-m engine_hub.jobs.demo``) so
    the demos work however the engine was installed (wheel, editable, or a
    plain checkout on ``PYTHONPATH``, which jobs do not inherit). ``-I`` keeps
    the script's directory (``engine_hub/``) off ``sys.path``, so no engine
    module can ever shadow a standard-library one.
    """
    demo = str(Path(__file__).with_name("demo.py"))
    python = sys.executable
    return (
        JobType(
            name="demo.sleep",
            description="Sleep for a number of seconds, printing a line every second.",
            command=(python, "-I", demo, "sleep"),
            timeout=DEMO_SLEEP_MAX + 60.0,
            params=(
                ParamSpec(
                    name="seconds",
                    type="int",
                    default=3,
                    min=0,
                    max=DEMO_SLEEP_MAX,
                    description="How long to sleep, in seconds.",
                ),
            ),
        ),
        JobType(
            name="demo.echo",
            description="Print a message.",
            command=(python, "-I", demo, "echo"),
            timeout=30.0,
            params=(ParamSpec(name="message", type="str", default="hello", description="The message to print."),),
        ),
        JobType(
            name="demo.fail",
            description="Print an error on stderr and exit non-zero.",
            command=(python, "-I", demo, "fail"),
            timeout=30.0,
            params=(
                ParamSpec(
                    name="code", type="int", default=1, min=1, max=125, description="The exit code to fail with."
                ),
            ),
        ),
    )


def builtin_catalog() -> Catalog:
    """Return the catalog used when no file is given: the demo types, no client tokens."""
    return Catalog(types={t.name: t for t in demo_types()})


# --------------------------------------------------------------------------- loading

_TOP_KEYS: Final = frozenset({"include_demo", "types", "clients"})
_TYPE_KEYS: Final = frozenset({"name", "description", "command", "timeout", "exclusive", "params", "cwd", "env"})
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


def _parse_type(data: object, where: str, base: Path) -> JobType:
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        where = f"{where} ({data['name']})"  # name the type in every message about it
    t = _Table(data, where, _TYPE_KEYS)
    name = t.get_str("name")
    command = t.required("command")
    if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
        raise CatalogError(f"{t.key('command')}: must be an array of strings (argv; no shell)")
    timeout = t.required("timeout")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise CatalogError(f"{t.key('timeout')}: must be a number of seconds; got {type_label(timeout)}")
    cwd = None
    if t.has("cwd"):
        cwd = Path(t.get_str("cwd"))
        if not cwd.is_absolute():
            cwd = base / cwd
    env = t.data.get("env", {})
    if not isinstance(env, dict):
        raise CatalogError(f"{t.key('env')}: must be a table of strings; got {type_label(env)}")
    params = tuple(_parse_param(p, f"{t.where}.params[{i}]") for i, p in enumerate(t.get_list("params")))
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
