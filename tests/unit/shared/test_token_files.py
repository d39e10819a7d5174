"""The one token-file reader (shared/tokens.py) and the messages each of its three callers gives."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from admin_gateway.config import resolve_settings
from admin_gateway.settings import SettingsError
from engine_hub.cli.client import ClientError, find_token
from engine_hub.errors import ConfigError
from engine_hub.http.auth import load_or_create_token_file, read_given_token_file
from shared.tokens import HEADER_SAFE_RULE, TokenFileError, read_token_file

GOOD = "a-good-token-0123456789"


def _write(path: Path, text: str | bytes, mode: int = 0o600) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="ascii")
    path.chmod(mode)
    return path


def _gateway_flags(token_file: Path) -> dict[str, Any]:
    return {"config": None, "engine_token_file": str(token_file), "trusted_proxies": [], "allowed_origins": []}


class TestSharedReader:
    def test_token_is_the_stripped_text(self, tmp_path: Path) -> None:
        """The token is the file's text without the surrounding whitespace."""
        assert read_token_file(_write(tmp_path / "t", f"\n {GOOD}\r\n")) == GOOD

    def test_missing_file_is_none(self, tmp_path: Path) -> None:
        """A missing file is None: each caller says what that means."""
        assert read_token_file(tmp_path / "absent") is None

    @pytest.mark.parametrize("text", ["", "\n", "  \t\n"])
    def test_empty_file_is_refused(self, tmp_path: Path, text: str) -> None:
        """An empty (or blank) file is refused with the label and the path."""
        path = _write(tmp_path / "t", text)
        with pytest.raises(TokenFileError, match=f"^{re.escape(f'engine token file {path} is empty')}$"):
            read_token_file(path, label="engine token file")

    @pytest.mark.parametrize("text", [f"{GOOD}\nsecond-line\n", "has a space-0123456789", "tab\there-0123456789"])
    def test_token_that_cannot_travel_in_a_header_is_refused(self, tmp_path: Path, text: str) -> None:
        """A second line, a space or a control character inside the token is refused, naming the file."""
        path = _write(tmp_path / "t", text)
        with pytest.raises(TokenFileError) as caught:
            read_token_file(path)
        assert str(caught.value) == f"the token in {path} {HEADER_SAFE_RULE}"

    def test_non_ascii_file_is_refused(self, tmp_path: Path) -> None:
        """A file that is not ASCII text cannot be read as a token."""
        path = _write(tmp_path / "t", "tökén-0123456789".encode())
        with pytest.raises(TokenFileError, match=r"cannot read the token file .*: not ASCII text"):
            read_token_file(path)

    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
    def test_unreadable_file_is_refused_with_the_reason(self, tmp_path: Path) -> None:
        """A file we may not read is refused with the system's reason, once, without the errno noise."""
        path = _write(tmp_path / "t", GOOD, mode=0o000)
        with pytest.raises(TokenFileError) as caught:
            read_token_file(path)
        assert str(caught.value) == f"cannot read the token file {path}: Permission denied"

    def test_open_permissions_are_reported_not_refused(self, tmp_path: Path) -> None:
        """A file group or others may access is reported to the caller with its mode, and still read."""
        seen: list[int] = []
        assert read_token_file(_write(tmp_path / "t", GOOD, mode=0o644), too_open=seen.append) == GOOD
        assert seen == [0o644]
        seen.clear()
        assert read_token_file(_write(tmp_path / "u", GOOD, mode=0o600), too_open=seen.append) == GOOD
        assert seen == []


class TestEngineReader:
    def test_given_file_missing_says_it_does_not_exist(self, tmp_path: Path) -> None:
        """--token-file naming a missing file: 'does not exist'."""
        with pytest.raises(ConfigError, match="does not exist"):
            read_given_token_file(tmp_path / "absent")

    def test_engine_keeps_its_length_rule(self, tmp_path: Path) -> None:
        """The engine still refuses an admin token shorter than 16 characters."""
        with pytest.raises(ConfigError, match="16 to 512 characters"):
            read_given_token_file(_write(tmp_path / "t", "short\n"))

    def test_generated_file_reads_back(self, tmp_path: Path) -> None:
        """The token file the engine generates is read back by the shared reader unchanged."""
        path = tmp_path / "data" / "token"
        token = load_or_create_token_file(path)
        assert read_token_file(path) == token
        assert load_or_create_token_file(path) == token


class TestCliReader:
    def test_reads_the_data_dir_token(self, tmp_path: Path) -> None:
        """Without $ENGINE_HUB_TOKEN the CLI reads <data_dir>/token."""
        _write(tmp_path / "token", GOOD + "\n")
        assert find_token(data_dir=tmp_path, environ={}) == GOOD

    def test_missing_file_says_how_to_provide_a_token(self, tmp_path: Path) -> None:
        """No token anywhere: the message names the variable and the data directory."""
        with pytest.raises(ClientError, match="no token: set ENGINE_HUB_TOKEN or point --data-dir"):
            find_token(data_dir=tmp_path, environ={})

    def test_empty_file_is_refused(self, tmp_path: Path) -> None:
        """An empty <data_dir>/token keeps the CLI's message."""
        path = _write(tmp_path / "token", "\n")
        with pytest.raises(ClientError, match=f"^{re.escape(f'the token file {path} is empty')}$"):
            find_token(data_dir=tmp_path, environ={})


class TestGatewayReader:
    def test_first_line_only_is_no_longer_enough(self, tmp_path: Path) -> None:
        """The gateway refuses a file with a second line, as the engine does, instead of using line one."""
        path = _write(tmp_path / "t", f"{GOOD}\n# a comment\n")
        with pytest.raises(SettingsError, match="must be printable ASCII without spaces"):
            resolve_settings(_gateway_flags(path), {})

    def test_missing_file_keeps_the_gateway_message(self, tmp_path: Path) -> None:
        """A missing engine token file keeps the gateway's 'cannot read engine token file' line."""
        path = tmp_path / "absent"
        with pytest.raises(SettingsError) as caught:
            resolve_settings(_gateway_flags(path), {})
        assert str(caught.value) == f"cannot read engine token file {path}: No such file or directory"

    def test_empty_file_keeps_the_gateway_message(self, tmp_path: Path) -> None:
        """An empty engine token file keeps the gateway's 'engine token file … is empty' line."""
        path = _write(tmp_path / "t", "")
        with pytest.raises(SettingsError) as caught:
            resolve_settings(_gateway_flags(path), {})
        assert str(caught.value) == f"engine token file {path} is empty"
