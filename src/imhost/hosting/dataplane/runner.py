"""The database runner the data-plane adapters share."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, Protocol, TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from imhost.db.engine import transaction

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

DB_ATTEMPTS = 4


class AccountLookup(Protocol):
    async def account_id(self, domain: str, localpart: str) -> str | None:
        """The account's id, or None when there is no such (enabled or disabled) account."""
        ...


class DbRunner:
    """Runs one unit of work in a transaction on the engine's database thread.

    Every unit runs on one dedicated thread (``imhost-db``), one after the other, in the
    order asked for: the logins' reads and the batches' writes go to a thread whose
    connection and statement caches stay warm, instead of hopping across the default
    executor's threads (each hop a hand-over of the GIL between two more threads). Units are
    short transactions; one that waits for a lock (another process's writer) holds back the
    units behind it, as SQLite's single writer would have anyway.

    ``write``: the unit reads, then writes; on SQLite it begins as a writer so that it waits
    for another writer instead of failing on a stale snapshot. A transaction the database
    refuses for concurrency (SQLite "database is locked", a PostgreSQL deadlock or
    serialization failure) is run again from the start, up to ``attempts`` times.
    """

    def __init__(self, factory: sessionmaker[Session], *, attempts: int = DB_ATTEMPTS) -> None:
        self.factory = factory
        self.attempts = attempts
        self._executor: ThreadPoolExecutor | None = None

    def executor(self) -> ThreadPoolExecutor:
        """The database thread (started at the first unit, again after :meth:`close`)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imhost-db")
        return self._executor

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the database thread (for work that manages its own transaction)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor(), fn)

    def close(self) -> None:
        """Let the database thread end once its queued units are done."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)

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
        return await self.call(functools.partial(self.run_sync, work, write=write, factory=factory))


class ReadBatcher(Generic[K, V]):
    """Reads asked for while another read of the same kind is running share one transaction.

    :meth:`get` queues a key; one worker-thread transaction at a time reads every key queued
    so far (``read`` gets them all and returns a value for each, up to ``limit`` per
    transaction), then the keys queued meanwhile, and so on. With ten logins in flight, ten
    reads cost one transaction and one thread hop instead of ten. A read always begins after
    the :meth:`get` that asked for it (a caller that notes a change counter before calling can
    trust what it gets to be at least that recent). Used from the event loop only.
    """

    def __init__(
        self,
        runner: DbRunner,
        read: Callable[[Session, list[K]], Mapping[K, V]],
        *,
        limit: int = 200,
    ) -> None:
        self.runner = runner
        self.read = read
        self.limit = limit
        self._waiting: dict[K, list[asyncio.Future[V]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._task is None:
            self._task = asyncio.ensure_future(self._drain())
        return await future

    def _reader(self, keys: list[K]) -> Callable[[Session], Mapping[K, V]]:
        return lambda session: self.read(session, keys)

    async def _drain(self) -> None:
        batch: dict[K, list[asyncio.Future[V]]] = {}
        try:
            while self._waiting:
                keys = list(self._waiting)[: self.limit]
                batch = {key: self._waiting.pop(key) for key in keys}
                try:
                    values = await self.runner.run(self._reader(keys))
                except Exception as exc:  # noqa: BLE001 - every asker gets it, none waits forever
                    for futures in batch.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(exc)
                    continue
                for key, futures in batch.items():
                    for future in futures:
                        if future.done():
                            continue  # its asker was cancelled
                        if key in values:
                            future.set_result(values[key])
                        else:
                            future.set_exception(LookupError(f"the read gave nothing for {key!r}"))
        finally:
            self._task = None
            # Cancelled itself (the loop is closing): no asker is left waiting.
            for futures in [*batch.values(), *self._waiting.values()]:
                for future in futures:
                    if not future.done():
                        future.cancel()
            self._waiting.clear()
