"""Several engine URLs: how ``engine_url`` is split, checked and normalised, from every source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from admin_gateway.config import resolve_settings
from admin_gateway.settings import Settings, SettingsError, parse_engine_urls

ENV = {"ENGINE_HUB_TOKEN": "t"}


def _flags(**flags: Any) -> dict[str, Any]:
    return {"config": None, "safe_mode": None, "engine_token_file": None, **flags}


class TestParseEngineUrls:
    def test_one_url(self) -> None:
        """A single URL is one engine, normalised to its base (path dropped, trailing slash)."""
        assert parse_engine_urls("http://127.0.0.1:8090") == ("http://127.0.0.1:8090/",)
        assert parse_engine_urls("https://engine.example/x") == ("https://engine.example/",)

    def test_comma_separated_in_order(self) -> None:
        """Commas separate engines, kept in the order given; blanks around each are ignored."""
        assert parse_engine_urls("http://a:1, http://b:2 ,http://c:3") == ("http://a:1/", "http://b:2/", "http://c:3/")

    @pytest.mark.parametrize("raw", ["http://a:1,http://a:1", "http://a:1,http://a:1/", "http://a:1/x,http://a:1/y"])
    def test_duplicate_is_refused(self, raw: str) -> None:
        """The same engine twice, however spelled, is refused."""
        with pytest.raises(SettingsError, match="given twice"):
            parse_engine_urls(raw)

    @pytest.mark.parametrize("raw", ["", "http://a:1,", "http://a:1,,http://b:2", "ftp://a:1", "http://a:1,b:2"])
    def test_bad_item_is_refused(self, raw: str) -> None:
        """An empty item or one that is not http(s)://host[:port] gets the usual one-line error."""
        with pytest.raises(SettingsError, match=r"engine URL must be http\(s\)://host\[:port\]"):
            parse_engine_urls(raw)

    def test_settings_keep_the_raw_value(self) -> None:
        """``Settings.engine_url`` stays as given; ``engine_urls`` is the checked list."""
        settings = Settings(engine_url="http://a:1,http://b:2")
        assert settings.engine_url == "http://a:1,http://b:2"
        assert settings.engine_urls == ("http://a:1/", "http://b:2/")
        assert Settings().engine_urls == ("http://127.0.0.1:8090/",)


class TestSources:
    def test_repeated_flag(self) -> None:
        """``--engine-url`` given several times (a list) becomes several engines."""
        settings = resolve_settings(_flags(engine_url=["http://a:1", "http://b:2"]), ENV)
        assert settings.engine_urls == ("http://a:1/", "http://b:2/")

    def test_environment_with_commas(self) -> None:
        """``ENGINE_HUB_URL`` may hold several comma-separated URLs."""
        settings = resolve_settings(_flags(), {**ENV, "ENGINE_HUB_URL": "http://a:1,http://b:2"})
        assert settings.engine_urls == ("http://a:1/", "http://b:2/")

    def test_config_list(self, tmp_path: Path) -> None:
        """``engine_url`` in the config file may be a list of strings."""
        config = tmp_path / "gateway.toml"
        config.write_text('[gateway]\nengine_url = ["http://a:1", "http://b:2"]\n')
        settings = resolve_settings(_flags(config=str(config)), ENV)
        assert settings.engine_urls == ("http://a:1/", "http://b:2/")

    def test_duplicate_flag_is_refused(self) -> None:
        """The same engine given twice on the command line is refused with one line."""
        with pytest.raises(SettingsError, match="given twice"):
            resolve_settings(_flags(engine_url=["http://a:1", "http://a:1"]), ENV)
