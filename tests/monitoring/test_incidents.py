"""Time travel through probe results: one incident per failure, recovery resolves it,
flapping does not storm, maintenance is excluded, uptime is exact."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imhost.accounts.audit import Actor
from imhost.accounts.models import AuditEvent
from imhost.kit.clock import FrozenClock, utc
from imhost.kit.errors import Conflict, InvalidInput
from imhost.monitoring import rules
from imhost.monitoring import service as monitoring
from imhost.monitoring.models import (
    CheckState,
    Incident,
    IncidentStatus,
    ProbeLatencyMinute,
    ProbeStateChange,
)
from imhost.monitoring.probes import ProbeResult, Step

SUBJECT = "service:acme"
POLICY = rules.Policy(down_after=3, up_after=2)
STAFF = Actor(label="ops@provider.test")


def ok() -> ProbeResult:
    return ProbeResult("xmpp-starttls", [Step("connect", True, 0.004), Step("ping", True, 0.011)])


def bad() -> ProbeResult:
    return ProbeResult(
        "xmpp-starttls",
        [Step("connect", False, 0.001, "the connection was refused (nothing listens on the port)")],
    )


def run(db: Session, clock: FrozenClock, results: list[ProbeResult], every: float = 60) -> None:
    for result in results:
        monitoring.record_result(db, clock, SUBJECT, "xmpp-starttls", result, policy=POLICY)
        db.flush()
        clock.advance(every)


def count(db: Session, model: type) -> int:
    return int(db.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def start(clock: FrozenClock) -> datetime:
    clock.set(utc(2026, 3, 1, 0, 0))
    return clock.now()


def test_a_failure_opens_one_incident_and_recovery_resolves_it(
    db: Session, clock: FrozenClock, start: datetime
) -> None:
    run(db, clock, [ok(), ok()])
    assert monitoring.subject_state(db, SUBJECT) is CheckState.UP
    run(db, clock, [bad(), bad()])
    assert count(db, Incident) == 0  # two failures are not yet down
    run(db, clock, [bad()] * 10)
    incidents = db.scalars(select(Incident)).all()
    assert len(incidents) == 1
    incident = incidents[0]
    assert incident.status == IncidentStatus.INVESTIGATING.value
    assert incident.reference.startswith("INC-")
    assert monitoring.incident_subjects(db, incident) == [SUBJECT]
    assert "refused" in monitoring.incident_updates(db, incident)[0].body
    run(db, clock, [ok(), ok()])
    assert incident.status == IncidentStatus.MONITORING.value
    assert monitoring.settle_incidents(db, clock) == []  # not up long enough yet
    clock.advance(timedelta(minutes=5))
    assert monitoring.settle_incidents(db, clock) == [incident]
    assert incident.status == IncidentStatus.RESOLVED.value
    assert [u.status for u in monitoring.incident_updates(db, incident)] == [
        "investigating",
        "monitoring",
        "resolved",
    ]
    changes = db.scalars(select(ProbeStateChange).order_by(ProbeStateChange.at)).all()
    assert [(c.state, c.at - start) for c in changes] == [
        ("up", timedelta(minutes=1)),
        ("down", timedelta(minutes=4)),  # the third failure in a row (minutes 2, 3, 4)
        ("up", timedelta(minutes=15)),  # the second success (minutes 14, 15)
    ]
    actions = set(db.scalars(select(AuditEvent.action)))
    assert {"incident.opened", "incident.resolved"} <= actions


def test_flapping_does_not_storm(db: Session, clock: FrozenClock, start: datetime) -> None:
    for _ in range(10):
        run(db, clock, [bad()] * 3 + [ok()] * 2)
        monitoring.settle_incidents(db, clock)
    assert count(db, Incident) == 1
    # resolved after a quiet spell, then the failure comes back soon: the same incident
    clock.advance(timedelta(minutes=6))
    [incident] = monitoring.settle_incidents(db, clock)
    assert incident.status == "resolved"
    clock.advance(timedelta(minutes=10))
    run(db, clock, [bad()] * 3)
    assert count(db, Incident) == 1
    assert incident.status == "investigating" and incident.reopened == 1
    # much later, a new failure is a new incident
    run(db, clock, [ok()] * 2)
    clock.advance(timedelta(minutes=6))
    monitoring.settle_incidents(db, clock)
    clock.advance(timedelta(hours=2))
    run(db, clock, [bad()] * 3)
    assert count(db, Incident) == 2


def test_staff_hold_an_incident_open_then_resolve_it(
    db: Session, clock: FrozenClock, start: datetime
) -> None:
    run(db, clock, [ok()] * 2 + [bad()] * 3)
    [incident] = monitoring.open_incidents(db)
    monitoring.post_update(
        db, clock, incident, status="identified", body="A disk filled up.", actor=STAFF
    )
    monitoring.hold_incident(db, clock, incident, held=True, actor=STAFF)
    run(db, clock, [ok()] * 2)
    clock.advance(timedelta(hours=1))
    assert monitoring.settle_incidents(db, clock) == []
    assert incident.status == "monitoring"
    with pytest.raises(InvalidInput):
        monitoring.post_update(db, clock, incident, status="fixed", body="x", actor=STAFF)
    with pytest.raises(InvalidInput):
        monitoring.post_update(db, clock, incident, status="resolved", body="  ", actor=STAFF)
    monitoring.post_update(
        db, clock, incident, status="resolved", body="Disk replaced.", actor=STAFF
    )
    assert incident.status == "resolved" and incident.resolved_at == clock.now()
    with pytest.raises(Conflict):
        monitoring.post_update(db, clock, incident, status="monitoring", body="x", actor=STAFF)
    updates = monitoring.incident_updates(db, incident)
    assert [(u.status, u.author) for u in updates][-1] == ("resolved", "ops@provider.test")
    actions = list(db.scalars(select(AuditEvent.action).order_by(AuditEvent.at)))
    assert actions.count("incident.updated") == 2 and "incident.held" in actions


def test_maintenance_opens_no_incident_and_is_excluded_from_uptime(
    db: Session, clock: FrozenClock, start: datetime
) -> None:
    monitoring.create_maintenance(
        db,
        clock,
        title="Database upgrade",
        subjects=[SUBJECT],
        timezone="Europe/Berlin",
        local_start=datetime(2026, 3, 1, 1, 10),  # 00:10 UTC
        duration_minutes=30,
        actor=STAFF,
    )
    run(db, clock, [ok()] * 2)  # 00:00, 00:01
    clock.set(utc(2026, 3, 1, 0, 10))
    run(db, clock, [bad()] * 20)  # 00:10 .. 00:29, down from 00:12
    assert count(db, Incident) == 0
    run(db, clock, [ok()] * 2)  # up at 00:31
    u = monitoring.subject_uptime(db, SUBJECT, start, utc(2026, 3, 2))
    assert u.maintenance == timedelta(minutes=30)
    assert u.minutes_down == 0  # down 00:12 - 00:31, but 00:12 - 00:31 minus 00:10 - 00:40
    assert u.ratio == 1
    # outside the window the same failure counts and opens an incident
    clock.set(utc(2026, 3, 1, 12, 0))
    run(db, clock, [bad()] * 3 + [ok()] * 2)  # down 12:02, up 12:04
    assert count(db, Incident) == 1
    u = monitoring.subject_uptime(db, SUBJECT, start, utc(2026, 3, 2))
    assert u.minutes_down == 2
    assert (
        u.percent
        == rules.uptime(
            start,
            utc(2026, 3, 2),
            [(utc(2026, 3, 1, 12, 2), utc(2026, 3, 1, 12, 4))],
            [(utc(2026, 3, 1, 0, 10), utc(2026, 3, 1, 0, 40))],
        ).percent
    )
    with pytest.raises(InvalidInput) as problem:
        monitoring.create_maintenance(
            db,
            clock,
            title=" ",
            subjects=[],
            timezone="Mars/Olympus",
            local_start=datetime(2026, 3, 1),
            duration_minutes=0,
            actor=STAFF,
        )
    assert "Mars/Olympus" in str(problem.value) and "title" in str(problem.value)


def test_latency_is_kept_per_minute_and_purged(
    db: Session, clock: FrozenClock, start: datetime
) -> None:
    run(db, clock, [ok(), ok(), ok(), bad()], every=15)  # four results in one minute
    rows = db.scalars(select(ProbeLatencyMinute)).all()
    assert len(rows) == 1
    row = rows[0]
    assert (row.samples, row.failures, row.total_ms, row.max_ms) == (
        4,
        1,
        46,
        15,
    )  # 3 x 15 ms + 1 ms
    clock.advance(timedelta(days=36))
    assert monitoring.purge_latency(db, clock) == 1
