"""The forecast of a subscription's next invoice: what the billing run will put on it if usage
continues at the same pace until the period's end.

It is the billing run's own calculation (``invoicing.draft_lines`` and ``compose_invoice``)
with metering's projection (``metering.forecast.project``) in place of the usage recorded:
the base fee and add-ons of the period the invoice opens, the setup fee when it is due, the
one-off charges already added, the usage of the period it closes rated with the prices in
force, the coupon, the tax at the customer's rate, and the account credit that will pay part
of it. During a free trial the usage is free (the trial's invoice has no usage lines), so the
forecast is the first paid invoice, issued when the trial ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from imhost.accounts.models import Organization
from imhost.billing.composition import DraftLine, compose_invoice
from imhost.billing.credits import coupon_for_invoice, credit_balance
from imhost.billing.invoicing import RunCache, billing_point, draft_lines
from imhost.billing.models import SubscriptionStatus
from imhost.billing.settings import billing_terms
from imhost.billing.subscriptions import current_subscription
from imhost.kit.clock import Clock
from imhost.kit.errors import NotFound
from imhost.metering import forecast as metering_forecast
from imhost.metering.forecast import Projection

FORECAST_METHOD = (
    "The next invoice as the billing run will make it, with the usage of the period it bills "
    "projected to the period's end at the pace so far (sums such as messages and traffic "
    "grow in proportion to the time left; peaks and active users stay at their level so far; "
    "storage keeps its current level). It includes the base fee and add-ons of the next "
    "period, the setup fee when it is due, the one-off charges already added, discounts and "
    "tax at your rate. During a free trial the usage is free."
)


@dataclass(frozen=True)
class InvoiceForecast:
    """The forecast of the next invoice of an organization's subscription."""

    organization_id: str
    currency: str
    invoice_at: datetime
    """When the billing run makes the invoice (the end of the current period, or of the
    trial)."""
    period_start: datetime
    period_end: datetime
    """The current period (the trial, during a trial)."""
    trial_end: datetime | None
    """Set during a free trial: the invoice at ``invoice_at`` is the first paid one."""
    usage_billed: bool
    """False when the period's usage is free (a trial) or not billed on this invoice."""
    projection: Projection
    """The period's usage so far and projected to its end."""
    lines: list[DraftLine]
    subtotal: Decimal
    tax_total: Decimal
    total: Decimal
    credit_applied: Decimal
    """The account credit that will pay part of the invoice when it is made."""
    prices_include_tax: bool
    method: str = FORECAST_METHOD

    @property
    def amount_due(self) -> Decimal:
        return self.total - self.credit_applied

    @property
    def in_trial(self) -> bool:
        return self.trial_end is not None


def forecast_invoice(
    session: Session, clock: Clock, organization_id: str, *, projected: bool = True
) -> InvoiceForecast | None:
    """The forecast of the organization's next subscription invoice (None without a live
    subscription, or when nothing is left to bill).

    ``projected=False``: the same invoice counting only the usage so far (what it would say
    if nothing more were used until the period's end)."""
    both = forecast_invoices(session, clock, organization_id)
    if both is None:
        return None
    return both[0] if projected else both[1]


def forecast_invoices(
    session: Session, clock: Clock, organization_id: str
) -> tuple[InvoiceForecast, InvoiceForecast] | None:
    """The next invoice forecast at the pace so far, and the same invoice with the usage so
    far only, from one reading of the usage (None without a live subscription)."""
    sub = current_subscription(session, organization_id)
    if sub is None or sub.next_billing_at is None:
        return None
    org = session.get(Organization, organization_id)
    if org is None:
        raise NotFound(f"no organization {organization_id!r}")
    cache = RunCache(terms=billing_terms(session))
    plan = cache.plan(session, sub.plan_version_id)
    point = billing_point(sub)
    start, end = sub.current_period_start, sub.current_period_end
    if end <= start:
        end = point.at
    projection = (
        metering_forecast.project(session, clock, organization_id, start, end)
        if end > start
        else Projection(clock.now(), Decimal(1), {}, {})
    )
    parts: dict[tuple[datetime, datetime], Projection] = {(start, end): projection}
    coupon = coupon_for_invoice(session, sub)
    tax = cache.terms.tax_for(org.country, org.tax_id)
    balance = credit_balance(session, organization_id, sub.currency)
    trialing = sub.status == SubscriptionStatus.TRIALING.value

    def one(projected: bool) -> InvoiceForecast:
        def measure(part_start: datetime, part_end: datetime) -> dict[str, Decimal]:
            part = parts.get((part_start, part_end))
            if part is None:
                part = parts[(part_start, part_end)] = metering_forecast.project(
                    session, clock, organization_id, part_start, part_end
                )
            return part.projected if projected else part.usage_to_date

        lines, _consumed = draft_lines(session, sub, point, plan, cache, measure=measure)
        composed = compose_invoice(
            sub.currency,
            lines,
            coupon=coupon[1] if coupon and lines else None,
            tax=tax,
            prices_include_tax=cache.terms.prices_include_tax,
        )
        credit = balance + composed.carried_to_credit
        return InvoiceForecast(
            organization_id=organization_id,
            currency=sub.currency,
            invoice_at=point.at,
            period_start=start,
            period_end=end,
            trial_end=sub.trial_end if trialing else None,
            usage_billed=point.usage_period is not None,
            projection=projection,
            lines=composed.lines,
            subtotal=composed.subtotal,
            tax_total=composed.tax_total,
            total=composed.total,
            credit_applied=max(min(credit, composed.total), Decimal(0)),
            prices_include_tax=cache.terms.prices_include_tax,
        )

    return one(True), one(False)
