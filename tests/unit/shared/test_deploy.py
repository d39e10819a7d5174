"""The deployment examples are valid for the real tools that will read them."""

from __future__ import annotations

import http.client
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.requirements import missing

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
SNIPPETS = DEPLOY / "nginx" / "snippets"
SITE = DEPLOY / "nginx" / "engine-jobs.conf"


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        missing("REQUIRE_DEPLOY_TOOLS", f"{name} is not installed; .ci/run installs it so CI always checks this")
    return path


def _localise_unit(text: str) -> str:
    # Point ExecStart at this venv's real console scripts so that verify checks executability.
    return text.replace("/opt/engine-jobs/.venv/bin/", str(Path(sys.executable).parent) + "/")


#: Each unit file, and the name systemd-analyze verifies it as (a template as one of its instances).
UNITS = {
    "engine-hub.service": "engine-hub.service",
    "admin-gateway.service": "admin-gateway.service",
    "engine-hub@.service": "engine-hub@8091.service",
}


class TestSystemdUnits:
    """The systemd units."""

    @pytest.mark.parametrize("unit", list(UNITS))
    def test_unit_verifies_cleanly(self, unit: str, tmp_path: Path) -> None:
        """systemd-analyze verify accepts the unit with no warning at all."""
        tool = _tool("systemd-analyze")
        target = tmp_path / UNITS[unit]
        target.write_text(_localise_unit((DEPLOY / "systemd" / unit).read_text()))
        proc = subprocess.run([tool, "verify", "--man=no", str(target)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.strip() == "", proc.stderr

    def test_verify_catches_a_broken_unit(self, tmp_path: Path) -> None:
        """The check itself can fail: a misspelt boolean is reported."""
        tool = _tool("systemd-analyze")
        text = _localise_unit((DEPLOY / "systemd" / "engine-hub.service").read_text())
        target = tmp_path / "broken.service"
        target.write_text(text.replace("NoNewPrivileges=yes", "NoNewPrivileges=perhaps"))
        proc = subprocess.run([tool, "verify", "--man=no", str(target)], capture_output=True, text=True, timeout=60)
        assert "perhaps" in proc.stderr

    @pytest.mark.parametrize("unit", list(UNITS))
    def test_unit_is_hardened(self, unit: str) -> None:
        """Each unit runs as its own user with the required sandboxing and no token on a command line."""
        text = (DEPLOY / "systemd" / unit).read_text()
        for line in (
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "Restart=on-failure",
            "LoadCredential=engine-token:",
        ):
            assert line in text, line
        assert "User=" in text and "User=root" not in text
        rw = [ln for ln in text.splitlines() if ln.startswith("ReadWritePaths=")]
        assert rw == [f"ReadWritePaths=/var/lib/{unit.removesuffix('.service').replace('@', '/%i')}"]
        assert "ENGINE_HUB_TOKEN" not in text

    def test_node_template_keeps_the_store_url_off_the_command_line(self) -> None:
        """The node template reads ENGINE_STORE_URL from an EnvironmentFile and passes no --store; %i is the port."""
        text = (DEPLOY / "systemd" / "engine-hub@.service").read_text()
        assert "EnvironmentFile=/etc/engine-jobs/engine-store.env" in text.splitlines()
        exec_start = text[text.index("ExecStart=") :].split("\nRestart=")[0]
        assert "--store" not in exec_start and "ENGINE_STORE_URL" not in exec_start
        assert "--port %i" in exec_start
        assert "StateDirectory=engine-hub/%i" in text.splitlines()


def _nginx_config(tmp_path: Path, site: str, *, upstream: str, http_extra: str = "") -> Path:
    """Write a main nginx.conf including ``site`` (its certificate made here) and ``upstream`` as its snippet."""
    _tool("openssl")
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=jobs.example.com",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    site = site.replace("/etc/ssl/engine-jobs/fullchain.pem", str(cert))
    site = site.replace("/etc/ssl/engine-jobs/privkey.pem", str(key))
    (tmp_path / "site.conf").write_text(site)
    # The site's relative include resolves against the main file's directory, as /etc/nginx on Debian.
    (tmp_path / "snippets").mkdir()
    (tmp_path / "snippets" / "engine-jobs-upstream.conf").write_text(upstream)
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n access_log off;\n{http_extra} include {tmp_path}/site.conf;\n}}\n"
    )
    return main


