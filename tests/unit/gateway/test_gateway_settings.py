"""SAFE_MODE parsing and how serve settings are resolved from flags, environment and the config file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from admin_gateway.config import resolve_settings
from admin_gateway.settings import Settings, SettingsError, parse_safe_mode


class TestParseSafeMode:
    @pytest.mark.parametrize("raw", ["false", "0", "no", "off", "OFF", " False ", "No"])
    def test_explicit_false_turns_it_off(self, raw: str) -> None:
        """Only false/0/no/off (any case, blanks ignored) turn SAFE_MODE off."""
        assert parse_safe_mode(raw) is False

    @pytest.mark.parametrize("raw", ["true", "1", "yes", "on", "ON"])
    def test_explicit_true_keeps_it_on(self, raw: str) -> None:
        """true/1/yes/on keep SAFE_MODE on."""
        assert parse_safe_mode(raw) is True

    @pytest.mark.parametrize("raw", ["", " ", "maybe", "2", "f", "n", "disable", "0ff", "nope"])
    def test_anything_else_is_refused(self, raw: str) -> None:
        """Any other value is an error naming the source, never a silent default."""
        with pytest.raises(SettingsError, match=r"SAFE_MODE.*not recognised"):
            parse_safe_mode(raw)


def _flags(**given: Any) -> dict[str, Any]:
    flags: dict[str, Any] = {
        "config": None,
        "safe_mode": None,
        "engine_token_file": None,
        "port": None,
        "trusted_proxies": [],
        "allowed_origins": [],
    }
    flags.update(given)
    return flags


TOKEN_ENV = {"ENGINE_HUB_TOKEN": "tok"}


class TestResolveSettings:
    def test_defaults(self) -> None:
        """With nothing given, SAFE_MODE is on and the documented defaults apply."""
        s = resolve_settings(_flags(), TOKEN_ENV)
        assert s.safe_mode is True
        assert (s.host, s.port, s.engine_url) == ("127.0.0.1", 8080, "http://127.0.0.1:8090")
        assert (s.connect_timeout, s.total_timeout, s.idle_timeout, s.absolute_timeout) == (1.0, 5.0, 1800.0, 43200.0)
        assert s.engine_token == "tok"

    def test_precedence_flag_env_file(self, tmp_path: Path) -> None:
        """Flags beat the environment, which beats the config file."""
        config = tmp_path / "gw.toml"
        config.write_text(
            '[gateway]\nsafe_mode = false\nport = 9001\nengine_url = "http://127.0.0.1:1"\n'
            'trusted_proxies = ["127.0.0.1"]\n'
        )
        from_file = resolve_settings(_flags(config=str(config)), TOKEN_ENV)
        assert (from_file.safe_mode, from_file.port, from_file.trusted_proxies) == (False, 9001, ("127.0.0.1",))
        env = {**TOKEN_ENV, "SAFE_MODE": "on", "GATEWAY_PORT": "9002"}
        from_env = resolve_settings(_flags(config=str(config)), env)
        assert (from_env.safe_mode, from_env.port) == (True, 9002)
        from_flag = resolve_settings(_flags(config=str(config), safe_mode="off", port=9003), env)
        assert (from_flag.safe_mode, from_flag.port) == (False, 9003)

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("safe_mode = 'perhaps'\n", "safe_mode in the config file"),
            ("port = 'x'\n", "wrong type"),
            ("port = true\n", "wrong type"),
            ("trusted_proxies = [1]\n", "list of strings"),
            ("colour = 'blue'\n", "unknown key"),
            ("port = \n", "not valid TOML"),
        ],
    )
    def test_bad_config_files(self, tmp_path: Path, text: str, message: str) -> None:
        """A config file mistake is one clear error."""
        config = tmp_path / "gw.toml"
        config.write_text(text)
        with pytest.raises(SettingsError, match=message):
            resolve_settings(_flags(config=str(config)), TOKEN_ENV)

    def test_token_from_file(self, tmp_path: Path) -> None:
        """--engine-token-file wins over ENGINE_HUB_TOKEN; an empty file is an error."""
        token = tmp_path / "token"
        token.write_text("from-file\n")
        assert resolve_settings(_flags(engine_token_file=str(token)), TOKEN_ENV).engine_token == "from-file"
        token.write_text("\n")
        with pytest.raises(SettingsError, match="empty"):
            resolve_settings(_flags(engine_token_file=str(token)), TOKEN_ENV)
        with pytest.raises(SettingsError, match="cannot read"):
            resolve_settings(_flags(engine_token_file=str(tmp_path / "missing")), TOKEN_ENV)

    def test_no_token_is_an_error(self) -> None:
        """Without any engine token the settings are refused."""
        with pytest.raises(SettingsError, match="no engine token"):
            resolve_settings(_flags(), {})


class TestExampleConfig:
    def test_the_shipped_example_is_valid(self) -> None:
        """deploy/gateway.example.toml loads, keeps SAFE_MODE on and trusts the local proxy."""
        example = Path(__file__).resolve().parents[3] / "deploy" / "gateway.example.toml"
        s = resolve_settings(_flags(config=str(example)), TOKEN_ENV)
        assert s.safe_mode is True
        assert s.trusted_proxies == ("127.0.0.1",)
        assert s.data_dir == Path("/var/lib/admin-gateway")
        assert (s.max_sessions, s.login_form_timeout, s.audit_coalesce_window) == (100_000, 3600, 10)


class TestSettingsValidation:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"connect_timeout": 0},
            {"total_timeout": -1},
            {"idle_timeout": 0},
            {"login_limit_per_hour": 0},
            {"session_backend": "memcached"},
            {"session_backend": "redis"},
            {"login_form_timeout": 0},
            {"audit_coalesce_window": -1},
            {"login_hash_per_address": 0},
            {"login_hash_reserved": -1},
            {"login_hash_reserved": 18},
            {"login_hash_workers": 1, "login_hash_queue": 1, "login_hash_reserved": 2},
            {"failover_timeout": 0},
            {"audit_chain": "engine"},
        ],
    )
    def test_bad_values_are_refused(self, kwargs: dict[str, Any]) -> None:
        """Non-positive timeouts, zero limits, unknown backends, no Redis URL, all slots reserved, chain 'engine'."""
        with pytest.raises(SettingsError):
            Settings(**kwargs)

    def test_token_is_not_in_repr(self) -> None:
        """The engine token never shows up in a repr (and so in a log line)."""
        assert "sekrit" not in repr(Settings(engine_token="sekrit"))
