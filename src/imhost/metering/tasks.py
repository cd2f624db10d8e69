"""Scheduled metering jobs: budget checks.

Metering cannot import billing (billing stands to its right), so the customer's current
prices come through a callable the worker passes in (``pricing_for``): billing answers it
from the subscription's plan version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from imhost import events
from imhost.catalog.pricing import PriceSpec, rate, tidy_money
from imhost.db.engine import transaction
from imhost.kit.clock import Clock
from imhost.kit.money import round_minor
from imhost.metering import aggregate
from imhost.metering import forecast as forecasting
from imhost.metering.models import Budget, BudgetAlert

log = logging.getLogger(__name__)

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


def spend(
    session: Session,
    clock: Clock,
    organization_id: str,
    pricing: BudgetPricing,
    *,
    basis: Literal["actual", "forecast"] = "actual",
) -> Decimal:
    """The period's spend: base fee + usage to date rated with the current prices
    (``actual``), or the forecast's projected total (``forecast``)."""
    if basis == "forecast":
        return forecasting.forecast(
            session,
            clock,
            organization_id,
            pricing.period_start,
            pricing.period_end,
            pricing.price_specs,
            pricing.base_fee,
            pricing.currency,
        ).total
    now = clock.now()
    if now >= pricing.period_end:  # the period is over but not invoiced yet
        quantities = aggregate.billable_quantities(
            session, organization_id, pricing.period_start, pricing.period_end
        )
    else:
        quantities = aggregate.usage_to_date(session, organization_id, pricing.period_start, now)
    total = round_minor(pricing.base_fee, pricing.currency)
    for spec in pricing.price_specs:
        total += rate(spec, quantities.get(spec.metric, Decimal(0))).amount
    return total


def check_budgets(
    session: Session,
    clock: Clock,
    pricing_for: PricingLookup,
    *,
    basis: Literal["actual", "forecast"] = "actual",
    organization_ids: Sequence[str] | None = None,
) -> list[BudgetCrossing]:
    """Compare each budget with its organization's spend; alert each crossing once.

    A threshold crossed in a period is recorded (``BudgetAlert``, unique per budget, period
    and threshold) and published as :class:`~imhost.events.BudgetThresholdCrossed`; running
    again never repeats it. With ``hard_cap``, reaching 100 % also publishes
    :class:`~imhost.events.BudgetCapReached` (once per period) so that hosting stops billable
    overage; when the spend is under the cap again (a new period began, the budget was raised
    or its hard cap turned off), :class:`~imhost.events.BudgetCapLifted` lets the service
    carry billable usage again. Without a subscription (``pricing_for`` returns None) the
    period is the UTC calendar month and the spend is zero.
    """
    query = select(Budget).order_by(Budget.organization_id)
    if organization_ids is not None:
        query = query.where(Budget.organization_id.in_(list(organization_ids)))
    crossings: list[BudgetCrossing] = []
    now = clock.now()
    for budget in session.scalars(query).all():
        pricing = pricing_for(session, budget.organization_id)
        if pricing is None:
            start, end = calendar_month(now)
            pricing = BudgetPricing(start, end, (), Decimal(0), budget.currency)
        if pricing.currency != budget.currency:
            log.warning(
                "budget %s is in %s but the organization is billed in %s; not checked",
                budget.id,
                budget.currency,
                pricing.currency,
            )
            continue
        amount = spend(session, clock, budget.organization_id, pricing, basis=basis)
        budget_amount = tidy_money(budget.amount, budget.currency)
        already = set(
            session.scalars(
                select(BudgetAlert.threshold).where(
                    BudgetAlert.budget_id == budget.id,
                    BudgetAlert.period_start == pricing.period_start,
                )
            )
        )
        reached = [t for t in sorted(budget.thresholds) if amount * 100 >= t * budget.amount]
        capped = budget.hard_cap and amount >= budget.amount
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
                        f"the spend this period ({amount} {budget.currency}) is under the "
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
            events.publish(session, _cap_event(budget, now, amount, budget_amount))
        for threshold in reached:
            if threshold in already:
                continue
            if not _record(session, budget, pricing.period_start, threshold, amount, now):
                continue  # another worker recorded it first
            crossing = BudgetCrossing(
                organization_id=budget.organization_id,
                budget_id=budget.id,
                threshold=threshold,
                amount=amount,
                budget_amount=budget_amount,
                currency=budget.currency,
                period_start=pricing.period_start,
            )
            crossings.append(crossing)
            if threshold == CAP_MARKER:
                budget.capped_since = now
                events.publish(session, _cap_event(budget, now, amount, budget_amount))
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
                        period_start=pricing.period_start,
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
            f"the monthly budget of {budget_amount} {budget.currency} is reached ({amount} "
            f"{budget.currency} this period); billable usage beyond the plan's included "
            "quantities is stopped"
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
    session_factory: sessionmaker[Session],
    clock: Clock,
    pricing_for: PricingLookup,
    *,
    basis: Literal["actual", "forecast"] = "actual",
) -> int:
    """The worker's job: check every budget in one transaction; returns the crossings.

    The caller binds ``pricing_for`` (billing's answer: the subscription's period and plan
    version prices; ``imhost.billing.budgets.pricing_for`` is it).
    """
    with transaction(session_factory) as session:
        return len(check_budgets(session, clock, pricing_for, basis=basis))