class TestNginxExample:
    """The nginx TLS example."""

    def _config(self, tmp_path: Path, site: str, *, upstream: str = "engine-jobs-upstream.conf") -> Path:
        return _nginx_config(tmp_path, site, upstream=(SNIPPETS / upstream).read_text())

    @pytest.mark.parametrize("upstream", ["engine-jobs-upstream.conf", "engine-jobs-upstream-gateways.conf"])
    def test_example_parses(self, upstream: str, tmp_path: Path) -> None:
        """nginx -t accepts the example as an http-level include, with one gateway or several."""
        nginx = _tool("nginx")
        conf = self._config(tmp_path, (DEPLOY / "nginx" / "engine-jobs.conf").read_text(), upstream=upstream)
        proc = subprocess.run(
            [nginx, "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        assert "syntax is ok" in proc.stderr

    def test_nginx_check_rejects_a_typo(self, tmp_path: Path) -> None:
        """The check itself can fail: a misspelt directive is refused."""
        nginx = _tool("nginx")
        site = (DEPLOY / "nginx" / "engine-jobs.conf").read_text().replace("proxy_pass ", "proxy_passs ")
        conf = self._config(tmp_path, site)
        proc = subprocess.run(
            [nginx, "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode != 0

    def test_example_fronts_only_the_gateway_with_hsts(self) -> None:
        """Only the gateway port is proxied, HSTS is set, and forwarded headers are overwritten."""
        text = (DEPLOY / "nginx" / "engine-jobs.conf").read_text()
        assert "include snippets/engine-jobs-upstream.conf;" in text
        assert "8090" not in text.replace("(127.0.0.1:8090)", "")
        assert "server 127.0.0.1:8080;" in (SNIPPETS / "engine-jobs-upstream.conf").read_text()
        assert "Strict-Transport-Security" in text
        assert "proxy_set_header X-Forwarded-For $remote_addr;" in text
        assert "$proxy_add_x_forwarded_for" not in text

    def test_several_gateways_fail_over_without_resending_a_post(self) -> None:
        """Each gateway is health-aware, nothing is sticky, and only unsent or idempotent requests move on."""
        upstream = (SNIPPETS / "engine-jobs-upstream-gateways.conf").read_text()
        servers = [ln.strip() for ln in upstream.splitlines() if ln.strip().startswith("server ")]
        assert len(servers) >= 2
        assert all("max_fails=" in s and "fail_timeout=" in s for s in servers), servers
        directives = [ln.split("#")[0] for ln in upstream.splitlines()]
        assert not any(word in ln for ln in directives for word in ("ip_hash", "hash ", "sticky"))
        assert "upstream engine_jobs_gateway {" in upstream
        site = (DEPLOY / "nginx" / "engine-jobs.conf").read_text()
        retry = [ln.strip() for ln in site.splitlines() if ln.strip().startswith("proxy_next_upstream ")]
        assert retry == ["proxy_next_upstream error timeout;"]
        assert "non_idempotent" not in retry[0]


# The live stream: a real nginx runs the shipped site file (ports moved to free ones) in front of a
# stand-in upstream that answers like the gateway's /api/admin/engine/events but without
# "X-Accel-Buffering: no", so what reaches the client at once is the config's doing alone (that
# header can be lost on the way, e.g. by another proxy in between).

EVENTS = "/api/admin/engine/events"
#: The first message, sent before the stand-in goes quiet (far below any nginx buffer size).
MESSAGE = b'id: 7\nevent: job_created\ndata: {"id": "x"}\n\n'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Stream(BaseHTTPRequestHandler):
    """Any path: an SSE answer with one message, then silence until the test ends (no X-Accel-Buffering)."""

    stop: ClassVar[threading.Event] = threading.Event()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(MESSAGE)
        self.wfile.flush()
        self.stop.wait(30)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[int]:
    """nginx running the example site in front of the stand-in upstream; yields nginx's TLS port."""
    nginx = _tool("nginx")
    _Stream.stop.clear()
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Stream)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = _free_port()
    site = re.sub(r"^\s*listen \[::\].*$", "", SITE.read_text(), flags=re.M)
    site = site.replace("listen 80;", f"listen 127.0.0.1:{_free_port()};")
    site = site.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;")
    temp = "".join(
        f" {kind}_temp_path {tmp_path}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # gzip for every type, as an operator may switch on server-wide: the stream must still go out plain.
    conf = _nginx_config(
        tmp_path,
        site,
        upstream=f"upstream engine_jobs_gateway {{\n server 127.0.0.1:{upstream.server_address[1]};\n}}\n",
        http_extra=f"{temp} gzip on;\n gzip_min_length 1;\n gzip_types *;\n",
    )
    with (tmp_path / "stderr").open("wb") as stderr:
        proc = subprocess.Popen([nginx, "-g", "daemon off;", "-c", str(conf), "-p", str(tmp_path)], stderr=stderr)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        _Stream.stop.set()
        proc.terminate()
        proc.wait(timeout=10)
        upstream.shutdown()
        upstream.server_close()


def _first_message(port: int, path: str) -> tuple[int, str | None, bytes]:
    """GET ``path`` through nginx (gzip accepted): status, Content-Encoding, what arrived within 2 s.

    ``(0, None, b"")`` when not even the response head arrived within 2 s.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=context)
    try:
        conn.request("GET", path, headers={"Host": "jobs.example.com", "Accept-Encoding": "gzip"})
        try:
            response = conn.getresponse()
        except TimeoutError:
            return 0, None, b""
        received = b""
        try:
            while not received.endswith(b"\n\n"):
                line = response.readline()
                if not line:
                    break
                received += line
        except TimeoutError:
            pass
        return response.status, response.getheader("Content-Encoding"), received
    finally:
        conn.close()


class TestNginxLiveStream:
    """The example's location for the gateway's live stream."""

    def test_a_message_passes_at_once_and_uncompressed(self, proxy: int) -> None:
        """The stream's first message reaches the client within 2 s while the stream stays open, not gzipped."""
        assert _first_message(proxy, EVENTS + "?x=1") == (200, None, MESSAGE)

    def test_the_check_can_fail_elsewhere(self, proxy: int) -> None:
        """The same answer on a buffered, gzipped path is held back: nothing readable arrives within 2 s."""
        assert _first_message(proxy, "/api/admin/engine/jobs")[2] != MESSAGE

    def test_the_location_keeps_a_quiet_stream_open(self) -> None:
        """The events location reads for an hour (the gateway sends a comment every 15 s) and sets no headers."""
        text = SITE.read_text()
        block = re.search(r"location = /api/admin/engine/events \{(.*?)\}", text, re.S)
        assert block is not None
        directives = {ln.split("#")[0].strip() for ln in block.group(1).splitlines()} - {""}
        assert directives == {
            "proxy_pass http://engine_jobs_gateway;",
            "proxy_buffering off;",
            "proxy_cache off;",
            "proxy_read_timeout 1h;",
            "gzip off;",
        }
        # The shared proxy headers (HTTP/1.1 upstream, Connection "") are inherited only by a
        # location that sets none of its own.
        assert "proxy_set_header" not in block.group(1)
        server_level = text[text.index("proxy_http_version 1.1;") : text.index("location /")]
        assert 'proxy_set_header Connection "";' in server_level
