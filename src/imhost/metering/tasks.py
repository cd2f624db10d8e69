"""Scheduled metering jobs: budget checks.

A budget is compared with billing's forecast of the organization's next invoice (what the
invoice will say if usage continues at the same pace, tax included) for the alerts, and with
the same invoice counting only the usage so far for the hard cap. Metering cannot import
billing (billing stands to its right), so the worker passes billing's answer in as a callable
(``forecast_for``; ``imhost.billing.budgets.budget_forecast`` is it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from imhost import events
from imhost.catalog.pricing import PriceSpec, tidy_money
from imhost.db.engine import transaction
from imhost.kit.clock import Clock
from imhost.metering.models import Budget, BudgetAlert

log = logging.getLogger(__name__)

CHECK_EVERY = timedelta(minutes=15)
"""How often the worker checks every budget (the portal says so)."""

CAP_MARKER = 0
"""``BudgetAlert.threshold`` of the hard-cap notice (alert thresholds are 1 % or more)."""


@dataclass(frozen=True, slots=True)
class BudgetPricing:
    """What an organization pays in its current period: billing's answer to ``pricing_for``."""

    period_start: datetime
    period_end: datetime
    price_specs: Sequence[PriceSpec]
    base_fee: Decimal
    currency: str


PricingLookup = Callable[[Session, str], BudgetPricing | None]


@dataclass(frozen=True, slots=True)
class BudgetForecast:
    """Billing's answer to ``forecast_for``: the next invoice of the organization's current
    period, forecast and as it stands."""

    period_start: datetime
    period_end: datetime
    invoice_at: datetime
    """When the invoice is made (the period's end)."""
    forecast: Decimal
    """The invoice's total if usage continues at the same pace (tax included)."""
    so_far: Decimal
    """The invoice's total counting only the usage so far (what the hard cap measures)."""
    currency: str


ForecastLookup = Callable[[Session, Clock, str], BudgetForecast | None]


@dataclass(frozen=True, slots=True)
class BudgetCrossing:
    organization_id: str
    budget_id: str
    threshold: int
    """Percent; ``CAP_MARKER`` (0) for the hard cap."""
    amount: Decimal
    budget_amount: Decimal
    currency: str
    period_start: datetime


