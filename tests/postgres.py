"""A throwaway PostgreSQL server for the tests: one cluster per session, a fresh database per module or test.

:func:`start_server` finds the server binaries (``pg_config --bindir``, else
``initdb`` on PATH, else the newest ``/usr/lib/postgresql/*/bin``), runs
``initdb`` into a fresh temporary directory, and ``pg_ctl start`` on a free
loopback port with its unix socket in that directory; :meth:`PostgresServer.stop`
stops it (``-m immediate``: nothing in it is worth a clean shutdown) and
deletes the directory. PostgreSQL refuses to run as root, so as root the
binaries run as the system user :data:`SERVER_USER` (created if missing).

The superuser ``postgres`` logs in with a password over TCP (scram, as in
production) and without one over the unix socket. ``fsync`` and
``synchronous_commit`` are off: a test cluster need not survive a power cut.

Without the binaries the tests that need a server skip, naming the Debian
package ``postgresql``; with ``REQUIRE_POSTGRES=1`` (``.ci/run``) they fail.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Final

import attrs
import psycopg

from engine_hub.store.schema import migrate
from shared.pg import connect
from tests.requirements import missing

#: The unprivileged user the server runs as when the tests run as root.
SERVER_USER: Final = "enginetest"
SUPERUSER: Final = "postgres"
MISSING: Final = "PostgreSQL server binaries (initdb, pg_ctl) not found: install the Debian package `postgresql`"
#: Name of the session's template database: migrated once, copied by CREATE DATABASE … TEMPLATE.
TEMPLATE_DB: Final = "engine_template"


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or ``None`` when there is none."""
    candidates: list[Path] = []
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


def require_bindir() -> Path:
    """:func:`find_bindir`'s answer, or skip the test (fail it with ``REQUIRE_POSTGRES=1``)."""
    bindir = find_bindir()
    if bindir is None:
        missing("REQUIRE_POSTGRES", MISSING)
    return bindir


def _free_port() -> int:
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

    def create_database(self, *, template: str | None = None) -> str:
        """Create a database with a fresh name (a copy of ``template`` if given); return its URL."""
        name = f"test_{secrets.token_hex(6)}"
        copy = "" if template is None else f" TEMPLATE {template}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name}{copy}".encode())
        return self.url(name)

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``pg_ctl -D <data dir> <args>`` as the server's user."""
        return self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args)

    def start(self) -> subprocess.CompletedProcess[str]:
        """``pg_ctl start`` the cluster on its port and socket directory, waiting until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        return self.pg_ctl("start", "-w", "-t", "30", "-l", str(self.root / "server.log"), "-o", options)

    def halt(self) -> None:
        """Stop the server (``-m fast``: its sessions are cut) and keep its data; raises if it fails."""
        done = self.pg_ctl("stop", "-m", "fast", "-w")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {done.stderr.strip()}")

    def restart(self) -> None:
        """Restart the server on the same port (:meth:`halt`, then :meth:`start`); raises if it fails."""
        self.halt()
        started = self.start()
        if started.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()}")

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        prefix = [] if self.user is None else [_tool("runuser"), "-u", self.user, "--"]
        return subprocess.run([*prefix, *argv], capture_output=True, text=True, check=False, timeout=60)

    @property
    def options(self) -> str:
        """The server options it runs with (``pg_ctl -o``): its port and socket, and no durability."""
        return (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )

    def start(self) -> subprocess.CompletedProcess[str]:
        """``pg_ctl start`` (waiting until it accepts connections), logging to ``server.log``."""
        return self.pg_ctl("start", "-w", "-t", "30", "-l", str(self.root / "server.log"), "-o", self.options)

    def shut_down(self) -> None:
        """Stop the server (``-m fast``: sessions are ended) for a test of a database outage; :meth:`start` it again."""
        done = self.pg_ctl("stop", "-m", "fast", "-w", "-t", "30")
        assert done.returncode == 0, done.stderr

    def restart(self) -> None:
        """Stop and start the server again on the same port, as ``pg_ctl restart`` does in production."""
        self.shut_down()
        started = self.start()
        assert started.returncode == 0, started.stderr

    def stop(self) -> None:
        """Stop the server at once and delete its directory."""
        try:
            self.pg_ctl("stop", "-m", "immediate", "-w")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_server(bindir: Path) -> PostgresServer:
    """``initdb`` a new cluster in a fresh temporary directory and start it on a free loopback port."""
    user = _server_user()
    # Not under pytest's tmp dir: that is private to its owner (0700), and the server's user must enter it.
    root = Path(tempfile.mkdtemp(prefix="engine-pg-"))
    password = secrets.token_hex(16)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    (root / "sock").mkdir()
    if user is not None:
        for path in (root, root / "sock", pwfile):
            shutil.chown(path, user)
    server = PostgresServer(bindir=bindir, root=root, host="127.0.0.1", port=0, password=password, user=user)
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
            server = attrs.evolve(server, port=_free_port())
            started = server.start()
            if started.returncode == 0:
                return server
        log = (root / "server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()}\n{log}")
    except BaseException:
        server.stop()
        raise


def create_template(server: PostgresServer) -> str:
    """Create :data:`TEMPLATE_DB` with every migration applied; return its name."""
    with server.admin() as conn:
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}".encode())

    async def apply() -> None:
        conn = await connect(server.url(TEMPLATE_DB))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(apply())
    return TEMPLATE_DB
