"""Invoices: drafting a subscription's invoice at a billing point, finalizing, voiding.

A billing point is a moment where a subscription is invoiced: the start of its first paid
period, or the end of a period. The invoice made there bills the usage of the period that
ended (in arrears, rated against the plan version's price components) and the base fee and
add-ons of the period that starts (in advance), plus the charges waiting for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.models import Organization
from imhost.billing.charges import charges_due
from imhost.billing.composition import ComposedInvoice, DraftLine, compose_invoice
from imhost.billing.credits import add_credit, coupon_for_invoice, coupon_used, credit_balance
from imhost.billing.models import (
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceStatus,
    LineKind,
    Payment,
    PendingCharge,
    Subscription,
    SubscriptionStatus,
)
from imhost.billing.periods import (
    fmt,
    fmt_date,
    period_before,
    period_end,
    seconds_between,
)
from imhost.billing.plans import AddOnTerms, PlanTerms, load_add_on, load_plan_terms
from imhost.billing.settings import BillingTerms, allocate_number, billing_terms
from imhost.billing.subscriptions import add_ons_of
from imhost.catalog.pricing import rate
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput, NotFound
from imhost.kit.ids import new_id
from imhost.kit.money import round_minor
from imhost.metering import service as metering

FaultHook = Callable[[str], None]


def _no_fault(_point: str) -> None:
    return None


METRIC_LABELS = {
    "messages": "Messages",
    "traffic_gb": "Traffic (GB)",
    "peak_connections": "Peak concurrent connections",
    "monthly_active_users": "Monthly active users",
    "storage_gb": "Storage (GB, time-weighted average)",
}


@dataclass
class RunCache:
    """What stays the same during a billing run: settings, tax rates, plan versions (which
    are immutable once created) and add-on prices."""

    terms: BillingTerms
    # Organizations with uninvoiced charges when the run began (None: not known, look).
    # Charges recorded later are dated after the run's billing points, so they wait anyway.
    orgs_with_charges: set[str] | None = None
    plans: dict[str, PlanTerms] = field(default_factory=dict)
    add_ons: dict[str, AddOnTerms] = field(default_factory=dict)

    def plan(self, session: Session, plan_version_id: str) -> PlanTerms:
        terms = self.plans.get(plan_version_id)
        if terms is None:
            terms = self.plans[plan_version_id] = load_plan_terms(session, plan_version_id)
        return terms

    def add_on(self, session: Session, add_on_id: str) -> AddOnTerms:
        terms = self.add_ons.get(add_on_id)
        if terms is None:
            terms = self.add_ons[add_on_id] = load_add_on(session, add_on_id)
        return terms


@dataclass(frozen=True)
class BillingPoint:
    """What is billed at a subscription's billing point."""

    at: datetime
    usage_period: tuple[datetime, datetime] | None
    advance_period: tuple[datetime, datetime] | None
    ends_subscription: bool


def billing_point(sub: Subscription) -> BillingPoint:
    at = sub.next_billing_at
    if at is None:
        raise Conflict("the subscription has ended; nothing is left to bill")
    s, e = sub.current_period_start, sub.current_period_end
    if at == s and at != e:
        # The first paid period opens: its base fee in advance, no usage yet.
        return BillingPoint(at, None, (s, e), False)
    trialing = sub.status == SubscriptionStatus.TRIALING.value
    usage = None if trialing or e <= s else (s, e)
    if sub.cancel_at_period_end:
        return BillingPoint(at, usage, None, True)
    return BillingPoint(at, usage, (e, period_end(e, sub.billing_anchor_day, sub.interval)), False)


def _base_fee_line(
    plan: PlanTerms, sub: Subscription, start: datetime, end: datetime
) -> DraftLine | None:
    cur = sub.currency
    if plan.base_fee == 0:
        return None
    full_start = period_before(end, sub.billing_anchor_day, sub.interval)
    window = f"{fmt_date(start)} to {fmt_date(end)}"
    label = f"Base fee {plan.plan_name} {plan.interval}"
    if full_start < start:
        used = seconds_between(start, end)
        total = seconds_between(full_start, end)
        amount = round_minor(plan.base_fee * Decimal(used) / Decimal(total), cur)
        calc = (
            f"{label} {window}, a shorter first period: {fmt(plan.base_fee, cur)} × "
            f"{used:,} s / {total:,} s = {fmt(amount, cur)}"
        )
    else:
        amount = round_minor(plan.base_fee, cur)
        calc = f"base fee {plan.plan_name} {plan.interval} {window} = {fmt(amount, cur)}"
    return DraftLine(
        kind=LineKind.BASE_FEE.value,
        description=f"{label}, {window}",
        amount=amount,
        calculation=calc,
        quantity=Decimal(1),
        period_start=start,
        period_end=end,
    )


