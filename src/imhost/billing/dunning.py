"""Dunning: reminders, a late fee, suspension and termination for unpaid invoices.

The policy lives in the billing profile; the defaults follow what hosting providers use
(WHMCS-like): reminders 3 days before the due date, on it, then 3, 7 and 14 days overdue; a
late fee of 5 % (at least 5.00) at 7 days; suspension at 14 days overdue; termination at 45.

Each step is recorded as a ``DunningAction`` row unique per (invoice, step) before it acts,
so a step is never done twice, even by two workers.

From the due date on, a reminder step first charges the organization's default saved payment
method (``collection.charge_method`` with the key ``<invoice>:dunning:<step>``: once per step,
whatever the reruns). A charge that succeeds settles the invoice and dunning stops; one still
processing (a SEPA debit) holds every reminder back, before the due date too; a failed one is
recorded and the reminder says the charge failed and links to update the method or pay now.
A direct debit the bank sent back is told by the next reminder (with the bank's reason) and
collected again, as a new attempt (``-R2``), at the step after it.

When the job has not run for a while, only the latest reminder that is due is sent; the
earlier ones are recorded as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.models import Organization, OrgStatus
from imhost.billing.collection import charge_method
from imhost.billing.composition import DraftLine
from imhost.billing.invoicing import issue_standalone_invoice
from imhost.billing.models import (
    BillingProfile,
    DunningAction,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    LineKind,
    PaymentAttempt,
    PaymentAttemptStatus,
    Subscription,
    SubscriptionStatus,
)
from imhost.billing.payment_methods import default_method
from imhost.billing.payments import DUNNING_REASON_PREFIX
from imhost.billing.periods import fmt
from imhost.kit.clock import Clock
from imhost.kit.money import round_minor

_DAY = timedelta(days=1)
SEPA_GATEWAY = "sepa"  # a direct debit's payment attempts (``billing.sepa.gateway``)


@dataclass(frozen=True)
class LateFee:
    amount: Decimal
    calculation: str


def late_fee(profile: BillingProfile, overdue_amount: Decimal, currency: str) -> LateFee:
    """The late fee on ``overdue_amount``: flat, or a percentage with a minimum."""
    if profile.late_fee_flat is not None:
        amount = round_minor(profile.late_fee_flat, currency)
        return LateFee(amount, f"flat late fee = {fmt(amount, currency)}")
    pct = profile.late_fee_percent or Decimal(0)
    raw = round_minor(overdue_amount * pct / 100, currency)
    minimum = round_minor(profile.late_fee_minimum, currency)
    amount = max(raw, minimum)
    calc = f"{pct.normalize():f} % of {fmt(overdue_amount, currency)} = {fmt(raw, currency)}"
    if amount != raw:
        calc += f", below the minimum of {fmt(minimum, currency)}: {fmt(amount, currency)}"
    return LateFee(amount, calc)


@dataclass(frozen=True)
class DunningStep:
    step: str
    offset_days: int  # relative to the due date


def policy_steps(profile: BillingProfile) -> list[DunningStep]:
    steps = [DunningStep(f"reminder:{d}", d) for d in sorted(profile.reminder_offsets or [])]
    if profile.late_fee_after_days is not None:
        steps.append(DunningStep("late_fee", profile.late_fee_after_days))
    if profile.suspend_after_days is not None:
        steps.append(DunningStep("suspend", profile.suspend_after_days))
    if profile.terminate_after_days is not None:
        steps.append(DunningStep("terminate", profile.terminate_after_days))
    return steps


def _claim(session: Session, invoice: Invoice, step: str, outcome: str, at: datetime) -> bool:
    """Record the step; False when it was recorded already (by us before, or another run)."""
    exists = session.scalar(
        select(DunningAction.id).where(
            DunningAction.invoice_id == invoice.id, DunningAction.step == step
        )
    )
    if exists is not None:
        return False
    try:
        with session.begin_nested():
            session.add(
                DunningAction(
                    invoice_id=invoice.id,
                    organization_id=invoice.organization_id,
                    step=step,
                    outcome=outcome,
                    at=at,
                )
            )
    except IntegrityError:
        return False
    return True


def dun_invoice(
    session: Session, clock: Clock, profile: BillingProfile, invoice: Invoice
) -> list[str]:
    """Apply every due step of the policy to one open invoice; returns the steps done."""
    now = clock.now()
    if invoice.status != InvoiceStatus.OPEN.value or invoice.due_at is None:
        return []
    if invoice.amount_due <= 0:
        return []
    done: list[str] = []
    steps = [s for s in policy_steps(profile) if invoice.due_at + s.offset_days * _DAY <= now]
    reminders = [s for s in steps if s.step.startswith("reminder:")]
    for s in reminders[:-1]:
        _claim(session, invoice, s.step, "skipped", now)
    if reminders:
        last = reminders[-1]
        charged = _charge_saved_method(
            session, clock, invoice, last.step, charge=last.offset_days >= 0
        )
        if charged is not None:
            return [charged] if charged == "paid_by_saved_method" else []
        if _claim(session, invoice, last.step, "done", now):
            events.publish(
                session,
                events.DunningReminderDue(
                    at=now,
                    organization_id=invoice.organization_id,
                    invoice_id=invoice.id,
                    step=last.step,
                    days_from_due=last.offset_days,
                ),
            )
            done.append(last.step)
    for s in steps:
        if s.step == "late_fee":
            if invoice.kind == InvoiceKind.LATE_FEE.value:
                continue
            if _claim(session, invoice, "late_fee", "done", now):
                fee = late_fee(profile, invoice.amount_due, invoice.currency)
                if fee.amount > 0:
                    issue_standalone_invoice(
                        session,
                        clock,
                        invoice.organization_id,
                        [
                            DraftLine(
                                kind=LineKind.LATE_FEE.value,
                                description=f"Late fee on invoice {invoice.number}",
                                amount=fee.amount,
                                calculation=fee.calculation,
                                taxable=False,
                                discountable=False,
                            )
                        ],
                        currency=invoice.currency,
                        kind=InvoiceKind.LATE_FEE.value,
                        related_invoice_id=invoice.id,
                    )
                done.append("late_fee")
        elif s.step == "suspend":
            if _claim(session, invoice, "suspend", "done", now):
                _suspend(session, clock, invoice)
                done.append("suspend")
        elif s.step == "terminate" and _claim(session, invoice, "terminate", "done", now):
            _terminate(session, clock, invoice)
            done.append("terminate")
    return done


def _charge_saved_method(
    session: Session, clock: Clock, invoice: Invoice, step: str, *, charge: bool
) -> str | None:
    """Charge the default saved method at ``step`` (with ``charge``: from the due date). Not
    None when the invoice needs no reminder now: ``paid_by_saved_method``, or ``under_way`` (a
    payment is processing, such as a direct debit waiting for the bank: any reminder waits)."""
    under_way = session.scalar(
        select(PaymentAttempt.id).where(
            PaymentAttempt.invoice_id == invoice.id,
            PaymentAttempt.status == PaymentAttemptStatus.PROCESSING.value,
        )
    )
    if under_way is not None:
        return "under_way"
    if not charge or _debit_came_back_unannounced(session, invoice, step):
        return None
    if session.scalar(
        select(DunningAction.id).where(
            DunningAction.invoice_id == invoice.id, DunningAction.step == step
        )
    ):
        return None  # this step's reminder went out already (after a returned debit)
    method = default_method(session, invoice.organization_id)
    if method is None:
        return None
    attempt = charge_method(
        session,
        clock,
        invoice,
        method,
        key=f"{invoice.id}:dunning:{step}",
        source=f"dunning:{step}"[:40],
    )
    if invoice.status != InvoiceStatus.OPEN.value:
        return "paid_by_saved_method"
    if attempt.status == PaymentAttemptStatus.PROCESSING.value:
        return "under_way"
    return None


def _debit_came_back_unannounced(session: Session, invoice: Invoice, step: str) -> bool:
    """True when the invoice's last try was a direct debit the bank sent back and no reminder
    has said so yet: this step sends the reminder with the bank's reason, and the debit is
    tried again at the next step (a card's failure is told by its own e-mail at once)."""
    last = session.scalar(
        select(PaymentAttempt)
        .where(PaymentAttempt.invoice_id == invoice.id)
        .order_by(PaymentAttempt.updated_at.desc(), PaymentAttempt.id.desc())
        .limit(1)
    )
    if (
        last is None
        or last.status != PaymentAttemptStatus.FAILED.value
        or last.gateway != SEPA_GATEWAY
        or last.source == f"dunning:{step}"[:40]
    ):
        return False
    told = session.scalar(
        select(DunningAction.id).where(
            DunningAction.invoice_id == invoice.id,
            DunningAction.outcome == "done",
            DunningAction.step.startswith("reminder:"),
            DunningAction.at >= last.updated_at,
        )
    )
    return told is None


def _suspend(session: Session, clock: Clock, invoice: Invoice) -> None:
    org = session.get(Organization, invoice.organization_id)
    if org is None or org.status != OrgStatus.ACTIVE.value:
        return
    reason = (
        f"{DUNNING_REASON_PREFIX} invoice {invoice.number} unpaid since {invoice.due_at:%Y-%m-%d}"
        if invoice.due_at
        else f"{DUNNING_REASON_PREFIX} unpaid"
    )
    org.status = OrgStatus.SUSPENDED.value
    org.status_reason = reason
    session.flush()
    events.publish(
        session,
        events.OrganizationSuspended(
            at=clock.now(), organization_id=org.id, reason=f"unpaid invoice {invoice.number}"
        ),
    )


def _terminate(session: Session, clock: Clock, invoice: Invoice) -> None:
    """End the subscription for non-payment. The organization stays suspended."""
    now = clock.now()
    for sub in session.scalars(
        select(Subscription).where(
            Subscription.organization_id == invoice.organization_id,
            Subscription.status != SubscriptionStatus.CANCELED.value,
        )
    ):
        sub.status = SubscriptionStatus.CANCELED.value
        sub.canceled_at = now
        sub.ended_at = now
        sub.next_billing_at = None
        session.flush()
        events.publish(
            session,
            events.SubscriptionChanged(at=now, organization_id=sub.organization_id, plan_id=None),
        )


def open_invoice_ids(session: Session, now: datetime, lead_days: int) -> list[str]:
    """Open invoices whose first step may be due (due date within ``lead_days`` from now)."""
    return list(
        session.scalars(
            select(Invoice.id)
            .where(
                Invoice.status == InvoiceStatus.OPEN.value,
                Invoice.due_at <= now + timedelta(days=lead_days),
            )
            .order_by(Invoice.due_at, Invoice.id)
        )
    )


@dataclass
class DunningStatus:
    invoice_id: str
    number: str | None
    organization_id: str
    due_at: datetime | None
    amount_due: Decimal
    currency: str
    steps_done: list[str]


def dunning_status(session: Session, clock: Clock) -> list[DunningStatus]:
    now = clock.now()
    out: list[DunningStatus] = []
    for invoice in session.scalars(
        select(Invoice)
        .where(Invoice.status == InvoiceStatus.OPEN.value, Invoice.due_at <= now)
        .order_by(Invoice.due_at)
    ):
        steps = session.scalars(
            select(DunningAction.step)
            .where(DunningAction.invoice_id == invoice.id, DunningAction.outcome == "done")
            .order_by(DunningAction.at, DunningAction.step)
        ).all()
        out.append(
            DunningStatus(
                invoice_id=invoice.id,
                number=invoice.number,
                organization_id=invoice.organization_id,
                due_at=invoice.due_at,
                amount_due=invoice.amount_due,
                currency=invoice.currency,
                steps_done=list(steps),
            )
        )
    return out
