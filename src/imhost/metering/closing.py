"""Closed (invoiced) periods and what happens to usage that comes late for one.

Billing closes a period when it invoices it; usage for a closed period is refused, or moved
into the next open period as a correction when the provider's ``late_usage_policy`` is
``next_invoice`` (docs/billing.md, "Late usage"). Services never commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imhost.accounts.audit import Actor
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput
from imhost.kit.ids import new_id
from imhost.metering import audit, repository
from imhost.metering.models import ClosedPeriod, LateUsagePolicy, MeteringSettings

Periods = list[tuple[datetime, datetime]]
"""An organization's closed periods, (start, end) in order of start."""


def aware(value: datetime, name: str) -> datetime:
    """``value`` if it carries a time zone; else an ``InvalidInput`` naming the field."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{name} must carry a time zone (UTC)", field=name)
    return value


# --- the late-usage policy ------------------------------------------------------------------


def get_late_usage_policy(session: Session) -> LateUsagePolicy:
    row = session.get(MeteringSettings, 1)
    return LateUsagePolicy(row.late_usage_policy) if row else LateUsagePolicy.REFUSE


def set_late_usage_policy(
    session: Session, clock: Clock, policy: LateUsagePolicy | str, *, actor: Actor | None = None
) -> LateUsagePolicy:
    """Set what happens to usage for an invoiced period (audited as
    ``usage.late_policy_changed``, with the previous policy, by ``actor``)."""
    try:
        value = LateUsagePolicy(policy)
    except ValueError:
        raise InvalidInput(
            f"late_usage_policy is 'refuse' or 'next_invoice', not {policy!r}",
            field="late_usage_policy",
        ) from None
    previous = get_late_usage_policy(session)
    row = session.get(MeteringSettings, 1)
    if row is None:
        row = MeteringSettings(id=1)
        session.add(row)
    row.late_usage_policy = value.value
    row.updated_at = clock.now()
    session.flush()
    audit.record(
        session,
        clock,
        actor,
        "late_policy_changed",
        previous=previous.value,
        policy=value.value,
    )
    return value


# --- closing --------------------------------------------------------------------------------


def close_period(
    session: Session,
    organization_id: str,
    period_start: datetime,
    period_end: datetime,
    clock: Clock,
) -> ClosedPeriod:
    """Mark a period invoiced: usage for it is refused (or moved, by the late policy).

    Idempotent: closing the same period again returns the existing row.
    """
    aware(period_start, "period_start")
    aware(period_end, "period_end")
    if period_end <= period_start:
        raise InvalidInput("period_end must be after period_start", field="period_end")
    existing = repository.find_closed_period(session, organization_id, period_start)
    if existing is not None:
        if existing.period_end != period_end:
            raise Conflict(
                f"the period starting {period_start.isoformat()} is closed already, "
                f"ending {existing.period_end.isoformat()}",
                field="period_end",
            )
        return existing
    row = ClosedPeriod(
        organization_id=organization_id,
        period_start=period_start,
        period_end=period_end,
        closed_at=clock.now(),
    )
    session.add(row)
    session.flush()
    return row


def close_periods_many(
    session: Session, periods: Sequence[tuple[str, datetime, datetime]], clock: Clock
) -> None:
    """:func:`close_period` for many (organization, start, end) at once (the billing run).

    One bulk INSERT in a savepoint; if any of them is closed already (a rerun, another run),
    each is closed one by one with :func:`close_period`'s checks (idempotent, or a
    ``Conflict`` for a different end).
    """
    if not periods:
        return
    for _, start, end in periods:
        aware(start, "period_start")
        aware(end, "period_end")
        if end <= start:
            raise InvalidInput("period_end must be after period_start", field="period_end")
    now = clock.now()
    rows = [
        {
            "id": new_id(),
            "organization_id": org_id,
            "period_start": start,
            "period_end": end,
            "closed_at": now,
        }
        for org_id, start, end in periods
    ]
    try:
        repository.insert_closed_periods(session, rows)
    except IntegrityError:
        for org_id, start, end in periods:
            close_period(session, org_id, start, end, clock)


def closed_periods(session: Session, organization_ids: Iterable[str]) -> dict[str, Periods]:
    """Each organization's closed periods."""
    return repository.closed_periods(session, organization_ids)


def lock_for_closing(session: Session, organization_ids: Iterable[str]) -> None:
    """Billing calls this before reading the quantities of periods it will close.

    Ingestion reads an organization's closed periods and then inserts; billing reads the
    quantities and then closes the period. On PostgreSQL those two could interleave so that
    a record is committed into a period after its quantities were read and the period
    closed: billed never. Billing locks the organizations' rows ``FOR NO KEY UPDATE`` (in id
    order) and ingestion ``FOR SHARE`` (:func:`repository.organizations_for_ingest`), which
    conflict: either the record commits first and is counted, or the closing does and the
    record follows the late-usage policy. SQLite needs nothing: a writer there holds the only
    write lock, and a stale reader cannot write.
    """
    repository.lock_organizations_for_closing(session, organization_ids)


def is_closed(periods: Periods, when: datetime) -> bool:
    return any(start <= when < end for start, end in periods)


def next_open(periods: Periods, when: datetime) -> datetime:
    """The first instant at or after ``when`` that lies in no closed period."""
    moved = True
    while moved:
        moved = False
        for start, end in periods:
            if start <= when < end:
                when = end
                moved = True
    return when
