"""Billing's queries that are more than a lookup: the plan changes behind prices in force,
and the database-specific ways the billing run locks and writes its blocks (SQLite has no
row locks, PostgreSQL plans cached statements badly for it), kept here so that the rules in
``invoicing``, ``subscriptions`` and ``credits`` read without them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost.billing.models import PlanChange

ChangeRow = tuple[datetime, str, str]  # (changed at, from version, to version)


def record_plan_change(
    session: Session, subscription_id: str, at: datetime, from_version: str, to_version: str
) -> None:
    session.add(
        PlanChange(
            subscription_id=subscription_id,
            changed_at=at,
            from_plan_version_id=from_version,
            to_plan_version_id=to_version,
            created_at=at,
        )
    )


def plan_changes(
    session: Session, periods: Iterable[tuple[str, datetime, datetime]]
) -> dict[str, list[ChangeRow]]:
    """The plan changes strictly inside each subscription's ``(id, start, end)`` period, in
    time order, read in one query."""
    wanted = {sid: (start, end) for sid, start, end in periods}
    if not wanted:
        return {}
    found: dict[str, list[ChangeRow]] = {}
    rows = session.execute(
        select(
            PlanChange.subscription_id,
            PlanChange.changed_at,
            PlanChange.from_plan_version_id,
            PlanChange.to_plan_version_id,
        )
        .where(PlanChange.subscription_id.in_(sorted(wanted)))
        .order_by(PlanChange.subscription_id, PlanChange.changed_at, PlanChange.id)
    )
    for sid, at, from_version, to_version in rows:
        start, end = wanted[sid]
        if start < at < end:
            found.setdefault(sid, []).append((at, from_version, to_version))
    return found
