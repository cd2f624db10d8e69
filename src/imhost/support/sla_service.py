"""SLA settings staff edit (the business calendar, the policy of each support tier) and the
alert pass the worker runs: a warning before a breach and an alert at the breach, each sent
once (e-mail to staff and a ``ticket.sla_warning`` / ``ticket.sla_breached`` webhook).

Nothing here commits: the caller owns the transaction. Changes are audited
(``sla.calendar_changed``, ``sla.policy_changed``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imhost.accounts import audit
from imhost.accounts.audit import Actor
from imhost.kit.clock import Clock
from imhost.kit.errors import InvalidInput
from imhost.support.sla import (
    DEFAULT_POLICIES,
    BusinessCalendar,
    SlaPolicy,
    Urgency,
    format_weekly,
    parse_weekly,
    urgency,
)
from imhost.support.sla_models import SlaAlert, SlaCalendarRow, SlaPolicyRow

CALENDAR_ID = "default"
MAX_HOLIDAYS = 400
MAX_TARGET_MINUTES = 90 * 24 * 60


def load_calendar(session: Session) -> BusinessCalendar:
    row = session.get(SlaCalendarRow, CALENDAR_ID)
    if row is None:
        return BusinessCalendar()
    return BusinessCalendar(
        row.timezone,
        parse_weekly({k: str(v) for k, v in row.weekly.items()}),
        frozenset(date.fromisoformat(d) for d in row.holidays),
    )


def parse_holidays(text: str) -> frozenset[date]:
    """Holidays typed one per line or separated by commas, as YYYY-MM-DD."""
    days: set[date] = set()
    for part in text.replace(",", "\n").split("\n"):
        part = part.strip()
        if not part:
            continue
        try:
            days.add(date.fromisoformat(part))
        except ValueError as exc:
            raise InvalidInput(
                f"{part[:20]!r} is not a date; write holidays as 2026-12-25.", field="holidays"
            ) from exc
    if len(days) > MAX_HOLIDAYS:
        raise InvalidInput(f"At most {MAX_HOLIDAYS} holidays.", field="holidays")
    return frozenset(days)


def save_calendar(
    session: Session,
    clock: Clock,
    *,
    timezone: str,
    weekly: dict[str, str],
    holidays: str,
    actor: Actor,
) -> BusinessCalendar:
    calendar = BusinessCalendar(timezone.strip(), parse_weekly(weekly), parse_holidays(holidays))
    row = session.get(SlaCalendarRow, CALENDAR_ID)
    if row is None:
        row = SlaCalendarRow(id=CALENDAR_ID)
        session.add(row)
    row.timezone = calendar.timezone
    row.weekly = dict(format_weekly(calendar.weekly))
    row.holidays = sorted(d.isoformat() for d in calendar.holidays)
    row.updated_at = clock.now()
    session.flush()
    audit.record(
        session,
        clock,
        "sla.calendar_changed",
        actor=actor,
        target_type="sla_calendar",
        target_id=CALENDAR_ID,
        timezone=calendar.timezone,
        holidays=len(calendar.holidays),
    )
    return calendar


def load_policies(session: Session) -> dict[str, SlaPolicy]:
    policies = dict(DEFAULT_POLICIES)
    for row in session.scalars(select(SlaPolicyRow)):
        policies[row.tier] = SlaPolicy(
            row.tier,
            timedelta(minutes=row.first_response_minutes),
            timedelta(minutes=row.resolution_minutes),
            timedelta(minutes=row.warn_before_minutes),
        )
    return policies


def save_policy(
    session: Session,
    clock: Clock,
    *,
    tier: str,
    first_response_minutes: int,
    resolution_minutes: int,
    warn_before_minutes: int,
    actor: Actor,
) -> SlaPolicy:
    tier = tier.strip().lower()
    if tier not in DEFAULT_POLICIES:
        raise InvalidInput("There is no such support tier.", field="tier")
    for value in (first_response_minutes, resolution_minutes, warn_before_minutes):
        if not 0 <= value <= MAX_TARGET_MINUTES:
            raise InvalidInput("SLA targets must be between 0 and 90 days.")
    policy = SlaPolicy(
        tier,
        timedelta(minutes=first_response_minutes),
        timedelta(minutes=resolution_minutes),
        timedelta(minutes=warn_before_minutes),
    )
    row = session.get(SlaPolicyRow, tier) or SlaPolicyRow(tier=tier)
    row.first_response_minutes = first_response_minutes
    row.resolution_minutes = resolution_minutes
    row.warn_before_minutes = warn_before_minutes
    row.updated_at = clock.now()
    session.add(row)
    session.flush()
    audit.record(
        session,
        clock,
        "sla.policy_changed",
        actor=actor,
        target_type="sla_policy",
        target_id=tier,
        first_response_minutes=first_response_minutes,
        resolution_minutes=resolution_minutes,
        warn_before_minutes=warn_before_minutes,
    )
    return policy


@dataclass(frozen=True)
class RunningTarget:
    """One running SLA target of an open ticket (what the tickets side hands the alert pass)."""

    ticket_id: str
    public_id: str
    subject: str
    organization_id: str | None
    target: str  # first_response | resolution
    due_at: datetime
    warn_before: timedelta
    paused: bool = False


SlaNotifier = Callable[[Session, "RunningTarget", str, str, str], None]
"""Sends one alert: ``(session, target, kind, subject, text)``; the worker's sends e-mail to
staff and queues the ``ticket.sla_<kind>`` webhook (imhost.worker.support_sla)."""


def send_alerts(
    session: Session,
    clock: Clock,
    targets: Iterable[RunningTarget],
    notify: SlaNotifier,
    *,
    console_url: str,
) -> list[SlaAlert]:
    """Warn and alert for every target that needs it and was not alerted at this due time.

    The alert row is inserted in a savepoint first: a second pass (or a second node) finds it
    or hits the unique constraint, and sends nothing.
    """
    now = clock.now()
    sent: list[SlaAlert] = []
    for target in targets:
        state = urgency(target.due_at, now, target.warn_before, paused=target.paused)
        if state is Urgency.OK:
            continue
        kind = state.value
        exists = session.scalar(
            select(SlaAlert.id).where(
                SlaAlert.ticket_id == target.ticket_id,
                SlaAlert.target == target.target,
                SlaAlert.kind == kind,
                SlaAlert.due_at == target.due_at,
            )
        )
        if exists is not None:
            continue
        alert = SlaAlert(
            ticket_id=target.ticket_id,
            target=target.target,
            kind=kind,
            due_at=target.due_at,
            sent_at=now,
        )
        try:
            with session.begin_nested():
                session.add(alert)
                session.flush()
        except IntegrityError:
            continue
        what = "first response" if target.target == "first_response" else "resolution"
        when = target.due_at.strftime("%Y-%m-%d %H:%M UTC")
        if state is Urgency.BREACHED:
            subject = f"SLA breached: {target.public_id} {what} was due {when}"
        else:
            subject = f"SLA warning: {target.public_id} {what} is due {when}"
        link = f"{console_url.rstrip('/')}/console/tickets/{target.public_id}"
        notify(session, target, kind, subject, f"{subject}\n\nTicket: {target.subject}\n{link}\n")
        sent.append(alert)
    return sent
