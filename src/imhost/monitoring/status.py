"""What status pages show: current state, 90 daily uptime bars, incidents and maintenance.

Plain data for the web layer (HTML page, JSON, Atom feed, SVG badge); nothing here renders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost.hosting.models import HostedService
from imhost.kit.errors import NotFound

from . import rules
from . import service as monitoring
from .models import (
    CheckState,
    Incident,
    IncidentSubject,
    MaintenanceWindow,
    ProbeCheck,
    ProbeStateChange,
)

COMPONENTS: tuple[str, ...] = ("xmpp-c2s", "websocket", "web", "api", "email")
DAYS = 90


@dataclass(frozen=True)
class DayBar:
    day: datetime
    percent: Decimal | None  # None: no data that day
    minutes_down: int

    @property
    def level(self) -> str:
        if self.percent is None:
            return "none"
        if self.percent >= Decimal("99.9"):
            return "good"
        if self.percent >= Decimal("99"):
            return "degraded"
        return "bad"


@dataclass(frozen=True)
class SubjectStatus:
    subject: str
    name: str
    state: CheckState
    since: datetime | None
    bars: list[DayBar]
    uptime_24h: Decimal | None
    uptime_7d: Decimal | None
    uptime_30d: Decimal | None
    uptime_90d: Decimal | None


@dataclass(frozen=True)
class UpdateView:
    at: datetime
    status: str
    body: str


@dataclass(frozen=True)
class IncidentView:
    reference: str
    title: str
    status: str
    opened_at: datetime
    resolved_at: datetime | None
    subjects: list[str]
    updates: list[UpdateView]


@dataclass(frozen=True)
class MaintenanceView:
    title: str
    description: str
    starts_at: datetime
    ends_at: datetime
    subjects: list[str]


@dataclass
class StatusPage:
    title: str
    generated_at: datetime
    subjects: list[SubjectStatus]
    incidents: list[IncidentView] = field(default_factory=list)
    maintenance: list[MaintenanceView] = field(default_factory=list)

    @property
    def overall(self) -> CheckState:
        states = {s.state for s in self.subjects}
        if CheckState.DOWN in states:
            return CheckState.DOWN
        if states and states <= {CheckState.UP}:
            return CheckState.UP
        return CheckState.UNKNOWN


def _first_seen(session: Session, subject: str) -> datetime | None:
    return session.scalar(
        select(ProbeStateChange.at)
        .where(ProbeStateChange.subject == subject)
        .order_by(ProbeStateChange.at)
        .limit(1)
    )


def subject_status(session: Session, subject: str, name: str, now: datetime) -> SubjectStatus:
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=DAYS - 1)
    first = _first_seen(session, subject)
    down = monitoring.down_intervals(session, subject, start, now)
    maintenance = monitoring.maintenance_intervals(session, subject, start, now)
    bars = []
    for n in range(DAYS):
        day = start + timedelta(days=n)
        end = min(day + timedelta(days=1), now)
        if first is None or end <= first:
            bars.append(DayBar(day, None, 0))
            continue
        begin = max(day, first)
        u = rules.uptime(begin, end, down, maintenance)
        bars.append(DayBar(day, u.percent, u.minutes_down))

    def over(days: int) -> Decimal | None:
        if first is None:
            return None
        begin = max(now - timedelta(days=days), first)
        return rules.uptime(begin, now, down, maintenance).percent if begin < now else None

    state = monitoring.subject_state(session, subject)
    since = None
    if state is not CheckState.UNKNOWN:
        since = session.scalar(
            select(ProbeCheck.state_since)
            .where(ProbeCheck.subject == subject)
            .order_by(ProbeCheck.state_since.desc())
            .limit(1)
        )
    return SubjectStatus(subject, name, state, since, bars, over(1), over(7), over(30), over(DAYS))


def _incidents(session: Session, subjects: list[str], now: datetime) -> list[IncidentView]:
    """Open incidents, and those resolved in the last 90 days, newest first."""
    rows = session.scalars(
        select(Incident)
        .join(IncidentSubject, IncidentSubject.incident_id == Incident.id)
        .where(
            IncidentSubject.subject.in_(subjects),
            (Incident.resolved_at.is_(None)) | (Incident.resolved_at >= now - timedelta(days=DAYS)),
        )
        .order_by(Incident.created_at.desc())
        .distinct()
        .limit(50)
    ).all()
    out = []
    for incident in rows:
        names = [_name(session, s) for s in monitoring.incident_subjects(session, incident)]
        updates = [
            UpdateView(u.at, u.status, u.body)
            for u in reversed(monitoring.incident_updates(session, incident))
        ]
        out.append(
            IncidentView(
                incident.reference,
                incident.title,
                incident.status,
                incident.created_at,
                incident.resolved_at,
                names,
                updates,
            )
        )
    return out


def _maintenance(session: Session, subjects: list[str], now: datetime) -> list[MaintenanceView]:
    """Maintenance going on now or starting in the next 30 days."""
    out = []
    horizon = now + timedelta(days=30)
    for window in session.scalars(
        select(MaintenanceWindow).where(MaintenanceWindow.cancelled.is_(False))
    ):
        mine = [s for s in window.subjects if s in subjects]
        if not mine:
            continue
        for begin, end in rules.occurrences(monitoring.window_rule(window), now, horizon)[:3]:
            out.append(
                MaintenanceView(
                    window.title,
                    window.description,
                    begin,
                    end,
                    [_name(session, s) for s in mine],
                )
            )
    return sorted(out, key=lambda m: m.starts_at)


def _name(session: Session, subject: str) -> str:
    return monitoring.subject_label(session, subject)


def provider_page(session: Session, now: datetime, provider_name: str) -> StatusPage:
    subjects = [f"component:{c}" for c in COMPONENTS]
    return StatusPage(
        title=f"{provider_name} status",
        generated_at=now,
        subjects=[subject_status(session, s, _name(session, s), now) for s in subjects],
        incidents=_incidents(session, subjects, now),
        maintenance=_maintenance(session, subjects, now),
    )


def domain_page(session: Session, now: datetime, domain: str) -> StatusPage:
    service = session.scalar(
        select(HostedService).where(HostedService.domain == domain.strip().lower())
    )
    if service is None:
        raise NotFound(f"There is no status page for {domain}.")
    subject = f"service:{service.id}"
    return StatusPage(
        title=f"{service.domain} status",
        generated_at=now,
        subjects=[subject_status(session, subject, service.domain, now)],
        incidents=_incidents(session, [subject], now),
        maintenance=_maintenance(session, [subject], now),
    )