def draft_lines(
    session: Session, sub: Subscription, point: BillingPoint, plan: PlanTerms, cache: RunCache
) -> tuple[list[DraftLine], list[str]]:
    """The charges of the invoice at ``point`` (before discount and tax), and the pending
    charge ids they consume."""
    cur = sub.currency
    lines: list[DraftLine] = []
    if point.usage_period is not None and plan.specs:
        us, ue = point.usage_period
        quantities = metering.billable_quantities(session, sub.organization_id, us, ue)
        for spec in plan.specs:
            quantity = quantities.get(spec.metric, Decimal(0))
            rated = rate(spec, quantity)
            if rated.quantity == 0 and rated.amount == 0:
                continue
            label = METRIC_LABELS.get(spec.metric, spec.metric)
            lines.append(
                DraftLine(
                    kind=LineKind.USAGE.value,
                    description=f"{label}, {fmt_date(us)} to {fmt_date(ue)}",
                    amount=rated.amount,
                    calculation=rated.explanation,
                    quantity=rated.quantity,
                    metric=spec.metric,
                    period_start=us,
                    period_end=ue,
                )
            )
    paused = sub.status == SubscriptionStatus.PAUSED.value
    if point.advance_period is not None and not paused:
        start, end = point.advance_period
        base = _base_fee_line(plan, sub, start, end)
        if base is not None:
            lines.append(base)
        if not sub.setup_fee_billed and plan.setup_fee > 0:
            lines.append(
                DraftLine(
                    kind=LineKind.SETUP_FEE.value,
                    description=f"Setup fee {plan.plan_name}",
                    amount=round_minor(plan.setup_fee, cur),
                    calculation=f"setup fee, charged once = {fmt(plan.setup_fee, cur)}",
                    quantity=Decimal(1),
                )
            )
        for add_on_id, qty in add_ons_of(session, sub.id).items():
            add_on = cache.add_on(session, add_on_id)
            amount = round_minor(add_on.price * qty, cur)
            lines.append(
                DraftLine(
                    kind=LineKind.ADD_ON.value,
                    description=f"{add_on.name}, {fmt_date(start)} to {fmt_date(end)}",
                    amount=amount,
                    calculation=f"{qty} × {fmt(add_on.price, cur)} = {fmt(amount, cur)}",
                    quantity=Decimal(qty),
                    period_start=start,
                    period_end=end,
                )
            )
    consumed: list[str] = []
    pending = (
        charges_due(session, sub.organization_id, cur, point.at)
        if cache.orgs_with_charges is None or sub.organization_id in cache.orgs_with_charges
        else []
    )
    for charge in pending:
        lines.append(
            DraftLine(
                kind=charge.kind,
                description=charge.description,
                amount=charge.amount,
                calculation=charge.calculation or f"= {fmt(charge.amount, cur)}",
                period_start=charge.period_start,
                period_end=charge.period_end,
                taxable=charge.taxable,
                discountable=charge.kind != LineKind.PRORATION.value,
                pending_charge_id=charge.id,
            )
        )
        consumed.append(charge.id)
    return lines, consumed


def _write_invoice(
    session: Session,
    clock: Clock,
    org: Organization,
    composed: ComposedInvoice,
    *,
    currency: str,
    kind: str,
    subscription_id: str | None,
    period: tuple[datetime, datetime] | None,
    usage_period: tuple[datetime, datetime] | None,
    plan_version_id: str | None,
    prices_include_tax: bool,
    related_invoice_id: str | None = None,
) -> Invoice:
    invoice = Invoice(
        id=new_id(),
        organization_id=org.id,
        subscription_id=subscription_id,
        kind=kind,
        related_invoice_id=related_invoice_id,
        status=InvoiceStatus.DRAFT.value,
        currency=currency,
        period_start=period[0] if period else None,
        period_end=period[1] if period else None,
        usage_period_start=usage_period[0] if usage_period else None,
        usage_period_end=usage_period[1] if usage_period else None,
        subtotal=composed.subtotal,
        tax_total=composed.tax_total,
        total=composed.total,
        prices_include_tax=prices_include_tax,
        tax_note=composed.tax_note,
        customer_name=org.name,
        customer_country=org.country,
        customer_tax_id=org.tax_id,
        customer_email=org.billing_email,
        plan_version_id=plan_version_id,
        created_at=clock.now(),
    )
    session.add(invoice)
    for position, line in enumerate(composed.lines, start=1):
        session.add(
            InvoiceLine(
                invoice_id=invoice.id,
                position=position,
                kind=line.kind,
                description=line.description[:500],
                calculation=line.calculation,
                quantity=line.quantity,
                amount=line.amount,
                counts_in_total=line.counts_in_total,
                metric=line.metric,
                period_start=line.period_start,
                period_end=line.period_end,
                pending_charge_id=line.pending_charge_id,
            )
        )
    session.flush()
    return invoice


