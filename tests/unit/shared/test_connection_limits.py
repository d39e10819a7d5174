"""Connection limits: the fd budget, and repeated connection events logged once per interval."""

from __future__ import annotations

import asyncio
import errno
import resource
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from admin_gateway.config import resolve_settings
from admin_gateway.settings import Settings as GatewaySettings
from admin_gateway.settings import SettingsError
from engine_hub.settings import Settings as EngineSettings
from shared.connection import AcceptErrorHandler, CoalescedLog, check_aiohttp_hooks
from shared.connection_limits import (
    DEFAULT_MAX_CONNECTIONS,
    FD_RESERVE,
    ConnectionLimits,
    plan_fd_limit,
)

INFINITY = resource.RLIM_INFINITY


def _accept_context() -> dict[str, Any]:
    # What asyncio's selector loop reports when accept() runs out of descriptors.
    return {
        "message": "socket.accept() out of system resource",
        "exception": OSError(errno.EMFILE, "Too many open files"),
    }


async def _wait_for(predicate: Any, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class TestPlanFdLimit:
    def test_soft_limit_is_raised_to_fit_the_default_cap(self) -> None:
        """A soft limit of 1024 under a high hard limit is raised to the default cap plus the reserve."""
        plan = plan_fd_limit(None, 1024, 524288)
        assert plan.soft_limit == DEFAULT_MAX_CONNECTIONS + FD_RESERVE
        assert plan.max_connections == DEFAULT_MAX_CONNECTIONS and not plan.short

    def test_default_cap_sits_below_a_limit_that_cannot_be_raised(self) -> None:
        """When the hard limit stops the raise, the default cap leaves the reserve free."""
        plan = plan_fd_limit(None, 1024, 1024)
        assert plan.soft_limit == 1024
        assert plan.max_connections == 1024 - FD_RESERVE

    def test_tiny_limit_leaves_half_to_clients(self) -> None:
        """Below twice the reserve, clients get half the descriptors and the rest of the process the other half."""
        assert plan_fd_limit(None, 64, 64).max_connections == 32

    def test_configured_cap_is_kept_and_flagged_when_it_does_not_fit(self) -> None:
        """An explicit cap is never changed; ``short`` says it leaves less than the reserve."""
        plan = plan_fd_limit(5000, 1024, 2048)
        assert (plan.soft_limit, plan.max_connections, plan.short) == (2048, 5000, True)
        assert not plan_fd_limit(100, 1024, 1024).short

    def test_unlimited_descriptors(self) -> None:
        """With no fd limit at all the cap is the configured or default one."""
        assert plan_fd_limit(None, INFINITY, INFINITY).max_connections == DEFAULT_MAX_CONNECTIONS
        assert plan_fd_limit(7, INFINITY, INFINITY).max_connections == 7

    def test_limits_refuse_nonsense(self) -> None:
        """A cap below 1 or a timeout that is not positive is refused."""
        with pytest.raises(ValueError, match="max_connections"):
            ConnectionLimits(max_connections=0)
        with pytest.raises(ValueError, match="header_timeout"):
            ConnectionLimits(header_timeout=0)
        with pytest.raises(ValueError, match="body_timeout"):
            ConnectionLimits(body_timeout=0)
        with pytest.raises(ValueError, match="max_connections_per_address"):
            ConnectionLimits(max_connections_per_address=-1)

    def test_per_address_cap_defaults_to_a_share_of_the_cap(self) -> None:
        """Without a per-address cap it is a quarter of the cap (at least 1); a configured one, 0 included, is kept."""
        assert ConnectionLimits().per_address_cap(1024) == 256
        assert ConnectionLimits().per_address_cap(2) == 1
        assert ConnectionLimits(max_connections_per_address=0).per_address_cap(1024) == 0
        assert ConnectionLimits(max_connections_per_address=5000).per_address_cap(1024) == 5000


class TestCoalescedLog:
    async def test_one_line_per_interval_with_the_suppressed_count(self) -> None:
        """A thousand occurrences make one line at once and one line carrying the 999 left out."""
        with capture_logs() as logs:
            coalesced = CoalescedLog("thing_happened", level="warning", interval=0.05)
            for n in range(1000):
                coalesced.hit(n=n)
            assert [(e["event"], e["suppressed"], e["n"]) for e in logs] == [("thing_happened", 0, 0)]
            await _wait_for(lambda: len(logs) == 2)
            assert (logs[1]["suppressed"], logs[1]["n"], logs[1]["log_level"]) == (999, 999, "warning")
            await asyncio.sleep(0.12)  # a quiet interval writes nothing ...
            assert len(logs) == 2
            coalesced.hit(n=1000)  # ... and the next occurrence is logged at once again
            assert logs[2]["suppressed"] == 0
            coalesced.close()

    async def test_close_writes_the_pending_count(self) -> None:
        """Occurrences counted when the process stops are not lost."""
        with capture_logs() as logs:
            coalesced = CoalescedLog("thing_happened", level="info", interval=3600)
            for _ in range(5):
                coalesced.hit()
            coalesced.close()
        assert [e["suppressed"] for e in logs] == [0, 4]


class TestAcceptErrorHandler:
    async def test_accept_errors_are_coalesced(self) -> None:
        """A storm of EMFILE accept errors is one ``accept_failed`` line, not one traceback each."""
        loop = asyncio.get_running_loop()
        handler = AcceptErrorHandler(loop, interval=3600)
        handler.install()
        try:
            with capture_logs() as logs:
                for _ in range(500):
                    loop.call_exception_handler(_accept_context())
                assert len(logs) == 1
                assert logs[0]["event"] == "accept_failed" and logs[0]["errno"] == "EMFILE"
                assert logs[0]["error"] == "Too many open files"
        finally:
            with capture_logs() as logs:
                handler.uninstall()
        assert [(e["event"], e["suppressed"]) for e in logs] == [("accept_failed", 499)]
        assert loop.get_exception_handler() is None

    async def test_other_errors_go_to_the_previous_handler(self) -> None:
        """Anything but a resource error reaches the handler installed before, unchanged."""
        loop = asyncio.get_running_loop()
        seen: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: seen.append(context))
        handler = AcceptErrorHandler(loop, interval=3600)
        handler.install()
        try:
            other = {"message": "boom", "exception": ValueError("x")}
            refused = {"message": "x", "exception": OSError(errno.ECONNREFUSED, "refused")}
            loop.call_exception_handler(other)
            loop.call_exception_handler(refused)
            assert seen == [other, refused]
        finally:
            handler.uninstall()
            loop.set_exception_handler(None)


