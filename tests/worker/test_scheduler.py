"""Scheduled jobs run once across nodes; a dead node's lease expires; failures are recorded."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from imhost.kit.clock import FrozenClock
from imhost.worker.models import JobLease
from imhost.worker.scheduler import Job, claim, finish, run_due


def test_of_many_nodes_racing_exactly_one_claims_a_due_job(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    job = Job("billing-run", timedelta(hours=1), lambda: None)
    results: list[bool] = []
    lock = threading.Lock()

    def node(n: int) -> None:
        won = claim(session_factory, clock, job, owner=f"node-{n}")
        with lock:
            results.append(won)

    threads = [threading.Thread(target=node, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1, results


def test_a_job_runs_again_only_when_due(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    runs: list[int] = []
    job = Job("reviews", timedelta(hours=6), lambda: runs.append(1))
    assert run_due(session_factory, clock, [job]) == ["reviews"]
    assert run_due(session_factory, clock, [job]) == []
    clock.advance(timedelta(hours=6))
    assert run_due(session_factory, clock, [job]) == ["reviews"]
    assert len(runs) == 2


def test_a_dead_nodes_lease_expires(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    job = Job("dunning", timedelta(hours=1), lambda: None, lease_seconds=60)
    assert claim(session_factory, clock, job, owner="crashed")
    assert not claim(session_factory, clock, job, owner="other")  # still leased
    clock.advance(61)
    assert claim(session_factory, clock, job, owner="other")


def test_a_failing_job_is_recorded_and_does_not_stop_the_others(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    def boom() -> None:
        raise RuntimeError("database went away")

    ran: list[str] = []
    jobs = [
        Job("a", timedelta(hours=1), boom),
        Job("b", timedelta(hours=1), lambda: ran.append("b")),
    ]
    assert run_due(session_factory, clock, jobs) == ["a", "b"]
    assert ran == ["b"]
    with session_factory() as s:
        lease = s.get(JobLease, "a")
        assert lease is not None and "database went away" in (lease.last_error or "")
        assert lease.lease_owner is None
    finish(session_factory, clock, Job("missing", timedelta(hours=1), lambda: None), None)


def test_the_default_jobs_include_billing_dunning_budgets_and_reviews(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from imhost.config import load_settings
    from imhost.db.engine import make_engine
    from imhost.runtime import build_runtime
    from imhost.worker.jobs import default_jobs

    runtime = build_runtime(
        load_settings(data_dir=tmp_path, secret_key="j" * 40),
        clock=FrozenClock(),
        engine=make_engine(f"sqlite:///{tmp_path / 'x.db'}"),
    )
    names = {job.name for job in default_jobs(runtime)}
    assert {"access-reviews", "billing-run", "dunning", "budget-check"} <= names
    assert "login-throttle-purge" in names


def test_the_throttle_purge_job_forgets_old_failures_and_keeps_live_locks(
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    from imhost.accounts.throttle import LoginThrottleService
    from imhost.config import load_settings
    from imhost.runtime import build_runtime
    from imhost.worker.jobs import default_jobs

    settings = load_settings(data_dir=tmp_path, secret_key="p" * 40)
    with session_factory() as s:
        throttle = LoginThrottleService(s, clock, settings.security)
        throttle.fail("account:old")
        s.commit()
    clock.advance(timedelta(hours=13))
    with session_factory() as s:
        throttle = LoginThrottleService(s, clock, settings.security)
        for _ in range(5):
            throttle.fail("account:locked")
        s.commit()
    runtime = build_runtime(settings, clock=clock, engine=session_factory.kw["bind"])
    job = next(j for j in default_jobs(runtime) if j.name == "login-throttle-purge")
    job.run()
    with session_factory() as s:
        throttle = LoginThrottleService(s, clock, settings.security)
        assert throttle.state("account:old").failures == 0
        assert throttle.state("account:locked").failures == 5


def test_claims_and_finishes_never_fail_while_others_write(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    """Issue 9: under load the worker logged "database is locked" every few seconds. A claim
    reads its lease, then writes it; begun as a plain read on SQLite it failed whenever
    another connection committed in between. Other nodes commit all the time here."""
    jobs = [Job(f"job-{n}", timedelta(0), lambda: None) for n in range(4)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def other_writer(i: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                with session_factory() as session:
                    session.add(JobLease(name=f"other-{i}-{n}", next_run_at=clock.now()))
                    session.commit()
            except BaseException as exc:
                errors.append(exc)
                return

    writers = [threading.Thread(target=other_writer, args=(i,)) for i in range(2)]
    for t in writers:
        t.start()
    try:
        for _ in range(60):
            try:
                run_due(session_factory, clock, jobs)
            except BaseException as exc:
                errors.append(exc)
                break
    finally:
        stop.set()
        for t in writers:
            t.join()
    assert not errors, errors[0]
