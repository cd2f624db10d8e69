"""What metering needs from billing: an organization's period and prices, and the forecast of
its next invoice that budgets are compared with."""

from __future__ import annotations

from sqlalchemy.orm import Session

from imhost.billing import plans as billing_plans
from imhost.billing import subscriptions as billing_subscriptions
from imhost.billing.forecast import forecast_invoices
from imhost.kit.clock import Clock
from imhost.metering.tasks import BudgetForecast, BudgetPricing


def pricing_for(session: Session, organization_id: str) -> BudgetPricing | None:
    """The organization's current period and prices, from its subscription (None: none).

    The usage API uses it for the period and the prices of usage to date.
    """
    sub = billing_subscriptions.current_subscription(session, organization_id)
    if sub is None:
        return None
    terms = billing_plans.load_plan_terms(session, sub.plan_version_id)
    return BudgetPricing(
        period_start=sub.current_period_start,
        period_end=sub.current_period_end,
        price_specs=terms.specs,
        base_fee=terms.base_fee,
        currency=terms.currency,
    )


def budget_forecast(session: Session, clock: Clock, organization_id: str) -> BudgetForecast | None:
    """The ``forecast_for`` of :func:`imhost.metering.tasks.check_budgets`: the forecast of
    the organization's next invoice (``billing.forecast.forecast_invoice``), and the same
    invoice with the usage so far. None without a subscription."""
    both = forecast_invoices(session, clock, organization_id)
    if both is None:
        return None
    fc, so_far = both
    return BudgetForecast(
        period_start=fc.period_start,
        period_end=fc.period_end,
        invoice_at=fc.invoice_at,
        forecast=fc.total,
        so_far=so_far.total,
        currency=fc.currency,
    )
