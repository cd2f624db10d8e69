"""Alerts to the provider's staff, grouped and rate-limited like Alertmanager does.

Incidents (not probe results) make alerts: an incident that opens or re-opens adds a *firing*
notice, one that resolves a *resolved* notice. The ``monitoring-alerts`` job sends what is
pending as one alert once the oldest notice has waited ``group_wait`` (so a failure that hits
many services at once is one message) and at most every ``group_interval``; an incident still
open after ``repeat_interval`` is reminded once per interval. Each resolved incident gets one
resolved notice. The alert is published as :class:`imhost.events.MonitoringAlert`; notify
e-mails it to staff (admin and support) and posts it to the provider's webhooks.

The engine has no port to send an XMPP message from the control plane, so staff are not told
over XMPP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from imhost import events
from imhost.accounts.models import StaffRole, User
from imhost.db.engine import transaction
from imhost.kit.clock import Clock

from . import service as monitoring
from .models import AlertNotice, Incident, IncidentStatus

ALERT_ROLES = (StaffRole.ADMIN.value, StaffRole.SUPPORT.value)


@dataclass(frozen=True)
class AlertPolicy:
    group_wait: timedelta = timedelta(seconds=30)
    group_interval: timedelta = timedelta(minutes=5)
    repeat_interval: timedelta = timedelta(hours=4)


def staff_recipients(session: Session) -> tuple[str, ...]:
    return tuple(
        session.scalars(
            select(User.email).where(User.staff_role.in_(ALERT_ROLES)).order_by(User.email)
        )
    )


def _add_repeats(session: Session, clock: Clock, policy: AlertPolicy) -> None:
    """A reminder notice for each incident still open whose last alert is older than the
    repeat interval."""
    now = clock.now()
    waiting = set(
        session.scalars(select(AlertNotice.incident_id).where(AlertNotice.sent_at.is_(None)))
    )
    for incident in monitoring.open_incidents(session):
        if incident.id in waiting:
            continue
        last = session.scalar(
            select(func.max(AlertNotice.sent_at)).where(AlertNotice.incident_id == incident.id)
        )
        if last is not None and now - last >= policy.repeat_interval:
            session.add(AlertNotice(incident_id=incident.id, kind="repeat", at=now))
    session.flush()


def flush_alerts(
    session: Session, clock: Clock, policy: AlertPolicy, *, status_url: str = ""
) -> events.MonitoringAlert | None:
    """Send the pending notices as one alert if their group is due; returns what was sent."""
    now = clock.now()
    _add_repeats(session, clock, policy)
    pending = list(
        session.scalars(
            select(AlertNotice).where(AlertNotice.sent_at.is_(None)).order_by(AlertNotice.at)
        )
    )
    if not pending or now - pending[0].at < policy.group_wait:
        return None
    last_sent = session.scalar(select(func.max(AlertNotice.sent_at)))
    if last_sent is not None and now - last_sent < policy.group_interval:
        return None
    latest: dict[str, str] = {}
    for notice in pending:
        earlier = latest.get(notice.incident_id)
        # one line per incident: resolved wins; opened and resolved in one group says both
        if earlier == "firing" and notice.kind == "resolved":
            latest[notice.incident_id] = "firing+resolved"
        elif earlier != "firing+resolved":
            latest[notice.incident_id] = notice.kind
        notice.sent_at = now
    incidents = {
        i.id: i for i in session.scalars(select(Incident).where(Incident.id.in_(list(latest))))
    }
    groups: dict[str, list[Incident]] = {"firing": [], "repeat": [], "resolved": []}
    lines = []
    for incident_id, kind in latest.items():
        incident = incidents[incident_id]
        affects = ", ".join(
            monitoring.subject_label(session, s)
            for s in monitoring.incident_subjects(session, incident)
        )
        if kind == "firing+resolved":
            groups["resolved"].append(incident)
            words = "opened and already resolved"
        elif kind == "resolved":
            groups["resolved"].append(incident)
            words = "resolved"
        elif kind == "repeat":
            groups["repeat"].append(incident)
            words = f"still open ({_status(incident)})"
        else:
            groups["firing"].append(incident)
            words = f"opened ({_status(incident)})"
        first = monitoring.incident_updates(session, incident)[:1]
        detail = f"\n    {first[0].body}" if first and kind in ("firing", "repeat") else ""
        lines.append(
            f"- {incident.reference} {incident.title}: {words}; since "
            f"{incident.created_at:%Y-%m-%d %H:%M} UTC; affects {affects}{detail}"
        )
    firing = groups["firing"] + groups["repeat"]
    if firing:
        subject = f"[monitoring] {len(firing)} incident{'s' if len(firing) > 1 else ''} open: "
        subject += ", ".join(i.title for i in firing[:3]) + ("…" if len(firing) > 3 else "")
    else:
        subject = "[monitoring] Resolved: " + ", ".join(i.title for i in groups["resolved"][:3])
    text = (
        "\n".join(
            [
                "What changed since the last monitoring alert:",
                "",
                *lines,
                "",
                f"Status page: {status_url}" if status_url else "",
            ]
        ).rstrip()
        + "\n"
    )
    alert = events.MonitoringAlert(
        at=now,
        subject=subject,
        text=text,
        firing=tuple(i.reference for i in groups["firing"]),
        repeat=tuple(i.reference for i in groups["repeat"]),
        resolved=tuple(i.reference for i in groups["resolved"]),
        recipients=staff_recipients(session),
        status_url=status_url,
    )
    events.publish(session, alert)
    return alert


def _status(incident: Incident) -> str:
    return IncidentStatus(incident.status).value


def scheduled_alerts(
    factory: sessionmaker[Session], clock: Clock, status_url: str = ""
) -> events.MonitoringAlert | None:
    with transaction(factory, write=True) as session:
        return flush_alerts(session, clock, AlertPolicy(), status_url=status_url)
