"""The gateway's settings take the engine token from the environment they are given, never the real one."""

from __future__ import annotations

from typing import Any

import pytest

from admin_gateway.config import resolve_settings
from admin_gateway.settings import SettingsError

REAL_TOKEN = "real-process-environment-token"


def _flags() -> dict[str, Any]:
    return {"config": None, "safe_mode": None, "engine_token_file": None, "trusted_proxies": [], "allowed_origins": []}


@pytest.fixture
def real_env_token(monkeypatch: pytest.MonkeyPatch) -> str:
    """ENGINE_HUB_TOKEN set in the real process environment (os.environ) for the test."""
    monkeypatch.setenv("ENGINE_HUB_TOKEN", REAL_TOKEN)
    return REAL_TOKEN


class TestInjectedEnvironment:
    def test_empty_injected_environment_ignores_the_real_token(self, real_env_token: str) -> None:
        """An injected environment without ENGINE_HUB_TOKEN is 'no engine token', whatever os.environ holds."""
        with pytest.raises(SettingsError, match="no engine token"):
            resolve_settings(_flags(), {})

    def test_injected_token_wins_over_the_real_one(self, real_env_token: str) -> None:
        """ENGINE_HUB_TOKEN from the injected environment is the engine token (surrounding blanks dropped)."""
        settings = resolve_settings(_flags(), {"ENGINE_HUB_TOKEN": " injected-token \n"})
        assert settings.engine_token == "injected-token"

    def test_blank_injected_token_is_no_token(self, real_env_token: str) -> None:
        """A blank injected ENGINE_HUB_TOKEN is no token, not a reason to read the real environment."""
        with pytest.raises(SettingsError, match="no engine token"):
            resolve_settings(_flags(), {"ENGINE_HUB_TOKEN": "  "})
