"""Run the real console scripts as subprocesses for end-to-end tests.

Each process gets a free port, its own temporary data dir and a log file;
``start`` waits on ``/healthz`` and ``stop`` always cleans up, even when a
test fails half-way.

The console scripts of a :class:`Stack` are those of the session's
installation of the wheel (:mod:`tests.e2e.install`, the ``installed``
fixture of ``tests/conftest.py``), never the dev venv's editable install, and they run with the
stack's temporary folder as working directory and without ``PYTHONPATH``:
the panel is tested with exactly the files an operator's install has.

:class:`Stack` is the product as an operator installs it: one
``engine-hub serve`` (with a catalog file holding the demo types, a
marker-writing type and a submit-scope client token) and any number of
``admin-gateway serve`` processes in front of it, each with its own data
dir, its users created through ``admin-gateway users add``, the engine
token handed over as a file and SAFE_MODE from the environment. The
browser suite drives the same stacks (``make_stack``, also in ``tests/conftest.py``).

The HTTP helpers (:class:`EngineApi`, :class:`Panel`) are plain ``urllib``
clients, as a script or a legacy system would be: a :class:`Panel` signs in
through the login form with the CSRF token scraped from the page and keeps
its session in a cookie jar.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from email.message import Message
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.e2e.install import Installation, operator_env

#: The dev venv's console scripts (editable install), for suites that test the code rather than the
#: install (tests/fuzz). A :class:`Stack` runs those of its :class:`Installation` instead.
BIN = Path(sys.executable).parent

#: The engine's admin token (given to the engine as ``ENGINE_HUB_TOKEN``, to gateways as a file).
ENGINE_TOKEN = "e2e-engine-admin-token-0123456789abcdef"
#: A submit-scope client token declared (hashed) in the catalog, and the client's name.
CLIENT_NAME = "legacy-crm"
CLIENT_TOKEN = "e2e-legacy-client-token-fedcba9876543210"
#: The super_admin every gateway of a :class:`Stack` knows.
USER = "alice"
PASSWORD = "correct horse battery staple"
#: A catalog type whose only effect is a file ``<marker dir>/<JOB_ID>``: proof that it ran.
TOUCH_TYPE = "e2e.touch"
FINAL = frozenset({"DONE", "FAILED"})

T = TypeVar("T")


def free_port() -> int:
    """Return a TCP port that was free on loopback a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: object, *, timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    """Poll ``predicate()`` until it is truthy; raise ``TimeoutError`` naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def poll(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call ``fetch()`` until ``done(value)``; return that value, or fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {value!r}")
        time.sleep(interval)


class Service:
    """One real server process started from its console script."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        log_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}.log"
        self.env = operator_env(env)
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 30.0) -> Service:
        """Start the process (again, after a stop) and wait until ``/healthz`` answers 200."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, stdin=subprocess.DEVNULL, cwd=self.cwd
        )
        log.close()

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait_until(healthy, timeout=timeout, what=f"{self.name} /healthz")
        return self

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        """Stop the server cleanly (SIGTERM), or kill it if it does not go within 15 s; return its status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the process printed (for failure messages)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"


