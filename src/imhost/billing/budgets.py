"""What metering's budget checks need from billing: an organization's period and prices."""

from __future__ import annotations

from sqlalchemy.orm import Session

from imhost.billing import plans as billing_plans
from imhost.billing import subscriptions as billing_subscriptions
from imhost.metering.tasks import BudgetPricing


def pricing_for(session: Session, organization_id: str) -> BudgetPricing | None:
    """The organization's current period and prices, from its subscription (None: none).

    This is the ``pricing_for`` that :func:`imhost.metering.tasks.check_budgets` expects; the
    usage API and the worker's budget job both use it.
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
