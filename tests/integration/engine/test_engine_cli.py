"""The ``engine-hub`` command against a real ``engine-hub serve`` subprocess."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.engine.cli_server import (
    CliServer,
    assert_one_line_error,
    cli,
    json_output,
    start_server,
    stop_server,
    wait_for_job,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliServer]:
    """One engine for the module, with the demo types and a generated token file."""
    srv = start_server(tmp_path_factory.mktemp("cli"), "--ephemeral")
    yield srv
    assert stop_server(srv) == 0


class TestJobsCommands:
    def test_create_run_logs_show_list(self, server: CliServer) -> None:
        """A job goes through create, run, logs -f, show and list, with typed params and readable output."""
        job = json_output(
            cli(
                "jobs",
                "create",
                "demo.echo",
                "--name",
                "hello job",
                "--param",
                "message=hi there",
                "--json",
                *server.args(),
            )
        )
        assert (job["status"], job["name"], job["params"]) == ("READY", "hello job", {"message": "hi there"})
        run = cli("jobs", "run", job["id"], "--reason", "cli test", *server.args())
        assert run.returncode == 0, run.stderr
        assert job["id"] in run.stdout and "RUNNING" in run.stdout
        logs = cli("jobs", "logs", job["id"], "-f", *server.args())
        assert logs.returncode == 0, logs.stderr
        assert logs.stdout.splitlines()[-1].endswith("stdout hi there")
        show = cli("jobs", "show", job["id"], *server.args())
        assert show.returncode == 0
        assert "status:     DONE" in show.stdout
        assert "run reason: cli test" in show.stdout
        assert "RUNNING" in show.stdout  # the history table
        listing = cli("jobs", "list", *server.args())
        assert listing.returncode == 0
        header, *rows = listing.stdout.splitlines()
        assert header.split()[:4] == ["ID", "TYPE", "NAME", "STATUS"]
        assert any(row.startswith(job["id"]) and "DONE" in row for row in rows)

    def test_plan_prints_what_the_run_would_do(self, server: CliServer) -> None:
        """jobs plan prints the plan's output, its sha256 on stderr, and leaves the job READY; no plan: one error."""
        job = json_output(cli("jobs", "create", "demo.sleep", "--param", "seconds=9", "--json", *server.args()))
        result = cli("jobs", "plan", job["id"], *server.args())
        assert result.returncode == 0, result.stderr
        assert result.stdout == "would sleep 9 s\n"
        assert "sha256 " in result.stderr and "exit code 0" in result.stderr
        planned = json_output(cli("jobs", "plan", job["id"], "--json", *server.args()))
        assert (planned["output"], planned["exitCode"]) == ("would sleep 9 s\n", 0)
        show = cli("jobs", "show", job["id"], *server.args())
        assert "status:     READY" in show.stdout
        failing = json_output(cli("jobs", "create", "demo.fail", "--json", *server.args()))
        assert_one_line_error(cli("jobs", "plan", failing["id"], *server.args()), 1, "no_plan")

    def test_a_guarded_run_is_requested_then_approved_by_another_actor(self, server: CliServer) -> None:
        """run opens a request (it says who must approve), the requester's approve is refused, bob's runs it."""
        job = json_output(cli("jobs", "create", "demo.guarded", "--json", *server.args()))
        run = cli("jobs", "run", job["id"], "--reason", "ticket 7", "--actor", "alice", *server.args())
        assert run.returncode == 0, run.stderr
        assert "waits for 1 more approval(s) by people other than alice" in run.stdout
        assert "status:     READY" in (show := cli("jobs", "show", job["id"], *server.args()).stdout)
        assert "request:    open, by alice (ticket 7), approvals 0/1: none yet" in show
        waiting = cli("jobs", "requests", *server.args())
        assert waiting.returncode == 0, waiting.stderr
        assert waiting.stdout.splitlines()[0].split()[:3] == ["ID", "TYPE", "REQUESTED"]
        assert any(
            line.startswith(job["id"]) and "alice" in line and "0/1" in line for line in waiting.stdout.splitlines()
        )
        assert_one_line_error(
            cli("jobs", "approve", job["id"], "--actor", "alice", *server.args()), 1, "self_approval", "HTTP 403"
        )
        approve = cli("jobs", "approve", job["id"], "--reason", "ok", "--actor", "bob", *server.args())
        assert approve.returncode == 0, approve.stderr
        assert "RUNNING" in approve.stdout
        assert wait_for_job(server, job["id"], {"DONE"})["runRequest"]["approvals"][0]["by"] == "bob"
        again = json_output(cli("jobs", "create", "demo.guarded", "--json", *server.args()))
        assert cli("jobs", "run", again["id"], "--actor", "alice", *server.args()).returncode == 0
        reject = cli("jobs", "reject", again["id"], "--reason", "no", "--actor", "bob", *server.args())
        assert reject.returncode == 0 and "is rejected; the job stays READY" in reject.stdout

    def test_int_param_is_converted_and_checked(self, server: CliServer) -> None:
        """--param values are converted to the declared type; a wrong one is a one-line usage error."""
        job = json_output(cli("jobs", "create", "demo.sleep", "--param", "seconds=7", "--json", *server.args()))
        assert job["params"] == {"seconds": 7}
        assert_one_line_error(
            cli("jobs", "create", "demo.sleep", "--param", "seconds=soon", *server.args()), 2, "seconds"
        )
        assert_one_line_error(
            cli("jobs", "create", "demo.sleep", "--param", "seconds=9999", *server.args()),
            1,
            "between 0 and 3600",
            "invalid_param",
        )

    def test_cancel_running_job(self, server: CliServer) -> None:
        """jobs cancel ends a RUNNING job, recorded as cancelled by the --actor."""
        job = json_output(cli("jobs", "create", "demo.sleep", "--param", "seconds=600", "--json", *server.args()))
        assert cli("jobs", "run", job["id"], *server.args()).returncode == 0
        result = cli("jobs", "cancel", job["id"], "--actor", "oncall", *server.args())
        assert result.returncode == 0, result.stderr
        done = wait_for_job(server, job["id"], {"FAILED"})
        assert done["error"] == "cancelled by oncall"
        follow = cli("jobs", "logs", job["id"], "--follow", *server.args())
        assert_one_line_error(follow, 1, "FAILED", "cancelled by oncall")

    def test_copy_makes_a_ready_job_like_a_finished_one(self, server: CliServer) -> None:
        """jobs copy prints the new READY job (copy of the old); a READY job is refused in one line."""
        job = json_output(cli("jobs", "create", "demo.echo", "--name", "hello", "--json", *server.args()))
        assert_one_line_error(cli("jobs", "copy", job["id"], *server.args()), 1, "not_finished")
        assert cli("jobs", "run", job["id"], *server.args()).returncode == 0
        wait_for_job(server, job["id"], {"DONE"})
        result = cli("jobs", "copy", job["id"], "--actor", "oncall", *server.args())
        assert result.returncode == 0, result.stderr
        assert "status:     READY" in result.stdout and f"copy of:    {job['id']}" in result.stdout
        shown = cli("jobs", "show", job["id"], *server.args())
        assert "outcome:    succeeded" in shown.stdout and "copies:" in shown.stdout

    def test_list_pages_and_json(self, server: CliServer) -> None:
        """list --limit prints a hint for the next page on stderr; --json prints the array."""
        for _ in range(2):
            cli("jobs", "create", "demo.echo", *server.args())
        result = cli("jobs", "list", "--limit", "1", "--json", *server.args())
        jobs = json_output(result)
        assert len(jobs) == 1
        assert f"--before {jobs[0]['id']}" in result.stderr
        named = json_output(cli("jobs", "create", "demo.echo", "--name", "Nightly Sweep", "--json", *server.args()))
        found = json_output(cli("jobs", "list", "--q", "nightly s", "--json", *server.args()))
        assert [j["id"] for j in found] == [named["id"]]
        types = json_output(cli("jobs", "types", "--json", *server.args()))
        assert "demo.sleep" in {t["name"] for t in types}

    def test_token_from_environment(self, server: CliServer) -> None:
        """$ENGINE_HUB_TOKEN and $ENGINE_HUB_URL replace --data-dir and --url."""
        token = (server.data_dir / "token").read_text().strip()
        result = cli(
            "jobs", "list", "--data-dir", "/nonexistent", env={"ENGINE_HUB_TOKEN": token, "ENGINE_HUB_URL": server.url}
        )
        assert result.returncode == 0, result.stderr


