"""Engine Jobs as an operator installs it: a wheel built from the checkout, installed in a venv of its own.

The e2e and browser suites start ``engine-hub`` and ``admin-gateway`` from
this installation, never from the dev venv's editable install: an editable
install serves ``admin_gateway/static/`` straight from the checkout, so a
file missing from the wheel (issue 11: ``package-data`` without the
``static/js/`` and ``static/icons/`` subfolders) went unnoticed.

Once per test session (:func:`installation`, shared by both suites through
``config.stash``):

1. **Source.** In a git checkout, the files ``git ls-files --cached --others
   --exclude-standard`` lists (tracked files plus new ones not yet added,
   never ignored ones such as ``.venv/`` or ``__pycache__/``) are copied to a
   temporary folder: what a clone would hold once the work is committed. So
   the build never writes ``build/`` or ``*.egg-info`` into the checkout, and
   a stray untracked-but-ignored file cannot hide a packaging gap. Outside
   git the source tree is copied without those ignored folders.
2. **Wheel.** ``pip wheel --no-deps --no-build-isolation --no-index`` with
   the dev venv's setuptools (a dev dependency): no registry at test time.
3. **Venv.** ``python -m venv --without-pip`` (the same base interpreter as
   the dev venv), then the dev venv's pip installs the wheel into it
   (``pip --python <venv python> install --no-deps --no-index``), which
   writes the console scripts an operator gets.
4. **Dependencies.** Installing aiohttp & co. again from the registry would
   be slow and needs the network, so a ``.pth`` file in the new venv lists
   the dev venv's site-packages folders. A plain path line in a ``.pth``
   file only appends that folder to ``sys.path``: the ``.pth`` files *inside*
   it are not run, so the editable install's finder
   (``__editable__.engine_jobs-*.pth``) never activates and the checkout
   stays off ``sys.path``. The venv's own site-packages comes first on
   ``sys.path``, so ``engine_hub``, ``admin_gateway`` and ``shared`` always
   come from the wheel, even if the dev environment held a regular install.
   ``tests/e2e/test_installed.py`` checks all of this on the running processes.

The harness (:mod:`tests.e2e.harness`) runs the installed console scripts
with a temporary working directory and without ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The project's import packages: everything in the wheel besides its ``*.dist-info``.
PACKAGES = ("engine_hub", "admin_gateway", "shared")
#: The dist-info folder of the wheel (``name-version.dist-info``).
DIST_INFO_SUFFIX = ".dist-info"
#: Never copied when the source is not a git checkout (the usual ignored folders).
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
    "var",
    "test-artifacts",
    ".pytest_cache",
    ".mypy_cache",
)
#: The file in the test venv's site-packages that makes the dev venv's third-party packages importable.
DEPS_PTH = "_engine_jobs_test_deps.pth"

_WHEEL = pytest.StashKey["Path"]()
_INSTALLATION = pytest.StashKey["Installation"]()


def _run(argv: list[str], what: str, *, cwd: Path | None = None) -> str:
    """Run a build step; fail the session's setup with its output when it does not succeed."""
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {' '.join(argv)}\n{done.stdout}\n{done.stderr}")
    return done.stdout


def source_files(root: Path = ROOT) -> list[str] | None:
    """The files a clone of ``root`` would hold once committed (see the module docstring), or ``None`` outside git.

    Paths are relative, ``/``-separated; files deleted from the working tree are left out.
    """
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True, timeout=30
        )
    except OSError:  # no git at all
        return None
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve():
        return None
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], "git ls-files", cwd=root)
    names = sorted({name for name in listed.split("\0") if name})
    return [name for name in names if (root / name).is_file()]


def copy_source(dest: Path, root: Path = ROOT) -> Path:
    """Copy the project's source files (:func:`source_files`, or the tree without ignored folders) to ``dest``."""
    files = source_files(root)
    if files is None:
        shutil.copytree(root, dest, ignore=_NOT_SOURCE, symlinks=True)
        return dest
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target, follow_symlinks=False)
    return dest


def build_wheel(work: Path, root: Path = ROOT) -> Path:
    """Build the project's wheel from a copy of its source under ``work``; return the ``.whl`` path."""
    source = copy_source(work / "src", root)
    out = work / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(out),
            str(source),
        ],
        "building the wheel (needs setuptools in the dev venv: make venv)",
    )
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel in {out}, found {[w.name for w in wheels]}")
    return wheels[0]


def dev_site_packages() -> list[Path]:
    """The folders this interpreter (the dev venv) loads third-party packages from."""
    found: list[Path] = []
    candidates = [*site.getsitepackages(), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    if site.ENABLE_USER_SITE:
        candidates.append(site.getusersitepackages())
    for candidate in candidates:
        path = Path(candidate).resolve()
        if path.is_dir() and path not in found:
            found.append(path)
    return found


@attrs.frozen(kw_only=True)
class Installation:
    """A venv holding the installed wheel: where its console scripts and its packages are."""

    venv: Path
    wheel: Path
    site_packages: Path

    @property
    def bin(self) -> Path:
        """The folder of the console scripts (``engine-hub``, ``admin-gateway``)."""
        return self.venv / "bin"

    @property
    def python(self) -> Path:
        """The venv's interpreter (the console scripts' shebang)."""
        return self.bin / "python"


def install(wheel: Path, venv: Path) -> Installation:
    """Install ``wheel`` into a new venv at ``venv``, with the dev venv's third-party packages importable."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], "creating the test venv")
    python = venv / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        "installing the wheel",
    )
    purelib = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            "locating the test venv's site-packages",
        ).strip()
    )
    # Written after the install, so that pip saw an empty venv.
    (purelib / DEPS_PTH).write_text("".join(f"{path}\n" for path in dev_site_packages()))
    return Installation(venv=venv, wheel=wheel, site_packages=purelib)


def wheel(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's wheel of the project, built on first use."""
    built = config.stash.get(_WHEEL, None)
    if built is None:
        built = config.stash[_WHEEL] = build_wheel(tmp_path_factory.mktemp("wheel"))
    return built


def installation(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Installation:
    """The session's installation of :func:`wheel`, made on first use."""
    made = config.stash.get(_INSTALLATION, None)
    if made is None:
        made = config.stash[_INSTALLATION] = install(
            wheel(config, tmp_path_factory), tmp_path_factory.mktemp("install") / "venv"
        )
    return made


def operator_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus ``extra``, without any variable that could point Python at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(extra or {})
    return env
