"""The worker: runs scheduled jobs, each exactly once across nodes.

A job is claimed with one atomic ``UPDATE ... WHERE lease is free and the job is due``
(compare-and-set), which is safe on SQLite and PostgreSQL alike: of several nodes racing,
exactly one sees ``rowcount == 1``. The lease expires after ``lease_seconds`` so a node that
dies mid-job does not block the job for ever; jobs themselves are idempotent (the billing run
and dunning are written to be rerun), so a rerun after a crash gives the same result.

A tick costs one read when nothing is due: :func:`due_jobs` reads every lease at once and
only the jobs that are due and free are claimed (a claim is a write transaction). A job
rescheduled by another node is seen at the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from imhost.db.engine import writer_session
from imhost.kit.clock import Clock
from imhost.worker.models import JobLease

log = logging.getLogger(__name__)
NODE = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Job:
    name: str
    every: timedelta
    run: Callable[[], object]
    lease_seconds: int = 600


def claim(factory: sessionmaker[Session], clock: Clock, job: Job, owner: str = NODE) -> bool:
    """Claim ``job`` if it is due and free. Its short transactions begin as writers
    (:func:`~imhost.db.engine.writer_session`): a read-then-write on a plain SQLite ``BEGIN``
    fails with "database is locked" whenever another connection wrote in between."""
    now = clock.now()
    with writer_session(factory) as session:
        if session.get(JobLease, job.name) is None:
            session.add(JobLease(name=job.name, next_run_at=now))
            try:
                session.commit()
            except Exception:  # noqa: BLE001 - another node inserted it first
                session.rollback()
        result = session.execute(
            update(JobLease)
            .where(
                JobLease.name == job.name,
                JobLease.next_run_at <= now,
                (JobLease.lease_expires_at.is_(None)) | (JobLease.lease_expires_at < now),
            )
            .values(
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=job.lease_seconds),
                last_started_at=now,
            )
        )
        session.commit()
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def finish(factory: sessionmaker[Session], clock: Clock, job: Job, error: str | None) -> None:
    now = clock.now()
    with writer_session(factory) as session:
        lease = session.get(JobLease, job.name)
        if lease is None:
            return
        lease.lease_owner = None
        lease.lease_expires_at = None
        lease.last_finished_at = now
        lease.last_error = error
        lease.next_run_at = now + job.every
        session.commit()


def due_jobs(factory: sessionmaker[Session], clock: Clock, jobs: list[Job]) -> list[Job]:
    """The jobs a claim could win now (due, lease free or expired, or never run), from one
    read of their leases; nothing is written."""
    if not jobs:
        return []
    now = clock.now()
    with factory() as session:
        rows = session.execute(
            select(JobLease.name, JobLease.next_run_at, JobLease.lease_expires_at).where(
                JobLease.name.in_([job.name for job in jobs])
            )
        ).all()
    leases = {name: (next_run_at, expires) for name, next_run_at, expires in rows}
    due = []
    for job in jobs:
        lease = leases.get(job.name)
        if lease is None or (lease[0] <= now and (lease[1] is None or lease[1] < now)):
            due.append(job)
    return due


def run_due(factory: sessionmaker[Session], clock: Clock, jobs: list[Job]) -> list[str]:
    """Run every due job this node can claim; returns the names run."""
    ran = []
    for job in due_jobs(factory, clock, jobs):
        if not claim(factory, clock, job):
            continue
        error = None
        try:
            job.run()
        except Exception as exc:
            log.exception("job %s failed", job.name)
            error = f"{type(exc).__name__}: {exc}"[:500]
        finish(factory, clock, job, error)
        ran.append(job.name)
    return ran


def job_status(session: Session) -> list[JobLease]:
    return list(session.scalars(select(JobLease).order_by(JobLease.name)))


def threadsafe_setter(event: asyncio.Event) -> Callable[[], None]:
    """A function that sets ``event`` from any thread (commits that queue an e-mail happen
    in web and worker threads); call in the loop that waits on ``event``."""
    loop = asyncio.get_running_loop()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(event.set)

    return wake


async def run_forever(
    factory: sessionmaker[Session],
    clock: Clock,
    jobs: list[Job],
    *,
    tick: float = 2.0,
    fast: Callable[[], object] | None = None,
    wake: asyncio.Event | None = None,
) -> None:
    """The worker loop: ``fast`` (mail and webhook delivery) every tick, jobs when due.

    ``wake`` set (after a commit queued an e-mail, ``Runtime.wake_delivery``) starts the
    next tick at once instead of after ``tick`` seconds."""
    while True:
        try:
            if fast is not None:
                await asyncio.to_thread(fast)
            await asyncio.to_thread(run_due, factory, clock, jobs)
        except Exception:
            log.exception("worker tick failed")
        if wake is None:
            await asyncio.sleep(tick)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), tick)
        wake.clear()
