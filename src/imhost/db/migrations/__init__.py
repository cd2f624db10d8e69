"""Alembic migrations, driven from code (no alembic.ini needed).

``imhost db upgrade`` and start-up call ``upgrade``; ``/readyz`` calls ``migration_status``.
New migrations: ``imhost db revision -m "what changed"`` (autogenerate from the models).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from imhost.db.engine import normalize_url

HERE = Path(__file__).resolve().parent


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def revision(url: str, message: str, *, autogenerate: bool = True) -> None:
    command.revision(alembic_config(url), message=message, autogenerate=autogenerate)


@dataclass(frozen=True)
class MigrationStatus:
    database: str | None
    head: str | None

    @property
    def current(self) -> bool:
        return self.database == self.head


def migration_status(conn: Connection) -> MigrationStatus:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    context = MigrationContext.configure(conn)
    return MigrationStatus(database=context.get_current_revision(), head=script.get_current_head())
