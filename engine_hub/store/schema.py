"""The PostgreSQL store's schema: numbered SQL migrations, applying them, and checking a database's version.

The migrations are the files ``migrations/NNNN_name.sql`` beside this module
(package data, shipped in the wheel), numbered from 0001 without gaps. A
database's version is the highest ``version`` in its ``schema_migrations``
table. :func:`migrate` brings a database up to this build's version;
:func:`check_schema` is what a node calls at start: it refuses a database
whose version is not exactly this build's, saying what to do.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from typing import Any, Final

import attrs
import psycopg

#: Key of the advisory lock every migration transaction takes first, so that two nodes (or two
#: ``db migrate``) running at once apply each migration once, one after the other.
MIGRATE_LOCK: Final = 0x656E67696E65  # "engine" in ASCII: any fixed bigint would do

_FILE_NAME: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

#: Created by the migration runner itself (not by a migration): it must exist before the first one.
_CREATE_TABLE: Final = """
CREATE TABLE schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migrations IS 'Migrations applied by engine-hub db migrate, one row each.';
COMMENT ON COLUMN schema_migrations.version IS 'The migration''s number (its file''s NNNN).';
COMMENT ON COLUMN schema_migrations.name IS 'The migration''s file name without .sql.';
COMMENT ON COLUMN schema_migrations.applied_at IS 'When it was applied (database clock).';
"""

MIGRATE_HINT: Final = "run `engine-hub db migrate`"


class SchemaError(Exception):
    """The database's schema is not one this engine-hub can use; the message says what to do (one line)."""


@attrs.frozen(kw_only=True)
class Migration:
    """One numbered migration: its version, its name (the file name without ``.sql``) and its SQL."""

    version: int
    name: str
    sql: str


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """Every migration this build ships, in order; versions run 1, 2, … without a gap."""
    folder = importlib.resources.files("engine_hub.store") / "migrations"
    found = []
    for item in folder.iterdir():
        match = _FILE_NAME.match(item.name)
        if match:
            found.append(Migration(version=int(match[1]), name=item.name[:-4], sql=item.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    numbers = [m.version for m in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1, 2, … without a gap; found {numbers}")
    return tuple(found)


def known_version() -> int:
    """The schema version this build knows: its newest migration's."""
    return migrations()[-1].version


async def database_version(conn: psycopg.AsyncConnection[Any]) -> int | None:
    """The database's schema version: ``None`` without a ``schema_migrations`` table, 0 when it is empty."""
    cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return None
    return await _recorded_version(conn)


async def _recorded_version(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
    row = await cur.fetchone()
    assert row is not None  # an aggregate always returns a row
    return int(row[0])


def _ahead(version: int) -> SchemaError:
    return SchemaError(
        f"this engine-hub knows schema {known_version()}, the database is at {version}: upgrade engine-hub"
    )


async def check_schema(conn: psycopg.AsyncConnection[Any]) -> int:
    """Return the database's schema version if it is exactly this build's; else raise :class:`SchemaError`.

    The three refusals: no schema at all, a schema behind this build (both:
    run ``engine-hub db migrate``), and a schema ahead of it (upgrade
    engine-hub: this build cannot know what the newer migrations changed).
    """
    version = await database_version(conn)
    known = known_version()
    if version is None:
        raise SchemaError(f"the database has no engine-hub schema: {MIGRATE_HINT}")
    if version < known:
        raise SchemaError(
            f"the database's schema is at version {version}, this engine-hub needs {known}: {MIGRATE_HINT}"
        )
    if version > known:
        raise _ahead(version)
    return version


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[Migration]:
    """Apply every pending migration in order, each in its own transaction; return those applied.

    Each transaction first takes the advisory lock :data:`MIGRATE_LOCK`, then
    reads the version: a concurrent migrator waits, then finds the work done.
    A migration and its ``schema_migrations`` row commit together or not at
    all. Raises :class:`SchemaError` when the database is ahead of this build,
    and ``psycopg.Error`` when a statement fails (that migration is rolled back).
    """
    applied: list[Migration] = []
    known = known_version()
    while True:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
            version = await database_version(conn)
            if version is None:
                # Only when missing: COMMENT needs the table's owner, and a current schema must
                # stay a no-op for any role that may read it.
                await conn.execute(_CREATE_TABLE)
                version = 0
            if version > known:
                raise _ahead(version)
            if version == known:
                return applied
            migration = migrations()[version]  # versions run from 1: index ``version`` is the next one
            # Bytes: the file's text is not a literal, and without parameters psycopg sends it as one
            # simple query, so a migration may hold several statements.
            await conn.execute(migration.sql.encode())
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (migration.version, migration.name)
            )
        applied.append(migration)
