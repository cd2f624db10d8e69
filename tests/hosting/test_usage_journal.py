"""The engine's usage goes to a local journal first (issue 9: with the database busy, a
``kill -9`` lost 35 s of usage instead of the documented second)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from imhost.config import SecuritySettings
from imhost.db.engine import make_session_factory, writer_session
from imhost.hosting.models import HostedService
from imhost.hosting.ports import DbBackend
from imhost.hosting.usage_journal import JournaledUsageSink, UsageJournal
from imhost.kit.clock import FrozenClock
from imhost.metering.models import UsageRecord as MeteredUsage
from imhost.xmpp.ports import UsageRecord

from .factories import make_service

pytestmark = pytest.mark.anyio


@dataclass
class Setup:
    factory: sessionmaker[Session]
    clock: FrozenClock
    backend: DbBackend
    service: HostedService


@pytest.fixture
async def setup(session_factory: sessionmaker[Session], clock: FrozenClock) -> AsyncIterator[Setup]:
    backend = DbBackend(session_factory, clock, SecuritySettings(), host_refresh_seconds=3600)
    with session_factory() as session:
        service = make_service(session, clock, domain="a.example")
        session.commit()
    await backend.start()
    yield Setup(session_factory, clock, backend, service)
    await backend.close()


def _keys(factory: sessionmaker[Session]) -> set[str]:
    with factory() as session:
        return set(session.scalars(select(MeteredUsage.idempotency_key)))


def _records(clock: FrozenClock, prefix: str, n: int) -> list[UsageRecord]:
    bucket = clock.now().replace(second=0, microsecond=0)
    return [UsageRecord("a.example", "messages", bucket, 1, f"{prefix}-{i}") for i in range(n)]


@pytest.fixture
def hold_write_lock(engine: Engine) -> object:
    """A context: another connection holds the usage table's write lock meanwhile."""

    class Hold:
        def __init__(self) -> None:
            self.release = threading.Event()
            self.held = threading.Event()

        def _run(self) -> None:
            with writer_session(make_session_factory(engine)) as session:
                if engine.dialect.name == "sqlite":
                    session.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: the write lock
                else:
                    session.execute(text("LOCK TABLE usage_records IN EXCLUSIVE MODE"))
                self.held.set()
                self.release.wait(30)
                session.rollback()

        def __enter__(self) -> Hold:
            self.thread = threading.Thread(target=self._run)
            self.thread.start()
            assert self.held.wait(10)
            return self

        def __exit__(self, *exc: object) -> None:
            self.release.set()
            self.thread.join(30)

    return Hold


async def test_a_batch_is_taken_at_once_while_the_database_is_locked(
    setup: Setup, tmp_path: Path, hold_write_lock: type
) -> None:
    sink = JournaledUsageSink(setup.backend.usage, UsageJournal(tmp_path, "node-a"))
    await sink.start()
    try:
        with hold_write_lock():
            started = time.monotonic()
            await sink.record(_records(setup.clock, "locked", 5))
            assert time.monotonic() - started < 2.0  # the lock is held until the block ends
            journal = sink.journal.path.read_text()
            assert journal.count("\n") == 5 and '"key":"locked-4"' in journal
            assert _keys(setup.factory) == set()
        deadline = time.monotonic() + 10
        while sink.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert _keys(setup.factory) == {f"locked-{i}" for i in range(5)}
        assert sink.journal.path.read_text() == ""  # written: the journal is emptied
    finally:
        await sink.close()
    assert not sink.journal.path.exists()


async def test_what_a_killed_process_journaled_is_written_at_the_next_start(
    setup: Setup, tmp_path: Path
) -> None:
    """A process appends to its journal and dies by SIGKILL before writing to the database;
    the next start writes its records (once, whatever is replayed twice)."""
    bucket = setup.clock.now().replace(second=0, microsecond=0).isoformat()
    script = textwrap.dedent(
        f"""
        import os, signal
        from datetime import datetime
        from pathlib import Path
        from imhost.hosting.usage_journal import UsageJournal
        from imhost.xmpp.ports import UsageRecord
        journal = UsageJournal(Path({str(tmp_path)!r}), "node-a")
        journal.open()
        bucket = datetime.fromisoformat({bucket!r})
        journal.append(
            [UsageRecord("a.example", "messages", bucket, 2, f"killed-{{i}}") for i in range(7)]
        )
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env=os.environ.copy(), check=False)
    assert proc.returncode == -signal.SIGKILL
    [orphan] = list(tmp_path.glob("usage-journal-*.jsonl"))
    with orphan.open("a") as torn:
        torn.write('{"host":"a.example","metric":"mess')  # a line cut by the kill
    sink = JournaledUsageSink(setup.backend.usage, UsageJournal(tmp_path, "node-a"))
    await sink.start()
    try:
        assert not orphan.exists()
        assert await sink.write_pending()
    finally:
        await sink.close()
    assert _keys(setup.factory) == {f"killed-{i}" for i in range(7)}
    with setup.factory() as session:
        quantities = list(session.scalars(select(MeteredUsage.quantity)))
    assert sum(int(q) for q in quantities) == 14


async def test_the_journal_of_a_live_process_is_left_alone(setup: Setup, tmp_path: Path) -> None:
    live = UsageJournal(tmp_path, "node-a")
    live.open()
    live.append(_records(setup.clock, "live", 2))
    other = UsageJournal(tmp_path, "node-b")
    other.path = tmp_path / "usage-journal-node-b-other.jsonl"
    try:
        assert other.open() == []  # the live journal is locked by its owner
        assert live.path.exists()
    finally:
        other.close(remove=True)
        live.close(remove=True)
