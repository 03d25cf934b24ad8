"""Schema migrations against scratch databases: first run, re-runs, concurrent runs, and the
history checks that refuse an edited or deleted migration."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from taskforge.adapters.postgres import MigrationError, apply_migrations
from taskforge.adapters.postgres.migrations import (
    ADVISORY_LOCK_KEY,
    SchemaCheck,
    SchemaNotCurrent,
    bundled_migrations,
    load_migrations,
)
from taskforge.domain.errors import Unavailable

SHIPPED = load_migrations()
VERSIONS = [migration.version for migration in SHIPPED]


@pytest.fixture
def editable_migrations(tmp_path: Path) -> Path:
    """A copy of the shipped migration files that a test may edit."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    for migration in SHIPPED:
        shutil.copyfile(
            Path(str(bundled_migrations() / migration.file_name)), folder / migration.file_name
        )
    return folder


async def _history(dsn: str) -> list[tuple[str, str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY 1")
        return [(row["version"], row["name"], row["checksum"]) for row in rows]
    finally:
        await conn.close()


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await conn.close()


def test_the_package_ships_every_numbered_migration_file() -> None:
    root_folder = Path(__file__).resolve().parents[2] / "migrations"

    assert [migration.file_name for migration in SHIPPED] == sorted(
        path.name for path in root_folder.glob("[0-9][0-9][0-9][0-9]_*.sql")
    )
    assert VERSIONS[0] == "0001"


async def test_migrations_apply_to_an_empty_database(scratch_dsn: str) -> None:
    applied = await apply_migrations(scratch_dsn)

    assert applied == VERSIONS
    assert {"jobs", "dead_letters", "schema_migrations"} <= await _tables(scratch_dsn)
    assert await _history(scratch_dsn) == [
        (migration.version, migration.name, migration.checksum) for migration in SHIPPED
    ]
    for migration in SHIPPED:
        content = (bundled_migrations() / migration.file_name).read_bytes()
        assert migration.checksum == hashlib.sha256(content).hexdigest()


async def test_applying_migrations_twice_is_a_no_op(scratch_dsn: str) -> None:
    await apply_migrations(scratch_dsn)
    before = await _history(scratch_dsn)

    again = await apply_migrations(scratch_dsn)

    assert again == []
    assert await _history(scratch_dsn) == before


async def test_concurrent_migrations_apply_each_file_exactly_once(scratch_dsn: str) -> None:
    results = await asyncio.gather(*(apply_migrations(scratch_dsn) for _ in range(4)))

    applied = [version for result in results for version in result]
    assert sorted(applied) == VERSIONS
    assert [len(result) for result in results].count(len(VERSIONS)) == 1
    assert [version for version, _, _ in await _history(scratch_dsn)] == VERSIONS


async def test_a_migrate_that_must_wait_for_the_lock_is_told_who_holds_it(
    scratch_dsn: str,
) -> None:
    holder = await asyncpg.connect(scratch_dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        told: list[list[int]] = []
        migrating = asyncio.create_task(apply_migrations(scratch_dsn, on_wait=told.append))
        while not told:
            assert not migrating.done(), migrating
            await asyncio.sleep(0.02)
        assert told == [[holder.get_server_pid()]]
        assert not migrating.done()  # it waits for the lock
    finally:
        await holder.close()  # lets the lock go

    assert await asyncio.wait_for(migrating, 60) == VERSIONS
    assert told == [[holder.get_server_pid()]]


async def test_a_migrate_that_finds_the_lock_free_is_told_nothing(scratch_dsn: str) -> None:
    told: list[list[int]] = []

    assert await apply_migrations(scratch_dsn, on_wait=told.append) == VERSIONS
    assert told == []


async def test_the_migrate_command_says_it_waits_for_another_migrate(scratch_dsn: str) -> None:
    holder = await asyncpg.connect(scratch_dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        migrating = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "taskforge.entrypoints.cli",
            "migrate",
            env={**os.environ, "POSTGRES_DSN": scratch_dsn},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert migrating.stderr is not None
        line = (await asyncio.wait_for(migrating.stderr.readline(), 60)).decode()
        assert line == (
            "taskforge migrate: another migrate holds the migration lock (Postgres backend"
            f" pid {holder.get_server_pid()}); waiting for it to finish\n"
        )
        assert migrating.returncode is None
    finally:
        await holder.close()
    out, err = await asyncio.wait_for(migrating.communicate(), 60)
    assert await migrating.wait() == 0, err
    assert out.decode().startswith(f"applied {len(VERSIONS)} migration(s)")


async def test_only_new_migrations_are_applied(scratch_dsn: str, editable_migrations: Path) -> None:
    await apply_migrations(scratch_dsn, source=editable_migrations)
    (editable_migrations / "0900_add_probe.sql").write_text("CREATE TABLE probe (id int);\n")

    applied = await apply_migrations(scratch_dsn, source=editable_migrations)

    assert applied == ["0900"]
    assert "probe" in await _tables(scratch_dsn)
    assert (await _history(scratch_dsn))[-1][:2] == ("0900", "add_probe")


async def test_changed_migration_is_refused(scratch_dsn: str, editable_migrations: Path) -> None:
    await apply_migrations(scratch_dsn, source=editable_migrations)
    edited = editable_migrations / SHIPPED[0].file_name
    edited.write_text(edited.read_text() + "\n-- a harmless-looking edit\n")
    (editable_migrations / "0900_add_probe.sql").write_text("CREATE TABLE probe (id int);\n")
    before = await _history(scratch_dsn)

    with pytest.raises(MigrationError, match=re.escape(SHIPPED[0].file_name)):
        await apply_migrations(scratch_dsn, source=editable_migrations)

    assert await _history(scratch_dsn) == before
    assert "probe" not in await _tables(scratch_dsn)


async def test_missing_migration_is_refused(scratch_dsn: str, editable_migrations: Path) -> None:
    await apply_migrations(scratch_dsn, source=editable_migrations)
    (editable_migrations / SHIPPED[-2].file_name).unlink()

    with pytest.raises(MigrationError, match="missing"):
        await apply_migrations(scratch_dsn, source=editable_migrations)


async def test_migrations_a_newer_version_applied_are_left_as_they_are(
    scratch_dsn: str, editable_migrations: Path
) -> None:
    # A rollback: the previous version's `taskforge migrate` (a release step) meets a
    # database a newer version migrated. Its processes run on it, so it has nothing to do.
    (editable_migrations / "0900_add_probe.sql").write_text("CREATE TABLE probe (id int);\n")
    await apply_migrations(scratch_dsn, source=editable_migrations)
    before = await _history(scratch_dsn)

    assert await apply_migrations(scratch_dsn) == []

    assert await _history(scratch_dsn) == before


async def test_failing_migration_is_rolled_back_and_not_recorded(
    scratch_dsn: str, editable_migrations: Path
) -> None:
    await apply_migrations(scratch_dsn, source=editable_migrations)
    (editable_migrations / "0900_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\nCREATE TABLE oops (;\n"
    )

    with pytest.raises(MigrationError, match=re.escape("0900_broken.sql")):
        await apply_migrations(scratch_dsn, source=editable_migrations)

    assert [version for version, _, _ in await _history(scratch_dsn)] == VERSIONS
    assert "half_done" not in await _tables(scratch_dsn)


def test_two_files_with_one_version_are_refused(editable_migrations: Path) -> None:
    (editable_migrations / "0001_duplicate.sql").write_text("SELECT 1;\n")

    with pytest.raises(MigrationError, match="0001"):
        load_migrations(editable_migrations)


def test_a_folder_without_migrations_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="no migration files"):
        load_migrations(tmp_path)
    with pytest.raises(MigrationError, match="cannot read"):
        load_migrations(tmp_path / "absent")


async def test_jobs_table_autovacuum_follows_a_fixed_amount_of_change(scratch_dsn: str) -> None:
    await apply_migrations(scratch_dsn)
    conn = await asyncpg.connect(scratch_dsn)
    try:
        options = await conn.fetchval("SELECT reloptions FROM pg_class WHERE relname = 'jobs'")
    finally:
        await conn.close()
    settings = dict(option.split("=", 1) for option in options)
    assert settings["autovacuum_vacuum_scale_factor"] == "0.0"
    assert settings["autovacuum_analyze_scale_factor"] == "0.0"
    assert int(settings["autovacuum_analyze_threshold"]) > 0


async def test_schema_check_refuses_a_database_without_the_schema(scratch_dsn: str) -> None:
    conn = await asyncpg.connect(scratch_dsn)
    try:
        with pytest.raises(SchemaNotCurrent, match="run `taskforge migrate`") as refused:
            await SchemaCheck()(conn)
    finally:
        await conn.close()

    assert refused.value.missing == VERSIONS


async def test_schema_check_names_the_migrations_not_applied(scratch_dsn: str) -> None:
    await apply_migrations(scratch_dsn)
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await conn.execute("DELETE FROM schema_migrations WHERE version = $1", VERSIONS[-1])

        with pytest.raises(SchemaNotCurrent, match=f"{VERSIONS[-1]} not applied") as refused:
            await SchemaCheck()(conn)
    finally:
        await conn.close()

    assert refused.value.missing == [VERSIONS[-1]]
    assert "run `taskforge migrate`" in str(refused.value)


async def test_schema_check_reads_the_history_only_until_the_schema_is_current(
    scratch_dsn: str,
) -> None:
    await apply_migrations(scratch_dsn)
    check = SchemaCheck()
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await check(conn)
        # Were the history read again, the check would now find no migration applied.
        await conn.execute("ALTER TABLE schema_migrations RENAME TO schema_migrations_gone")

        await check(conn)

        with pytest.raises(SchemaNotCurrent):
            await SchemaCheck()(conn)
    finally:
        await conn.close()


def _migrate(dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskforge.entrypoints.cli", "migrate"],
        env={**os.environ, "POSTGRES_DSN": dsn},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _with_password(dsn: str, password: str, **changes: str) -> str:
    parts = urlsplit(dsn)
    user = changes.get("user", parts.username or "postgres")
    host = parts.netloc.rpartition("@")[2]
    path = "/" + changes["database"] if "database" in changes else parts.path
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}", path=path))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"database": "taskforge_no_such_database"}, 'database "taskforge_no_such_database"'),
        ({"user": "taskforge_no_such_role"}, 'role "taskforge_no_such_role"'),
    ],
    ids=["missing database", "unknown role"],
)
def test_migrate_explains_a_database_it_cannot_use_in_one_line(
    postgres_admin_dsn: str, changes: dict[str, str], reason: str
) -> None:
    result = _migrate(_with_password(postgres_admin_dsn, "hunter2-secret", **changes))

    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("taskforge migrate: cannot use postgresql://")
    assert reason in line
    assert ":***@" in line
    assert "hunter2" not in result.stderr + result.stdout


def _with_parameter(dsn: str, parameter: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(query="&".join(filter(None, [parts.query, parameter]))))


async def test_a_dsn_parameter_the_server_refuses_makes_the_database_unavailable(
    scratch_dsn: str,
) -> None:
    # The driver passes a parameter it does not know on as a server setting.
    dsn = _with_parameter(scratch_dsn, "taskforge_no_such_setting=1")

    with pytest.raises(Unavailable) as raised:
        await apply_migrations(dsn)

    assert 'unrecognized configuration parameter "taskforge_no_such_setting"' in raised.value.cause


def test_migrate_explains_a_dsn_parameter_the_server_refuses_in_one_line(
    postgres_admin_dsn: str,
) -> None:
    dsn = _with_password(postgres_admin_dsn, "hunter2-secret")

    result = _migrate(_with_parameter(dsn, "connect_timeout=5"))

    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("taskforge migrate: cannot use postgresql://")
    assert line.endswith('unrecognized configuration parameter "connect_timeout"')
    assert "hunter2" not in result.stderr + result.stdout


def test_migrate_refuses_a_malformed_dsn_without_showing_it() -> None:
    result = _migrate("postgresql://postgres:hunter2/secret@127.0.0.1:5432/taskforge")

    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "POSTGRES_DSN" in line
    assert "malformed" in line
    assert "hunter2" not in line and "secret" not in line