def finalize_invoice(
    session: Session,
    clock: Clock,
    invoice: Invoice,
    *,
    issued_at: datetime | None = None,
    terms: BillingTerms | None = None,
) -> Invoice:
    """Give the draft its gapless number and make it due. Zero totals are paid at once."""
    if invoice.status != InvoiceStatus.DRAFT.value:
        raise Conflict(f"invoice {invoice.number or invoice.id} is not a draft")
    when = issued_at or clock.now()
    terms = terms or billing_terms(session)
    allocated = allocate_number(session, "invoice", when, number_format=terms.invoice_number_format)
    invoice.number = allocated.number
    invoice.issued_at = when
    invoice.due_at = when + timedelta(days=terms.payment_terms_days)
    if invoice.total == 0:
        invoice.status = InvoiceStatus.PAID.value
        invoice.paid_at = when
    else:
        invoice.status = InvoiceStatus.OPEN.value
    session.flush()
    return invoice


def apply_account_credit(
    session: Session, clock: Clock, invoice: Invoice, *, at: datetime | None = None
) -> Payment | None:
    """Pay what the account credit covers of an open invoice (a payment from credit)."""
    due = invoice.amount_due
    if invoice.status != InvoiceStatus.OPEN.value or due <= 0:
        return None
    balance = credit_balance(session, invoice.organization_id, invoice.currency)
    use = min(balance, due)
    if use <= 0:
        return None
    when = at or clock.now()
    payment = Payment(
        organization_id=invoice.organization_id,
        invoice_id=invoice.id,
        amount=use,
        applied_to_invoice=use,
        currency=invoice.currency,
        method="account_credit",
        driver="credit",
        reference=invoice.number,
        received_at=when,
        created_at=clock.now(),
    )
    session.add(payment)
    session.flush()
    add_credit(
        session,
        clock,
        invoice.organization_id,
        -use,
        invoice.currency,
        kind="applied_to_invoice",
        description=f"Paid towards invoice {invoice.number}",
        invoice_id=invoice.id,
        payment_id=payment.id,
    )
    invoice.amount_paid += use
    settle_if_paid(session, invoice, when)
    events.publish(
        session,
        events.PaymentEvent(
            at=when,
            organization_id=invoice.organization_id,
            payment_id=payment.id,
            kind="recorded",
        ),
    )
    return payment


def settle_if_paid(session: Session, invoice: Invoice, at: datetime) -> bool:
    """Mark an open invoice paid once payments and credit notes cover it."""
    if invoice.status == InvoiceStatus.OPEN.value and invoice.amount_due <= 0:
        invoice.status = InvoiceStatus.PAID.value
        invoice.paid_at = at
        session.flush()
        events.publish(
            session,
            events.InvoiceEvent(
                at=at, organization_id=invoice.organization_id, invoice_id=invoice.id, kind="paid"
            ),
        )
        return True
    return False


