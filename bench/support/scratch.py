"""Where a support benchmark runs: SQLite in a temporary file, or a scratch PostgreSQL
database created for the run and dropped after it (also when the run fails)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from imhost.db.engine import make_engine, normalize_url


@contextmanager
def scratch_database(server_url: str | None, name: str) -> Iterator[str]:
    """The URL of an empty database for one run: ``server_url`` None means SQLite."""
    if not server_url:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
        return
    base = make_url(normalize_url(server_url))
    admin = make_engine(base.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
