"""ReadBatcher: reads asked for while one runs share the next transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from imhost.hosting.dataplane.runner import DbRunner, ReadBatcher

pytestmark = pytest.mark.anyio


def _squares(calls: list[list[int]]) -> Callable[[Session, list[int]], dict[int, int]]:
    def read(session: Session, keys: list[int]) -> dict[int, int]:
        calls.append(list(keys))
        assert session.scalar(text("SELECT 1")) == 1  # a real transaction
        return {k: k * k for k in keys if k >= 0}

    return read


async def test_reads_asked_while_one_runs_share_the_next_transaction(
    session_factory: sessionmaker[Session],
) -> None:
    calls: list[list[int]] = []
    batcher: ReadBatcher[int, int] = ReadBatcher(DbRunner(session_factory), _squares(calls))
    first = asyncio.ensure_future(batcher.get(1))
    await asyncio.sleep(0)  # the first read is on its way
    rest = await asyncio.gather(*(batcher.get(k) for k in (2, 3, 3, 4)))
    assert await first == 1 and rest == [4, 9, 9, 16]
    assert calls == [[1], [2, 3, 4]]


async def test_limit_missing_keys_and_cancelled_askers(
    session_factory: sessionmaker[Session],
) -> None:
    calls: list[list[int]] = []
    batcher: ReadBatcher[int, int] = ReadBatcher(
        DbRunner(session_factory),
        _squares(calls),
        limit=2,
    )
    gone = asyncio.ensure_future(batcher.get(5))
    outcomes = asyncio.gather(*(batcher.get(k) for k in (6, -1, 7)), return_exceptions=True)
    await asyncio.sleep(0)
    gone.cancel()
    results = await outcomes
    assert results[0] == 36 and results[2] == 49
    assert isinstance(results[1], LookupError)
    assert calls == [[5, 6], [-1, 7]]
    assert await batcher.get(8) == 64  # still working after all that


async def test_the_runner_runs_every_unit_on_one_database_thread_in_order(
    session_factory: sessionmaker[Session],
) -> None:
    import threading

    runner = DbRunner(session_factory)
    seen: list[tuple[int, str]] = []

    def unit(n: int) -> Callable[[Session], int]:
        def work(session: Session) -> int:
            seen.append((n, threading.current_thread().name))
            return int(session.scalar(text("SELECT :n"), {"n": n}))

        return work

    results = await asyncio.gather(
        *(runner.run(unit(n), write=n % 2 == 0) for n in range(12)),
        runner.call(lambda: threading.current_thread().name),
    )
    assert results[:12] == list(range(12))
    names = {name for _, name in seen} | {results[12]}
    assert len(names) == 1 and names.pop().startswith("imhost-db")
    assert [n for n, _ in seen] == list(range(12))  # in the order asked for
    runner.close()
    assert await runner.run(unit(99)) == 99  # a closed runner starts its thread again
    runner.close()
