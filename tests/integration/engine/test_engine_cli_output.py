"""What ``engine-hub jobs`` prints to an operator's terminal: a job's output cannot act on the terminal."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest

from tests.integration.engine.cli_server import CliServer, cli, json_output, start_server, stop_server, wait_for_job

#: Output that would clear the screen, retitle the window, start a C1 CSI, delete, and reorder text.
HOSTILE = (
    "A\x1b[2J\x1b]0;pwned\x07B\x9b31mC\x7fD\u202eE\u202a\u202b\u202c\u202dF"
    "\u2066G\u2067\u2068\u2069H\x00\x08\r\x85\u2028\ttab"
)
_PRINT = f"import sys; sys.stdout.write({HOSTILE!r} + '\\n'); sys.stderr.write({HOSTILE!r} + '\\n')"
#: Characters that must never reach the terminal unescaped (the tab and the line break may).
CONTROLS = set(HOSTILE) - {"\t"} - set("ABCDEFGHtab[2J]0;pwned31m")


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CliServer, str]]:
    """An engine whose ``hostile`` job type prints :data:`HOSTILE` on both streams; and one finished run."""
    tmp = tmp_path_factory.mktemp("cli-output")
    catalog = tmp / "catalog.toml"
    catalog.write_text(
        f'[[types]]\nname = "hostile"\ncommand = {json.dumps([sys.executable, "-c", _PRINT])}\ntimeout = 30\n'
    )
    srv = start_server(tmp, "--ephemeral", "--config", str(catalog))
    job = json_output(cli("jobs", "create", "hostile", "--json", *srv.args()))
    assert cli("jobs", "run", job["id"], *srv.args()).returncode == 0
    wait_for_job(srv, job["id"], {"DONE"})
    yield srv, job["id"]
    assert stop_server(srv) == 0


def unprintable(text: str) -> set[str]:
    """The characters of ``text`` that are neither printable nor a line break or a tab."""
    return {c for c in text if not c.isprintable() and c not in "\n\t"}


class TestLogsOutput:
    def test_control_characters_are_escaped(self, hostile_server: tuple[CliServer, str]) -> None:
        """`jobs logs -f` shows C0/C1 controls, ESC/OSC sequences, DEL and bidi characters as \\uXXXX; tabs stay."""
        srv, job_id = hostile_server
        result = cli("jobs", "logs", "-f", job_id, *srv.args())
        assert result.returncode == 0, result.stderr
        assert not unprintable(result.stdout), sorted(map(hex, map(ord, unprintable(result.stdout))))
        lines = result.stdout.splitlines()
        assert len(lines) == 2
        for line in lines:
            assert (
                "A\\u001b[2J\\u001b]0;pwned\\u0007B\\u009b31mC\\u007fD\\u202eE\\u202a\\u202b\\u202c\\u202dF"
                "\\u2066G\\u2067\\u2068\\u2069H\\u0000\\u0008\\u000d\\u0085\\u2028\ttab"
            ) in line

    def test_raw_prints_the_output_as_it_is(self, hostile_server: tuple[CliServer, str]) -> None:
        """`jobs logs --raw` opts out: the job's bytes reach stdout unchanged."""
        srv, job_id = hostile_server
        result = cli("jobs", "logs", "--raw", job_id, *srv.args())
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("\x1b[2J\x1b]0;pwned\x07B\x9b31mC\x7fD\u202eE") == 2

    def test_json_lines_stay_valid_and_escaped(self, hostile_server: tuple[CliServer, str]) -> None:
        """`jobs logs --json` prints JSON that decodes to the exact output, with nothing unprintable on the terminal."""
        srv, job_id = hostile_server
        result = cli("jobs", "logs", "--json", job_id, *srv.args())
        assert result.returncode == 0, result.stderr
        assert not unprintable(result.stdout)
        # The runner splits lines on \n; a lone \r before it is dropped, one inside stays.
        assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == [HOSTILE, HOSTILE]
        raw = cli("jobs", "logs", "--json", "--raw", job_id, *srv.args())
        # Split on \n only: str.splitlines would also split at the raw NEL and U+2028.
        assert "\u202e" in raw.stdout and [json.loads(line)["text"] for line in raw.stdout.split("\n")[:-1]] == [
            HOSTILE,
            HOSTILE,
        ]
