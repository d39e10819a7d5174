"""The libpq settings a PostgreSQL node's pooled connections get from its store URL."""

from __future__ import annotations

from engine_hub.store.postgres import pooled_kwargs


class TestPooledKwargs:
    def test_adds_the_statement_timeout_in_milliseconds(self) -> None:
        """The statement timeout goes to the server as -c statement_timeout=<ms>, with the failover settings."""
        kwargs = pooled_kwargs("postgresql://app@db/engine", 2.5)
        assert kwargs["options"] == "-c statement_timeout=2500"
        assert kwargs["target_session_attrs"] == "read-write"

    def test_keeps_the_options_and_settings_the_url_gives(self) -> None:
        """Options in the URL survive (the timeout is appended); a setting the URL makes is not overridden."""
        url = "postgresql://app@db/engine?options=-c%20search_path%3Djobs&keepalives_idle=30"
        kwargs = pooled_kwargs(url, 10)
        assert kwargs["options"] == "-c search_path=jobs -c statement_timeout=10000"
        assert "keepalives_idle" not in kwargs