def lock_invoice(session: Session, invoice_id: str) -> Invoice | None:
    """Read the invoice locked for this transaction (see :func:`lock_subscription`)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(
            update(Invoice)
            .where(Invoice.id == invoice_id)
            .values(id=Invoice.id)
            .execution_options(synchronize_session=False)
        )
    return session.scalar(
        select(Invoice)
        .where(Invoice.id == invoice_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def lock_subscription(session: Session, subscription_id: str) -> Subscription | None:
    """Read the subscription locked for this transaction.

    PostgreSQL: ``SELECT ... FOR UPDATE`` on its row. SQLite has no row locks: a no-op
    UPDATE first takes the database's write lock (waiting for another writer rather than
    failing later when this transaction would upgrade a read), so concurrent runs serialize.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(
            update(Subscription)
            .where(Subscription.id == subscription_id)
            .values(id=Subscription.id)
            .execution_options(synchronize_session=False)
        )
    return session.scalar(
        select(Subscription)
        .where(Subscription.id == subscription_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def invoice_subscription(
    session: Session,
    clock: Clock,
    subscription_id: str,
    *,
    fault: FaultHook = _no_fault,
    cache: RunCache | None = None,
    expected_at: datetime | None = None,
) -> Invoice | None:
    """Invoice a subscription at its billing point, in the caller's transaction.

    Returns ``None`` when the point was billed already (by another run), or when the
    subscription's billing point is no longer ``expected_at``. The steps are: draft
    the lines, compose (discount, carry-over, tax), write the draft, finalize with a number,
    move the pending charges and coupon on, apply account credit, close the metering period,
    advance the subscription, publish ``InvoiceEvent(kind="finalized")``.
    """
    sub = lock_subscription(session, subscription_id)
    if sub is None:
        raise NotFound(f"no subscription {subscription_id!r}")
    if sub.next_billing_at is None:
        return None
    if expected_at is not None and sub.next_billing_at != expected_at:
        return None  # another run got there first; the caller looks at the new point
    point = billing_point(sub)
    already = session.scalar(
        select(Invoice.id).where(
            Invoice.subscription_id == sub.id, Invoice.period_start == point.at
        )
    )
    if already is not None:
        return None
    org = session.get(Organization, sub.organization_id)
    if org is None:
        raise NotFound(f"no organization {sub.organization_id!r}")
    cache = cache or RunCache(terms=billing_terms(session))
    plan = cache.plan(session, sub.plan_version_id)
    if plan.currency != sub.currency:
        raise InvalidInput(
            f"plan version {plan.plan_version_id} is in {plan.currency}, the subscription "
            f"in {sub.currency}"
        )
    lines, consumed = draft_lines(session, sub, point, plan, cache)
    fault("lines_drafted")
    coupon = coupon_for_invoice(session, sub) if lines else None
    tax = cache.terms.tax_for(org.country, org.tax_id)
    composed = compose_invoice(
        sub.currency,
        lines,
        coupon=coupon[1] if coupon else None,
        tax=tax,
        prices_include_tax=cache.terms.prices_include_tax,
    )
    invoice = _write_invoice(
        session,
        clock,
        org,
        composed,
        currency=sub.currency,
        kind=InvoiceKind.SUBSCRIPTION.value,
        subscription_id=sub.id,
        period=(point.at, point.advance_period[1] if point.advance_period else point.at),
        usage_period=point.usage_period,
        plan_version_id=plan.plan_version_id,
        prices_include_tax=cache.terms.prices_include_tax,
    )
    fault("draft_written")
    finalize_invoice(session, clock, invoice, issued_at=point.at, terms=cache.terms)
    fault("finalized")
    if consumed:
        for charge in session.scalars(select(PendingCharge).where(PendingCharge.id.in_(consumed))):
            charge.invoice_id = invoice.id
    if coupon is not None and any(line.kind == LineKind.DISCOUNT.value for line in composed.lines):
        coupon_used(session, coupon[0], point.at)
    if composed.carried_to_credit > 0:
        add_credit(
            session,
            clock,
            org.id,
            composed.carried_to_credit,
            sub.currency,
            kind="carried_over",
            description=f"Credit exceeding the charges of invoice {invoice.number}",
            invoice_id=invoice.id,
        )
    apply_account_credit(session, clock, invoice, at=point.at)
    fault("credit_applied")
    us, ue = sub.current_period_start, sub.current_period_end
    if ue > us and (
        point.usage_period is not None or sub.status == SubscriptionStatus.TRIALING.value
    ):
        metering.close_period(session, org.id, us, ue, clock)
    fault("period_closed")
    _advance(session, sub, point, plan)
    fault("advanced")
    events.publish(
        session,
        events.InvoiceEvent(
            at=clock.now(), organization_id=org.id, invoice_id=invoice.id, kind="finalized"
        ),
    )
    return invoice


def _advance(session: Session, sub: Subscription, point: BillingPoint, plan: PlanTerms) -> None:
    paused = sub.status == SubscriptionStatus.PAUSED.value
    if point.ends_subscription:
        sub.status = SubscriptionStatus.CANCELED.value
        sub.ended_at = point.at
        sub.next_billing_at = None
        sub.period_base_billed = False
        session.flush()
        events.publish(
            session,
            events.SubscriptionChanged(
                at=point.at, organization_id=sub.organization_id, plan_id=None
            ),
        )
        return
    assert point.advance_period is not None
    start, end = point.advance_period
    if not paused:
        if plan.setup_fee > 0:
            sub.setup_fee_billed = True
        sub.period_base_billed = True
    else:
        sub.period_base_billed = False
    if sub.status == SubscriptionStatus.TRIALING.value:
        sub.status = SubscriptionStatus.ACTIVE.value
    sub.current_period_start = start
    sub.current_period_end = end
    sub.next_billing_at = end
    session.flush()


def get_invoice(session: Session, invoice_id: str, organization_id: str | None = None) -> Invoice:
    invoice = session.get(Invoice, invoice_id)
    if invoice is None or (
        organization_id is not None and invoice.organization_id != organization_id
    ):
        raise NotFound(f"no invoice {invoice_id!r}")
    return invoice


def invoice_lines(session: Session, invoice_id: str) -> list[InvoiceLine]:
    return list(
        session.scalars(
            select(InvoiceLine)
            .where(InvoiceLine.invoice_id == invoice_id)
            .order_by(InvoiceLine.position)
        )
    )


def list_invoices(
    session: Session,
    *,
    organization_id: str | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Invoice]:
    query = select(Invoice)
    if organization_id is not None:
        query = query.where(Invoice.organization_id == organization_id)
    if status is not None:
        query = query.where(Invoice.status == status)
    query = query.order_by(Invoice.issued_at.desc(), Invoice.created_at.desc(), Invoice.id)
    return list(session.scalars(query.limit(min(max(limit, 1), 500)).offset(max(offset, 0))))


def void_invoice(session: Session, clock: Clock, invoice_id: str, reason: str) -> Invoice:
    """Void an invoice nothing was paid or credited on (a draft, or an open one by mistake).

    Its number stays used (gapless numbering keeps voided invoices); pending charges on it
    are released for the next invoice.
    """
    invoice = get_invoice(session, invoice_id)
    if not reason.strip():
        raise InvalidInput("say why the invoice is voided", field="reason")
    if invoice.status not in (InvoiceStatus.DRAFT.value, InvoiceStatus.OPEN.value):
        raise Conflict(f"a {invoice.status} invoice cannot be voided; issue a credit note")
    if invoice.amount_paid > 0 or invoice.amount_credited > 0:
        raise Conflict("payments or credit notes were applied; issue a credit note instead")
    invoice.status = InvoiceStatus.VOID.value
    invoice.voided_at = clock.now()
    invoice.void_reason = reason.strip()[:500]
    for charge in session.scalars(
        select(PendingCharge).where(PendingCharge.invoice_id == invoice.id)
    ):
        charge.invoice_id = None
    session.flush()
    events.publish(
        session,
        events.InvoiceEvent(
            at=clock.now(),
            organization_id=invoice.organization_id,
            invoice_id=invoice.id,
            kind="voided",
        ),
    )
    return invoice


def issue_standalone_invoice(
    session: Session,
    clock: Clock,
    organization_id: str,
    lines: list[DraftLine],
    *,
    currency: str,
    kind: str,
    related_invoice_id: str | None = None,
) -> Invoice:
    """An invoice outside the subscription cycle (late fees), finalized at once."""
    org = session.get(Organization, organization_id)
    if org is None:
        raise NotFound(f"no organization {organization_id!r}")
    terms = billing_terms(session)
    tax = terms.tax_for(org.country, org.tax_id)
    composed = compose_invoice(
        currency, lines, coupon=None, tax=tax, prices_include_tax=terms.prices_include_tax
    )
    invoice = _write_invoice(
        session,
        clock,
        org,
        composed,
        currency=currency,
        kind=kind,
        subscription_id=None,
        period=None,
        usage_period=None,
        plan_version_id=None,
        prices_include_tax=terms.prices_include_tax,
        related_invoice_id=related_invoice_id,
    )
    finalize_invoice(session, clock, invoice, terms=terms)
    invoice.due_at = clock.now()
    session.flush()
    events.publish(
        session,
        events.InvoiceEvent(
            at=clock.now(), organization_id=org.id, invoice_id=invoice.id, kind="finalized"
        ),
    )
    return invoice
