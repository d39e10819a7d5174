"""Settings of one engine_hub process."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import attrs

from shared.connection_limits import DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_KEEPALIVE_TIMEOUT

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090
DEFAULT_DATA_DIR = Path("var/engine")

#: Environment variable holding the admin token (engine) or the caller's token (CLI).
TOKEN_ENV = "ENGINE_HUB_TOKEN"
#: Environment variable holding the PostgreSQL store URL when ``--store`` is not given.
STORE_URL_ENV = "ENGINE_STORE_URL"
#: Name of the generated admin token file inside the data directory.
TOKEN_FILE = "token"
#: Header by which the admin token names the acting user.
ACTOR_HEADER = "X-Engine-Actor"
#: Sub-directories of the data directory.
JOURNAL_DIR = "journal"
STATE_DIR = "state"
LOGS_DIR = "logs"

DEFAULT_SNAPSHOT_RECORDS = 50_000
DEFAULT_SNAPSHOT_SECONDS = 600.0
DEFAULT_RETENTION_DAYS = 400
DEFAULT_LOG_MAX_BYTES = 10 * 1024 * 1024
#: How long a run request waits for its approvals by default (seconds): an hour.
DEFAULT_RUN_REQUEST_TTL = 3600.0
#: Bounds of ``--run-request-ttl`` (seconds): a minute to a week.
MIN_RUN_REQUEST_TTL = 60
MAX_RUN_REQUEST_TTL = 7 * 86_400
#: Longest log retention accepted (days); the retention is off unless set.
MAX_LOG_RETENTION_DAYS = 36_500


@attrs.frozen(kw_only=True)
class Settings:
    """Everything that configures an engine process; built by the CLI or by tests.

    ``token`` is the admin token. When it is ``None`` the engine reads
    ``token_file`` (``--token-file``: a credential file someone else
    provides), else uses ``ENGINE_HUB_TOKEN`` from the environment, else the
    token file ``<data_dir>/token`` (generated once, mode 0600).

    Durable mode (the default) keeps the journal in ``<data_dir>/journal``,
    snapshot state in ``<data_dir>/state`` and job logs in
    ``<data_dir>/logs``. A snapshot is written every ``snapshot_records``
    records, or ``snapshot_seconds`` after the last one if anything changed,
    and at a clean stop; journal segments older than ``retention_days`` that
    a snapshot covers are deleted. ``log_max_bytes`` caps each job's log file.
    ``log_retention_days`` (``None``: off; may be fractional) deletes the log
    files of jobs that finished longer ago than that (durable mode only; see
    :mod:`engine_hub.run.log_retention`).
    ``ephemeral`` keeps everything in memory instead and writes no files
    (except the generated token file when no token is configured).

    ``run_request_ttl`` (seconds, ``--run-request-ttl``) is how long a run
    request of a type that needs approval waits for its approvals before it
    expires (the job stays READY).

    ``kill_grace`` is the time between SIGTERM and SIGKILL when a run is
    cancelled or times out. ``log_level`` is a stdlib level name.

    ``store_url`` (``--store``/``ENGINE_STORE_URL``; ``None``: the embedded store) runs the
    engine as one node of a PostgreSQL store (docs/scale-out.md): no journal,
    snapshot or job log files then. ``node_heartbeat`` and ``node_lost_after``
    (seconds) are the node's heartbeat period and the threshold after which a
    node without one is lost; ``store_pool_size`` connections are pooled and a
    request that waits ``store_pool_timeout`` for one gets 503
    ``store_unavailable``, as does one whose statement runs longer than
    ``store_statement_timeout`` (waiting on a lock a stray session holds,
    say); ``listen_poll`` is the listener's fallback poll.

    ``GET /api/events`` keeps the newest ``events_ring`` changes for clients
    that resume, drops a client with more than ``events_client_buffer``
    bytes waiting, sends a comment every ``events_heartbeat`` seconds, and
    opens at most ``events_max_streams`` streams (429 above).

    ``max_connections`` (``None``: the default, fitted to the fd limit),
    ``max_connections_per_address`` (``None``: a quarter of the cap, 0: none),
    ``header_timeout``, ``body_timeout`` and ``keepalive_timeout`` limit client connections
    (:class:`shared.connection_limits.ConnectionLimits`).

    ``clock`` returns epoch seconds and times the SAFE_MODE override windows
    (:mod:`engine_hub.jobs.override`), so tests move time without sleeping;
    ``override_sweep`` is how often (seconds) the engine looks for a window
    past its end to record it as expired.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path = DEFAULT_DATA_DIR
    config: Path | None = None
    ephemeral: bool = False
    token: str | None = None
    token_file: Path | None = None
    kill_grace: float = 5.0
    log_level: str = "info"
    snapshot_records: int = DEFAULT_SNAPSHOT_RECORDS
    snapshot_seconds: float = DEFAULT_SNAPSHOT_SECONDS
    retention_days: int = DEFAULT_RETENTION_DAYS
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    log_retention_days: float | None = None
    max_connections: int | None = None
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_connections_per_address: int | None = None
    store_url: str | None = None
    node_heartbeat: float = 5.0
    node_lost_after: float = 30.0
    store_pool_size: int = 10
    store_pool_timeout: float = 5.0
    store_statement_timeout: float = 10.0
    listen_poll: float = 5.0
    events_ring: int = 10_000
    events_client_buffer: int = 1024 * 1024
    events_heartbeat: float = 15.0
    events_max_streams: int = 1000
    clock: Callable[[], float] = time.time
    override_sweep: float = 1.0
    run_request_ttl: float = DEFAULT_RUN_REQUEST_TTL
