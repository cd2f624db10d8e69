"""The database runner the data-plane adapters share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from imhost.db.engine import transaction

T = TypeVar("T")

DB_ATTEMPTS = 4


class AccountLookup(Protocol):
    async def account_id(self, domain: str, localpart: str) -> str | None:
        """The account's id, or None when there is no such (enabled or disabled) account."""
        ...


class DbRunner:
    """Runs one unit of work in a transaction on a worker thread.

    ``write``: the unit reads, then writes; on SQLite it begins as a writer so that it waits
    for another writer instead of failing on a stale snapshot. A transaction the database
    refuses for concurrency (SQLite "database is locked", a PostgreSQL deadlock or
    serialization failure) is run again from the start, up to ``attempts`` times.
    """

    def __init__(self, factory: sessionmaker[Session], *, attempts: int = DB_ATTEMPTS) -> None:
        self.factory = factory
        self.attempts = attempts

    def run_sync(
        self,
        work: Callable[[Session], T],
        *,
        write: bool = False,
        factory: sessionmaker[Session] | None = None,
    ) -> T:
        for attempt in range(self.attempts):
            try:
                with transaction(factory or self.factory, write=write) as session:
                    return work(session)
            except OperationalError:
                if attempt == self.attempts - 1:
                    raise
                time.sleep(0.02 * (attempt + 1))
        raise AssertionError("unreachable")

    async def run(
        self,
        work: Callable[[Session], T],
        *,
        write: bool = False,
        factory: sessionmaker[Session] | None = None,
    ) -> T:
        return await asyncio.to_thread(self.run_sync, work, write=write, factory=factory)