def run_cli(
    argv: Sequence[str],
    *,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Run a console script to completion and return its result (never raises on exit code)."""
    return subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, env=operator_env(env), cwd=cwd
    )


# -- processes of a job --------------------------------------------------------------


def job_pids(job_id: str) -> set[int]:
    """Return the live (non-zombie) processes whose environment holds ``JOB_ID=<job_id>``.

    Every process of a run (the job and anything it starts) inherits that
    variable from the engine, so this finds grandchildren too.
    """
    needle = f"JOB_ID={job_id}".encode()
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
        except (OSError, IndexError):
            continue  # gone meanwhile, or not ours to read
        found.add(int(entry.name))
    return found


# -- HTTP clients --------------------------------------------------------------------


class Reply:
    """An HTTP answer, whatever its status."""

    def __init__(self, status: int, body: bytes, headers: Mapping[str, str] | Message) -> None:
        self.status = status
        self.body = body
        self.headers = dict(headers.items())

    def json(self) -> Any:
        """The body parsed as JSON (fails the test with the body if it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError:
            raise AssertionError(f"not JSON (HTTP {self.status}): {self.body[:500]!r}") from None

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode(errors="replace")

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.body[:300]!r}>"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report redirects to the caller instead of following them."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def http(
    method: str,
    url: str,
    *,
    body: Any = None,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    opener: urllib.request.OpenerDirector | None = None,
    timeout: float = 15.0,
) -> Reply:
    """Send one request (JSON ``body`` or urlencoded ``form``) and return the answer; never raises on status."""
    data: bytes | None = None
    sent = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    elif form is not None:
        data = urllib.parse.urlencode(form).encode()
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    request = urllib.request.Request(url, data=data, method=method, headers=sent)
    open_ = (opener or urllib.request.build_opener(_NoRedirect())).open
    try:
        with open_(request, timeout=timeout) as resp:
            return Reply(resp.status, resp.read(), resp.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return Reply(exc.code, exc.read(), exc.headers)


class EngineApi:
    """The engine's HTTP API under one bearer token (the admin token unless told otherwise)."""

    def __init__(self, url: str, token: str = ENGINE_TOKEN) -> None:
        self.url = url
        self.token = token

    def request(self, method: str, path: str, body: Any = None) -> Reply:
        """Send ``method path`` with the bearer token."""
        return http(method, self.url + path, body=body, headers={"Authorization": f"Bearer {self.token}"})

    def create(
        self, job_type: str, params: Mapping[str, Any] | None = None, *, name: str | None = None
    ) -> dict[str, Any]:
        """Create a job (expecting 201) and return it."""
        body: dict[str, Any] = {"type": job_type, "params": dict(params or {})}
        if name is not None:
            body["name"] = name
        reply = self.request("POST", "/api/jobs", body)
        assert reply.status == 201, reply
        job: dict[str, Any] = reply.json()
        return job

    def run(self, job_id: str, reason: str | None = None) -> None:
        """Run a job (expecting 202)."""
        reply = self.request("POST", f"/api/jobs/{job_id}/run", {"reason": reason} if reason else {})
        assert reply.status == 202, reply

    def job(self, job_id: str) -> dict[str, Any]:
        """Return one job (expecting 200)."""
        reply = self.request("GET", f"/api/jobs/{job_id}")
        assert reply.status == 200, reply
        job: dict[str, Any] = reply.json()
        return job

    def wait_status(self, job_id: str, statuses: Iterable[str] = FINAL, *, timeout: float = 30.0) -> dict[str, Any]:
        """Poll a job until its status is one of ``statuses``."""
        wanted = frozenset(statuses)
        return poll(
            lambda: self.job(job_id),
            lambda job: job["status"] in wanted,
            timeout=timeout,
            what=f"job {job_id} to reach {sorted(wanted)}",
        )


class Panel:
    """A client of one gateway with its own cookie jar: what a signed-in browser tab sends, minus the browser."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())
        self.csrf = ""

    def request(self, method: str, path: str, body: Any = None, *, form: Mapping[str, str] | None = None) -> Reply:
        """Send a request with the session cookie (and, for POST, the CSRF header).

        API paths ask for JSON; pages and forms ask for HTML, as a browser does.
        """
        headers = {"Accept": "application/json" if path.startswith("/api/") else "text/html"}
        if method != "GET" and self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        return http(method, self.url + path, body=body, form=form, headers=headers, opener=self.opener)

    def login(self, user: str = USER, password: str = PASSWORD) -> Reply:
        """Sign in through the form, with the CSRF token scraped from ``GET /login``; return the POST's answer.

        On success (303) the session's CSRF token for API calls is kept in :attr:`csrf`.
        """
        page = self.request("GET", "/login")
        assert page.status == 200, page
        found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert found, f"no csrf_token field in the login form: {page.text[:500]}"
        answer = self.request(
            "POST", "/login", form={"username": user, "password": password, "csrf_token": found.group(1)}
        )
        if answer.status == 303:
            config = self.request("GET", "/api/admin/config")
            assert config.status == 200, config
            self.csrf = config.json()["csrfToken"]
        return answer

    def jobs(self) -> Reply:
        """``GET /api/admin/engine/jobs``."""
        return self.request("GET", "/api/admin/engine/jobs")

    def create(self, job_type: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Create a job through the gateway (expecting 201) and return it."""
        reply = self.request("POST", "/api/admin/engine/jobs", {"type": job_type, "params": dict(params or {})})
        assert reply.status == 201, reply
        job: dict[str, Any] = reply.json()
        return job

    def run(self, job_id: str, reason: str | None = None) -> Reply:
        """``POST …/run``, optionally with a reason."""
        return self.request("POST", f"/api/admin/engine/jobs/{job_id}/run", {"reason": reason} if reason else {})

    def cancel(self, job_id: str) -> Reply:
        """``POST …/cancel``."""
        return self.request("POST", f"/api/admin/engine/jobs/{job_id}/cancel", {})

    def job(self, job_id: str) -> dict[str, Any]:
        """One job through the gateway (expecting 200)."""
        reply = self.request("GET", f"/api/admin/engine/jobs/{job_id}")
        assert reply.status == 200, reply
        job: dict[str, Any] = reply.json()
        return job

    def log_texts(self, job_id: str) -> list[str]:
        """The text of every log line of a job so far."""
        reply = self.request("GET", f"/api/admin/engine/jobs/{job_id}/logs")
        assert reply.status == 200, reply
        return [line["text"] for line in reply.json()["lines"]]

    def wait_status(self, job_id: str, statuses: Iterable[str] = FINAL, *, timeout: float = 30.0) -> dict[str, Any]:
        """Poll a job through the gateway until its status is one of ``statuses``."""
        wanted = frozenset(statuses)
        return poll(
            lambda: self.job(job_id),
            lambda job: job["status"] in wanted,
            timeout=timeout,
            what=f"job {job_id} to reach {sorted(wanted)}",
        )


# -- the two processes ---------------------------------------------------------------


def _toml(value: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes).
    return json.dumps(value)


def write_catalog(path: Path, marker_dir: Path) -> Path:
    """Write the engine catalog: the demo types, :data:`TOUCH_TYPE` and the :data:`CLIENT_NAME` client."""
    import hashlib

    touch = "import os, pathlib; pathlib.Path(os.environ['E2E_MARKER_DIR'], os.environ['JOB_ID']).touch()"
    path.write_text(
        "\n".join(
            [
                "include_demo = true",
                "",
                "[[types]]",
                f"name = {_toml(TOUCH_TYPE)}",
                'description = "Leave a marker file named after the job: proof that it ran."',
                f'command = [{_toml(sys.executable)}, "-c", {_toml(touch)}]',
                "timeout = 30",
                f"env = {{ E2E_MARKER_DIR = {_toml(str(marker_dir))} }}",
                "",
                "[[clients]]",
                f"name = {_toml(CLIENT_NAME)}",
                'scope = "submit"',
                f"token_sha256 = {_toml(hashlib.sha256(CLIENT_TOKEN.encode()).hexdigest())}",
                "",
            ]
        )
    )
    return path


def gateway_service(
    root: Path,
    install: Installation,
    name: str,
    *,
    engine_urls: Sequence[str],
    token_file: Path,
    safe_mode: bool,
    refresh_interval: float | None = None,
) -> Service:
    """A gateway (not started) on a new data dir under ``root`` holding :data:`USER`, added through the CLI.

    It calls the engines at ``engine_urls`` (in failover order) with the token in ``token_file``, and logs
    into ``root/logs``.
    """
    data_dir = root / f"gateway-{name}"
    added = run_cli(
        [
            str(install.bin / "admin-gateway"),
            "users",
            "add",
            USER,
            "--role",
            "super_admin",
            "--password-stdin",
            "--data-dir",
            str(data_dir),
        ],
        stdin=PASSWORD + "\n",
        cwd=root,
    )
    assert added.returncode == 0, added.stderr
    port = free_port()
    argv = [str(install.bin / "admin-gateway"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    for url in engine_urls:
        argv += ["--engine-url", url]
    argv += ["--data-dir", str(data_dir), "--engine-token-file", str(token_file)]
    if refresh_interval is not None:
        argv += ["--refresh-interval", str(refresh_interval)]
    env = {"SAFE_MODE": "on" if safe_mode else "off"}
    gateway = Service(f"gateway-{name}", argv, port=port, log_dir=root / "logs", env=env, cwd=root)
    # The token goes by file only: make sure no inherited variable could stand in for it.
    gateway.env.pop("ENGINE_HUB_TOKEN", None)
    return gateway


class Stack:
    """One real engine and the gateways in front of it, all under ``root``, run from ``install``.

    Nothing runs until :meth:`start_engine` / :meth:`add_gateway`;
    :meth:`stop` ends every process and is safe to call twice. ``root`` is
    every process's working directory.
    """

    def __init__(self, root: Path, install: Installation) -> None:
        self.root = root
        self.install = install
        self.logs = root / "logs"
        self.markers = root / "markers"
        for d in (self.logs, self.markers):
            d.mkdir(parents=True, exist_ok=True)
        self.catalog = write_catalog(root / "catalog.toml", self.markers)
        self.token_file = root / "engine-token"
        self.token_file.write_text(ENGINE_TOKEN + "\n")
        self.token_file.chmod(0o600)
        self.engine_dir = root / "engine"
        port = free_port()
        self.engine = Service(
            "engine",
            [
                str(install.bin / "engine-hub"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--config",
                str(self.catalog),
                "--data-dir",
                str(self.engine_dir),
                "--kill-grace",
                "2",
            ],
            port=port,
            log_dir=self.logs,
            env={"ENGINE_HUB_TOKEN": ENGINE_TOKEN},
            cwd=root,
        )
        self.gateways: dict[str, Service] = {}

    def start_engine(self) -> Service:
        """Start (or restart, on the same port and data dir) the engine."""
        return self.engine.start()

    def add_gateway(self, name: str, *, safe_mode: bool, refresh_interval: float | None = None) -> Service:
        """Create a gateway data dir with :data:`USER` (through the CLI) and start a gateway on it."""
        gateway = gateway_service(
            self.root,
            self.install,
            name,
            engine_urls=[self.engine.url],
            token_file=self.token_file,
            safe_mode=safe_mode,
            refresh_interval=refresh_interval,
        )
        self.gateways[name] = gateway
        return gateway.start()

    def engine_api(self, token: str = ENGINE_TOKEN) -> EngineApi:
        """A client of the engine under ``token``."""
        return EngineApi(self.engine.url, token)

    def panel(self, gateway: str, *, login: bool = True) -> Panel:
        """A client of gateway ``gateway``, signed in as :data:`USER` unless ``login`` is false."""
        panel = Panel(self.gateways[gateway].url)
        if login:
            answer = panel.login()
            assert answer.status == 303, answer
        return panel

    def ran(self, job_id: str) -> bool:
        """Whether a :data:`TOUCH_TYPE` job left its marker."""
        return (self.markers / job_id).exists()

    def log_tails(self) -> str:
        """The last lines of every process's output."""
        services = [self.engine, *self.gateways.values()]
        return "\n\n".join(f"--- {s.name} ({s.log_path}) ---\n{s.log_tail()}" for s in services)

    def stop(self) -> None:
        """Stop the gateways, then the engine (which stops its runs)."""
        for gateway in self.gateways.values():
            gateway.stop()
        self.engine.stop()


@contextlib.contextmanager
def running_stack(
    root: Path, install: Installation, *, gateways: Mapping[str, bool], refresh_interval: float | None = None
) -> Iterator[Stack]:
    """Start an engine and one gateway per ``{name: safe_mode}``; stop them all on exit, whatever happened."""
    stack = Stack(root, install)
    try:
        stack.start_engine()
        for name, safe_mode in gateways.items():
            stack.add_gateway(name, safe_mode=safe_mode, refresh_interval=refresh_interval)
        yield stack
    finally:
        stack.stop()


def attach_logs(item: pytest.Item, report: pytest.TestReport) -> None:
    """On a failed report, add the output of every :class:`Stack` the test used as report sections."""
    if not report.failed:
        return
    funcargs: Mapping[str, Any] = getattr(item, "funcargs", {})
    for name, value in funcargs.items():
        stacks = [value] if isinstance(value, Stack) else []
        if isinstance(value, StackFactory):
            stacks = value.stacks
        for stack in stacks:
            report.sections.append((f"processes of {name} ({stack.root})", stack.log_tails()))


class StackFactory:
    """Makes stacks for one test and stops them all at its end (the function-scoped fixture's engine)."""

    def __init__(self, root: Path, install: Installation) -> None:
        self.root = root
        self.install = install
        self.stacks: list[Stack] = []
        self._exit = contextlib.ExitStack()

    def __call__(self, *, gateways: Mapping[str, bool], refresh_interval: float | None = None) -> Stack:
        """Start a new stack (see :func:`running_stack`)."""
        root = self.root / f"stack{len(self.stacks)}"
        stack = self._exit.enter_context(
            running_stack(root, self.install, gateways=gateways, refresh_interval=refresh_interval)
        )
        self.stacks.append(stack)
        return stack

    def close(self) -> None:
        """Stop every stack made so far."""
        self._exit.close()
