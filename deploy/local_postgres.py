"""A throwaway PostgreSQL server on this machine: for the tests and for ``make run-cluster``.

:func:`find_bindir` finds the server binaries (``$POSTGRES_BINDIR`` if set,
else ``pg_config --bindir``, else ``initdb`` on PATH, else the newest
``/usr/lib/postgresql/*/bin``); :func:`start_server` runs ``initdb`` into a
fresh directory and ``pg_ctl start`` on a free loopback port with its unix
socket in that directory; :meth:`PostgresServer.stop` stops it and deletes
the directory. PostgreSQL refuses to run as root, so as root the binaries run
as the system user :data:`SERVER_USER` (created if missing).

The superuser ``postgres`` logs in with a password over TCP (scram, as in
production) and without one over the unix socket. Nothing here keeps data:
a server started here is deleted when it stops.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import attrs
import psycopg

#: The unprivileged user the server runs as when we run as root.
SERVER_USER: Final = "enginetest"
SUPERUSER: Final = "postgres"
#: Names the one directory to take ``initdb`` and ``pg_ctl`` from (no search); a folder without
#: them means "no binaries", which is how the tests check that message.
BINDIR_ENV: Final = "POSTGRES_BINDIR"
MISSING: Final = "PostgreSQL server binaries (initdb, pg_ctl) not found: install the Debian package `postgresql`"
#: Server settings for a cluster nobody needs after a power cut (the tests'): faster, never durable.
NOT_DURABLE: Final = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or ``None`` when there is none."""
    candidates: list[Path] = []
    forced = os.environ.get(BINDIR_ENV)
    if forced:
        candidates.append(Path(forced))
    else:
        pg_config = shutil.which("pg_config")
        if pg_config:
            # Debian's pg_config may come from libpq-dev of another major version than the server's.
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))
        initdb = shutil.which("initdb")
        if initdb:
            candidates.append(Path(initdb).parent)
        debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: _major(Path(p).parent.name), reverse=True)
        candidates.extend(Path(p) for p in debian)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _major(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return -1.0


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (someone may take it before it is bound)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tool(name: str) -> str:
    """The path of a system tool that may live in an sbin folder missing from a user's PATH."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin") or name


def _server_user() -> str | None:
    """The user to run the server as: ``None`` (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            [_tool("useradd"), "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
            check=True,
            capture_output=True,
        )
    return SERVER_USER


@attrs.frozen(kw_only=True)
class PostgresServer:
    """A running throwaway cluster: where it listens, and its superuser's password."""

    bindir: Path
    root: Path
    host: str
    port: int
    password: str
    user: str | None
    settings: tuple[str, ...] = ()

    @property
    def options(self) -> str:
        """The server options it runs with (``pg_ctl -o``): its port, socket and extra settings."""
        extra = "".join(f" -c {setting}" for setting in self.settings)
        return f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1{extra}"

    def start(self) -> subprocess.CompletedProcess[str]:
        """``pg_ctl start`` on its port (waiting until it accepts connections), logging to ``server.log``."""
        return self.pg_ctl("start", "-w", "-t", "30", "-l", str(self.root / "server.log"), "-o", self.options)

    def halt(self) -> None:
        """Stop the server (``-m fast``: its sessions are cut) and keep its data; raises if it fails."""
        done = self.pg_ctl("stop", "-m", "fast", "-w", "-t", "30")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {done.stderr.strip()}")

    def restart(self) -> None:
        """Restart the server on the same port (:meth:`halt`, then :meth:`start`); raises if it fails."""
        self.halt()
        started = self.start()
        if started.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()}")

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        """The directory of the server's unix socket."""
        return self.root / "sock"

    def url(self, dbname: str = "postgres", *, user: str = SUPERUSER, password: str | None = None) -> str:
        """A TCP URL of ``dbname`` (the superuser's, with its password, unless ``user`` is given)."""
        secret = self.password if user == SUPERUSER and password is None else password
        auth = user if secret is None else f"{user}:{secret}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit superuser connection to the ``postgres`` database (close it)."""
        return psycopg.connect(self.url(), autocommit=True)

    def create_database(self, *, name: str | None = None, template: str | None = None) -> str:
        """Create database ``name`` (default: a fresh one; a copy of ``template`` if given); return its URL."""
        name = name or f"test_{secrets.token_hex(6)}"
        copy = "" if template is None else f" TEMPLATE {template}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name}{copy}".encode())
        return self.url(name)

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``pg_ctl -D <data dir> <args>`` as the server's user."""
        return self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args)

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        prefix = [] if self.user is None else [_tool("runuser"), "-u", self.user, "--"]
        return subprocess.run([*prefix, *argv], capture_output=True, text=True, check=False, timeout=60)

    def stop(self, *, mode: str = "immediate") -> None:
        """Stop the server (``pg_ctl stop -m mode``; a stopped one is fine) and delete its directory.

        ``immediate`` suits a cluster whose data is deleted anyway; ``fast`` lets it end its
        sessions first, so clients see a clean shutdown.
        """
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self.pg_ctl("stop", "-m", mode, "-w")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_server(bindir: Path, *, root: Path | None = None, settings: Sequence[str] = ()) -> PostgresServer:
    """``initdb`` a new cluster and start it on a free loopback port; return it running.

    ``root`` is the directory to keep it in (default: a fresh temporary one). Whatever a
    previous run left there is stopped and deleted first: the cluster is always new.
    ``settings`` are extra ``name=value`` server settings (``-c``), e.g. :data:`NOT_DURABLE`.
    Raises ``RuntimeError`` (with the server's own words) when it cannot start.
    """
    user = _server_user()
    if root is None:
        # Not under a private (0700) temporary dir such as pytest's: the server's user must enter it.
        root = Path(tempfile.mkdtemp(prefix="engine-pg-"))
    else:
        PostgresServer(bindir=bindir, root=root, host="", port=0, password="", user=user).stop()
        root.mkdir(parents=True)
    password = secrets.token_hex(16)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    (root / "sock").mkdir()
    if user is not None:
        for path in (root, root / "sock", pwfile):
            shutil.chown(path, user)
    server = PostgresServer(
        bindir=bindir, root=root, host="127.0.0.1", port=0, password=password, user=user, settings=tuple(settings)
    )
    try:
        init = server._run(
            str(bindir / "initdb"),
            "-D",
            str(server.data_dir),
            f"--username={SUPERUSER}",
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
        # A free port may be taken between finding it and binding it: try a few.
        for _ in range(5):
            server = attrs.evolve(server, port=free_port())
            started = server.start()
            if started.returncode == 0:
                return server
        log = (root / "server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()}\n{log}")
    except BaseException:
        server.stop()
        raise
