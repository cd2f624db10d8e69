"""Monitoring rules on the database: record probe results, open and resolve incidents,
maintenance windows, uptime. Never commits: the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from imhost.accounts import audit
from imhost.accounts.audit import Actor
from imhost.hosting.models import HostedService
from imhost.kit.clock import Clock, ensure_utc
from imhost.kit.errors import Conflict, InvalidInput, NotFound
from imhost.kit.ids import public_code

from . import rules
from .models import (
    AlertNotice,
    CheckState,
    Incident,
    IncidentStatus,
    IncidentSubject,
    IncidentUpdate,
    MaintenanceWindow,
    ProbeCheck,
    ProbeLatencyMinute,
    ProbeStateChange,
    Recurrence,
)
from .probes import ProbeResult


@dataclass(frozen=True)
class IncidentPolicy:
    """How incidents are damped.

    ``reopen_within``: a subject that fails again this soon after its incident was resolved
    re-opens that incident instead of opening a new one. ``resolve_after``: an incident whose
    subjects have all recovered is marked *monitoring* and resolved only after they stayed up
    this long (a flapping service keeps one incident open)."""

    reopen_within: timedelta = timedelta(minutes=30)
    resolve_after: timedelta = timedelta(minutes=5)


def subject_label(session: Session, subject: str) -> str:
    """What people call a subject: a component's name, or a hosted service's domain."""
    kind, _, name = subject.partition(":")
    if kind == "component":
        return COMPONENT_NAMES.get(name, name)
    if kind == "service":
        domain = session.scalar(select(HostedService.domain).where(HostedService.id == name))
        return domain or "a removed service"
    return name


COMPONENT_NAMES = {
    "xmpp-c2s": "XMPP client connections",
    "websocket": "XMPP over WebSocket",
    "web": "Web portal",
    "api": "API",
    "email": "E-mail",
}


# -- probe results ------------------------------------------------------------------------


def record_result(
    session: Session,
    clock: Clock,
    subject: str,
    check_name: str,
    result: ProbeResult,
    *,
    policy: rules.Policy | None = None,
    incidents: IncidentPolicy | None = None,
    label: str | None = None,
) -> ProbeCheck:
    """Record one probe result: counters, the latency minute, a state change when the
    damping policy says so, and the incident that follows from it."""
    policy = policy or rules.Policy()
    now = clock.now()
    check = session.scalar(
        select(ProbeCheck).where(ProbeCheck.subject == subject, ProbeCheck.check_name == check_name)
    )
    if check is None:
        check = ProbeCheck(
            subject=subject,
            check_name=check_name,
            state=CheckState.UNKNOWN.value,
            state_since=now,
            consecutive_failures=0,
            consecutive_successes=0,
        )
        session.add(check)
    before = rules.Counters(
        CheckState(check.state), check.consecutive_failures, check.consecutive_successes
    )
    after, changed = rules.advance(before, result.ok, policy)
    check.consecutive_failures = after.failures
    check.consecutive_successes = after.successes
    check.last_run_at = now
    check.last_seconds = round(result.seconds, 6)
    check.last_detail = "" if result.ok else result.summary[:500]
    check.last_warning = "; ".join(result.warnings)[:500]
    _add_latency(session, subject, check_name, now, result)
    if changed:
        check.state = after.state.value
        check.state_since = now
        session.add(
            ProbeStateChange(
                subject=subject,
                check_name=check_name,
                at=now,
                state=after.state.value,
                detail=check.last_detail,
            )
        )
        session.flush()
        if after.state is CheckState.DOWN:
            subject_down(session, clock, subject, result.summary, policy=incidents, label=label)
        elif before.state is CheckState.DOWN:
            subject_up(session, clock, subject)
    return check


def _add_latency(
    session: Session, subject: str, check_name: str, now: datetime, result: ProbeResult
) -> None:
    minute = now.replace(second=0, microsecond=0)
    row = session.get(ProbeLatencyMinute, (subject, check_name, minute))
    millis = round(result.seconds * 1000)
    if row is None:
        row = ProbeLatencyMinute(
            subject=subject,
            check_name=check_name,
            minute=minute,
            samples=0,
            failures=0,
            total_ms=0,
            max_ms=0,
        )
        session.add(row)
    row.samples += 1
    row.failures += 0 if result.ok else 1
    row.total_ms += millis
    row.max_ms = max(row.max_ms, millis)


def subject_state(session: Session, subject: str) -> CheckState:
    """Down while any check is down; up when every known check is up; else unknown."""
    states = {
        CheckState(s)
        for s in session.scalars(select(ProbeCheck.state).where(ProbeCheck.subject == subject))
    }
    if CheckState.DOWN in states:
        return CheckState.DOWN
    if states and states <= {CheckState.UP}:
        return CheckState.UP
    return CheckState.UNKNOWN


def purge_latency(session: Session, clock: Clock, keep: timedelta = timedelta(days=35)) -> int:
    """Retention: drop latency minutes older than ``keep`` (state changes are kept: uptime
    over 90 days and past billing periods is computed from them)."""
    cutoff = clock.now() - keep
    result = session.execute(delete(ProbeLatencyMinute).where(ProbeLatencyMinute.minute < cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]


# -- incidents ----------------------------------------------------------------------------


def open_incidents(session: Session) -> list[Incident]:
    return list(
        session.scalars(
            select(Incident)
            .where(Incident.status != IncidentStatus.RESOLVED.value)
            .order_by(Incident.created_at)
        )
    )


def incident_subjects(session: Session, incident: Incident) -> list[str]:
    return list(
        session.scalars(
            select(IncidentSubject.subject)
            .where(IncidentSubject.incident_id == incident.id)
            .order_by(IncidentSubject.subject)
        )
    )


def incident_updates(session: Session, incident: Incident) -> list[IncidentUpdate]:
    return list(
        session.scalars(
            select(IncidentUpdate)
            .where(IncidentUpdate.incident_id == incident.id)
            .order_by(IncidentUpdate.at, IncidentUpdate.id)
        )
    )


def _incident_of(session: Session, subject: str, *, open_only: bool) -> Incident | None:
    query = (
        select(Incident)
        .join(IncidentSubject, IncidentSubject.incident_id == Incident.id)
        .where(IncidentSubject.subject == subject)
        .order_by(Incident.created_at.desc())
    )
    if open_only:
        query = query.where(Incident.status != IncidentStatus.RESOLVED.value)
    return session.scalar(query.limit(1))


def _update(
    session: Session,
    clock: Clock,
    incident: Incident,
    status: IncidentStatus,
    body: str,
    author: str,
) -> IncidentUpdate:
    incident.status = status.value
    update = IncidentUpdate(
        incident_id=incident.id, at=clock.now(), status=status.value, body=body, author=author
    )
    session.add(update)
    return update


def subject_down(
    session: Session,
    clock: Clock,
    subject: str,
    detail: str,
    *,
    policy: IncidentPolicy | None = None,
    label: str | None = None,
) -> Incident | None:
    """A subject went down: join its open incident, re-open its recent one, or open a new
    one. Nothing is opened while the subject is in a maintenance window."""
    policy = policy or IncidentPolicy()
    now = clock.now()
    if in_maintenance(session, subject, now):
        return None
    name = label or subject_label(session, subject)
    current = _incident_of(session, subject, open_only=True)
    if current is not None:
        if current.status == IncidentStatus.MONITORING.value:
            current.recovered_at = None
            _update(
                session,
                clock,
                current,
                IncidentStatus.INVESTIGATING,
                f"{name} failed again: {detail}",
                "monitoring",
            )
        return current
    recent = _incident_of(session, subject, open_only=False)
    if (
        recent is not None
        and recent.automatic
        and recent.resolved_at is not None
        and now - recent.resolved_at <= policy.reopen_within
    ):
        recent.resolved_at = None
        recent.recovered_at = None
        recent.reopened += 1
        _update(
            session,
            clock,
            recent,
            IncidentStatus.INVESTIGATING,
            f"{name} failed again soon after recovering: {detail}",
            "monitoring",
        )
        _notice(session, clock, recent, "firing")
        audit.record(
            session,
            clock,
            "incident.reopened",
            target_type="incident",
            target_id=recent.id,
            target_label=recent.reference,
        )
        return recent
    incident = Incident(
        reference=_new_reference(session),
        title=f"{name} is not working",
        status=IncidentStatus.INVESTIGATING.value,
        impact="major",
        automatic=True,
        created_at=now,
    )
    session.add(incident)
    session.flush()
    session.add(IncidentSubject(incident_id=incident.id, subject=subject))
    _update(
        session,
        clock,
        incident,
        IncidentStatus.INVESTIGATING,
        f"Our monitoring found a problem with {name}: {detail}",
        "monitoring",
    )
    _notice(session, clock, incident, "firing")
    audit.record(
        session,
        clock,
        "incident.opened",
        target_type="incident",
        target_id=incident.id,
        target_label=incident.reference,
        subject=subject,
    )
    session.flush()
    return incident


def _notice(session: Session, clock: Clock, incident: Incident, kind: str) -> None:
    session.add(AlertNotice(incident_id=incident.id, kind=kind, at=clock.now()))


def _new_reference(session: Session) -> str:
    while True:
        code = public_code("INC", 6)
        if session.scalar(select(Incident.id).where(Incident.reference == code)) is None:
            return code


def subject_up(session: Session, clock: Clock, subject: str) -> Incident | None:
    """A subject recovered: when every subject of its incident is up, the incident goes to
    *monitoring*; :func:`settle_incidents` resolves it once it stayed up long enough."""
    incident = _incident_of(session, subject, open_only=True)
    if incident is None or not incident.automatic:
        return incident
    if any(
        subject_state(session, s) is CheckState.DOWN for s in incident_subjects(session, incident)
    ):
        return incident
    if incident.status != IncidentStatus.MONITORING.value:
        incident.recovered_at = clock.now()
        _update(
            session,
            clock,
            incident,
            IncidentStatus.MONITORING,
            "The service is working again; we are watching it.",
            "monitoring",
        )
    return incident


def settle_incidents(
    session: Session, clock: Clock, policy: IncidentPolicy | None = None
) -> list[Incident]:
    """Resolve the automatic incidents that recovered at least ``resolve_after`` ago and
    that staff do not hold open. Run by the worker; returns what it resolved."""
    policy = policy or IncidentPolicy()
    now = clock.now()
    resolved = []
    for incident in open_incidents(session):
        if (
            incident.automatic
            and not incident.held
            and incident.status == IncidentStatus.MONITORING.value
            and incident.recovered_at is not None
            and now - incident.recovered_at >= policy.resolve_after
        ):
            incident.resolved_at = now
            _update(
                session,
                clock,
                incident,
                IncidentStatus.RESOLVED,
                "Resolved: the service has been working normally since "
                f"{incident.recovered_at:%Y-%m-%d %H:%M} UTC.",
                "monitoring",
            )
            _notice(session, clock, incident, "resolved")
            audit.record(
                session,
                clock,
                "incident.resolved",
                target_type="incident",
                target_id=incident.id,
                target_label=incident.reference,
            )
            resolved.append(incident)
    return resolved


def get_incident(session: Session, reference: str) -> Incident:
    incident = session.scalar(select(Incident).where(Incident.reference == reference.upper()))
    if incident is None:
        raise NotFound(f"There is no incident {reference}.")
    return incident


def post_update(
    session: Session,
    clock: Clock,
    incident: Incident,
    *,
    status: str,
    body: str,
    actor: Actor,
) -> IncidentUpdate:
    """Staff post an update (customers see it). Resolving by hand ends the incident."""
    try:
        new = IncidentStatus(status)
    except ValueError:
        raise InvalidInput(
            "Choose a status: investigating, identified, monitoring or resolved."
        ) from None
    text = body.strip()
    if not text:
        raise InvalidInput("Write what customers should know.")
    if len(text) > 5000:
        raise InvalidInput("Keep the update under 5000 characters.")
    if incident.status == IncidentStatus.RESOLVED.value:
        raise Conflict("This incident is resolved; it takes no more updates.")
    update = _update(session, clock, incident, new, text, actor.label)
    if new is IncidentStatus.RESOLVED:
        incident.resolved_at = clock.now()
        incident.held = False
        _notice(session, clock, incident, "resolved")
    audit.record(
        session,
        clock,
        "incident.updated",
        actor=actor,
        target_type="incident",
        target_id=incident.id,
        target_label=incident.reference,
        status=new.value,
    )
    return update


def hold_incident(
    session: Session, clock: Clock, incident: Incident, *, held: bool, actor: Actor
) -> None:
    """Staff keep an incident open after the probes recover (or let it resolve again)."""
    if incident.status == IncidentStatus.RESOLVED.value:
        raise Conflict("This incident is already resolved.")
    incident.held = held
    audit.record(
        session,
        clock,
        "incident.held" if held else "incident.released",
        actor=actor,
        target_type="incident",
        target_id=incident.id,
        target_label=incident.reference,
    )


# -- maintenance --------------------------------------------------------------------------


def create_maintenance(
    session: Session,
    clock: Clock,
    *,
    title: str,
    subjects: Sequence[str],
    timezone: str,
    local_start: datetime,
    duration_minutes: int,
    recurrence: str = Recurrence.NONE.value,
    until: datetime | None = None,
    description: str = "",
    actor: Actor,
) -> MaintenanceWindow:
    problems = []
    if not title.strip():
        problems.append("Give the maintenance a title.")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"{timezone!r} is not a time zone (try Europe/Berlin or UTC).")
    if not 1 <= duration_minutes <= 7 * 24 * 60:
        problems.append("The duration must be between 1 minute and 7 days.")
    if recurrence not in {r.value for r in Recurrence}:
        problems.append("Choose how it repeats: none, daily or weekly.")
    if not subjects:
        problems.append("Choose at least one affected service or component.")
    if problems:
        raise InvalidInput(" ".join(problems))
    window = MaintenanceWindow(
        title=title.strip(),
        description=description.strip(),
        subjects=list(subjects),
        timezone=timezone,
        local_start=local_start.replace(tzinfo=None).isoformat(timespec="seconds"),
        duration_minutes=duration_minutes,
        recurrence=recurrence,
        until=ensure_utc(until) if until else None,
        created_at=clock.now(),
    )
    session.add(window)
    session.flush()
    audit.record(
        session,
        clock,
        "maintenance.scheduled",
        actor=actor,
        target_type="maintenance",
        target_id=window.id,
        target_label=window.title,
    )
    return window


def window_rule(window: MaintenanceWindow) -> rules.WindowRule:
    return rules.WindowRule(
        timezone=window.timezone,
        local_start=datetime.fromisoformat(window.local_start),
        duration=timedelta(minutes=window.duration_minutes),
        recurrence=Recurrence(window.recurrence),
        until=window.until,
    )


def maintenance_intervals(
    session: Session, subject: str, start: datetime, end: datetime
) -> list[rules.Interval]:
    found: list[rules.Interval] = []
    for window in session.scalars(
        select(MaintenanceWindow).where(MaintenanceWindow.cancelled.is_(False))
    ):
        if subject in window.subjects:
            found.extend(rules.occurrences(window_rule(window), start, end))
    return rules.merge(found)


def in_maintenance(session: Session, subject: str, at: datetime) -> bool:
    return bool(maintenance_intervals(session, subject, at, at + timedelta(seconds=1)))


# -- uptime -------------------------------------------------------------------------------


def down_intervals(
    session: Session, subject: str, start: datetime, end: datetime
) -> list[rules.Interval]:
    """The union of the down intervals of every check of ``subject`` in ``[start, end)``."""
    changes = session.execute(
        select(ProbeStateChange.check_name, ProbeStateChange.at, ProbeStateChange.state)
        .where(ProbeStateChange.subject == subject, ProbeStateChange.at < end)
        .order_by(ProbeStateChange.at, ProbeStateChange.id)
    ).all()
    by_check: dict[str, list[tuple[datetime, CheckState]]] = {}
    before: dict[str, CheckState] = {}
    for check_name, at, state in changes:
        if at <= start:
            before[check_name] = CheckState(state)
        else:
            by_check.setdefault(check_name, []).append((at, CheckState(state)))
    down: list[rules.Interval] = []
    for check_name in set(by_check) | set(before):
        down.extend(
            rules.down_intervals(
                by_check.get(check_name, []),
                start,
                end,
                before.get(check_name, CheckState.UP),
            )
        )
    return rules.merge(down)


def subject_uptime(session: Session, subject: str, start: datetime, end: datetime) -> rules.Uptime:
    return rules.uptime(
        start,
        end,
        down_intervals(session, subject, start, end),
        maintenance_intervals(session, subject, start, end),
    )


def incidents_between(
    session: Session, subject: str, start: datetime, end: datetime
) -> list[Incident]:
    """Incidents of ``subject`` that overlap ``[start, end)``."""
    return list(
        session.scalars(
            select(Incident)
            .join(IncidentSubject, IncidentSubject.incident_id == Incident.id)
            .where(
                IncidentSubject.subject == subject,
                Incident.created_at < end,
                (Incident.resolved_at.is_(None)) | (Incident.resolved_at >= start),
            )
            .order_by(Incident.created_at)
        )
    )
