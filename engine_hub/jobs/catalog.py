"""The job type catalog model: which jobs exist, how they run, which params they take.

:class:`JobType` checks its own declaration when it is built, so a typo in a
catalog file stops the engine at start-up (see :mod:`engine_hub.jobs.catalog_file`
for the TOML loader) instead of surprising an operator at 3 a.m. when they click
"run". :class:`Catalog` holds the types and the submit-scope client tokens. The
built-in demo types live in :mod:`engine_hub.jobs.demo_types`.

Param values become environment variables of the job (``JOB_PARAM_<NAME>``),
so they are kept small and free of NUL bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
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
from shared.contract import MAX_PLAN_TIMEOUT

#: Largest timeout a type may declare (30 days): anything longer is a typo.
MAX_TIMEOUT: Final = 30 * 24 * 3600.0
#: A plan's timeout when its type declares none, and the largest it may declare: a plan only
#: says what the run would do, and a person waits for it before confirming (docs/governance.md).
DEFAULT_PLAN_TIMEOUT: Final = 30.0
#: What a type's ``approval`` may say: runs need no approval, or a second person's (two-person rule).
APPROVAL_POLICIES: Final = ("none", "required")
#: Bounds of a type's ``approvers`` (approvals needed besides the requester).
MIN_APPROVERS: Final = 1
MAX_APPROVERS: Final = 5
#: The name the admin token acts under; a client token may not borrow it.
ADMIN_NAME: Final = "admin"

_TYPE_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")

__all__ = [
    "ADMIN_NAME",
    "DEFAULT_PLAN_TIMEOUT",
    "MAX_PLAN_TIMEOUT",
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
    "hash_token",
    "parse_param_text",
]


def _frozen(value: Mapping[str, Any]) -> Mapping[str, Any]:
    """Copy ``value`` into a read-only mapping, so a frozen declaration cannot change under us.

    One converter for every mapping field (``Any`` values: the attrs mypy plugin cannot solve a
    generic converter); each field keeps its precise annotation.
    """
    return pytypes.MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class JobType:
    """One kind of job: what it runs, for how long at most, and which params it takes.

    ``command`` is an argv list run directly (never through a shell); a relative
    ``command[0]`` containing a slash is found relative to ``cwd``. ``timeout``
    is in seconds. ``plan``, when not empty, is the argv of the type's dry run
    (checked like ``command``; run with the same params, environment and
    ``cwd``), which must end within ``plan_timeout`` seconds (at most
    :data:`MAX_PLAN_TIMEOUT`). ``exclusive`` allows at most one RUNNING job of the type.
    ``env`` holds static environment variables set for every run (not served by
    :meth:`to_json`, as they may hold credentials). ``approval`` is
    ``"required"`` for a type whose runs need approval by ``approvers``
    other people (:data:`MIN_APPROVERS` to :data:`MAX_APPROVERS`) before
    they start (a RUN opens a run request), else ``"none"``. Construction
    raises :class:`CatalogError` for an invalid declaration.
    """

    name: str
    description: str = ""
    command: tuple[str, ...]
    timeout: float
    exclusive: bool = False
    params: tuple[ParamSpec, ...] = ()
    cwd: Path | None = None
    env: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    plan: tuple[str, ...] = ()
    plan_timeout: float = DEFAULT_PLAN_TIMEOUT
    approval: str = "none"
    approvers: int = MIN_APPROVERS

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not _TYPE_NAME.fullmatch(self.name):
            raise CatalogError(f"type name {self.name!r} must match [a-z][a-z0-9_.-]{{0,63}}")
        self._check_argv("command", self.command)
        self._check_seconds("timeout", self.timeout, MAX_TIMEOUT)
        if self.plan:
            self._check_argv("plan", self.plan)
        self._check_seconds("plan_timeout", self.plan_timeout, MAX_PLAN_TIMEOUT)
        if self.approval not in APPROVAL_POLICIES:
            raise CatalogError(f'type {self.name!r}: approval must be "none" or "required"; got {self.approval!r}')
        if (
            isinstance(self.approvers, bool)
            or not isinstance(self.approvers, int)
            or not MIN_APPROVERS <= self.approvers <= MAX_APPROVERS
        ):
            raise CatalogError(
                f"type {self.name!r}: approvers must be an integer from {MIN_APPROVERS} to {MAX_APPROVERS} "
                f"(approvals needed besides the requester); got {self.approvers!r}"
            )
        seen: set[str] = set()
        for spec in self.params:
            if spec.name in seen:
                raise CatalogError(f"type {self.name!r}: param {spec.name!r} is declared twice")
            seen.add(spec.name)
        for key, val in self.env.items():
            if not _ENV_NAME.fullmatch(key):
                raise CatalogError(f"type {self.name!r}: env name {key!r} must match [A-Z_][A-Z0-9_]*")
            if key.startswith(("JOB_", "ENGINE_HUB_")):
                raise CatalogError(f"type {self.name!r}: env name {key!r} is reserved (JOB_*, ENGINE_HUB_*)")
            if not isinstance(val, str) or "\x00" in val:
                raise CatalogError(f"type {self.name!r}: env {key!r} must be a string without NUL")

    @property
    def needs_approval(self) -> bool:
        """Whether a run of this type must be requested and approved (``approval = "required"``)."""
        return self.approval == "required"

    def _check_argv(self, key: str, argv: tuple[str, ...]) -> None:
        if not argv or not argv[0]:
            raise CatalogError(f"type {self.name!r}: {key} must be a non-empty argv list")
        if any("\x00" in arg for arg in argv):
            raise CatalogError(f"type {self.name!r}: {key} must not contain NUL characters")

    def _check_seconds(self, key: str, value: object, high: float) -> None:
        if not (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and 0 < value <= high
        ):
            raise CatalogError(f"type {self.name!r}: {key} must be a number of seconds above 0 and at most {high:g}")

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
        """Return the type as served by ``GET /api/types`` (no command, plan argv, cwd or env).

        ``plan`` says whether the type has a dry run (``POST /api/jobs/{id}/plan``).
        """
        return {
            "name": self.name,
            "description": self.description,
            "timeout": self.timeout,
            "exclusive": self.exclusive,
            "plan": bool(self.plan),
            "params": [spec.to_json() for spec in self.params],
            "approval": self.approval,
            "approvers": self.approvers if self.needs_approval else 0,
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


@attrs.frozen(kw_only=True)
class Catalog:
    """The job types and client tokens an engine serves (immutable)."""

    types: Mapping[str, JobType] = attrs.field(converter=_frozen)
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
