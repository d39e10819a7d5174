"""The ``admin-gateway`` console script, run as a real subprocess: users commands and ``serve`` start-up."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from admin_gateway.auth.users import USERS_FILE, UserStore
from tests.integration.gateway.console import StartGateway, free_port, one_error_line, run

GOOD = "a long enough password"


class TestUsersCommands:
    def test_add_list_remove(self, tmp_path: Path) -> None:
        """users add/list/remove work on the --data-dir; the file is private (0600)."""
        data = str(tmp_path / "gw")
        added = run(
            "users", "add", "alice", "--role", "super_admin", "--password-stdin", "--data-dir", data, stdin=GOOD + "\n"
        )
        assert added.returncode == 0, added.stderr
        assert (
            run(
                "users", "add", "bob", "--role", "admin", "--password-stdin", "--data-dir", data, stdin=GOOD + "\n"
            ).returncode
            == 0
        )
        path = tmp_path / "gw" / USERS_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert GOOD not in path.read_text()
        listed = run("users", "list", "--json", "--data-dir", data)
        assert [(u["name"], u["role"]) for u in json.loads(listed.stdout)] == [
            ("alice", "super_admin"),
            ("bob", "admin"),
        ]
        assert "alice" in run("users", "list", "--data-dir", data).stdout
        assert run("users", "remove", "bob", "--data-dir", data).returncode == 0
        assert [u.name for u in UserStore(tmp_path / "gw").list_users()] == ["alice"]
        assert UserStore(tmp_path / "gw").verify("alice", GOOD) is not None

    def test_short_password_is_refused(self, tmp_path: Path) -> None:
        """A password under 12 characters is refused with one line; no user is created."""
        proc = run(
            "users",
            "add",
            "alice",
            "--role",
            "super_admin",
            "--password-stdin",
            "--data-dir",
            str(tmp_path),
            stdin="elevenchars\n",
        )
        assert "at least 12 characters" in one_error_line(proc)
        assert UserStore(tmp_path).get("alice") is None

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("users", "add", "alice", "--role", "admin", "--password-stdin"), "already exists"),
            (("users", "add", "bad name", "--role", "admin", "--password-stdin"), "user name"),
            (("users", "remove", "nobody"), "no user"),
            (("users", "set-password", "nobody", "--password-stdin"), "no user"),
            (("users", "add", "carol", "--role", "admin"), "no terminal"),
        ],
    )
    def test_errors_are_one_line(self, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
        """Mistakes end with a one-line error and a non-zero status."""
        UserStore(tmp_path).add("alice", "super_admin", GOOD)
        proc = run(*args, "--data-dir", str(tmp_path), stdin=GOOD + "\n" if "--password-stdin" in args else None)
        assert message in one_error_line(proc)

    def test_bad_role_is_refused(self, tmp_path: Path) -> None:
        """An unknown role is refused by the argument parser."""
        proc = run(
            "users",
            "add",
            "alice",
            "--role",
            "root",
            "--password-stdin",
            "--data-dir",
            str(tmp_path),
            stdin=GOOD + "\n",
        )
        assert proc.returncode == 2
        assert "invalid choice" in proc.stderr

    def test_set_password(self, tmp_path: Path) -> None:
        """set-password replaces the password."""
        UserStore(tmp_path).add("alice", "super_admin", GOOD)
        proc = run(
            "users",
            "set-password",
            "alice",
            "--password-stdin",
            "--data-dir",
            str(tmp_path),
            stdin="a brand new password\n",
        )
        assert proc.returncode == 0, proc.stderr
        store = UserStore(tmp_path)
        assert store.verify("alice", "a brand new password") is not None
        assert store.verify("alice", GOOD) is None

    def test_ensure_admin_prints_a_password_once(self, tmp_path: Path) -> None:
        """With no users, ensure-admin creates a super_admin ``admin`` and prints its password; then never again."""
        first = run("users", "ensure-admin", "--data-dir", str(tmp_path))
        assert first.returncode == 0, first.stderr
        password = first.stdout.split("with password: ")[1].split()[0]
        assert len(password) >= 20
        record = UserStore(tmp_path).verify("admin", password)
        assert record is not None and record.role == "super_admin"
        second = run("users", "ensure-admin", "--data-dir", str(tmp_path))
        assert second.returncode == 0
        assert password not in second.stdout
        assert "nothing to do" in second.stdout


class TestServeStartup:
    @pytest.mark.parametrize("value", ["maybe", "", "2", "offf", "disabled"])
    def test_unrecognised_safe_mode_refuses_to_start(self, tmp_path: Path, engine_token_file: Path, value: str) -> None:
        """An unrecognised SAFE_MODE stops the gateway at once with one clear line."""
        proc = run(
            "serve",
            "--data-dir",
            str(tmp_path),
            "--engine-token-file",
            str(engine_token_file),
            "--port",
            str(free_port()),
            env={"SAFE_MODE": value},
            timeout=20,
        )
        line = one_error_line(proc)
        assert "SAFE_MODE" in line and "not recognised" in line

    def test_unrecognised_flag_value_refuses_to_start(self, tmp_path: Path, engine_token_file: Path) -> None:
        """``--safe-mode`` with a bad value is refused the same way."""
        proc = run(
            "serve",
            "--safe-mode",
            "nah",
            "--engine-token-file",
            str(engine_token_file),
            "--data-dir",
            str(tmp_path),
            timeout=20,
        )
        assert "--safe-mode" in one_error_line(proc)

    def test_missing_token_refuses_to_start(self, tmp_path: Path) -> None:
        """Without an engine token the gateway does not start."""
        proc = run("serve", "--data-dir", str(tmp_path), timeout=20)
        assert "engine token" in one_error_line(proc)

    def test_bad_config_refuses_to_start(self, tmp_path: Path, engine_token_file: Path) -> None:
        """A config file with an unknown key (a typo) stops the gateway."""
        config = tmp_path / "gateway.toml"
        config.write_text("[gateway]\nsafe_mod = false\n")
        proc = run("serve", "--config", str(config), "--engine-token-file", str(engine_token_file), timeout=20)
        assert "unknown key(s) safe_mod" in one_error_line(proc)


class TestServeSafeMode:
    @pytest.mark.parametrize(
        ("env", "args", "expected"),
        [
            ({}, (), True),
            ({"SAFE_MODE": "off"}, (), False),
            ({"SAFE_MODE": " FALSE "}, (), False),
            ({"SAFE_MODE": "yes"}, (), True),
            ({"SAFE_MODE": "on"}, ("--safe-mode", "0"), False),
            ({"SAFE_MODE": "off"}, ("--safe-mode", "true"), True),
        ],
        ids=["default-on", "env-off", "env-false-padded", "env-yes", "flag-beats-env-off", "flag-beats-env-on"],
    )
    def test_safe_mode_sources(
        self, gateway_process: StartGateway, env: dict[str, str], args: tuple[str, ...], expected: bool
    ) -> None:
        """SAFE_MODE is on by default; only an explicit false turns it off; the flag beats the environment."""
        started = gateway_process(*args, env=env)
        assert started["safe_mode"] is expected