class TestAiohttpHooks:
    def test_aiohttp_still_has_what_the_header_timeout_reads(self) -> None:
        """The installed aiohttp's connection protocol has the internals shared.server relies on."""
        check_aiohttp_hooks()


class TestGatewaySettings:
    def test_config_file_and_flags_set_the_limits(self, tmp_path: Path) -> None:
        """The connection limits come from the TOML file, flags win."""
        config = tmp_path / "gateway.toml"
        config.write_text(
            "[gateway]\nmax_connections = 300\nheader_timeout = 5\nkeepalive_timeout = 90.5\n"
            "body_timeout = 12\nmax_connections_per_address = 0\n"
        )
        settings = resolve_settings({"config": str(config), "header_timeout": 2.5}, {"ENGINE_HUB_TOKEN": "tok"})
        assert ConnectionLimits.of(settings) == ConnectionLimits(
            max_connections=300,
            header_timeout=2.5,
            keepalive_timeout=90.5,
            body_timeout=12,
            max_connections_per_address=0,
        )

    def test_defaults_match_the_shared_ones(self) -> None:
        """Without configuration the gateway and the engine use the same limits."""
        gateway = GatewaySettings(engine_token="tok")
        assert ConnectionLimits.of(gateway) == ConnectionLimits.of(EngineSettings()) == ConnectionLimits()

    @pytest.mark.parametrize(
        "values",
        [
            {"max_connections": 0},
            {"header_timeout": 0},
            {"keepalive_timeout": -1},
            {"body_timeout": 0},
            {"max_connections_per_address": -1},
        ],
    )
    def test_nonsense_is_one_clear_error(self, values: dict[str, Any]) -> None:
        """A cap below 1 or a timeout that is not positive stops the gateway with a settings error."""
        with pytest.raises(SettingsError, match=next(iter(values))):
            resolve_settings({"config": None, **values}, {"ENGINE_HUB_TOKEN": "tok"})
