"""The migrations produce exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from imhost.db.engine import make_engine
from imhost.db.migrations import migration_status, upgrade
from imhost.db.registry import load_models
from tests.conftest import make_test_database_url


def test_migrations_build_exactly_the_schema_of_the_models(tmp_path: Path, backend: str) -> None:
    url = make_test_database_url(tmp_path, "migrations", backend)
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, load_models())
            assert diff == [], (
                f"models and migrations differ; run `imhost db revision -m ...`: {diff}"
            )
            status = migration_status(conn)
            assert status.current and status.head is not None
            tables = set(inspect(conn).get_table_names())
        assert set(load_models().tables) <= tables
    finally:
        engine.dispose()


def test_upgrade_is_idempotent(tmp_path: Path, backend: str) -> None:
    url = make_test_database_url(tmp_path, "migrations2", backend)
    upgrade(url)
    upgrade(url)  # a second start applies nothing and does not fail
