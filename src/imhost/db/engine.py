"""Engine and session makers for SQLite (default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the pragmas imhost relies on.

    SQLite: WAL journal, foreign keys on, a busy timeout so the web app, the XMPP flusher and
    the worker can share one file. Transactions begin with a plain ``BEGIN`` (readers never
    wait), or ``BEGIN IMMEDIATE`` for a session marked with :func:`write_intent`.
    """
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {})
        kwargs["connect_args"].setdefault("check_same_thread", False)
        kwargs["connect_args"].setdefault("timeout", 30)
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own transaction handling is turned off so that BEGIN is ours.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if parsed.database and parsed.database != ":memory:":
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            immediate = conn.get_execution_options().get(_WRITE_INTENT, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


_WRITE_INTENT = "imhost_write_intent"


def write_intent(session: Session) -> None:
    """Begin the session's transaction as one that will write (SQLite: ``BEGIN IMMEDIATE``).

    A transaction that reads first and writes later (a web request: authenticate, check a
    password, then write the session and the audit event) would fail at once with "database
    is locked" when another connection committed in between: SQLite cannot turn a stale
    read snapshot into a write. Taking the write lock at the start makes it wait for the
    other writer (up to the busy timeout) instead. Call before the session's first statement;
    a no-op on PostgreSQL. Nothing in the same thread may then wait for another session's
    write until this transaction ends.
    """
    session.connection(execution_options={_WRITE_INTENT: True})


def writer_session(factory: sessionmaker[Session]) -> Session:
    """A session whose every transaction begins as a writer, at its first statement.

    Unlike :func:`write_intent`, nothing happens when the session is made: the write lock
    (SQLite ``BEGIN IMMEDIATE``) is taken by the first query, so the caller can read its
    input first and hold the lock only for the work itself. After ``commit()`` the lock is
    released, and the next statement takes it again in a new transaction; commit before
    anything slow (sleeping, network or file I/O, key derivation). Plain on PostgreSQL.
    """
    bind = factory.kw.get("bind")
    if not isinstance(bind, Engine) or bind.dialect.name != "sqlite":
        return factory()
    return factory(bind=bind.execution_options(**{_WRITE_INTENT: True}))


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


@contextmanager
def transaction(factory: sessionmaker[Session], *, write: bool = False) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error. Services never commit.

    ``write``: the unit reads and then writes; on SQLite it begins as a writer at its first
    statement (:func:`writer_session`) so it waits for another writer instead of failing
    with "database is locked" when its read snapshot went stale. Keep such units short.
    """
    with writer_session(factory) if write else factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def insert_if_absent(session: Session, row: object) -> bool:
    """Insert ``row`` in a savepoint; False when a row with its key exists already (another
    transaction made it first), and the session's transaction goes on unharmed."""
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False
    return True
