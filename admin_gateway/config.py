"""Where ``admin-gateway serve`` gets its settings: flags, environment, a TOML file, defaults.

Precedence, highest first: command-line flag, environment variable, config
file (``--config FILE``), built-in default. The config file may hold any of
:data:`FILE_KEYS`; an unknown key or a wrongly typed value stops the gateway
with one clear line (a typo must not silently fall back to a default,
least of all for ``safe_mode``).

Environment variables: ``SAFE_MODE``, ``ENGINE_HUB_TOKEN`` (the engine admin
token), ``ENGINE_HUB_URL``, ``GATEWAY_PORT``, ``GATEWAY_REDIS_URL``,
``GATEWAY_AUDIT_STORE``.

Several engines: ``--engine-url`` repeated, ``ENGINE_HUB_URL`` or ``engine_url``
with URLs separated by commas, or ``engine_url`` as a TOML list. All become the
one comma-separated ``Settings.engine_url``.
"""

from __future__ import annotations

import errno
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from admin_gateway.engine_client import resolve_token
from admin_gateway.settings import Settings, SettingsError, parse_safe_mode
from shared.tokens import TokenFileError, read_token_file

#: Keys a config file may set, with the type each must have.
FILE_KEYS: dict[str, type | tuple[type, ...]] = {
    "host": str,
    "port": int,
    "engine_url": (str, list),
    "data_dir": str,
    "engine_token_file": str,
    "safe_mode": (bool, str),
    "connect_timeout": (int, float),
    "total_timeout": (int, float),
    "failover_timeout": (int, float),
    "idle_timeout": (int, float),
    "absolute_timeout": (int, float),
    "refresh_interval": (int, float),
    "session_backend": str,
    "redis_url": str,
    "audit_store": str,
    "audit_chain": str,
    "login_limit_per_hour": int,
    "login_limit_per_address_per_hour": int,
    "trusted_proxies": list,
    "allowed_origins": list,
    "max_connections": int,
    "header_timeout": (int, float),
    "keepalive_timeout": (int, float),
    "body_timeout": (int, float),
    "max_connections_per_address": int,
    "max_sessions": int,
    "login_form_timeout": (int, float),
    "audit_coalesce_window": (int, float),
    "login_free_attempts": int,
    "login_max_delay": (int, float),
    "login_limit_per_device_per_hour": int,
    "login_hash_workers": int,
    "login_hash_queue": int,
    "login_hash_per_address": int,
    "login_hash_reserved": int,
    "events_max_streams": int,
    "events_per_session": int,
    "events_ring": int,
    "events_client_buffer": int,
    "events_heartbeat": (int, float),
    "events_session_check": (int, float),
    "events_upstream_idle": (int, float),
}
#: Environment variables and the setting each provides.
ENV_KEYS = {
    "ENGINE_HUB_URL": "engine_url",
    "GATEWAY_PORT": "port",
    "GATEWAY_REDIS_URL": "redis_url",
    "GATEWAY_AUDIT_STORE": "audit_store",
}


def load_config_file(path: Path) -> dict[str, Any]:
    """Read and check a gateway TOML config; raises :class:`SettingsError` with one line."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read config {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"config {path} is not valid TOML: {exc}") from None
    section = raw.get("gateway", raw)
    if not isinstance(section, dict):
        raise SettingsError(f"config {path}: [gateway] must be a table")
    unknown = sorted(set(section) - set(FILE_KEYS))
    if unknown:
        raise SettingsError(
            f"config {path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(FILE_KEYS))}"
        )
    for key, value in section.items():
        expected = FILE_KEYS[key]
        # bool is an int in Python; a port of `true` is still a mistake.
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in _as_tuple(expected)):
            raise SettingsError(f"config {path}: {key} has the wrong type ({type(value).__name__})")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise SettingsError(f"config {path}: {key} must be a list of strings")
    return dict(section)


def _read_engine_token_file(path: str) -> str:
    """Return the engine token held in ``path`` (``engine_token_file``); :class:`SettingsError` if unusable."""
    try:
        token = read_token_file(Path(path), label="engine token file")
    except TokenFileError as exc:
        raise SettingsError(str(exc)) from None
    if token is None:
        raise SettingsError(f"cannot read engine token file {path}: {os.strerror(errno.ENOENT)}")
    return token


def _as_tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def resolve_settings(flags: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Combine flags (``None`` = not given), environment and the config file into :class:`Settings`.

    Raises :class:`SettingsError` for any unusable value, including an
    unrecognised SAFE_MODE and a missing engine token.
    """
    config_path = flags.get("config")
    values: dict[str, Any] = load_config_file(Path(config_path)) if config_path else {}
    safe_source = "safe_mode in the config file"
    for env_name, key in ENV_KEYS.items():
        if environ.get(env_name):
            values[key] = environ[env_name]
    if "SAFE_MODE" in environ:
        values["safe_mode"], safe_source = environ["SAFE_MODE"], "SAFE_MODE"
    for key, value in flags.items():
        if key != "config" and value is not None and value != []:
            values[key] = value
    if flags.get("safe_mode") is not None:
        safe_source = "--safe-mode"

    safe = values.pop("safe_mode", True)
    safe_mode = safe if isinstance(safe, bool) else parse_safe_mode(str(safe), source=safe_source)

    token_file = values.pop("engine_token_file", None)
    # Only the environment given to us: a test or an embedding caller that injects one must not
    # pick up a token from the real process environment.
    token = _read_engine_token_file(token_file) if token_file else resolve_token(None, environ)
    if token is None:
        raise SettingsError("no engine token: set ENGINE_HUB_TOKEN or pass --engine-token-file")

    if "port" in values:
        try:
            values["port"] = int(values["port"])
        except ValueError:
            raise SettingsError(f"port must be a number, got {values['port']!r}") from None
        if not 0 < values["port"] < 65536:
            raise SettingsError(f"port must be 1-65535, got {values['port']}")
    if isinstance(values.get("engine_url"), list):
        values["engine_url"] = ",".join(values["engine_url"])
    for key in ("trusted_proxies", "allowed_origins"):
        if key in values:
            values[key] = tuple(values[key])
    try:
        return Settings(safe_mode=safe_mode, engine_token=token, **values)
    except TypeError as exc:  # a key Settings does not know: a bug here, said plainly
        raise SettingsError(str(exc)) from None
