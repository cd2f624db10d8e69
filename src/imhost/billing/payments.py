"""Payments, credit notes and refunds.

- A payment is applied to its invoice up to the amount due; any rest becomes account credit.
- A credit note reduces a finalized invoice (whole or per line, with a reason). The part of
  it the customer still owed is cancelled; the part already paid becomes account credit, or
  is refunded to the original payment method.
- A refund pays account credit back through the gateway of an earlier payment.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.audit import Actor
from imhost.accounts.models import Organization, OrgStatus
from imhost.billing import audit
from imhost.billing.credits import add_credit, credit_balance
from imhost.billing.drivers import get_gateway
from imhost.billing.invoicing import (
    apply_account_credit,
    get_invoice,
    invoice_lines,
    settle_if_paid,
)
from imhost.billing.models import (
    CreditNote,
    CreditNoteLine,
    Invoice,
    InvoiceStatus,
    Payment,
    Refund,
)
from imhost.billing.repository import lock_invoice
from imhost.billing.settings import allocate_number
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput, NotFound
from imhost.kit.money import check_currency, round_minor, to_decimal

DUNNING_REASON_PREFIX = "dunning:"


PAYMENT_METHOD_LABELS: dict[str, str] = {
    "bank_transfer": "Bank transfer",
    "account_credit": "Account credit",
    "card": "Card",
    "cash": "Cash",
    "cheque": "Cheque",
    "other": "Other",
}
"""What customers read for a payment's ``method``."""


def payment_method_label(method: str) -> str:
    return PAYMENT_METHOD_LABELS.get(method, method.replace("_", " ").capitalize())


def _money(amount: Decimal | str, currency: str, field: str = "amount") -> Decimal:
    try:
        check_currency(currency)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="currency") from None
    try:
        value = to_decimal(amount)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(str(exc), field=field) from None
    if value <= 0:
        raise InvalidInput("an amount is more than zero", field=field)
    if round_minor(value, currency) != value:
        raise InvalidInput(f"{value} has more decimals than {currency} allows", field=field)
    return value


def _open_invoice(session: Session, invoice_id: str, organization_id: str | None) -> Invoice:
    invoice = lock_invoice(session, invoice_id)
    if invoice is None or (organization_id and invoice.organization_id != organization_id):
        raise NotFound(f"no invoice {invoice_id!r}")
    return invoice


def record_payment(
    session: Session,
    clock: Clock,
    invoice_id: str,
    *,
    amount: Decimal | str,
    currency: str,
    method: str = "bank_transfer",
    reference: str | None = None,
    received_at: datetime | None = None,
    recorded_by: str | None = None,
    driver: str = "manual",
    external_id: str | None = None,
    actor: Actor | None = None,
) -> Payment:
    """Record money received for an invoice (staff, or a gateway's webhook).

    Partial payments leave the rest due; an overpayment becomes account credit. With a
    gateway ``external_id`` the same payment recorded twice is recorded once.
    """
    invoice = _open_invoice(session, invoice_id, None)
    value = _money(amount, currency)
    if currency != invoice.currency:
        raise InvalidInput(
            f"invoice {invoice.number} is in {invoice.currency}, not {currency}", field="currency"
        )
    if invoice.status not in (InvoiceStatus.OPEN.value, InvoiceStatus.PAID.value):
        raise Conflict(f"a {invoice.status} invoice takes no payment")
    if external_id is not None:
        existing = session.scalar(
            select(Payment).where(Payment.driver == driver, Payment.external_id == external_id)
        )
        if existing is not None:
            return existing
    get_gateway(driver)
    if received_at is not None and received_at.tzinfo is None:
        raise InvalidInput("received_at needs a time zone", field="received_at")
    now = clock.now()
    applied = min(value, invoice.amount_due)
    payment = Payment(
        organization_id=invoice.organization_id,
        invoice_id=invoice.id,
        amount=value,
        applied_to_invoice=applied,
        currency=currency,
        method=method[:32],
        driver=driver,
        external_id=external_id,
        reference=(reference or invoice.number or "")[:200],
        received_at=received_at or now,
        recorded_by=recorded_by,
        created_at=now,
    )
    session.add(payment)
    session.flush()
    invoice.amount_paid += applied
    if value > applied:
        add_credit(
            session,
            clock,
            invoice.organization_id,
            value - applied,
            currency,
            kind="overpayment",
            description=f"Overpayment of invoice {invoice.number}",
            invoice_id=invoice.id,
            payment_id=payment.id,
            created_by=recorded_by,
        )
    events.publish(
        session,
        events.PaymentEvent(
            at=now, organization_id=invoice.organization_id, payment_id=payment.id, kind="recorded"
        ),
    )
    if settle_if_paid(session, invoice, now):
        reactivate_if_settled(session, clock, invoice.organization_id)
    session.flush()
    audit.record(
        session,
        clock,
        actor,
        "payment_recorded",
        organization_id=payment.organization_id,
        target_type="payment",
        target_id=payment.id,
        amount=str(payment.amount),
        currency=payment.currency,
        invoice_id=invoice_id,
    )
    return payment


