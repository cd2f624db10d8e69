"""Collecting an invoice through a gateway: "Pay now", dunning's charge, the gateway's word.

Every try is a ``PaymentAttempt`` whose idempotency key is unique and is sent to the gateway
too, so nothing is charged twice:

- Pay now: ``<invoice>:pay_now:<method or gateway>:<n>``, where n counts the failed tries
  of that route before. A double click or a retried request makes the same key and finds the
  attempt made the first time; a new try after a declined card is a new attempt.
- Dunning: ``<invoice>:dunning:<step>``: one charge per step, whatever the reruns.

The payment itself is recorded when the gateway confirms: at once (a card charged
off-session) or later through its webhook (``apply_gateway_event``; a SEPA debit stays
``processing`` until the bank statement shows it), idempotent on the gateway's payment id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.audit import Actor
from imhost.billing import audit
from imhost.billing.credits import add_credit, credit_balance
from imhost.billing.drivers import checkout_gateway, get_gateway
from imhost.billing.drivers.base import (
    ChargeBooks,
    GatewayEvent,
    GatewayUnavailable,
    PaymentIntent,
)
from imhost.billing.models import (
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentAttempt,
    PaymentAttemptStatus,
    PaymentMethod,
)
from imhost.billing.payment_methods import (
    default_method,
    gateway_customer,
    organization_of_customer,
    save_from_gateway,
)
from imhost.billing.payments import pay_from_credit, record_payment
from imhost.billing.repository import lock_invoice
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, NotFound

log = logging.getLogger(__name__)

PROCESSING = PaymentAttemptStatus.PROCESSING.value
REQUIRES_ACTION = PaymentAttemptStatus.REQUIRES_ACTION.value
SUCCEEDED = PaymentAttemptStatus.SUCCEEDED.value
FAILED = PaymentAttemptStatus.FAILED.value
UNREACHABLE = "The payment provider could not be reached. Nothing was charged; try again later."


@dataclass(frozen=True)
class PayOutcome:
    """What "Pay now" did: ``paid`` (settled), ``processing``, ``requires_action``
    (instructions or the gateway's page), ``failed`` (with the plain reason)."""

    status: str
    message: str
    attempt: PaymentAttempt | None = None
    redirect_url: str | None = None


def invoice_attempts(session: Session, invoice_id: str) -> list[PaymentAttempt]:
    return list(
        session.scalars(
            select(PaymentAttempt)
            .where(PaymentAttempt.invoice_id == invoice_id)
            .order_by(PaymentAttempt.created_at.desc(), PaymentAttempt.id)
        )
    )


def latest_attempt(session: Session, invoice_id: str, source: str) -> PaymentAttempt | None:
    return session.scalar(
        select(PaymentAttempt)
        .where(PaymentAttempt.invoice_id == invoice_id, PaymentAttempt.source == source)
        .order_by(PaymentAttempt.created_at.desc(), PaymentAttempt.id)
        .limit(1)
    )


def _locked_open_invoice(session: Session, invoice_id: str, organization_id: str) -> Invoice:
    invoice = lock_invoice(session, invoice_id[:64])
    if invoice is None or invoice.organization_id != organization_id:
        raise NotFound("There is no such invoice.")
    if invoice.status != InvoiceStatus.OPEN.value or invoice.amount_due <= 0:
        raise Conflict(f"Invoice {invoice.number} is {invoice.status}: nothing is due.")
    return invoice


def _claim_attempt(
    session: Session,
    clock: Clock,
    invoice: Invoice,
    *,
    key: str,
    source: str,
    gateway: str,
    method: PaymentMethod | None,
) -> tuple[PaymentAttempt, bool]:
    """The attempt under ``key``: (existing, False) or (new, True)."""
    existing = session.scalar(select(PaymentAttempt).where(PaymentAttempt.idempotency_key == key))
    if existing is not None:
        return existing, False
    now = clock.now()
    attempt = PaymentAttempt(
        organization_id=invoice.organization_id,
        invoice_id=invoice.id,
        payment_method_id=method.id if method is not None else None,
        gateway=gateway,
        idempotency_key=key,
        source=source,
        amount=invoice.amount_due,
        currency=invoice.currency,
        status=PROCESSING,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(attempt)
    except IntegrityError:
        again = session.scalar(select(PaymentAttempt).where(PaymentAttempt.idempotency_key == key))
        if again is None:
            raise
        return again, False
    return attempt, True


def _failed_tries(session: Session, invoice_id: str, prefix: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(PaymentAttempt)
            .where(
                PaymentAttempt.invoice_id == invoice_id,
                PaymentAttempt.idempotency_key.startswith(prefix, autoescape=True),
                PaymentAttempt.status == FAILED,
            )
        )
        or 0
    )


def _apply_intent(
    session: Session,
    clock: Clock,
    attempt: PaymentAttempt,
    intent: PaymentIntent,
    *,
    method_kind: str,
    actor: Actor | None,
) -> None:
    attempt.external_id = intent.external_id
    attempt.updated_at = clock.now()
    attempt.instructions = intent.instructions
    attempt.redirect_url = intent.redirect_url
    if intent.status == "succeeded":
        _succeed(session, clock, attempt, intent.external_id, method_kind, actor=actor)
    elif intent.status == "failed":
        _fail(session, clock, attempt, intent.failure_message, actor=actor)
    elif intent.status == "requires_action":
        attempt.status = REQUIRES_ACTION
    else:
        attempt.status = PROCESSING
    session.flush()


def _succeed(
    session: Session,
    clock: Clock,
    attempt: PaymentAttempt,
    external_id: str,
    method_kind: str,
    *,
    actor: Actor | None,
) -> None:
    invoice = session.get(Invoice, attempt.invoice_id)
    if invoice is not None and invoice.status not in (
        InvoiceStatus.OPEN.value,
        InvoiceStatus.PAID.value,
    ):
        _keep_as_credit(session, clock, attempt, invoice, external_id, method_kind)
        return
    payment = record_payment(
        session,
        clock,
        attempt.invoice_id,
        amount=attempt.amount,
        currency=attempt.currency,
        method=method_kind,
        driver=attempt.gateway,
        external_id=external_id,
        actor=actor,
    )
    attempt.status = SUCCEEDED
    attempt.payment_id = payment.id
    attempt.failure_message = None
    attempt.updated_at = clock.now()
    session.flush()


def _keep_as_credit(
    session: Session,
    clock: Clock,
    attempt: PaymentAttempt,
    invoice: Invoice,
    external_id: str,
    method_kind: str,
) -> None:
    """Money the gateway took for an invoice voided meanwhile: recorded (once per gateway id)
    and kept as account credit, which staff can refund; the gateway is not told "no"."""
    payment = session.scalar(
        select(Payment).where(Payment.driver == attempt.gateway, Payment.external_id == external_id)
    )
    now = clock.now()
    if payment is None:
        payment = Payment(
            organization_id=attempt.organization_id,
            invoice_id=invoice.id,
            amount=attempt.amount,
            applied_to_invoice=Decimal(0),
            currency=attempt.currency,
            method=method_kind[:32],
            driver=attempt.gateway,
            external_id=external_id,
            reference=invoice.number,
            received_at=now,
            created_at=now,
        )
        session.add(payment)
        session.flush()
        add_credit(
            session,
            clock,
            attempt.organization_id,
            attempt.amount,
            attempt.currency,
            kind="overpayment",
            description=f"Payment for invoice {invoice.number}, which was void when it arrived",
            invoice_id=invoice.id,
            payment_id=payment.id,
        )
        events.publish(
            session,
            events.PaymentEvent(
                at=now,
                organization_id=payment.organization_id,
                payment_id=payment.id,
                kind="recorded",
            ),
        )
        audit.record(
            session,
            clock,
            None,
            "payment_recorded",
            organization_id=payment.organization_id,
            target_type="payment",
            target_id=payment.id,
            amount=str(payment.amount),
            currency=payment.currency,
            invoice_id=invoice.id,
            kept_as_credit=True,
        )
    attempt.status = SUCCEEDED
    attempt.payment_id = payment.id
    attempt.updated_at = now
    session.flush()


def _fail(
    session: Session,
    clock: Clock,
    attempt: PaymentAttempt,
    message: str | None,
    *,
    actor: Actor | None,
) -> None:
    if attempt.status == FAILED:
        return
    attempt.status = FAILED
    attempt.failure_message = (message or "The payment did not go through.")[:300]
    attempt.updated_at = clock.now()
    session.flush()
    events.publish(
        session,
        events.PaymentAttemptFailed(
            at=clock.now(),
            organization_id=attempt.organization_id,
            invoice_id=attempt.invoice_id,
            attempt_id=attempt.id,
        ),
    )
    audit.record(
        session,
        clock,
        actor,
        "payment_failed",
        organization_id=attempt.organization_id,
        target_type="invoice",
        target_id=attempt.invoice_id,
        amount=str(attempt.amount),
        reason=attempt.failure_message,
        source=attempt.source,
    )


def charge_method(
    session: Session,
    clock: Clock,
    invoice: Invoice,
    method: PaymentMethod,
    *,
    key: str,
    source: str,
    actor: Actor | None = None,
    retry_when_unreachable: bool = False,
) -> PaymentAttempt:
    """Charge ``method`` for what ``invoice`` (locked by the caller) has due, once per key.

    When the gateway cannot be reached: with ``retry_when_unreachable`` the error goes up (the
    caller's transaction rolls back, and the next try sends the same key, which the gateway
    answers with the first result); otherwise the attempt fails with a plain message, and if
    the charge went through after all, the gateway's webhook records it (the key is in its
    metadata).
    """
    attempt, new = _claim_attempt(
        session, clock, invoice, key=key, source=source, gateway=method.gateway, method=method
    )
    if not new:
        return attempt
    gateway = get_gateway(method.gateway)
    try:
        intent = gateway.charge_saved_method(
            method_external_id=method.external_id,
            customer_external_id=method.customer_external_id,
            amount=attempt.amount,
            currency=attempt.currency,
            invoice_number=invoice.number or invoice.id,
            idempotency_key=key,
            books=ChargeBooks(session, clock, invoice, actor),
        )
    except GatewayUnavailable as exc:
        log.warning("charging %s for invoice %s: %s", method.gateway, invoice.id, exc)
        if retry_when_unreachable:
            raise GatewayUnavailable(UNREACHABLE) from None
        _fail(session, clock, attempt, UNREACHABLE, actor=actor)
        return attempt
    audit.record(
        session,
        clock,
        actor,
        "payment_method_charged",
        organization_id=invoice.organization_id,
        target_type="invoice",
        target_id=invoice.id,
        amount=str(attempt.amount),
        method=method.label,
        source=source,
        outcome=intent.status,
    )
    _apply_intent(session, clock, attempt, intent, method_kind=method.kind, actor=actor)
    return attempt


def pay_now(
    session: Session,
    clock: Clock,
    invoice_id: str,
    organization_id: str,
    *,
    return_url: str,
    use_saved_method: bool = True,
    actor: Actor | None = None,
) -> PayOutcome:
    """Pay an open invoice: account credit first, then the default saved method, else the
    gateway's own flow (a card page, or bank transfer instructions). ``use_saved_method=False``
    goes to the gateway's page even with a saved method (after a decline, or when the bank
    wants the card holder to confirm)."""
    invoice = _locked_open_invoice(session, invoice_id, organization_id)
    pending = session.scalar(
        select(PaymentAttempt).where(
            PaymentAttempt.invoice_id == invoice.id, PaymentAttempt.status == PROCESSING
        )
    )
    if pending is not None:
        return PayOutcome(
            PROCESSING,
            pending.instructions
            or "A payment of this invoice is under way. It is recorded as soon as it arrives.",
            pending,
        )
    if credit_balance(session, invoice.organization_id, invoice.currency) > 0:
        pay_from_credit(session, clock, invoice.id, organization_id, actor=actor)
        if invoice.status == InvoiceStatus.PAID.value:
            return PayOutcome("paid", f"Invoice {invoice.number} is paid from your account credit.")
    method = default_method(session, organization_id) if use_saved_method else None
    if method is not None:
        prefix = f"{invoice.id}:pay_now:{method.id}:"
        key = prefix + str(_failed_tries(session, invoice.id, prefix) + 1)
        attempt = charge_method(
            session,
            clock,
            invoice,
            method,
            key=key,
            source="pay_now",
            actor=actor,
            retry_when_unreachable=True,
        )
        return _outcome(invoice, attempt, method.label)
    gateway = checkout_gateway()
    prefix = f"{invoice.id}:pay_now:{gateway.name}:"
    key = prefix + str(_failed_tries(session, invoice.id, prefix) + 1)
    attempt, new = _claim_attempt(
        session, clock, invoice, key=key, source="pay_now", gateway=gateway.name, method=None
    )
    if new:
        customer = (
            gateway_customer(session, clock, organization_id, gateway.name)
            if gateway.saves_methods
            else organization_id
        )
        try:
            intent = gateway.start_payment(
                amount=attempt.amount,
                currency=attempt.currency,
                invoice_number=invoice.number or invoice.id,
                customer_ref=customer,
                idempotency_key=key,
                return_url=return_url,
            )
        except GatewayUnavailable as exc:
            log.warning("starting a payment with %s: %s", gateway.name, exc)
            raise GatewayUnavailable(UNREACHABLE) from None
        _apply_intent(session, clock, attempt, intent, method_kind="card", actor=actor)
        audit.record(
            session,
            clock,
            actor,
            "payment_started",
            organization_id=organization_id,
            target_type="invoice",
            target_id=invoice.id,
            amount=str(attempt.amount),
            gateway=gateway.name,
        )
    return _outcome(invoice, attempt, None)


def _outcome(invoice: Invoice, attempt: PaymentAttempt, label: str | None) -> PayOutcome:
    if attempt.status == SUCCEEDED:
        paid_with = f" with your {label}" if label else ""
        return PayOutcome(
            "paid", f"Thank you: invoice {invoice.number} is paid{paid_with}.", attempt
        )
    if attempt.status == FAILED:
        return PayOutcome(
            FAILED,
            f"{attempt.failure_message} Nothing was charged. Use another payment method, "
            "or try again.",
            attempt,
        )
    if attempt.status == REQUIRES_ACTION:
        return PayOutcome(
            REQUIRES_ACTION,
            attempt.instructions or "Finish the payment on the payment provider's page.",
            attempt,
            attempt.redirect_url,
        )
    return PayOutcome(
        PROCESSING,
        attempt.instructions
        or "Your payment is under way. The invoice is marked paid as soon as the money arrives.",
        attempt,
    )


def apply_gateway_event(session: Session, clock: Clock, event: GatewayEvent) -> str:
    """Act on a verified gateway webhook; returns what was done (for the log and tests).

    Idempotent: a webhook delivered twice records one payment and one method.
    """
    if event.kind == "method_saved":
        org_id = event.organization_ref
        if event.customer_external_id:
            org_id = (
                organization_of_customer(session, event.gateway, event.customer_external_id)
                or org_id
            )
        if org_id is None or event.method_external_id is None:
            return "ignored: unknown customer"
        save_from_gateway(session, clock, org_id, event.gateway, event.method_external_id)
        return "method saved"
    if event.kind not in ("payment_succeeded", "payment_failed"):
        return "ignored"
    attempt = None
    if event.attempt_key:
        attempt = session.scalar(
            select(PaymentAttempt).where(PaymentAttempt.idempotency_key == event.attempt_key)
        )
    if attempt is None:
        attempt = session.scalar(
            select(PaymentAttempt).where(
                PaymentAttempt.gateway == event.gateway,
                PaymentAttempt.external_id == event.external_id,
            )
        )
    if attempt is None or attempt.gateway != event.gateway:
        return "ignored: unknown payment"
    lock_invoice(session, attempt.invoice_id)
    if event.kind == "payment_failed":
        if attempt.status == SUCCEEDED:
            return "ignored: already paid"
        _fail(session, clock, attempt, event.failure_message, actor=None)
        return "payment failed"
    if attempt.status == SUCCEEDED:
        return "already recorded"
    attempt.external_id = event.external_id
    method = session.get(PaymentMethod, attempt.payment_method_id or "")
    _succeed(
        session,
        clock,
        attempt,
        event.external_id,
        method.kind if method is not None else "card",
        actor=None,
    )
    return "payment recorded"
