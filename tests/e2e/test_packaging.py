"""The wheel, which is how an operator installs Engine Jobs, holds every file of its packages and nothing else.

The expectation comes from git, never from a list kept here: a file added
under ``engine_hub/``, ``admin_gateway/`` or ``shared/`` (say
``admin_gateway/static/js/new.js``) that ``package-data`` in
``pyproject.toml`` does not match makes this test fail. The wheel is the one
the e2e and browser suites install (:mod:`tests.e2e.install`), built from
the files ``git ls-files --cached --others --exclude-standard`` lists.
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from engine_hub.store.schema import migrations
from tests.e2e.install import DIST_INFO_SUFFIX, PACKAGES, Installation, operator_env, source_files, wheel
from tests.postgres import PostgresServer


class TestWheelContents:
    def test_wheel_holds_exactly_the_packages_files_git_knows(
        self, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        """Every git file under the three packages is in the wheel, and nothing else is besides its dist-info."""
        files = source_files()
        if files is None:
            pytest.skip("not a git checkout: the wheel's expected file list comes from git ls-files")
        expected = {name for name in files if name.split("/", 1)[0] in PACKAGES}
        with zipfile.ZipFile(wheel(request.config, tmp_path_factory)) as built:
            shipped = {name for name in built.namelist() if not name.endswith("/")}
        metadata = {name for name in shipped if name.split("/", 1)[0].endswith(DIST_INFO_SUFFIX)}
        assert len({name.split("/", 1)[0] for name in metadata}) == 1, sorted(metadata)
        missing = sorted(expected - shipped)
        assert missing == [], (
            f"files of the packages missing from the wheel (package-data in pyproject.toml?): {missing}"
        )
        extra = sorted(shipped - metadata - expected)
        assert extra == [], f"files in the wheel that are not files of the packages: {extra}"

    def test_wheel_ships_every_schema_migration(
        self, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        """The numbered SQL files `engine-hub db migrate` applies are in the wheel (package data, not modules)."""
        with zipfile.ZipFile(wheel(request.config, tmp_path_factory)) as built:
            shipped = {name for name in built.namelist() if name.startswith("engine_hub/store/migrations/")}
        expected = {f"engine_hub/store/migrations/{m.name}.sql" for m in migrations()}
        assert expected, "this build ships no migration"
        assert shipped == expected


class TestInstalledMigrations:
    def test_installed_db_migrate_applies_the_wheels_migrations(
        self, installed: Installation, postgres_server: PostgresServer, tmp_path: Path
    ) -> None:
        """`engine-hub db migrate` of the installed wheel, run outside the checkout, finds and applies its SQL files."""
        url = postgres_server.create_database()
        done = subprocess.run(
            [str(installed.bin / "engine-hub"), "db", "migrate", "--store", url],
            cwd=tmp_path,
            env=operator_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert [line for line in done.stdout.splitlines() if line.startswith("applied ")] == [
            f"applied {m.name}" for m in migrations()
        ]
