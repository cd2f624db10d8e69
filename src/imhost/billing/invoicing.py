"""Invoices: drafting a subscription's invoice at a billing point, finalizing, voiding.

A billing point is a moment where a subscription is invoiced: the start of its first paid
period, or the end of a period. The invoice made there bills the usage of the period that
ended (in arrears, rated against the plan version's price components) and the base fee and
add-ons of the period that starts (in advance), plus the charges waiting for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.audit import Actor
from imhost.accounts.models import Organization
from imhost.billing import audit, repository
from imhost.billing.charges import charges_due
from imhost.billing.composition import ComposedInvoice, DraftLine, compose_invoice
from imhost.billing.credits import add_credit, coupon_for_invoice, coupon_used, credit_balance
from imhost.billing.models import (
    CreditLedgerEntry,
    CustomerBillingDetails,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceStatus,
    LineKind,
    Payment,
    PendingCharge,
    Subscription,
    SubscriptionAddOn,
    SubscriptionStatus,
)
from imhost.billing.parties import (
    customer_details_many,
    customer_name,
    customer_snapshot,
    get_customer_details,
    invoice_email,
)
from imhost.billing.periods import (
    charge_for_part,
    fmt,
    fmt_date,
    full_period,
    interval_of,
    period_end,
)
from imhost.billing.plans import AddOnTerms, PlanTerms, load_add_on, load_plan_terms
from imhost.billing.settings import AllocatedNumber, BillingTerms, allocate_number, billing_terms
from imhost.billing.subscriptions import add_ons_of
from imhost.billing.taxes import TaxDecision
from imhost.billing.usage_rating import price_parts, rate_usage
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput, NotFound
from imhost.kit.ids import new_id
from imhost.kit.money import round_minor
from imhost.metering import aggregate, closing
from imhost.metering.metrics import BILLABLE_METRICS
from imhost.metering.models import ClosedPeriod

FaultHook = Callable[[str], None]

_NO_END = datetime(9999, 12, 31, tzinfo=UTC)


def _no_fault(_point: str) -> None:
    return None


METRIC_LABELS = {code: metric.label for code, metric in BILLABLE_METRICS.items()}


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
class InvoiceParties:
    """Who an invoice is between, as it is made: the seller (``BillingTerms.seller``), the
    customer's billing details, and the tax decision (its VAT category and rate)."""

    seller: dict[str, Any]
    details: CustomerBillingDetails | None
    tax: TaxDecision


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


@dataclass(frozen=True)
class BlockMark:
    closings: int
    numbers: dict[int, int]
    advanced: int