class TestErrors:
    def test_server_refusals_are_one_line(self, server: CliServer) -> None:
        """4xx answers become one line with the engine's message and code, exit 1."""
        job = json_output(cli("jobs", "create", "demo.echo", "--json", *server.args()))
        assert cli("jobs", "run", job["id"], *server.args()).returncode == 0
        wait_for_job(server, job["id"], {"DONE"})
        assert_one_line_error(cli("jobs", "run", job["id"], *server.args()), 1, "not_ready", "HTTP 400")
        assert_one_line_error(cli("jobs", "create", "no.such", *server.args()), 1, "unknown job type", "demo.echo")
        assert_one_line_error(
            cli("jobs", "show", "00000000-0000-4000-8000-000000000000", *server.args()), 1, "not found", "404"
        )
        assert_one_line_error(cli("jobs", "list", "--limit", "0", *server.args()), 1, "limit")

    def test_wrong_token_is_one_line(self, server: CliServer) -> None:
        """A wrong token gives the engine's 401 message."""
        result = cli("jobs", "list", "--url", server.url, env={"ENGINE_HUB_TOKEN": "wrong-token-0123456789"})
        assert_one_line_error(result, 1, "invalid token", "401")

    def test_unreachable_engine(self, tmp_path: Path) -> None:
        """Connection refused names the URL and suggests starting the engine."""
        result = cli("jobs", "list", "--url", "http://127.0.0.1:9", env={"ENGINE_HUB_TOKEN": "x" * 20})
        assert_one_line_error(result, 1, "http://127.0.0.1:9", "connection refused")

    def test_missing_token(self, tmp_path: Path) -> None:
        """Without $ENGINE_HUB_TOKEN or a token file the command says how to provide one."""
        result = cli("jobs", "list", "--data-dir", str(tmp_path))
        assert_one_line_error(result, 1, "ENGINE_HUB_TOKEN", str(tmp_path / "token"))

    @pytest.mark.parametrize(
        "args",
        [
            ["jobs", "frobnicate"],
            ["jobs", "run"],
            ["jobs", "list", "--limit", "many"],
            ["serve", "--port", "99999"],
            ["nothing"],
            [],
            ["jobs", "create", "demo.echo", "--param", "novalue"],
            ["jobs", "show", "../../etc", "--url", "http://127.0.0.1:9"],
        ],
    )
    def test_bad_arguments(self, args: list[str]) -> None:
        """Bad arguments give one usage line and exit 2."""
        env = {"ENGINE_HUB_TOKEN": "x" * 20}
        assert_one_line_error(cli(*args, env=env), 2)

    def test_bad_url(self) -> None:
        """A URL that is not http(s) is refused before any request."""
        result = cli("jobs", "list", "--url", "ftp://example", env={"ENGINE_HUB_TOKEN": "x" * 20})
        assert_one_line_error(result, 1, "invalid engine URL")


