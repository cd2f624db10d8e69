"""Fixtures shared by the whole suite.

Every test that uses the database runs on SQLite, and also on PostgreSQL when
``IMHOST_TEST_DATABASE_URL`` names a server (CI sets it, so CI covers both; test ids end in
``[sqlite]`` / ``[postgresql]``). With pytest-xdist each worker gets its own databases.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from imhost.db.engine import make_engine, make_session_factory, normalize_url
from imhost.db.registry import load_models
from imhost.kit.clock import FrozenClock

PG_URL = os.environ.get("IMHOST_TEST_DATABASE_URL")


def _worker() -> str:
    """This worker's part of a test database's name, unique per run: two suites running at
    once on one PostgreSQL server (two people, or a check beside a CI run) must not drop each
    other's databases. xdist gives every run an id; without xdist the process id serves."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")[:8] or f"p{os.getpid()}"
    return f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{run}"


_created: list[str] = []


@atexit.register
def _drop_created_databases() -> None:
    """Drop the PostgreSQL databases this process made (their names are unique per run)."""
    if not (_created and PG_URL):
        return
    from sqlalchemy.engine import make_url

    admin = make_engine(
        make_url(normalize_url(PG_URL)).render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
    )
    # Best effort at exit: a leftover database harms nothing.
    with contextlib.suppress(SQLAlchemyError), admin.connect() as conn:
        for name in _created:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


BACKENDS = ["sqlite", *(["postgresql"] if PG_URL else [])]


def make_test_database_url(tmp_dir: Path, name: str, backend: str | None = None) -> str:
    """A fresh, empty database for this worker: a file for SQLite, a database on PostgreSQL.

    ``backend`` None means PostgreSQL when configured, else SQLite.
    """
    backend = backend or ("postgresql" if PG_URL else "sqlite")
    if backend == "sqlite" or not PG_URL:
        return f"sqlite:///{tmp_dir / (name + '.db')}"
    from sqlalchemy.engine import make_url

    base = make_url(normalize_url(PG_URL))
    dbname = f"imhost_t_{name}_{_worker()}".lower().replace("-", "_")
    admin = make_engine(base.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{dbname}"'))
    admin.dispose()
    _created.append(dbname)
    return base.set(database=dbname).render_as_string(hide_password=False)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory, backend: str) -> str:
    return make_test_database_url(tmp_path_factory.mktemp("db"), f"suite_{backend}", backend)


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    metadata = load_models()
    eng = make_engine(database_url)
    metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> Iterator[sessionmaker[Session]]:
    """A session maker on the suite database; every table is emptied after the test."""
    yield make_session_factory(engine)
    metadata = load_models()
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())


@pytest.fixture
def db(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for a test; the test commits or flushes as the code under test expects."""
    with session_factory() as session:
        yield session


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()
