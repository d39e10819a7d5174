"""Slow and idle clients cannot exhaust either process: the real console scripts on loopback.

Each process runs as ``engine-hub serve`` / ``admin-gateway serve`` with a
cap of :data:`CAP` connections, a header timeout of :data:`HEADER` seconds,
a body timeout of :data:`BODY` seconds and a keep-alive timeout of
:data:`KEEPALIVE` seconds. At most a few hundred sockets and a few seconds
per test, loopback only (127.0.0.1, and 127.0.0.2 as a second client address).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import free_port

CAP = 50
HEADER = 2.0
KEEPALIVE = 3.5
BODY = 4.0
#: Slack for a loaded machine on every "closed at about this time" bound.
SLACK = 1.0
TOKEN = "slow-connections-token-0123456789abcdef"
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
PROCESSES = ("engine", "gateway")


class Server:
    """One real server process of ``kind`` (``engine`` or ``gateway``) on a free loopback port."""

    def __init__(self, kind: str, root: Path, *args: str, nofile: int | None = None) -> None:
        self.kind = kind
        self.port = free_port()
        self.log_path = root / f"{kind}.log"
        env = {k: v for k, v in os.environ.items() if k not in ("ENGINE_HUB_TOKEN", "SAFE_MODE", "ENGINE_PORT")}
        common = ["serve", "--host", "127.0.0.1", "--port", str(self.port), *args]
        if kind == "engine":
            argv = [sys.executable, "-m", "engine_hub", *common, "--ephemeral", "--data-dir", str(root / "engine")]
            env["ENGINE_HUB_TOKEN"] = TOKEN
        else:
            token_file = root / "engine-token"
            token_file.write_text(TOKEN + "\n")
            token_file.chmod(0o600)
            argv = [
                sys.executable,
                "-m",
                "admin_gateway",
                *common,
                "--data-dir",
                str(root / "gateway"),
                "--engine-token-file",
                str(token_file),
                "--engine-url",
                "http://127.0.0.1:9",
            ]

        def limit_files() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, preexec_fn=limit_files
            )
        deadline = time.monotonic() + 30
        try:
            while not any(e["event"] == f"{kind}_listening" for e in self.events()):
                assert self.proc.poll() is None, f"{kind} exited:\n{self.output()}"
                assert time.monotonic() < deadline, f"{kind} did not start:\n{self.output()}"
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def output(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log events printed so far (those called ``name``, if given)."""
        found = [json.loads(line) for line in self.output().splitlines() if line.startswith("{")]
        return [e for e in found if name is None or e["event"] == name]

    def healthz(self) -> int:
        """``GET /healthz`` on a new connection; the status."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status
        finally:
            conn.close()

    def connect(self, source: str = "127.0.0.1") -> socket.socket:
        """A new connection to the server from the loopback address ``source``."""
        return socket.create_connection(("127.0.0.1", self.port), timeout=5, source_address=(source, 0))

    def idle_connection(self) -> http.client.HTTPConnection:
        """A connection that got its ``GET /healthz`` answered and now idles in keep-alive."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        assert response.status == 200 and not response.will_close
        response.read()
        return conn

    def stop(self) -> int:
        """SIGTERM the process and return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_closed(socks: Sequence[socket.socket], timeout: float) -> dict[socket.socket, tuple[float, bytes]]:
    """Read the sockets until the server closes them or ``timeout`` passes: ``{sock: (closed at, bytes read)}``.

    A reset counts as closed (a server closing with unread request bytes sends one).
    """
    selector = selectors.DefaultSelector()
    data: dict[socket.socket, bytes] = {}
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        data[sock] = b""
    closed: dict[socket.socket, tuple[float, bytes]] = {}
    deadline = time.monotonic() + timeout
    while len(closed) < len(socks) and (left := deadline - time.monotonic()) > 0:
        for key, _ in selector.select(left):
            conn = key.fileobj
            assert isinstance(conn, socket.socket)
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                data[conn] += chunk
                continue
            closed[conn] = (time.monotonic(), data[conn])
            selector.unregister(conn)
    selector.close()
    return closed


def _json_body(raw: bytes) -> Any:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


#: The flags of the shared servers (the per-address cap above the cap: these tests come from one address).
LIMITS = (
    "--max-connections",
    str(CAP),
    "--header-timeout",
    str(HEADER),
    "--keepalive-timeout",
    str(KEEPALIVE),
    "--body-timeout",
    str(BODY),
    "--max-connections-per-address",
    str(CAP),
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An engine with the test limits, shared by this module."""
    server = Server("engine", tmp_path_factory.mktemp("engine"), *LIMITS)
    yield server
    assert server.stop() == 0, server.output()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A gateway with the test limits, shared by this module."""
    server = Server("gateway", tmp_path_factory.mktemp("gateway"), *LIMITS)
    yield server
    assert server.stop() == 0, server.output()


@pytest.fixture(params=PROCESSES)
def server(request: pytest.FixtureRequest) -> Server:
    """Each process in turn."""
    started: Server = request.getfixturevalue(request.param)
    assert started.healthz() == 200
    return started


class TestSlowConnections:
    def test_flood_past_the_cap_is_refused_at_once_and_slow_heads_time_out(self, server: Server) -> None:
        """Of 80 slow clients, 30 are closed at once, 50 after the header timeout; /healthz answers right after."""
        slow: list[socket.socket] = []
        opened: dict[socket.socket, float] = {}
        try:
            for _ in range(80):
                sock = server.connect()
                sock.sendall(PARTIAL_HEAD)
                slow.append(sock)
                opened[sock] = time.monotonic()
            at_once = wait_closed(slow, timeout=HEADER / 2)
            assert len(at_once) == 80 - CAP
            for _, data in at_once.values():
                assert data == b"" or data.startswith(b"HTTP/1.1 503 "), data

            with server.connect() as extra:  # sends nothing, so it reads the whole refusal
                [(_, refusal)] = wait_closed([extra], timeout=HEADER / 2).values()
            assert refusal.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in refusal
            assert _json_body(refusal)["code"] == "throttled"

            held = [s for s in slow if s not in at_once]
            later = wait_closed(held, timeout=HEADER + SLACK)
            assert len(later) == CAP
            for sock, (closed_at, data) in later.items():
                assert closed_at - opened[sock] >= HEADER - 0.2
                assert data.startswith(b"HTTP/1.1 408 "), data
                assert _json_body(data)["code"] == "bad_request"
            assert server.healthz() == 200
        finally:
            for sock in slow:
                sock.close()
        assert server.proc.poll() is None
        assert "Traceback" not in server.output()
        assert 1 <= len(server.events("connection_refused")) <= 2

    def test_silent_connection_is_closed_after_the_header_timeout(self, server: Server) -> None:
        """A client that connects and sends nothing is closed after the header timeout, without a response."""
        with server.connect() as sock:
            start = time.monotonic()
            [(closed_at, data)] = wait_closed([sock], timeout=HEADER + SLACK).values()
        assert closed_at - start >= HEADER - 0.2 and data == b""

    def test_trickled_head_is_closed_despite_activity(self, server: Server) -> None:
        """A head sent a byte at a time is cut off after the header timeout even though bytes keep coming."""
        with server.connect() as sock:
            start = time.monotonic()
            closed: dict[socket.socket, tuple[float, bytes]] = {}
            for byte in PARTIAL_HEAD * 4:
                with contextlib.suppress(OSError):  # the server may have closed it meanwhile
                    sock.sendall(bytes([byte]))
                closed = wait_closed([sock], timeout=0.1)
                if closed or time.monotonic() - start > HEADER + SLACK:
                    break
        [(closed_at, data)] = closed.values()
        assert closed_at - start >= HEADER - 0.2
        assert data.startswith(b"HTTP/1.1 408 "), data

    def test_idle_keepalive_connection_is_closed_after_the_keepalive_timeout(self, server: Server) -> None:
        """After a complete request, an idle kept-alive connection stays open until the keep-alive timeout."""
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            assert response.status == 200 and not response.will_close
            response.read()
            answered = time.monotonic()
            assert conn.sock is not None
            [(closed_at, data)] = wait_closed([conn.sock], timeout=KEEPALIVE + SLACK).values()
        finally:
            conn.close()
        assert closed_at - answered >= KEEPALIVE - 0.3 and data == b""


class TestSlowBody:
    def test_a_slow_body_is_not_cut_by_the_header_timeout(self, engine: Server) -> None:
        """The header timeout ends with the head: a body trickling in for longer still gets its answer."""
        body = json.dumps({"type": "demo.sleep", "params": {"seconds": 1}}).encode()
        head = (
            f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with engine.connect() as sock:
            sock.sendall(head)
            pieces = [body[i : i + 8] for i in range(0, len(body), 8)]
            pause = (HEADER + 0.5) / len(pieces)
            for piece in pieces:
                time.sleep(pause)
                sock.sendall(piece)
            [(_, data)] = wait_closed([sock], timeout=5).values()
        assert data.startswith(b"HTTP/1.1 201 "), data


class TestAcceptErrors:
    @pytest.mark.parametrize("kind", PROCESSES)
    def test_descriptor_exhaustion_is_logged_once_per_interval(self, kind: str, tmp_path: Path) -> None:
        """Out of descriptors, accept() errors make one log line (and a count at exit), not a traceback each."""
        # A configured cap above the fd limit: the one way clients alone can exhaust descriptors.
        server = Server(kind, tmp_path, "--max-connections", "1000", "--header-timeout", "30", nofile=64)
        try:
            self._exhaust_descriptors(server)
        finally:
            status = server.stop()
        assert status == 0, server.output()
        failed = server.events("accept_failed")
        assert failed[0]["errno"] == "EMFILE" and failed[0]["suppressed"] == 0
        assert len(failed) == 2 and failed[1]["suppressed"] > 0, failed
        output = server.output()
        assert "Traceback" not in output, output[max(0, output.find("Traceback") - 800) :][:6000]
        assert "out of system resource\n" not in server.output()

    @staticmethod
    def _exhaust_descriptors(server: Server) -> None:
        """Hold 100 connections until accept() has failed for a while, then let go and wait for /healthz."""
        assert server.events("max_connections_above_fd_limit")
        socks: list[socket.socket] = []
        try:
            for _ in range(100):  # connect() completes in the kernel's backlog even when not accepted
                socks.append(server.connect())
            deadline = time.monotonic() + 5
            while not server.events("accept_failed"):
                assert time.monotonic() < deadline, server.output()
                time.sleep(0.05)
            time.sleep(1.5)  # asyncio retries a failing listening socket every second
        finally:
            for sock in socks:
                sock.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                if server.healthz() == 200:
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)


#: A request aiohttp's parser refuses: both ``Content-Length`` and ``Transfer-Encoding`` (a smuggling attempt).
AMBIGUOUS = (
    b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
)


class TestMalformedRequests:
    @pytest.mark.parametrize("kind", PROCESSES)
    def test_parser_refusals_are_json_and_logged_once_per_interval(self, kind: str, tmp_path: Path) -> None:
        """A request the parser refuses gets a JSON 400; a burst of them is one log line and a count, no traceback."""
        burst = 40
        server = Server(kind, tmp_path)
        try:
            answers = []
            for _ in range(burst):
                with server.connect() as sock:
                    sock.sendall(AMBIGUOUS)
                    [(_, data)] = wait_closed([sock], timeout=5).values()
                answers.append(data)
            assert server.healthz() == 200
        finally:
            status = server.stop()
        assert status == 0, server.output()
        for data in answers:
            assert data.split(b" ", 2)[1] == b"400", data
            body = _json_body(data)
            assert body["code"] == "bad_request" and body["error"].startswith("malformed HTTP request: "), body
        lines = server.events("bad_http_request")
        assert 1 <= len(lines) <= 3 and lines[0]["suppressed"] == 0, lines
        # Each line that opens a period stands for its own request; the others count the ones left out.
        opened = sum(1 for line in lines if line["suppressed"] == 0)
        assert opened + sum(line["suppressed"] for line in lines) == burst, lines
        output = server.output()
        assert "Traceback" not in output and "Error handling request" not in output, output[-4000:]


def _body_request(kind: str, length: int) -> bytes:
    """The head of a request whose handler reads a body of ``length`` bytes before answering."""
    if kind == "engine":
        target, extra = "/api/jobs", f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
    else:
        target, extra = "/login", "Content-Type: application/x-www-form-urlencoded\r\n"
    return (f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Content-Length: {length}\r\n\r\n").encode()


class TestBodyTimeout:
    def test_trickled_body_gets_408_after_the_body_timeout(self, server: Server) -> None:
        """A body trickling in a byte at a time is answered 408 and closed once the body timeout has passed."""
        with server.connect() as sock:
            sock.sendall(_body_request(server.kind, 4096))
            start = time.monotonic()
            closed: dict[socket.socket, tuple[float, bytes]] = {}
            while not closed and time.monotonic() - start < BODY + SLACK + 1:
                with contextlib.suppress(OSError):  # the server may have closed it meanwhile
                    sock.sendall(b"a")
                closed = wait_closed([sock], timeout=0.25)
        assert closed, "the trickled body was never cut off"
        [(closed_at, data)] = closed.values()
        assert closed_at - start >= BODY - 0.2
        assert data.startswith(b"HTTP/1.1 408 "), data
        assert _json_body(data)["code"] == "bad_request"
        assert server.healthz() == 200
        assert "Traceback" not in server.output()


#: The cap of the servers started for one test: small, so that filling it takes few sockets.
SMALL_CAP = 8


def small_server(kind: str, root: Path, per_address: int = SMALL_CAP) -> Server:
    """A server of ``kind`` with a cap of :data:`SMALL_CAP` connections and a per-address cap of ``per_address``."""
    return Server(
        kind,
        root,
        "--max-connections",
        str(SMALL_CAP),
        "--max-connections-per-address",
        str(per_address),
        "--header-timeout",
        "10",
        "--keepalive-timeout",
        "30",
    )


class TestEviction:
    @pytest.mark.parametrize("kind", PROCESSES)
    def test_idle_keepalive_connections_are_evicted_at_the_cap(self, kind: str, tmp_path: Path) -> None:
        """With the cap full of idle kept-alive connections, new clients get 200 and the longest idle are closed."""
        server = small_server(kind, tmp_path)
        idle: list[http.client.HTTPConnection] = []
        try:
            for _ in range(SMALL_CAP):
                idle.append(server.idle_connection())
            for _ in range(3):  # each kept open, so each needs a slot of its own
                idle.append(server.idle_connection())
            socks = [conn.sock for conn in idle[:SMALL_CAP]]
            assert all(isinstance(sock, socket.socket) for sock in socks)
            closed = wait_closed([s for s in socks if s is not None], timeout=1.0)
            assert [socks.index(sock) for sock in closed] == [0, 1, 2], closed
            assert all(data == b"" for _, data in closed.values())
        finally:
            for conn in idle:
                conn.close()
            status = server.stop()
        assert status == 0, server.output()
        assert server.events("idle_connection_evicted")
        assert "Traceback" not in server.output()

    def test_idle_after_a_request_with_a_body_is_evicted_too(self, tmp_path: Path) -> None:
        """A connection idling after a POST whose body came apart from its head is evicted like any idle one."""
        server = small_server("engine", tmp_path)
        body = json.dumps({"type": "demo.sleep", "params": {"seconds": 0}}).encode()
        head = _body_request("engine", len(body))
        posted: list[socket.socket] = []
        try:
            for _ in range(SMALL_CAP):
                sock = server.connect()
                sock.sendall(head)
                time.sleep(0.05)  # the body arrives in a packet of its own
                sock.sendall(body)
                answer = b""
                while not answer.endswith(b"}"):  # the JSON answer is complete (the socket times out)
                    chunk = sock.recv(65536)
                    assert chunk, answer
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 201 ") and b"Connection: close" not in answer, answer
                posted.append(sock)
            newcomer = server.idle_connection()
            newcomer.close()
            [(_, data)] = wait_closed(posted[:1], timeout=1.0).values()
            assert data == b""
        finally:
            for sock in posted:
                sock.close()
            status = server.stop()
        assert status == 0, server.output()

    @pytest.mark.parametrize("kind", PROCESSES)
    def test_a_connection_inside_a_request_is_never_evicted(self, kind: str, tmp_path: Path) -> None:
        """Only the idle connection is evicted: those with part of a head or a body stay, and the next one gets 503."""
        server = small_server(kind, tmp_path)
        busy: list[socket.socket] = []
        kept: list[http.client.HTTPConnection] = []
        try:
            for i in range(SMALL_CAP - 1):  # the oldest, all inside a request
                sock = server.connect()
                sock.sendall(PARTIAL_HEAD if i % 2 else _body_request(kind, 64) + b"{")
                busy.append(sock)
            kept.append(server.idle_connection())
            newcomer = server.connect()  # takes the idle one's slot, and keeps it: it is inside a request too
            newcomer.sendall(PARTIAL_HEAD)
            busy.append(newcomer)
            assert kept[0].sock is not None
            [(_, data)] = wait_closed([kept[0].sock], timeout=1.0).values()
            assert data == b""
            with server.connect() as extra:
                [(_, refusal)] = wait_closed([extra], timeout=1.0).values()
            assert refusal.startswith(b"HTTP/1.1 503 "), refusal
            assert wait_closed(busy, timeout=0.5) == {}
        finally:
            for sock in busy:
                sock.close()
            for conn in kept:
                conn.close()
            status = server.stop()
        assert status == 0, server.output()


class TestPerAddressCap:
    @pytest.mark.parametrize("kind", PROCESSES)
    def test_one_address_past_its_cap_gets_503_while_another_is_served(self, kind: str, tmp_path: Path) -> None:
        """Past the per-address cap, 127.0.0.1's new connection gets 503 at once while 127.0.0.2 gets 200."""
        per_address = 3
        server = small_server(kind, tmp_path, per_address=per_address)
        held: list[socket.socket] = []
        try:
            for _ in range(per_address):
                sock = server.connect()
                sock.sendall(PARTIAL_HEAD)
                held.append(sock)
            with server.connect() as extra:
                [(_, refusal)] = wait_closed([extra], timeout=1.0).values()
            assert refusal.startswith(b"HTTP/1.1 503 "), refusal
            assert _json_body(refusal)["code"] == "throttled"
            with server.connect("127.0.0.2") as other:
                other.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                [(_, answer)] = wait_closed([other], timeout=5).values()
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            assert wait_closed(held, timeout=0.3) == {}
        finally:
            for sock in held:
                sock.close()
            status = server.stop()
        assert status == 0, server.output()
        refused = server.events("connection_refused")
        assert refused and refused[0]["limit"] == "max_connections_per_address", refused
