"""SQLite: a transaction marked to write waits for other writers instead of failing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import text

from imhost.db.engine import make_engine, make_session_factory, transaction, write_intent


def test_read_then_write_transactions_survive_a_concurrent_writer(tmp_path: Path) -> None:
    """A login reads the user, checks the password, then writes: another writer committing in
    between must not turn that into "database is locked" (it did with a plain BEGIN, which
    the web requests used)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'lock.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    factory = make_session_factory(engine)
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            with transaction(factory) as session:
                session.execute(text("INSERT INTO t VALUES (1)"))
            time.sleep(0.005)

    thread = threading.Thread(target=writer)
    thread.start()
    failures: list[Exception] = []
    try:
        for _ in range(20):
            try:
                with transaction(factory) as session:
                    write_intent(session)
                    session.execute(text("SELECT count(*) FROM t")).scalar()
                    time.sleep(0.01)  # the writer commits meanwhile
                    session.execute(text("INSERT INTO t VALUES (2)"))
            except Exception as exc:
                failures.append(exc)
    finally:
        stop.set()
        thread.join()
        engine.dispose()
    assert failures == []


def test_a_plain_transaction_does_not_block_a_writer(tmp_path: Path) -> None:
    """Readers begin with a plain BEGIN: a writer in the same thread is not held up."""
    engine = make_engine(f"sqlite:///{tmp_path / 'plain.db'}", connect_args={"timeout": 1})
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    factory = make_session_factory(engine)
    try:
        with transaction(factory) as reader:
            reader.execute(text("SELECT count(*) FROM t")).scalar()
            with transaction(factory) as writer:
                writer.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        engine.dispose()