@dataclass
class BlockPrefetch:
    """What the billing run reads once for a block of subscriptions, inside the block's
    transaction and after locking them, instead of once per invoice (see ``billing.flows``).

    Every answer is only used for the billing point it was read for (``points``); a
    subscription billed a second time in the same block (it owed several periods) falls back
    to the per-invoice queries for what depends on the period.
    """

    subscriptions: dict[str, Subscription] = field(default_factory=dict)  # locked
    organizations: dict[str, Organization] = field(default_factory=dict)
    customer_details: dict[str, CustomerBillingDetails] = field(default_factory=dict)
    points: dict[str, datetime] = field(default_factory=dict)  # subscription -> billing point
    invoiced: set[tuple[str, datetime]] = field(default_factory=set)  # (subscription, point)
    add_ons: dict[str, dict[str, int]] = field(default_factory=dict)
    orgs_with_credit: set[str] = field(default_factory=set)
    # subscription -> its plan changes inside its current period (prices in force)
    plan_changes: dict[str, list[repository.ChangeRow]] = field(default_factory=dict)
    # (organization, usage period start, end) -> billable quantities
    quantities: dict[tuple[str, datetime, datetime], dict[str, Decimal]] = field(
        default_factory=dict
    )
    # Metering periods: which (organization, period start) were looked up, the end of those
    # closed already (or closed in this block), and the closings to write at the block's end.
    close_checked: set[tuple[str, datetime]] = field(default_factory=set)
    closed: dict[tuple[str, datetime], datetime] = field(default_factory=dict)
    to_close: list[tuple[str, datetime, datetime]] = field(default_factory=list)

    # Invoice numbers: year -> [the counter as written in the database, the last taken].
    numbers: dict[int, list[int]] = field(default_factory=dict)
    # Subscriptions advanced in this block (written at its end): (row, before, after).
    advanced: list[tuple[Subscription, dict[str, Any], dict[str, Any]]] = field(
        default_factory=list
    )

    # Without savepoints (the billing run's first try of a block), invoice rows, their lines
    # and their events wait for the block's end (one executemany each): an invoice that
    # fails then fails the whole try anyway, and the block is redone with savepoints.
    defer_writes: bool = False
    pending_invoices: list[dict[str, Any]] = field(default_factory=list)
    pending_lines: list[dict[str, Any]] = field(default_factory=list)
    pending_events: list[events.Event] = field(default_factory=list)

    def write_pending(self, session: Session) -> None:
        """Write the invoices and lines waiting for the block's end (before anything that
        refers to them)."""
        repository.insert_invoice_rows(session, self.pending_invoices)
        self.pending_invoices.clear()
        repository.insert_line_rows(session, self.pending_lines)
        self.pending_lines.clear()

    def mark(self) -> BlockMark:
        """Where the block stands, to :meth:`undo` what a rolled-back invoice added."""
        return BlockMark(
            len(self.to_close),
            {y: taken for y, (_, taken) in self.numbers.items()},
            len(self.advanced),
        )

    def undo(self, mark: BlockMark) -> None:
        for org_id, start, _end in self.to_close[mark.closings :]:
            self.closed.pop((org_id, start), None)
        del self.to_close[mark.closings :]
        for year in list(self.numbers):
            if year in mark.numbers:
                self.numbers[year][1] = mark.numbers[year]
            else:  # its counter was first taken in the rolled-back part: taken back too
                del self.numbers[year]
        for sub, before, _after in reversed(self.advanced[mark.advanced :]):
            repository.set_loaded(sub, before)
        del self.advanced[mark.advanced :]

    def take_number(self, session: Session, at: datetime, number_format: str) -> AllocatedNumber:
        """The next invoice number: the first of a year in this block from the counter
        (which locks it until the block commits), the next ones counted here; the counter is
        brought up to the last one taken by :func:`finish_block`. Gapless, as an invoice
        rolled back gives its number back (:meth:`undo`)."""
        year = at.year
        state = self.numbers.get(year)
        if state is None:
            allocated = allocate_number(session, "invoice", at, number_format=number_format)
            self.numbers[year] = [allocated.seq, allocated.seq]
            return allocated
        state[1] += 1
        seq = state[1]
        return AllocatedNumber(number=number_format.format(year=year, seq=seq), year=year, seq=seq)

    def advance(self, sub: Subscription, values: dict[str, Any]) -> None:
        """Move a locked subscription on; the UPDATE is one of the block's (at its end)."""
        before = {key: getattr(sub, key) for key in values}
        repository.set_loaded(sub, values)
        self.advanced.append((sub, before, values))

    def close_period(self, organization_id: str, start: datetime, end: datetime) -> None:
        """``closing.close_period`` for the block: same rules (idempotent, a different end
        is a conflict), the row written by :func:`write_block_closings`."""
        existing = self.closed.get((organization_id, start))
        if existing is not None:
            if existing != end:
                raise Conflict(
                    f"the period starting {start.isoformat()} is closed already, "
                    f"ending {existing.isoformat()}",
                    field="period_end",
                )
            return
        self.closed[(organization_id, start)] = end
        self.to_close.append((organization_id, start, end))


