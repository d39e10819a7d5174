"""``engine-hub db migrate|status`` as an operator runs it: the venv's console script against a real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg

from engine_hub.settings import STORE_URL_ENV
from engine_hub.store.schema import known_version
from tests.integration.engine.cli_server import assert_one_line_error
from tests.integration.engine.process import CLEAN_ENV
from tests.postgres import PostgresServer

#: The console script pip installed beside this interpreter.
ENGINE_HUB = str(Path(sys.executable).parent / "engine-hub")
SECRET = "s3cret-Pa55"


def db(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``engine-hub db ARGS`` without any store URL in the environment unless ``env`` gives one."""
    clean = {k: v for k, v in CLEAN_ENV.items() if k != STORE_URL_ENV}
    return subprocess.run(
        [ENGINE_HUB, "db", *args], capture_output=True, text=True, env={**clean, **(env or {})}, timeout=60
    )


class TestMigrateAndStatus:
    def test_status_migrate_status(self, postgres_server: PostgresServer) -> None:
        """status says no schema (exit 1), migrate applies 0001, a second migrate applies nothing, status is 0."""
        url = postgres_server.create_database()
        before = db("status", "--store", url)
        assert before.returncode == 1, before
        assert "database schema: none" in before.stdout
        assert "run `engine-hub db migrate`" in before.stdout

        first = db("migrate", "--store", url)
        assert first.returncode == 0, first
        assert "applied 0001_initial" in first.stdout
        assert f"schema now at version {known_version()}" in first.stdout

        again = db("migrate", "--store", url)
        assert again.returncode == 0, again
        assert "applied" not in again.stdout
        assert f"schema already at version {known_version()}" in again.stdout

        after = db("status", "--store", url)
        assert after.returncode == 0, after
        assert (
            f"database schema: {known_version()}\nthis engine-hub: {known_version()}\nstate: up to date" in after.stdout
        )

    def test_store_url_from_the_environment(self, postgres_server: PostgresServer) -> None:
        """Without --store the URL comes from ENGINE_STORE_URL."""
        url = postgres_server.create_database()
        result = db("migrate", env={STORE_URL_ENV: url})
        assert result.returncode == 0, result
        assert "applied 0001_initial" in result.stdout

    def test_the_password_is_never_printed(self, postgres_server: PostgresServer) -> None:
        """Output names the store by its URL with the user but without the password."""
        url = postgres_server.create_database()
        result = db("status", "--store", url)
        assert postgres_server.password not in result.stdout + result.stderr
        assert f"postgresql://postgres@127.0.0.1:{postgres_server.port}/" in result.stdout


class TestFailures:
    def test_unreachable_database(self) -> None:
        """Nothing listening: one line naming the address, exit 1, and no password."""
        result = db("migrate", "--store", f"postgresql://admin:{SECRET}@127.0.0.1:1/engine")
        assert_one_line_error(result, 1, "store postgresql://admin@127.0.0.1:1/engine", "Connection refused")
        assert SECRET not in result.stderr

    def test_wrong_password(self, postgres_server: PostgresServer) -> None:
        """A refused login: one line saying so, exit 1, and the wrong password is not echoed."""
        result = db("migrate", "--store", postgres_server.url(password=SECRET))
        assert_one_line_error(result, 1, "password authentication failed")
        assert SECRET not in result.stderr

    def test_no_permission(self, postgres_server: PostgresServer) -> None:
        """A role that may not create tables: the database's refusal in one line, exit 1, nothing applied."""
        url = postgres_server.create_database()
        role = f"reader_{url.rsplit('_', 1)[1]}"
        with postgres_server.admin() as conn:
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'".encode())
        dbname = url.rsplit("/", 1)[1]
        result = db("migrate", "--store", postgres_server.url(dbname, user=role, password=SECRET))
        assert_one_line_error(result, 1, "permission denied")
        assert SECRET not in result.stderr
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('jobs')").fetchone() == (None,)

    def test_migrating_a_current_schema_needs_no_create_privilege(self, postgres_server: PostgresServer) -> None:
        """A node's role that may only read schema_migrations: migrate of a current schema is a no-op, exit 0."""
        url = postgres_server.create_database()
        assert db("migrate", "--store", url).returncode == 0
        role = f"node_{url.rsplit('_', 1)[1]}"
        with postgres_server.admin() as conn:
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'".encode())
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"GRANT SELECT ON schema_migrations TO {role}".encode())
        dbname = url.rsplit("/", 1)[1]
        result = db("migrate", "--store", postgres_server.url(dbname, user=role, password=SECRET))
        assert result.returncode == 0, result
        assert "schema already at version" in result.stdout

    def test_missing_url(self) -> None:
        """Neither --store nor ENGINE_STORE_URL: a usage error, exit 2."""
        assert_one_line_error(db("status"), 2, "--store", STORE_URL_ENV)

    def test_malformed_url(self) -> None:
        """A URL that is not postgresql:// or does not parse: exit 2, one line, password scrubbed."""
        assert_one_line_error(db("migrate", "--store", "http://example.org"), 2, "not a postgresql:// URL")
        broken = db("migrate", "--store", f"postgresql://u:{SECRET}@[::1/db")
        assert_one_line_error(broken, 2, "invalid store URL")
        assert SECRET not in broken.stderr
