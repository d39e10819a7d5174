"""Settings of one engine_hub process."""

from __future__ import annotations

from pathlib import Path

import attrs

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090
DEFAULT_DATA_DIR = Path("var/engine")

#: Environment variable holding the admin token (engine) or the caller's token (CLI).
TOKEN_ENV = "ENGINE_HUB_TOKEN"
#: Name of the generated admin token file inside the data directory.
TOKEN_FILE = "token"
#: Header by which the admin token names the acting user.
ACTOR_HEADER = "X-Engine-Actor"


@attrs.frozen(kw_only=True)
class Settings:
    """Everything that configures an engine process; built by the CLI or by tests.

    ``token`` is the admin token. When it is ``None`` the engine uses
    ``ENGINE_HUB_TOKEN`` from the environment, else the token file
    ``<data_dir>/token`` (generated once, mode 0600). ``ephemeral`` keeps job
    state in memory only. ``kill_grace`` is the time between SIGTERM and
    SIGKILL when a run is cancelled or times out. ``log_level`` is a stdlib
    level name.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path = DEFAULT_DATA_DIR
    config: Path | None = None
    ephemeral: bool = False
    token: str | None = None
    kill_grace: float = 5.0
    log_level: str = "info"
