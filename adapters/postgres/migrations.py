"""Schema migrations: the numbered SQL files in `taskforge/migrations`, applied in order.

Each file runs in its own transaction and is recorded in `schema_migrations` with its
sha256 checksum. Everything happens under one session advisory lock, so several processes
may migrate the same database at once: one applies, the others wait and find nothing to do.
Applied files are append-only history: editing or deleting one is refused.

`SchemaCheck` is the other side: the service roles refuse to use a database until every
shipped migration is applied to it, and say "run `taskforge migrate`".
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

import asyncpg

from taskforge.adapters.postgres.connection import CONNECTION_ERRORS, RUN_MIGRATE
from taskforge.domain.errors import Unavailable

FILE_NAME = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql")

# Any fixed 64-bit number works; this one reads "taskforge" in ASCII, truncated.
ADVISORY_LOCK_KEY = 0x7461736B666F7267

CREATE_HISTORY = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_APPLIED = "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
SELECT_APPLIED_VERSIONS = "SELECT version FROM schema_migrations"
RECORD_APPLIED = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"
LOCK = "SELECT pg_advisory_lock($1)"
TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
LOCK_HOLDERS = """
SELECT pid FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 1
  AND ((classid::bigint << 32) | objid::bigint) = $1
ORDER BY pid
"""
"""The backends holding the session lock (a bigint key is shown as two 32-bit halves)."""


class MigrationError(Exception):
    """The database's migration history and the shipped files disagree; nothing was applied."""


class SchemaNotCurrent(Unavailable):
    """Some shipped migration (or every one) is not applied to the database yet."""

    def __init__(self, missing: list[str], *, shipped: int) -> None:
        if len(missing) == shipped:
            cause = f"the database has no TaskForge schema: {RUN_MIGRATE}"
        else:
            cause = (
                f"the database schema is behind this TaskForge version (migration "
                f"{', '.join(missing)} not applied): {RUN_MIGRATE}"
            )
        super().__init__("postgres", cause)
        self.missing = missing


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    name: str
    sql: str
    checksum: str

    @property
    def file_name(self) -> str:
        return f"{self.version}_{self.name}.sql"


def bundled_migrations() -> Traversable:
    """The folder shipped inside the package (an installed wheel included)."""
    return files("taskforge") / "migrations"


def load_migrations(source: Traversable | None = None) -> list[Migration]:
    """Every `NNNN_name.sql` file in `source`, ordered by version. Other files are ignored;
    a folder with none is an error (a broken install must not look up to date)."""
    folder = source if source is not None else bundled_migrations()
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise MigrationError(f"cannot read the migrations folder {folder}: {exc}") from exc
    found: dict[str, Migration] = {}
    for entry in entries:
        match = FILE_NAME.fullmatch(entry.name)
        if match is None or not entry.is_file():
            continue
        content = entry.read_bytes()
        migration = Migration(
            version=match["version"],
            name=match["name"],
            sql=content.decode("utf-8"),
            checksum=hashlib.sha256(content).hexdigest(),
        )
        if migration.version in found:
            raise MigrationError(
                f"two migrations share version {migration.version}: "
                f"{found[migration.version].file_name} and {migration.file_name}"
            )
        found[migration.version] = migration
    if not found:
        raise MigrationError(f"no migration files (NNNN_name.sql) in {folder}")
    return [found[version] for version in sorted(found)]


async def apply_migrations(
    dsn: str,
    *,
    source: Traversable | None = None,
    on_wait: Callable[[list[int]], None] | None = None,
) -> list[str]:
    """Apply every pending migration, in order; return the versions applied by this call
    (empty when the database was up to date). When another process holds the migration
    lock, `on_wait` is told the Postgres backend pids holding it (none if it was let go
    meanwhile) before this call waits for it.

    Migrations applied by a newer TaskForge (versions past the newest file here, as after
    a rollback) are left as they are: they only add, so this version runs on them.
    Raises MigrationError when an applied file has changed or is missing (nothing is
    applied then) or when a file fails (it is rolled back; the ones before it stay), and
    Unavailable when the database cannot be reached or refuses the session (as it refuses a
    DSN parameter the driver passes on as a server setting: `?connect_timeout=5`)."""
    migrations = load_migrations(source)
    try:
        conn = await asyncpg.connect(dsn)
    except CONNECTION_ERRORS as exc:
        raise Unavailable("postgres", str(exc) or type(exc).__name__) from exc
    except asyncpg.PostgresError as exc:  # the server refused the session's settings
        raise Unavailable("postgres", str(exc)) from exc
    try:
        # A session lock: closing the connection releases it, even after an error.
        if not await conn.fetchval(TRY_LOCK, ADVISORY_LOCK_KEY):
            if on_wait is not None:
                on_wait([row["pid"] for row in await conn.fetch(LOCK_HOLDERS, ADVISORY_LOCK_KEY)])
            await conn.execute(LOCK, ADVISORY_LOCK_KEY)
        return await _apply_pending(conn, migrations)
    except CONNECTION_ERRORS as exc:
        raise Unavailable("postgres", str(exc)) from exc
    except asyncpg.PostgresError as exc:  # the role may not lock, create or read the history
        raise MigrationError(f"cannot migrate: {exc.args[0]}") from exc
    finally:
        await conn.close()


async def _apply_pending(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    await conn.execute(CREATE_HISTORY)
    applied = {row["version"]: row for row in await conn.fetch(SELECT_APPLIED)}
    shipped = {migration.version: migration for migration in migrations}
    newest = migrations[-1].version
    for version, row in applied.items():
        migration = shipped.get(version)
        if migration is None and version > newest:
            continue  # a newer TaskForge applied it (a rollback): this version runs on it
        if migration is None:
            raise MigrationError(
                f"migration {version}_{row['name']}.sql was applied to this database but its "
                "file is missing; restore it (applied migrations are never removed)"
            )
        if migration.checksum != row["checksum"]:
            raise MigrationError(
                f"migration {migration.file_name} changed after it was applied "
                f"(recorded sha256 {row['checksum'][:12]}..., file now "
                f"{migration.checksum[:12]}...); revert the edit and add a new migration instead"
            )
    done = []
    for migration in migrations:
        if migration.version in applied:
            continue
        try:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    RECORD_APPLIED, migration.version, migration.name, migration.checksum
                )
        except CONNECTION_ERRORS:
            raise
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"migration {migration.file_name} failed and was rolled back: {exc}"
            ) from exc
        done.append(migration.version)
    return done


class SchemaCheck:
    """A pool's connection check (see `create_pool`): refuses connections to a database that
    lacks a shipped migration, raising SchemaNotCurrent. Once every one is applied the answer
    is remembered, as applied migrations are never removed: `schema_migrations` is read
    for each new connection until the schema is current, then never again. Migrations newer
    than this version's (a newer TaskForge migrated first) are fine."""

    def __init__(self, migrations: list[Migration] | None = None) -> None:
        shipped = migrations if migrations is not None else load_migrations()
        self._versions = [migration.version for migration in shipped]
        self._current = False

    async def __call__(self, conn: asyncpg.Connection) -> None:
        if self._current:
            return
        try:
            applied = {row["version"] for row in await conn.fetch(SELECT_APPLIED_VERSIONS)}
        except asyncpg.UndefinedTableError:
            applied = set()
        missing = [version for version in self._versions if version not in applied]
        if missing:
            raise SchemaNotCurrent(missing, shipped=len(self._versions))
        self._current = True
