"""Import every package's models so that ``Base.metadata`` is complete.

Alembic, ``create_all`` in tests and the schema check all go through ``load_models``. A new
package with tables adds its ``models`` module to ``MODEL_MODULES``.
"""

from __future__ import annotations

import importlib

from sqlalchemy import MetaData

from imhost.db.base import Base

MODEL_MODULES: tuple[str, ...] = (
    "imhost.accounts.models",
    "imhost.notify.models",
    "imhost.worker.models",
    "imhost.catalog.models",
    "imhost.metering.models",
    "imhost.billing.models",
    "imhost.billing.sepa.models",
    "imhost.hosting.models",
    "imhost.support.models",
    "imhost.domains.models",
    "imhost.support.sla_models",
    "imhost.monitoring.models",
    "imhost.support.ticket_models",
)

UNMAPPED_SCHEMA_NAMES: tuple[str, ...] = (
    "help_article_fts",
    "search_document",
    "ix_help_articles_search",
)
"""Schema objects the migrations create outside the mapped metadata: the help center's
full-text index (an FTS5 table with its shadow tables on SQLite; on PostgreSQL a generated
tsvector column of ``help_articles`` and its GIN index; ``imhost.support.models``). The
schema comparison leaves them out."""


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's ``include_name`` hook: compare everything but :data:`UNMAPPED_SCHEMA_NAMES`."""
    return not (name and name.startswith(UNMAPPED_SCHEMA_NAMES))


def load_models() -> MetaData:
    for name in MODEL_MODULES:
        importlib.import_module(name)
    return Base.metadata