def prefetch_block(session: Session, subscription_ids: list[str], cache: RunCache) -> BlockPrefetch:
    """Lock a block of subscriptions and read what their invoices need, a few queries in all.

    The subscriptions are locked first (``SELECT ... FOR UPDATE`` in id order on PostgreSQL,
    so two runs never deadlock on them; on SQLite a no-op UPDATE takes the database's write
    lock), then their organizations, the invoices that already exist at their billing
    points, their add-ons, which organizations have account credit, and the metering
    quantities of the usage periods they bill (``aggregate.billable_quantities_many``).
    """
    block = BlockPrefetch()
    ids = sorted(set(subscription_ids))
    if not ids:
        return block
    repository.plan_each_statement(session)
    subs = repository.lock_subscriptions(session, ids)
    block.subscriptions = {sub.id: sub for sub in subs}
    block.points = {sub.id: sub.next_billing_at for sub in subs if sub.next_billing_at is not None}
    org_ids = sorted({sub.organization_id for sub in subs})
    block.organizations = {
        org.id: org
        for org in session.scalars(select(Organization).where(Organization.id.in_(org_ids)))
    }
    block.customer_details = customer_details_many(session, org_ids)
    if block.points:
        block.invoiced = {
            (sid, at)
            for sid, at in session.execute(
                select(Invoice.subscription_id, Invoice.period_start).where(
                    Invoice.subscription_id.in_(list(block.points)),
                    Invoice.period_start.in_(sorted(set(block.points.values()))),
                )
            )
            if sid is not None and at is not None
        }
    for sid, add_on_id, quantity in session.execute(
        select(
            SubscriptionAddOn.subscription_id,
            SubscriptionAddOn.add_on_id,
            SubscriptionAddOn.quantity,
        )
        .where(SubscriptionAddOn.subscription_id.in_(ids))
        .order_by(SubscriptionAddOn.subscription_id, SubscriptionAddOn.add_on_id)
    ):
        block.add_ons.setdefault(sid, {})[add_on_id] = quantity
    block.orgs_with_credit = set(
        session.scalars(
            select(CreditLedgerEntry.organization_id)
            .where(CreditLedgerEntry.organization_id.in_(org_ids))
            .distinct()
        )
    )
    # From the current period on (a subscription several periods behind is billed several
    # times in the block; each usage period takes the changes inside it).
    block.plan_changes = repository.plan_changes(
        session, [(sub.id, sub.current_period_start, _NO_END) for sub in subs]
    )
    starts = sorted({sub.current_period_start for sub in subs})
    block.close_checked = {(sub.organization_id, sub.current_period_start) for sub in subs}
    block.closed = {
        (org_id, start): end
        for org_id, start, end in session.execute(
            select(ClosedPeriod.organization_id, ClosedPeriod.period_start, ClosedPeriod.period_end)
            .where(ClosedPeriod.organization_id.in_(org_ids))
            .where(ClosedPeriod.period_start.in_(starts))
        )
    }
    wanted: list[tuple[str, datetime, datetime]] = []
    for sub in subs:
        if sub.next_billing_at is None or not cache.plan(session, sub.plan_version_id).specs:
            continue
        usage = billing_point(sub).usage_period
        if usage is not None and usage[1] > usage[0]:
            key = (sub.organization_id, usage[0], usage[1])
            if key not in block.quantities:
                block.quantities[key] = {}
                wanted.append(key)
    # Before reading the quantities of the periods this block closes: ingestion of usage
    # for these organizations waits for the block (PostgreSQL), or was committed before.
    closing.lock_for_closing(session, org_ids)
    if wanted:
        answers = aggregate.billable_quantities_many(session, wanted)
        block.quantities = dict(zip(wanted, answers, strict=True))
    return block