def pay_from_credit(
    session: Session,
    clock: Clock,
    invoice_id: str,
    organization_id: str | None = None,
    *,
    actor: Actor | None = None,
) -> Payment:
    invoice = _open_invoice(session, invoice_id, organization_id)
    if invoice.status != InvoiceStatus.OPEN.value:
        raise Conflict(f"invoice {invoice.number} is {invoice.status}; nothing is due")
    if credit_balance(session, invoice.organization_id, invoice.currency) <= 0:
        raise Conflict(f"there is no account credit in {invoice.currency}")
    payment = apply_account_credit(session, clock, invoice)
    assert payment is not None
    if invoice.status == InvoiceStatus.PAID.value:
        reactivate_if_settled(session, clock, invoice.organization_id)
    audit.record(
        session,
        clock,
        actor,
        "paid_from_credit",
        organization_id=payment.organization_id,
        target_type="invoice",
        target_id=invoice_id,
        amount=str(payment.amount),
    )
    return payment


def list_payments(session: Session, organization_id: str) -> list[Payment]:
    return list(
        session.scalars(
            select(Payment)
            .where(Payment.organization_id == organization_id)
            .order_by(Payment.received_at.desc(), Payment.id)
        )
    )


def reactivate_if_settled(session: Session, clock: Clock, organization_id: str) -> bool:
    """Lift a dunning suspension once no invoice of the organization is overdue past it."""
    org = session.get(Organization, organization_id)
    if org is None or org.status != OrgStatus.SUSPENDED.value:
        return False
    if not (org.status_reason or "").startswith(DUNNING_REASON_PREFIX):
        return False  # suspended by staff for another reason: staff lift it
    still_open = session.scalar(
        select(Invoice.id).where(
            Invoice.organization_id == organization_id,
            Invoice.status == InvoiceStatus.OPEN.value,
            Invoice.due_at < clock.now(),
        )
    )
    if still_open is not None:
        return False
    org.status = OrgStatus.ACTIVE.value
    org.status_reason = None
    session.flush()
    events.publish(
        session, events.OrganizationReactivated(at=clock.now(), organization_id=organization_id)
    )
    return True


# --- credit notes -------------------------------------------------------------------------


