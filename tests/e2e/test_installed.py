"""The processes under test are the installed wheel, and the installed panel has every file it asks for.

Issue 11: a wheel without ``admin_gateway/static/js/`` and ``static/icons/``
served a panel without JavaScript, and the suite, running from the editable
install, never saw it. These tests run against the stack of
``tests/e2e/conftest.py``, which the harness starts from the session's
installation (:mod:`tests.e2e.install`).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

from tests.e2e.harness import TOUCH_TYPE, Panel, Service, Stack
from tests.e2e.install import PACKAGES, ROOT, Installation, source_files

STATIC_DIR = ROOT / "admin_gateway" / "static"
TEMPLATES_DIR = ROOT / "admin_gateway" / "templates"

#: Run with the process's interpreter, environment and working directory: where would it import from?
#: ``sys.path[0]`` is set to the console script's folder, as ``python <script>`` does.
PROBE = """
import importlib, json, sys
sys.path[0] = sys.argv[1]
files = {name: importlib.import_module(name).__file__ for name in sys.argv[2:]}
print(json.dumps({"files": files, "path": sys.path, "modules": sorted(sys.modules)}))
"""

#: References from a page, a stylesheet or a JavaScript module to another file.
HTML_REF = re.compile(r'(?:href|src)="([^"]+)"')
CSS_REF = re.compile(r"""url\(\s*["']?([^"')]+)["']?\s*\)""")
JS_REF = re.compile(r"""(?:\bimport\s*(?:[\w{}\s,*]+\s*from\s*)?|\bimport\s*\(\s*)["']([^"']+)["']""")
TEMPLATE_REF = re.compile(r"""static_url\(\s*["']([^"']+)["']\s*\)""")


def _proc(pid: int) -> tuple[list[str], dict[str, str], Path]:
    """A process's argv, environment and working directory, as the kernel reports them."""
    base = Path(f"/proc/{pid}")
    argv = (base / "cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    env = dict(item.split("=", 1) for item in (base / "environ").read_bytes().decode().split("\0") if "=" in item)
    return argv, env, (base / "cwd").resolve()


def _probe(service: Service, installed: Installation, script: str) -> dict[str, Any]:
    """Check how ``service`` was started, then ask its interpreter, in its environment, where it imports from."""
    argv, env, cwd = _proc(service.pid)
    assert argv[:2] == [str(installed.python), str(installed.bin / script)], argv
    assert "PYTHONPATH" not in env and "PYTHONHOME" not in env, sorted(env)
    assert not cwd.is_relative_to(ROOT), f"{service.name} runs inside the checkout: {cwd}"
    done = subprocess.run(
        [argv[0], "-c", PROBE, str(Path(argv[1]).parent), *PACKAGES],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def _static_refs(base: str, content_type: str, body: str) -> set[str]:
    """The same-origin ``/static/`` (and favicon) paths a page, stylesheet or module refers to."""
    if "html" in content_type:
        refs = HTML_REF.findall(body)
    elif "css" in content_type:
        refs = CSS_REF.findall(body)
    elif "javascript" in content_type:
        refs = JS_REF.findall(body)
    else:
        return set()
    paths = {
        urllib.parse.urlsplit(urllib.parse.urljoin(base, ref)).path
        for ref in refs
        if not ref.startswith(("data:", "#", "http:", "https:"))
    }
    return {p for p in paths if p.startswith("/static/") or p == "/favicon.ico"}


class TestRunsFromTheWheel:
    def test_engine_and_gateway_import_the_installed_packages_not_the_checkout(
        self, stack: Stack, installed: Installation
    ) -> None:
        """Both processes run the installed console scripts, outside the checkout, importing the wheel's packages."""
        for service, script in [(stack.engine, "engine-hub"), (stack.gateways["safe"], "admin-gateway")]:
            found = _probe(service, installed, script)
            for package, file in found["files"].items():
                assert Path(file).is_relative_to(installed.site_packages), (service.name, package, file)
            assert all(Path(entry).resolve() != ROOT for entry in found["path"] if entry), found["path"]
            # The dev venv's editable finder must stay inactive (its .pth file is never run).
            assert not [m for m in found["modules"] if m.startswith("__editable__")], found["modules"]


class TestInstalledPanelAssets:
    def test_every_static_file_the_pages_refer_to_is_served(self, stack: Stack) -> None:
        """Every ``/static/`` file the pages, their stylesheet and their modules refer to answers 200."""
        gateway = stack.gateways["safe"]
        job = stack.engine_api().create(TOUCH_TYPE)
        anonymous, signed_in = Panel(gateway.url), stack.panel("safe")
        pages = [(anonymous, "/login")] + [
            (signed_in, path)
            for path in ("/admin/engine/jobs", f"/admin/engine/jobs/{job['id']}", "/admin/engine/logs", "/admin/audit")
        ]
        # What the templates ask for, whether or not the pages above render that branch.
        pending = {
            f"/static/{name}"
            for template in sorted(TEMPLATES_DIR.glob("*.html"))
            for name in TEMPLATE_REF.findall(template.read_text())
        }
        for client, path in pages:
            page = client.request("GET", path)
            assert page.status == 200, (path, page)
            pending |= _static_refs(gateway.url + path, page.headers.get("Content-Type", ""), page.text)
        seen: dict[str, int] = {}
        while pending:
            path = pending.pop()
            reply = signed_in.request("GET", path)
            seen[path] = reply.status
            if reply.status == 200:
                found = _static_refs(gateway.url + path, reply.headers.get("Content-Type", ""), reply.text)
                pending |= found - seen.keys()
        missing = sorted(p for p, status in seen.items() if status != 200)
        assert missing == [], f"referenced by the panel but not served by the installed gateway: {missing}"
        # The crawl reached the module graph and the stylesheet's icons, not only the top-level links.
        assert {
            "/static/js/main.js",
            "/static/js/api.js",
            "/static/panel.css",
            "/static/icons/check.svg",
        } <= seen.keys()

    def test_every_file_of_the_static_folder_is_served_as_in_the_checkout(self, stack: Stack) -> None:
        """Each file under ``admin_gateway/static/`` in the checkout is served by the installed gateway, same bytes."""
        listed = source_files()
        names = (
            [n.removeprefix("admin_gateway/static/") for n in listed if n.startswith("admin_gateway/static/")]
            if listed is not None
            else [p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()]
        )
        assert "js/main.js" in names
        panel = Panel(stack.gateways["safe"].url)
        wrong = {}
        for name in names:
            reply = panel.request("GET", f"/static/{name}")
            if reply.status != 200 or reply.body != (STATIC_DIR / name).read_bytes():
                wrong[name] = reply.status
        assert wrong == {}, f"not served as in the checkout: {wrong}"
