"""The worker runs monitoring's jobs: settling incidents and latency retention."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.config import Settings
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock
from imhost.monitoring import rules
from imhost.monitoring import service as monitoring
from imhost.monitoring.models import Incident, ProbeLatencyMinute
from imhost.monitoring.probes import ProbeResult, Step
from imhost.runtime import build_runtime
from imhost.worker.jobs import default_jobs
from imhost.worker.scheduler import run_due


def test_the_worker_settles_incidents_and_purges_old_latency(
    engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    clock = FrozenClock()
    runtime = build_runtime(Settings(data_dir=tmp_path), engine=engine, clock=clock)
    policy = rules.Policy(down_after=1, up_after=1)
    with transaction(runtime.session_factory, write=True) as session:
        for ok in (False, True):
            step = Step("connect", ok, 0.002, "" if ok else "the connection was refused")
            monitoring.record_result(
                session, clock, "component:web", "http", ProbeResult("http", [step]), policy=policy
            )
            clock.advance(30)
    jobs = [j for j in default_jobs(runtime) if j.name.startswith("monitoring-")]
    assert {j.name for j in jobs} == {
        "monitoring-settle",
        "monitoring-retention",
        "monitoring-alerts",
    }
    clock.advance(timedelta(minutes=10))
    assert set(run_due(runtime.session_factory, clock, jobs)) == {j.name for j in jobs}
    with runtime.session_factory() as session:
        assert session.scalars(select(Incident.status)).all() == ["resolved"]
        assert len(session.scalars(select(ProbeLatencyMinute)).all()) == 1
    clock.advance(timedelta(days=40))
    run_due(runtime.session_factory, clock, jobs)
    with runtime.session_factory() as session:
        assert session.scalars(select(ProbeLatencyMinute)).all() == []
