"""The deployment examples are valid for the real tools that will read them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.requirements import missing

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
SNIPPETS = DEPLOY / "nginx" / "snippets"


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


class TestNginxExample:
    """The nginx TLS example."""

    def _config(self, tmp_path: Path, site: str, *, upstream: str = "engine-jobs-upstream.conf") -> Path:
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
        (tmp_path / "snippets" / "engine-jobs-upstream.conf").write_text((SNIPPETS / upstream).read_text())
        main = tmp_path / "nginx.conf"
        main.write_text(
            f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
            f"http {{\n access_log off;\n include {tmp_path}/site.conf;\n}}\n"
        )
        return main

    @pytest.mark.parametrize("upstream", ["engine-jobs-upstream.conf", "engine-jobs-upstream-gateways.conf"])
    def test_example_parses(self, upstream: str, tmp_path: Path) -> None:
        """nginx -t accepts the example as an http-level include, with one gateway or several."""
        nginx = _tool("nginx")
        _tool("openssl")
        conf = self._config(tmp_path, (DEPLOY / "nginx" / "engine-jobs.conf").read_text(), upstream=upstream)
        proc = subprocess.run(
            [nginx, "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        assert "syntax is ok" in proc.stderr

    def test_nginx_check_rejects_a_typo(self, tmp_path: Path) -> None:
        """The check itself can fail: a misspelt directive is refused."""
        nginx = _tool("nginx")
        _tool("openssl")
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
