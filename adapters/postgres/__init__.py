"""The Postgres backend: the source of truth for jobs and dead letters, and its schema.

`create_pool` opens the connection pool the repositories share; `apply_migrations` brings
a database's schema up to date from the numbered files in `migrations/`.
"""

from taskforge.adapters.postgres.jobs import (
    PostgresDeadLetterStore,
    PostgresJobRepository,
    create_pool,
)
from taskforge.adapters.postgres.migrations import MigrationError, apply_migrations

__all__ = [
    "MigrationError",
    "PostgresDeadLetterStore",
    "PostgresJobRepository",
    "apply_migrations",
    "create_pool",
]
