"""The figures of the staff console's dashboard, as plain data: monthly recurring revenue,
new and churned customers per month, open and overdue invoices.

Definitions (the console's dashboard page says them in words):

- MRR: the base fee of every *active* subscription (not trialing, paused or ended), brought to
  one month by its plan's interval (a quarterly fee divided by 3, a yearly one by 12, a weekly
  one times 52/12), summed per currency. Usage, add-ons, setup fees and tax are not in it.
- A new customer in a month: an organization whose first subscription started in that month.
- A churned customer in a month: an organization all of whose subscriptions have ended, the
  last of them in that month.
- Open invoices: finalized and not fully paid; overdue ones are past their due date.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imhost.billing.models import Invoice, InvoiceStatus, Subscription, SubscriptionStatus
from imhost.billing.plans import load_plan_terms
from imhost.catalog.intervals import IntervalUnit, parse_interval
from imhost.kit.clock import Clock
from imhost.kit.money import round_minor

WEEKS_PER_YEAR = 52


def monthly_amount(fee: Decimal, interval: str) -> Decimal:
    """``fee`` charged every ``interval``, as an amount per month (not rounded)."""
    parsed = parse_interval(interval)
    if parsed.unit == IntervalUnit.MONTH:
        return fee / parsed.count
    return fee * WEEKS_PER_YEAR / (12 * parsed.count)


def monthly_recurring_revenue(session: Session) -> dict[str, Decimal]:
    """MRR per currency (see the module's definitions), rounded to the currency's cents."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    rows = session.execute(
        select(Subscription.plan_version_id, Subscription.currency, func.count())
        .where(
            Subscription.status == SubscriptionStatus.ACTIVE.value,
            Subscription.ended_at.is_(None),
        )
        .group_by(Subscription.plan_version_id, Subscription.currency)
    ).all()
    for plan_version_id, currency, count in rows:
        terms = load_plan_terms(session, plan_version_id)
        totals[currency] += monthly_amount(terms.base_fee, terms.interval) * count
    return {cur: round_minor(amount, cur) for cur, amount in sorted(totals.items())}


@dataclass(frozen=True)
class MonthMovement:
    """New and churned customers in one calendar month (``month`` is its first day)."""

    month: datetime
    new: int
    churned: int

    @property
    def label(self) -> str:
        return f"{self.month:%b %Y}"


def _month_start(at: datetime) -> datetime:
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def _months_back(start: datetime, n: int) -> datetime:
    index = start.year * 12 + start.month - 1 - n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def customer_movement(session: Session, clock: Clock, months: int = 7) -> list[MonthMovement]:
    """New and churned customers in each of the last ``months`` calendar months, oldest
    first; the last one is the current month (up to now)."""
    months = min(max(months, 1), 36)
    this_month = _month_start(clock.now())
    first = _months_back(this_month, months - 1)
    new: dict[datetime, int] = defaultdict(int)
    churned: dict[datetime, int] = defaultdict(int)
    first_start = func.min(Subscription.started_at)
    for (started,) in session.execute(
        select(first_start).group_by(Subscription.organization_id).having(first_start >= first)
    ):
        new[_month_start(started)] += 1
    last_end = func.max(Subscription.ended_at)
    for (ended,) in session.execute(
        select(last_end)
        .group_by(Subscription.organization_id)
        .having(func.count() == func.count(Subscription.ended_at), last_end >= first)
    ):
        if ended is not None:
            churned[_month_start(ended)] += 1
    out = []
    for back in range(months - 1, -1, -1):
        month = _months_back(this_month, back)
        out.append(MonthMovement(month=month, new=new[month], churned=churned[month]))
    return out


@dataclass(frozen=True)
class InvoiceFigures:
    """How many invoices and how much is still owed on them, per currency."""

    count: int
    amounts: dict[str, Decimal]


def _due(inv: Invoice) -> Decimal:
    return inv.total - inv.amount_paid - inv.amount_credited


def _figures(invoices: list[Invoice]) -> InvoiceFigures:
    amounts: dict[str, Decimal] = defaultdict(Decimal)
    for inv in invoices:
        amounts[inv.currency] += _due(inv)
    return InvoiceFigures(count=len(invoices), amounts=dict(sorted(amounts.items())))


def open_invoices(session: Session, clock: Clock) -> tuple[InvoiceFigures, InvoiceFigures]:
    """(open, overdue): every open invoice, and those among them past their due date."""
    rows = list(session.scalars(select(Invoice).where(Invoice.status == InvoiceStatus.OPEN.value)))
    now = clock.now()
    overdue = [inv for inv in rows if inv.due_at is not None and inv.due_at < now]
    return _figures(rows), _figures(overdue)


def list_overdue_invoices(
    session: Session,
    clock: Clock,
    *,
    organization_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Invoice]:
    """Open invoices past their due date, the longest overdue first."""
    query = select(Invoice).where(
        Invoice.status == InvoiceStatus.OPEN.value, Invoice.due_at < clock.now()
    )
    if organization_id is not None:
        query = query.where(Invoice.organization_id == organization_id)
    query = query.order_by(Invoice.due_at, Invoice.id)
    return list(session.scalars(query.limit(min(max(limit, 1), 500)).offset(max(offset, 0))))