def finish_block(session: Session, block: BlockPrefetch, clock: Clock) -> None:
    """Write what the block's invoices left to its end, a statement each: the subscriptions
    advanced, the invoice counters brought up to the last number taken, and the metering
    periods closed.

    Billing writes metering's ``usage_closed_periods`` rows itself here only because metering
    has no bulk form of ``close_period`` yet (the per-invoice call cost about a fifth of an
    invoice); the rules are the same (see :meth:`BlockPrefetch.close_period`). Should another
    transaction have closed one of them meanwhile, each is closed through metering instead.
    """
    if block.advanced:
        # The rows' values now (the last advance of a subscription billed twice).
        advanced = {id(sub): sub for sub, _before, _after in block.advanced}.values()
        repository.advance_subscriptions(session, advanced)
        block.advanced.clear()
    for year, (written, taken) in block.numbers.items():
        if taken > written:
            repository.set_invoice_counter(session, year, taken)
            block.numbers[year][0] = taken
    block.write_pending(session)
    _write_closings(session, block, clock)
    pending_events, block.pending_events = block.pending_events, []
    for event in pending_events:
        events.publish(session, event)


def _write_closings(session: Session, block: BlockPrefetch, clock: Clock) -> None:
    if block.to_close:
        closing.close_periods_many(session, block.to_close, clock)
        block.to_close.clear()


def _base_fee_line(
    plan: PlanTerms, sub: Subscription, start: datetime, end: datetime
) -> DraftLine | None:
    cur = sub.currency
    if plan.base_fee == 0:
        return None
    full = full_period(start, end, sub.billing_anchor_day, sub.interval)
    part = charge_for_part(plan.base_fee, cur, start, end, full)
    window = f"{fmt_date(start)} to {fmt_date(end)}"
    label = f"Base fee {plan.plan_name} {interval_of(plan.interval).adjective}"
    if not part.whole:
        calc = f"{label} {window}, a shorter first period: {part.calculation(cur)}"
    else:
        calc = f"{label[0].lower()}{label[1:]} {window} = {fmt(part.amount, cur)}"
    return DraftLine(
        kind=LineKind.BASE_FEE.value,
        description=f"{label}, {window}",
        amount=part.amount,
        calculation=calc,
        quantity=Decimal(1),
        period_start=start,
        period_end=end,
    )


def _add_on_line(
    add_on: AddOnTerms, qty: int, sub: Subscription, start: datetime, end: datetime
) -> DraftLine:
    """An add-on in advance; a shorter first period costs its share, as the base fee."""
    cur = sub.currency
    full = full_period(start, end, sub.billing_anchor_day, sub.interval)
    part = charge_for_part(add_on.price * qty, cur, start, end, full)
    calc = f"{qty} × {fmt(add_on.price, cur)} = {fmt(part.amount, cur)}"
    if not part.whole:
        calc = f"{qty} × {fmt(add_on.price, cur)}, a shorter first period: {part.calculation(cur)}"
    return DraftLine(
        kind=LineKind.ADD_ON.value,
        description=f"{add_on.name}, {fmt_date(start)} to {fmt_date(end)}",
        amount=part.amount,
        calculation=calc,
        quantity=Decimal(qty),
        period_start=start,
        period_end=end,
    )