def calendar_month(now: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month around ``now`` (the default period without a subscription)."""
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    end = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def check_budgets(
    session: Session,
    clock: Clock,
    forecast_for: ForecastLookup,
    *,
    organization_ids: Sequence[str] | None = None,
) -> list[BudgetCrossing]:
    """Compare each budget with its organization's forecast; alert each crossing once.

    A threshold the forecast of the next invoice reaches in a period is recorded
    (``BudgetAlert``, unique per budget, period and threshold) and published as
    :class:`~imhost.events.BudgetThresholdCrossed` (notify e-mails it); running again never
    repeats it. With ``hard_cap``, the invoice counting only the usage so far reaching 100 %
    publishes :class:`~imhost.events.BudgetCapReached` (once per period) so that hosting stops
    billable overage; when it is under the cap again (a new period began, the budget was
    raised or its hard cap turned off), :class:`~imhost.events.BudgetCapLifted` lets the
    service carry billable usage again. Without a subscription (``forecast_for`` returns
    None) the period is the UTC calendar month and the forecast is zero.
    """
    query = select(Budget).order_by(Budget.organization_id)
    if organization_ids is not None:
        query = query.where(Budget.organization_id.in_(list(organization_ids)))
    crossings: list[BudgetCrossing] = []
    now = clock.now()
    for budget in session.scalars(query).all():
        fc = forecast_for(session, clock, budget.organization_id)
        if fc is None:
            start, end = calendar_month(now)
            fc = BudgetForecast(start, end, end, Decimal(0), Decimal(0), budget.currency)
        if fc.currency != budget.currency:
            log.warning(
                "budget %s is in %s but the organization is billed in %s; not checked",
                budget.id,
                budget.currency,
                fc.currency,
            )
            continue
        amount, so_far = fc.forecast, fc.so_far
        budget_amount = tidy_money(budget.amount, budget.currency)
        already = set(
            session.scalars(
                select(BudgetAlert.threshold).where(
                    BudgetAlert.budget_id == budget.id,
                    BudgetAlert.period_start == fc.period_start,
                )
            )
        )
        reached = [t for t in sorted(budget.thresholds) if amount * 100 >= t * budget.amount]
        capped = budget.hard_cap and so_far >= budget.amount
        if capped:
            reached.append(CAP_MARKER)
        elif budget.capped_since is not None:
            # The cap held before and no longer does: a new period, or a raised budget.
            budget.capped_since = None
            events.publish(
                session,
                events.BudgetCapLifted(
                    at=now,
                    organization_id=budget.organization_id,
                    reason=(
                        f"the next invoice so far ({so_far} {budget.currency}) is under the "
                        f"budget's hard cap of {budget_amount} {budget.currency}"
                        if budget.hard_cap
                        else "the budget no longer has a hard cap"
                    ),
                ),
            )
        if capped and budget.capped_since is None and CAP_MARKER in already:
            # Capped again in a period whose notice went out already (the cap was lifted by
            # a raised budget, then reached again): block again without a second notice.
            budget.capped_since = now
            events.publish(session, _cap_event(budget, now, so_far, budget_amount))
        for threshold in reached:
            if threshold in already:
                continue
            measured = so_far if threshold == CAP_MARKER else amount
            if not _record(session, budget, fc.period_start, threshold, measured, now):
                continue  # another worker recorded it first
            crossing = BudgetCrossing(
                organization_id=budget.organization_id,
                budget_id=budget.id,
                threshold=threshold,
                amount=measured,
                budget_amount=budget_amount,
                currency=budget.currency,
                period_start=fc.period_start,
            )
            crossings.append(crossing)
            if threshold == CAP_MARKER:
                budget.capped_since = now
                events.publish(session, _cap_event(budget, now, so_far, budget_amount))
            else:
                events.publish(
                    session,
                    events.BudgetThresholdCrossed(
                        at=now,
                        organization_id=budget.organization_id,
                        budget_id=budget.id,
                        threshold=threshold,
                        amount=amount,
                        budget_amount=budget_amount,
                        currency=budget.currency,
                        period_start=fc.period_start,
                        period_end=fc.period_end,
                        invoice_at=fc.invoice_at,
                    ),
                )
    return crossings


def _cap_event(
    budget: Budget, now: datetime, amount: Decimal, budget_amount: Decimal
) -> events.BudgetCapReached:
    return events.BudgetCapReached(
        at=now,
        organization_id=budget.organization_id,
        metric="*",
        reason=(
            f"the monthly budget of {budget_amount} {budget.currency} is reached (the next "
            f"invoice is {amount} {budget.currency} with the usage so far); billable usage "
            "beyond the plan's included quantities is stopped"
        ),
    )


def _record(
    session: Session,
    budget: Budget,
    period_start: datetime,
    threshold: int,
    amount: Decimal,
    now: datetime,
) -> bool:
    """Insert the alert row in a savepoint; False when it exists already (a race lost)."""
    try:
        with session.begin_nested():
            session.add(
                BudgetAlert(
                    budget_id=budget.id,
                    organization_id=budget.organization_id,
                    period_start=period_start,
                    threshold=threshold,
                    amount=amount,
                    budget_amount=budget.amount,
                    created_at=now,
                )
            )
            session.flush()
    except IntegrityError:
        return False
    return True


def scheduled_budget_check(
    session_factory: sessionmaker[Session], clock: Clock, forecast_for: ForecastLookup
) -> int:
    """The worker's job: check every budget in one transaction; returns the crossings.

    The caller binds ``forecast_for`` (``imhost.billing.budgets.budget_forecast``).
    """
    with transaction(session_factory) as session:
        return len(check_budgets(session, clock, forecast_for))
