"""Device cookies: signed, bound to an account, expiring; anything else is no device cookie."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from admin_gateway.auth.device_cookies import KEY_FILE, LIFETIME, DeviceCookies, load_or_create_key
from admin_gateway.auth.throttle import LoginThrottle


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = 2_000_000_000.0

    def __call__(self) -> float:
        return self.now


def _cookies(clock: Clock, key: bytes = b"k" * 32) -> DeviceCookies:
    cookies = DeviceCookies(clock=clock, trusted_proxies=())
    cookies.use_key(key)
    return cookies


def _check(cookies: DeviceCookies, value: str, username: str) -> str | None:
    return cookies.device_id(value, LoginThrottle.account_key, username)


class TestDeviceCookies:
    def test_genuine_cookie_names_its_device_for_its_account_only(self) -> None:
        """A cookie issued for alice gives a device id for alice (any case), none for bob."""
        cookies = _cookies(Clock())
        value = cookies.issue("alice")
        device = _check(cookies, value, "alice")
        assert device is not None and _check(cookies, value, "ALICE") == device
        assert _check(cookies, value, "bob") is None
        assert _check(cookies, cookies.issue("alice"), "alice") != device  # each sign-in: a new device id

    def test_expired_forged_and_garbled_cookies_are_ignored(self) -> None:
        """Expired, re-signed under another key, edited or malformed values are not device cookies."""
        clock = Clock()
        cookies = _cookies(clock)
        value = cookies.issue("alice")
        other_key = _cookies(clock, b"x" * 32).issue("alice")
        parts = value.split(".")
        edited = ".".join([parts[0], parts[1], "another-device-id", parts[3], parts[4]])
        for bad in (
            other_key,
            edited,
            "",
            "d1.....",
            value + "x",
            "d1.%%%.a.1.sig",
            value.replace("d1", "d2", 1),
            "d1.é.x.1.sig",
            value[:-1] + "é",
            "d1.\udcff.x.1.sig",
            "x" * 600,
        ):
            assert _check(cookies, bad, "alice") is None, bad
        clock.now += LIFETIME
        assert _check(cookies, value, "alice") is None

    def test_key_file_is_created_private_and_reused(self, tmp_path: Path) -> None:
        """The key is made once (mode 0600) and read back unchanged at the next start."""
        key = load_or_create_key(tmp_path / "gw")
        assert len(key) == 32 and load_or_create_key(tmp_path / "gw") == key
        assert stat.S_IMODE((tmp_path / "gw" / KEY_FILE).stat().st_mode) == 0o600

    def test_unusable_key_file_is_refused(self, tmp_path: Path) -> None:
        """A key file that holds no hex key stops the start with a clear message."""
        (tmp_path / KEY_FILE).write_text("not hex\n")
        with pytest.raises(ValueError, match="delete it"):
            load_or_create_key(tmp_path)

    def test_empty_key_file_from_a_crash_is_replaced(self, tmp_path: Path) -> None:
        """An empty key file (left by a start killed before writing it) gets a new key instead of stopping the start."""
        (tmp_path / KEY_FILE).write_bytes(b"")
        key = load_or_create_key(tmp_path)
        assert len(key) == 32 and load_or_create_key(tmp_path) == key
        assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600

    def test_failed_write_leaves_no_key_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A key that could not be written whole leaves neither a key file nor a temporary file behind."""

        def refuse(*_: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", refuse)
        with pytest.raises(OSError, match="No space left"):
            load_or_create_key(tmp_path)
        assert os.listdir(tmp_path) == []