def issue_credit_note(
    session: Session,
    clock: Clock,
    invoice_id: str,
    *,
    reason: str,
    lines: dict[str, Decimal | str] | None = None,
    refund_to: str = "credit",
    created_by: str | None = None,
    actor: Actor | None = None,
) -> CreditNote:
    """Credit a finalized invoice, in full (``lines=None``) or per line (line id -> amount).

    Per line, at most the line's amount can be credited (less what earlier credit notes took).
    Tax is credited in proportion: a full credit note takes the whole invoice total.
    """
    invoice = _open_invoice(session, invoice_id, None)
    if invoice.status not in (InvoiceStatus.OPEN.value, InvoiceStatus.PAID.value):
        raise Conflict(f"a {invoice.status} invoice cannot be credited")
    if not reason.strip():
        raise InvalidInput("say why the invoice is credited", field="reason")
    if refund_to not in ("credit", "original"):
        raise InvalidInput("refund_to is 'credit' or 'original'", field="refund_to")
    cur = invoice.currency
    creditable = invoice.total - invoice.amount_credited
    if creditable <= 0:
        raise Conflict(f"invoice {invoice.number} is fully credited already")
    note_lines: list[tuple[str | None, str, Decimal]] = []
    if lines is None:
        note_lines.append((None, f"Credit of invoice {invoice.number}", creditable))
        total = creditable
    else:
        if not lines:
            raise InvalidInput("name at least one line to credit", field="lines")
        by_id = {line.id: line for line in invoice_lines(session, invoice.id)}
        credited_before = _credited_per_line(session, invoice.id)
        net = Decimal(0)
        for line_id, raw in lines.items():
            line = by_id.get(line_id)
            if line is None or line.kind in ("tax", "discount", "carried_to_credit"):
                raise InvalidInput(f"{line_id!r} is not a creditable line", field="lines")
            value = _money(raw, cur, "lines")
            left = line.amount - credited_before.get(line_id, Decimal(0))
            if value > left:
                raise InvalidInput(
                    f"line {line.position} has {left} {cur} left to credit, not {value}",
                    field="lines",
                )
            note_lines.append((line_id, f"Credit: {line.description}", value))
            net += value
        tax_share = Decimal(0)
        if invoice.tax_total and not invoice.prices_include_tax and invoice.subtotal > 0:
            tax_share = round_minor(invoice.tax_total * net / invoice.subtotal, cur)
            note_lines.append((None, "Tax on the credited lines", tax_share))
        total = min(net + tax_share, creditable)
    now = clock.now()
    number = allocate_number(session, "credit_note", now).number
    unpaid = max(invoice.total - invoice.amount_paid - invoice.amount_credited, Decimal(0))
    to_invoice = min(total, unpaid)
    rest = total - to_invoice
    note = CreditNote(
        number=number,
        invoice_id=invoice.id,
        organization_id=invoice.organization_id,
        currency=cur,
        reason=reason.strip()[:500],
        total=total,
        applied_to_invoice=to_invoice,
        created_by=created_by,
        created_at=now,
    )
    session.add(note)
    session.flush()
    for note_line_id, description, amount in note_lines:
        session.add(
            CreditNoteLine(
                credit_note_id=note.id,
                invoice_line_id=note_line_id,
                description=description[:500],
                amount=amount,
            )
        )
    invoice.amount_credited += total
    if rest > 0:
        add_credit(
            session,
            clock,
            invoice.organization_id,
            rest,
            cur,
            kind="credit_note",
            description=f"Credit note {number} on invoice {invoice.number}",
            invoice_id=invoice.id,
            credit_note_id=note.id,
            created_by=created_by,
        )
        note.to_credit = rest
        if refund_to == "original":
            payment = session.scalar(
                select(Payment)
                .where(Payment.invoice_id == invoice.id, Payment.method != "account_credit")
                .order_by(Payment.received_at.desc())
            )
            if payment is None:
                raise Conflict("no payment by a payment method to refund to; keep it as credit")
            refundable = min(rest, payment.amount - payment.refunded_amount)
            if refundable > 0:
                refund_credit(
                    session,
                    clock,
                    payment.id,
                    amount=refundable,
                    reason=f"credit note {number}: {reason.strip()[:200]}",
                    created_by=created_by,
                    actor=actor,
                )
                note.refunded = refundable
                note.to_credit = rest - refundable
    session.flush()
    if settle_if_paid(session, invoice, now):
        reactivate_if_settled(session, clock, invoice.organization_id)
    events.publish(
        session,
        events.CreditNoteIssued(
            at=now,
            organization_id=invoice.organization_id,
            credit_note_id=note.id,
            invoice_id=invoice.id,
        ),
    )
    audit.record(
        session,
        clock,
        actor,
        "credit_note_issued",
        organization_id=note.organization_id,
        target_type="credit_note",
        target_id=note.id,
        number=note.number,
        total=str(note.total),
        reason=reason,
    )
    return note


