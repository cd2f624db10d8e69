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
    "imhost.monitoring.models",
)


def load_models() -> MetaData:
    for name in MODEL_MODULES:
        importlib.import_module(name)
    return Base.metadata
