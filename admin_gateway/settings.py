"""The gateway's settings: one frozen value built by the CLI (or a test) and handed to ``create_app``.

Nothing here reads the environment at import time; :func:`parse_safe_mode`
is the one place that turns a user-supplied SAFE_MODE string into a bool,
so the CLI and any config loader agree on what counts as "off".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import attrs
from aiohttp import web
from yarl import URL

from shared.connection_limits import DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_KEEPALIVE_TIMEOUT
from shared.journal.postgres import ENGINE_CHAIN
from shared.pg import StoreUrlError, check_url

SessionBackend = Literal["embedded", "redis"]

#: The only spellings that turn SAFE_MODE off (case-insensitive, surrounding blanks ignored).
SAFE_MODE_OFF = frozenset({"false", "0", "no", "off"})
#: Spellings that explicitly keep it on.
SAFE_MODE_ON = frozenset({"true", "1", "yes", "on"})
#: The name of a gateway's chain in an audit store unless ``audit_chain`` gives another.
DEFAULT_AUDIT_CHAIN = "gateway"


class SettingsError(ValueError):
    """A setting has a value the gateway refuses to start with (message is one clear line)."""


def parse_safe_mode(raw: str, *, source: str = "SAFE_MODE") -> bool:
    """Return the SAFE_MODE state named by ``raw``: ``True`` (on) or ``False`` (off).

    Only ``false``/``0``/``no``/``off`` turn it off and ``true``/``1``/``yes``/``on``
    keep it on. Anything else, the empty string included, raises
    :class:`SettingsError`: a typo must never silently decide whether jobs may run.
    """
    value = raw.strip().lower()
    if value in SAFE_MODE_OFF:
        return False
    if value in SAFE_MODE_ON:
        return True
    raise SettingsError(f"{source}={raw!r} is not recognised; use one of: true, 1, yes, on (safe) or false, 0, no, off")


def engine_base_url(raw: str) -> str:
    """Return the engine base URL ``raw`` names (``scheme://host[:port]/``, path dropped).

    Raises :class:`SettingsError` unless ``raw`` is an ``http(s)://host[:port]`` URL.
    """
    url = URL(raw)
    if url.scheme not in ("http", "https") or not url.host:
        raise SettingsError(f"engine URL must be http(s)://host[:port], got {raw!r}")
    return str(url.with_path("/"))


def parse_engine_urls(raw: str) -> tuple[str, ...]:
    """Return the engine base URLs in ``raw``: one URL, or several separated by commas, in order.

    Each is checked by :func:`engine_base_url`; an empty item, or two naming the same
    engine (``http://a:1`` and ``http://a:1/``), raise :class:`SettingsError`.
    """
    urls: list[str] = []
    for part in raw.split(","):
        base = engine_base_url(part.strip())
        if base in urls:
            raise SettingsError(f"engine URL {part.strip()!r} is given twice; name each engine once")
        urls.append(base)
    return tuple(urls)


def _engine_urls(instance: Settings) -> tuple[str, ...]:
    return parse_engine_urls(instance.engine_url)


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise SettingsError(f"{attribute.name} must be > 0, got {value!r}")


def _positive_int(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise SettingsError(f"{attribute.name} must be >= 1, got {value!r}")


def _reserved_slots(instance: Settings, attribute: attrs.Attribute[int], value: int) -> None:
    # Everyone without a device cookie must keep at least one slot.
    slots = instance.login_hash_workers + instance.login_hash_queue
    if not 0 <= value < slots:
        raise SettingsError(
            f"{attribute.name} must be >= 0 and below login_hash_workers + login_hash_queue ({slots}), got {value!r}"
        )


def _not_negative_int(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and value < 0:
        raise SettingsError(f"{attribute.name} must be >= 0, got {value!r}")


def _audit_store(_: object, __: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None:
        try:
            check_url(value)
        except StoreUrlError as exc:
            raise SettingsError(f"audit_store: {exc}") from None


def _chain_name(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value or not value.isprintable() or len(value) > 64:
        raise SettingsError(f"{attribute.name} must be 1-64 printable characters, got {value!r}")
    if value == ENGINE_CHAIN:
        # Its records would mix into the engine's own trail, change feed and job events.
        raise SettingsError(f"{attribute.name} {value!r} is the engine's chain; give this gateway its own name")


def _backend(instance: Settings, _: attrs.Attribute[str], value: str) -> None:
    if value not in ("embedded", "redis"):
        raise SettingsError(f"session_backend must be 'embedded' or 'redis', got {value!r}")
    if value == "redis" and not instance.redis_url:
        raise SettingsError("session_backend 'redis' needs redis_url")


@attrs.frozen(kw_only=True)
class Settings:
    """Everything the gateway needs to run; immutable.

    ``engine_token`` is the engine's admin token; ``None`` means "take it from
    ``ENGINE_HUB_TOKEN`` when the app is created". ``clock`` returns epoch
    seconds and drives every session and throttling decision, so tests can
    move time without sleeping. ``trusted_proxies`` are peer addresses whose
    ``X-Forwarded-Proto``/``X-Forwarded-For`` are believed; nobody else's are.
    ``allowed_origins`` are extra origins (``https://admin.example.com``) accepted
    on POST besides the gateway's own. ``engine_url`` names one engine, or several
    separated by commas (tried in that order, see :mod:`admin_gateway.engine_client`);
    ``engine_urls`` is that list, checked and normalised (not an argument).
    ``audit_store`` (a ``postgresql://`` URL, its password never shown) keeps the
    audit chain named ``audit_chain`` in that database instead of under
    ``data_dir``; each gateway sharing a database needs its own chain name.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    engine_url: str = "http://127.0.0.1:8090"
    engine_urls: tuple[str, ...] = attrs.field(init=False, default=attrs.Factory(_engine_urls, takes_self=True))
    data_dir: Path = attrs.field(default=Path("var/gateway"), converter=Path)
    engine_token: str | None = attrs.field(default=None, repr=False)
    safe_mode: bool = True
    connect_timeout: float = attrs.field(default=1.0, validator=_positive)
    total_timeout: float = attrs.field(default=5.0, validator=_positive)
    failover_timeout: float = attrs.field(default=1.5, validator=_positive)
    idle_timeout: float = attrs.field(default=1800.0, validator=_positive)
    absolute_timeout: float = attrs.field(default=43200.0, validator=_positive)
    #: Seconds between the panel's polls when its live stream is impossible (blocked by a proxy, failing).
    refresh_interval: float = attrs.field(default=5.0, validator=_positive)
    session_backend: SessionBackend = attrs.field(default="embedded", validator=_backend)
    redis_url: str | None = None
    audit_store: str | None = attrs.field(default=None, repr=False, validator=_audit_store)
    audit_chain: str = attrs.field(default=DEFAULT_AUDIT_CHAIN, validator=_chain_name)
    clock: Callable[[], float] = time.time
    login_limit_per_hour: int = attrs.field(default=100, validator=_positive_int)
    #: Failed logins per client address per hour. Three accounts' worth: one office behind a
    #: NAT is not locked out by a single clumsy user, while a password sprayer on one address
    #: gets a few hundred guesses an hour across all accounts instead of 100 per account.
    login_limit_per_address_per_hour: int = attrs.field(default=300, validator=_positive_int)
    #: Failed logins per (account, address) before growing delays start (1 s, then doubling).
    login_free_attempts: int = attrs.field(default=5, validator=_positive_int)
    #: The longest of those delays, seconds.
    login_max_delay: float = attrs.field(default=900.0, validator=_positive)
    #: Failed logins per hour from one device cookie before that device is refused too.
    login_limit_per_device_per_hour: int = attrs.field(default=10, validator=_positive_int)
    #: Threads checking passwords (argon2), apart from every other thread.
    login_hash_workers: int = attrs.field(default=2, validator=_positive_int)
    #: Password checks that may wait for a thread; past that, attempts get 429 at once.
    login_hash_queue: int = attrs.field(default=16, validator=_positive_int)
    #: Password checks one client address (an IPv6 /64) may have running or waiting at once.
    login_hash_per_address: int = attrs.field(default=4, validator=_positive_int)
    #: Of the checks' slots (workers + queue), how many only sign-ins with a valid device cookie may use.
    login_hash_reserved: int = attrs.field(default=2, validator=_reserved_slots)
    max_sessions: int = attrs.field(default=100_000, validator=_positive_int)
    #: Seconds a login form's CSRF token stays valid (the form is re-served with a fresh one after).
    login_form_timeout: float = attrs.field(default=3600.0, validator=_positive)
    #: Seconds over which repeated identical denials are counted into one audit record.
    audit_coalesce_window: float = attrs.field(default=10.0, validator=_positive)
    trusted_proxies: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    allowed_origins: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    #: Client connections (shared.connection_limits.ConnectionLimits): the cap (None: 1024, fitted
    #: to the fd limit), seconds to send a whole request head, seconds a kept-alive connection idles,
    #: seconds a body has to arrive after its head, the cap per client address (None: a quarter of the cap, 0: none).
    max_connections: int | None = attrs.field(default=None, validator=attrs.validators.optional(_positive_int))
    header_timeout: float = attrs.field(default=DEFAULT_HEADER_TIMEOUT, validator=_positive)
    keepalive_timeout: float = attrs.field(default=DEFAULT_KEEPALIVE_TIMEOUT, validator=_positive)
    body_timeout: float = attrs.field(default=DEFAULT_BODY_TIMEOUT, validator=_positive)
    max_connections_per_address: int | None = attrs.field(default=None, validator=_not_negative_int)
    #: The live stream (admin_gateway.relay, admin_gateway.http.events): open streams in total and per
    #: session (429 above), changes kept for pages that resume, bytes a page may have waiting before it is
    #: dropped, seconds between keep-alives, seconds between checks that the session still lives, and
    #: seconds of silence after which the engine's stream is taken for hung.
    events_max_streams: int = attrs.field(default=1000, validator=_positive_int)
    events_per_session: int = attrs.field(default=8, validator=_positive_int)
    events_ring: int = attrs.field(default=1000, validator=_positive_int)
    events_client_buffer: int = attrs.field(default=256 * 1024, validator=_positive_int)
    events_heartbeat: float = attrs.field(default=15.0, validator=_positive)
    events_session_check: float = attrs.field(default=5.0, validator=_positive)
    events_upstream_idle: float = attrs.field(default=35.0, validator=_positive)


#: The app's settings.
SETTINGS = web.AppKey("settings", Settings)