def draft_lines(
    session: Session,
    sub: Subscription,
    point: BillingPoint,
    plan: PlanTerms,
    cache: RunCache,
    block: BlockPrefetch | None = None,
    measure: Callable[[datetime, datetime], dict[str, Decimal]] | None = None,
) -> tuple[list[DraftLine], list[str]]:
    """The charges of the invoice at ``point`` (before discount and tax), and the pending
    charge ids they consume.

    ``measure`` answers the usage of a part of the usage period; without it, the billable
    quantities metering has recorded (the forecast passes the usage projected to the
    period's end instead)."""
    cur = sub.currency
    lines: list[DraftLine] = []
    if point.usage_period is not None:
        us, ue = point.usage_period
        changes = (
            block.plan_changes.get(sub.id, [])
            if block is not None and sub.id in block.subscriptions
            else repository.plan_changes(session, [(sub.id, us, ue)]).get(sub.id, [])
        )
        parts = price_parts(us, ue, changes, plan, lambda v: cache.plan(session, v))
        known = block.quantities.get((sub.organization_id, us, ue)) if block else None

        def quantities(start: datetime, end: datetime) -> dict[str, Decimal]:
            if measure is not None:
                return measure(start, end)
            if known is not None and (start, end) == (us, ue):
                return known
            return aggregate.billable_quantities(session, sub.organization_id, start, end)

        for rated in rate_usage(parts, quantities):
            label = METRIC_LABELS.get(rated.metric, rated.metric)
            lines.append(
                DraftLine(
                    kind=LineKind.USAGE.value,
                    description=f"{label}, {fmt_date(rated.start)} to {fmt_date(rated.end)}",
                    amount=rated.amount,
                    calculation=rated.calculation,
                    quantity=rated.quantity,
                    metric=rated.metric,
                    period_start=rated.start,
                    period_end=rated.end,
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
        add_ons = (
            block.add_ons.get(sub.id, {})
            if block is not None and sub.id in block.subscriptions
            else add_ons_of(session, sub.id)
        )
        for add_on_id, qty in add_ons.items():
            lines.append(_add_on_line(cache.add_on(session, add_on_id), qty, sub, start, end))
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


def _new_invoice(
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
    parties: InvoiceParties,
    related_invoice_id: str | None = None,
) -> Invoice:
    """The draft invoice of ``composed`` (not yet added to a session; its lines apart),
    with the seller's and the customer's details as they are now."""
    details = parties.details
    return Invoice(
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
        amount_paid=Decimal(0),
        amount_credited=Decimal(0),
        prices_include_tax=prices_include_tax,
        tax_note=composed.tax_note,
        customer_name=customer_name(org, details),
        customer_country=org.country,
        customer_tax_id=org.tax_id,
        customer_email=invoice_email(org, details),
        customer_address=customer_snapshot(details),
        seller=parties.seller or None,
        tax_category=parties.tax.category,
        tax_percent=parties.tax.percent,
        plan_version_id=plan_version_id,
        created_at=clock.now(),
    )


def _insert_lines(
    session: Session,
    invoice_id: str,
    composed: ComposedInvoice,
    block: BlockPrefetch | None = None,
) -> None:
    """Write the invoice's lines, each with its calculation, in one INSERT (executemany).

    The invoice row must be written first (foreign key). Lines are read back as rows
    (:func:`invoice_lines`); nothing keeps them as objects, so the ORM's unit of work, the
    costliest part of writing an invoice, is skipped.
    """
    rows = [
        {
            "id": new_id(),
            "invoice_id": invoice_id,
            "position": position,
            "kind": line.kind,
            "description": line.description[:500],
            "calculation": line.calculation,
            "quantity": line.quantity,
            "amount": line.amount,
            "counts_in_total": line.counts_in_total,
            "taxable": line.taxable,
            "metric": line.metric,
            "period_start": line.period_start,
            "period_end": line.period_end,
            "pending_charge_id": line.pending_charge_id,
        }
        for position, line in enumerate(composed.lines, start=1)
    ]
    if block is not None and block.defer_writes:
        block.pending_lines.extend(rows)
    else:
        repository.insert_line_rows(session, rows)


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
    parties: InvoiceParties,
    related_invoice_id: str | None = None,
) -> Invoice:
    """Write the draft invoice and its lines."""
    invoice = _new_invoice(
        clock,
        org,
        composed,
        currency=currency,
        kind=kind,
        subscription_id=subscription_id,
        period=period,
        usage_period=usage_period,
        plan_version_id=plan_version_id,
        prices_include_tax=prices_include_tax,
        parties=parties,
        related_invoice_id=related_invoice_id,
    )
    session.add(invoice)
    session.flush()
    _insert_lines(session, invoice.id, composed)
    return invoice


def finalize_invoice(
    session: Session,
    clock: Clock,
    invoice: Invoice,
    *,
    issued_at: datetime | None = None,
    terms: BillingTerms | None = None,
    block: BlockPrefetch | None = None,
    actor: Actor | None = None,
) -> Invoice:
    """Give the draft its gapless number and make it due. Zero totals are paid at once."""
    if invoice.status != InvoiceStatus.DRAFT.value:
        raise Conflict(f"invoice {invoice.number or invoice.id} is not a draft")
    when = issued_at or clock.now()
    terms = terms or billing_terms(session)
    with session.no_autoflush:  # a draft not yet written is inserted once, with its number
        allocated = (
            block.take_number(session, when, terms.invoice_number_format)
            if block is not None
            else allocate_number(
                session, "invoice", when, number_format=terms.invoice_number_format
            )
        )
    invoice.number = allocated.number
    invoice.issued_at = when
    invoice.due_at = when + timedelta(days=terms.payment_terms_days)
    if invoice.total == 0:
        invoice.status = InvoiceStatus.PAID.value
        invoice.paid_at = when
    else:
        invoice.status = InvoiceStatus.OPEN.value
    if repository.is_new(invoice):
        _insert_invoice(session, invoice, block)
    else:
        session.flush()
    if actor is not None:  # a person's finalize; a run's invoices are in the run's record
        audit.record(
            session,
            clock,
            actor,
            "invoice_finalized",
            organization_id=invoice.organization_id,
            target_type="invoice",
            target_id=invoice.id,
            number=invoice.number,
        )
    return invoice


def _insert_invoice(session: Session, invoice: Invoice, block: BlockPrefetch | None) -> None:
    """Write a new invoice with one Core INSERT (or leave it to the block's end), then
    attach the object to the session as if loaded (no unit-of-work flush: it cost more than
    the statement)."""
    row = repository.invoice_row(invoice)  # every column loaded: no refresh query later
    if block is not None and block.defer_writes:
        block.pending_invoices.append(row)
    else:
        repository.insert_invoice_rows(session, [row])
    repository.attach_as_loaded(session, invoice)


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


def invoice_subscription(
    session: Session,
    clock: Clock,
    subscription_id: str,
    *,
    fault: FaultHook = _no_fault,
    cache: RunCache | None = None,
    expected_at: datetime | None = None,
    block: BlockPrefetch | None = None,
) -> Invoice | None:
    """Invoice a subscription at its billing point, in the caller's transaction.

    Returns ``None`` when the point was billed already (by another run), or when the
    subscription's billing point is no longer ``expected_at``. The steps are: draft
    the lines, compose (discount, carry-over, tax), write the draft, finalize with a number,
    move the pending charges and coupon on, apply account credit, close the metering period,
    advance the subscription, publish ``InvoiceEvent(kind="finalized")``.

    ``block``: what :func:`prefetch_block` read (and locked) in this transaction for the
    billing run's current block; without it every read is made here.
    """
    in_block = block is not None and subscription_id in block.subscriptions
    sub = (
        block.subscriptions[subscription_id]
        if block is not None and in_block
        else repository.lock_subscription(session, subscription_id)
    )
    if sub is None:
        raise NotFound(f"no subscription {subscription_id!r}")
    if sub.next_billing_at is None:
        return None
    if expected_at is not None and sub.next_billing_at != expected_at:
        return None  # another run got there first; the caller looks at the new point
    point = billing_point(sub)
    if block is not None and in_block and block.points.get(sub.id) == point.at:
        already = (sub.id, point.at) in block.invoiced
    else:
        already = (
            session.scalar(
                select(Invoice.id).where(
                    Invoice.subscription_id == sub.id, Invoice.period_start == point.at
                )
            )
            is not None
        )
    if already:
        return None
    org = (block.organizations.get(sub.organization_id) if block else None) or session.get(
        Organization, sub.organization_id
    )
    if org is None:
        raise NotFound(f"no organization {sub.organization_id!r}")
    cache = cache or RunCache(terms=billing_terms(session))
    plan = cache.plan(session, sub.plan_version_id)
    if plan.currency != sub.currency:
        raise InvalidInput(
            f"plan version {plan.plan_version_id} is in {plan.currency}, the subscription "
            f"in {sub.currency}"
        )
    if not in_block:
        closing.lock_for_closing(session, [sub.organization_id])
    lines, consumed = draft_lines(session, sub, point, plan, cache, block)
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
    invoice = _new_invoice(
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
        parties=InvoiceParties(
            cache.terms.seller,
            block.customer_details.get(org.id)
            if block is not None and in_block
            else get_customer_details(session, org.id),
            tax,
        ),
    )
    fault("draft_written")
    # Finalized before its first flush: the invoice is written once, with its number.
    finalize_invoice(session, clock, invoice, issued_at=point.at, terms=cache.terms, block=block)
    _insert_lines(session, invoice.id, composed, block)
    fault("finalized")
    uses_credit = block is None or org.id in block.orgs_with_credit
    if block is not None and (
        consumed or coupon is not None or composed.carried_to_credit > 0 or uses_credit
    ):
        block.write_pending(session)  # what follows refers to the invoice's row
    if consumed:
        for charge in session.scalars(select(PendingCharge).where(PendingCharge.id.in_(consumed))):
            charge.invoice_id = invoice.id
    if coupon is not None and any(line.kind == LineKind.DISCOUNT.value for line in composed.lines):
        coupon_used(session, coupon[0], point.at)
    if composed.carried_to_credit > 0:
        if block is not None:
            block.orgs_with_credit.add(org.id)
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
    if uses_credit or composed.carried_to_credit > 0:
        apply_account_credit(session, clock, invoice, at=point.at)
    fault("credit_applied")
    us, ue = sub.current_period_start, sub.current_period_end
    if ue > us and (
        point.usage_period is not None or sub.status == SubscriptionStatus.TRIALING.value
    ):
        if block is not None and (org.id, us) in block.close_checked:
            block.close_period(org.id, us, ue)
        else:
            closing.close_period(session, org.id, us, ue, clock)
    fault("period_closed")
    _advance(session, sub, point, plan, block if in_block else None)
    fault("advanced")
    finalized = events.InvoiceEvent(
        at=clock.now(), organization_id=org.id, invoice_id=invoice.id, kind="finalized"
    )
    if block is not None and block.defer_writes:
        block.pending_events.append(finalized)  # published once its rows are written
    else:
        events.publish(session, finalized)
    return invoice


def _advance(
    session: Session,
    sub: Subscription,
    point: BillingPoint,
    plan: PlanTerms,
    block: BlockPrefetch | None = None,
) -> None:
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
    values: dict[str, Any] = {
        "status": (
            SubscriptionStatus.ACTIVE.value
            if sub.status == SubscriptionStatus.TRIALING.value
            else sub.status
        ),
        "current_period_start": start,
        "current_period_end": end,
        "next_billing_at": end,
        "setup_fee_billed": sub.setup_fee_billed or (not paused and plan.setup_fee > 0),
        "period_base_billed": not paused,
    }
    if block is not None:
        block.advance(sub, values)  # written with the block's other subscriptions
        return
    for key, value in values.items():
        setattr(sub, key, value)
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


def void_invoice(
    session: Session,
    clock: Clock,
    invoice_id: str,
    reason: str,
    *,
    actor: Actor | None = None,
) -> Invoice:
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
    audit.record(
        session,
        clock,
        actor,
        "invoice_voided",
        organization_id=invoice.organization_id,
        target_type="invoice",
        target_id=invoice.id,
        reason=invoice.void_reason,
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
        parties=InvoiceParties(terms.seller, get_customer_details(session, org.id), tax),
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