def _credited_per_line(session: Session, invoice_id: str) -> dict[str, Decimal]:
    rows = session.execute(
        select(CreditNoteLine.invoice_line_id, CreditNoteLine.amount)
        .join(CreditNote, CreditNote.id == CreditNoteLine.credit_note_id)
        .where(CreditNote.invoice_id == invoice_id, CreditNoteLine.invoice_line_id.is_not(None))
    ).all()
    out: dict[str, Decimal] = {}
    for line_id, amount in rows:
        if line_id is not None:
            out[line_id] = out.get(line_id, Decimal(0)) + amount
    return out


def list_credit_notes(session: Session, organization_id: str) -> list[CreditNote]:
    return list(
        session.scalars(
            select(CreditNote)
            .where(CreditNote.organization_id == organization_id)
            .order_by(CreditNote.created_at.desc())
        )
    )


# --- refunds --------------------------------------------------------------------------------


def refund_credit(
    session: Session,
    clock: Clock,
    payment_id: str,
    *,
    amount: Decimal | str,
    reason: str,
    created_by: str | None = None,
    actor: Actor | None = None,
) -> Refund:
    """Pay account credit back to the customer through the gateway of ``payment_id``."""
    payment = session.scalar(select(Payment).where(Payment.id == payment_id).with_for_update())
    if payment is None:
        raise NotFound(f"no payment {payment_id!r}")
    if payment.method == "account_credit":
        raise InvalidInput("a payment from account credit has no method to refund to")
    value = _money(amount, payment.currency)
    if not reason.strip():
        raise InvalidInput("say why the money is refunded", field="reason")
    if value > payment.amount - payment.refunded_amount:
        raise InvalidInput(
            f"at most {payment.amount - payment.refunded_amount} {payment.currency} of this "
            "payment can be refunded",
            field="amount",
        )
    balance = credit_balance(session, payment.organization_id, payment.currency)
    if value > balance:
        raise Conflict(
            f"only account credit is refunded: {balance} {payment.currency} available; "
            "issue a credit note first"
        )
    result = get_gateway(payment.driver).refund(
        payment_external_id=payment.external_id,
        amount=value,
        currency=payment.currency,
        reason=reason,
    )
    now = clock.now()
    refund = Refund(
        payment_id=payment.id,
        organization_id=payment.organization_id,
        amount=value,
        currency=payment.currency,
        destination="original",
        reason=reason.strip()[:500],
        external_id=result.external_id,
        created_by=created_by,
        created_at=now,
    )
    session.add(refund)
    session.flush()
    payment.refunded_amount += value
    add_credit(
        session,
        clock,
        payment.organization_id,
        -value,
        payment.currency,
        kind="refund",
        description=f"Refunded to the original payment method ({payment.method})",
        payment_id=payment.id,
        created_by=created_by,
    )
    events.publish(
        session,
        events.PaymentEvent(
            at=now, organization_id=payment.organization_id, payment_id=payment.id, kind="refunded"
        ),
    )
    audit.record(
        session,
        clock,
        actor,
        "refund_made",
        organization_id=refund.organization_id,
        target_type="refund",
        target_id=refund.id,
        amount=str(refund.amount),
        reason=reason,
    )
    return refund


def invoice_payments(session: Session, invoice_id: str) -> list[Payment]:
    return list(
        session.scalars(
            select(Payment).where(Payment.invoice_id == invoice_id).order_by(Payment.received_at)
        )
    )


__all__ = [
    "get_invoice",
    "issue_credit_note",
    "list_credit_notes",
    "list_payments",
    "pay_from_credit",
    "reactivate_if_settled",
    "record_payment",
    "refund_credit",
]