class TestServe:
    def test_public_bind_without_token_is_refused(self, tmp_path: Path) -> None:
        """serve --host 0.0.0.0 without ENGINE_HUB_TOKEN exits 2 with one line."""
        result = cli("serve", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path), "--ephemeral")
        assert_one_line_error(result, 2, "non-loopback", "ENGINE_HUB_TOKEN")

    def test_bad_catalog_is_refused(self, tmp_path: Path) -> None:
        """serve with an invalid catalog exits 2 with one line naming the file."""
        catalog = tmp_path / "catalog.toml"
        catalog.write_text("[[types]]\nname = 'x'\n")
        result = cli("serve", "--config", str(catalog), "--port", "0", "--data-dir", str(tmp_path), "--ephemeral")
        assert_one_line_error(result, 2, str(catalog))

    def test_port_in_use(self, server: CliServer, tmp_path: Path) -> None:
        """serve on a port that is taken exits 1 with one line."""
        port = server.url.rsplit(":", 1)[1]
        result = cli("serve", "--port", port, "--data-dir", str(tmp_path), "--ephemeral")
        assert_one_line_error(result, 1, "cannot listen")

    def test_engine_port_env_is_validated(self, tmp_path: Path) -> None:
        """A malformed ENGINE_PORT is a one-line usage error."""
        result = cli("serve", "--data-dir", str(tmp_path), "--ephemeral", env={"ENGINE_PORT": "http"})
        assert_one_line_error(result, 2, "ENGINE_PORT")

    def test_sigterm_stops_running_jobs_and_exits_cleanly(self, tmp_path: Path) -> None:
        """SIGTERM with a RUNNING job: the engine ends the job and exits 0."""
        token = "serve-test-token-0123456789"
        srv = start_server(tmp_path, "--ephemeral", env={"ENGINE_HUB_TOKEN": token})
        env = {"ENGINE_HUB_TOKEN": token}
        job = json_output(
            cli("jobs", "create", "demo.sleep", "--param", "seconds=600", "--json", "--url", srv.url, env=env)
        )
        assert cli("jobs", "run", job["id"], "--url", srv.url, env=env).returncode == 0
        assert stop_server(srv) == 0
        events = [
            json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines() if line.startswith("{")
        ]
        finished = [e for e in events if e["event"] == "job_transition" and e["job_id"] == job["id"]]
        assert finished[-1]["to_status"] == "FAILED"
        assert "engine_stopped" in {e["event"] for e in events}
        assert token not in (tmp_path / "serve.log").read_text()
