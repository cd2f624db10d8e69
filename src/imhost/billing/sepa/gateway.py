"""SEPA direct debit as a payment gateway (``sepa``), so a mandate is a saved payment method.

A mandate given in the portal is kept in ``payment_methods`` (gateway ``sepa``, the mandate's
id as the gateway's id, kind ``sepa_debit``, "SEPA Direct Debit, IBAN DE89 **** 3000"); it
becomes the default if there is none, and withdrawing the mandate removes it. Charging it
(``collection.charge_method``: Pay now, a dunning step, or the hourly ``sepa-collections``
job) queues the invoice's collection with ``queue_collection`` and answers ``processing``
with the collection date; the pain.008 export takes it to the bank, and the camt.053 import
settles the payment attempt through ``collection.apply_gateway_event`` (booked: paid; returned:
failed, with the bank's reason in plain words).

The gateway is registered at start. It has nothing to charge until the provider's creditor
settings are complete, since no mandate can be given before that.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imhost.billing.collection import apply_gateway_event
from imhost.billing.drivers.base import (
    ChargeBooks,
    GatewayEvent,
    GatewayRefund,
    PaymentGateway,
    PaymentIntent,
)
from imhost.billing.models import PaymentAttempt
from imhost.billing.sepa.collections import SEPA_GATEWAY, pending_collection, queue_collection
from imhost.billing.sepa.identifiers import mask_iban
from imhost.billing.sepa.models import MandateStatus, SepaCollection, SepaMandate
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput
from imhost.kit.ids import new_id
from imhost.kit.money import format_money

GATEWAY = SEPA_GATEWAY
METHOD_KIND = "sepa_debit"


def method_label(mandate: SepaMandate) -> str:
    return f"SEPA Direct Debit, IBAN {mask_iban(mandate.iban)}"


def collection_key(invoice_id: str, attempt: int) -> str:
    """The collection's idempotency key, the same the hourly job has always used."""
    return f"invoice:{invoice_id}:{attempt}"


def collection_notice(collection: SepaCollection, label: str | None = None) -> str:
    """What Pay now and the invoice page say while a debit waits: the amount and the date."""
    day = collection.collection_date
    source = f" from your {label}" if label else ""
    return (
        f"{format_money(collection.amount, collection.currency)} will be collected by direct "
        f"debit{source} on {day.day} {day:%B %Y}. Nothing else to do: the invoice is marked "
        "paid when your bank has paid it."
    )


def _event(
    collection: SepaCollection,
    kind: str,
    external_id: str,
    *,
    attempt_key: str,
    failure_message: str | None = None,
) -> GatewayEvent:
    return GatewayEvent(
        gateway=GATEWAY,
        kind=kind,
        external_id=external_id,
        amount=collection.amount,
        currency=collection.currency,
        invoice_reference=collection.invoice_id,
        attempt_key=attempt_key,
        failure_message=failure_message,
    )


def attempt_of(session: Session, collection: SepaCollection) -> PaymentAttempt | None:
    """The payment attempt that queued ``collection`` (its gateway id is the collection's)."""
    return session.scalar(
        select(PaymentAttempt).where(
            PaymentAttempt.gateway == GATEWAY, PaymentAttempt.external_id == collection.id
        )
    )


def _attempt_key(session: Session, collection: SepaCollection) -> str | None:
    attempt = attempt_of(session, collection)
    return attempt.idempotency_key if attempt is not None else None


def collected_through_attempt(
    session: Session, clock: Clock, collection: SepaCollection, payment_external_id: str
) -> str | None:
    """A booked collection settles its payment attempt (``payment_succeeded``; the payment
    with ``payment_external_id`` is recorded once). None when no attempt queued it (a
    collection queued by hand or before the gateway existed)."""
    key = _attempt_key(session, collection)
    if key is None:
        return None
    return apply_gateway_event(
        session,
        clock,
        _event(collection, "payment_succeeded", payment_external_id, attempt_key=key),
    )


def fail_attempt_of(
    session: Session, clock: Clock, collection: SepaCollection, message: str
) -> str | None:
    """A returned (or withdrawn) collection fails its payment attempt with ``message``;
    dunning resumes and its next reminder says why."""
    key = _attempt_key(session, collection)
    if key is None:
        return None
    return apply_gateway_event(
        session,
        clock,
        _event(
            collection, "payment_failed", collection.id, attempt_key=key, failure_message=message
        ),
    )


class SepaGateway(PaymentGateway):
    name = GATEWAY
    label = "SEPA direct debit"

    def create_payment_intent(
        self, *, amount: Decimal, currency: str, invoice_number: str, customer_ref: str
    ) -> PaymentIntent:
        raise Conflict(
            "A direct debit needs a mandate: give one on the Direct debit page, then choose "
            "Pay now."
        )

    def capture(self, external_id: str, amount: Decimal, currency: str) -> PaymentIntent:
        raise Conflict("A direct debit is collected when the bank statement shows it.")

    def refund(
        self, *, payment_external_id: str | None, amount: Decimal, currency: str, reason: str
    ) -> GatewayRefund:
        # Money collected by direct debit goes back by a transfer staff make by hand.
        return GatewayRefund(
            gateway=self.name,
            external_id=f"sepa-refund-{new_id()}",
            amount=amount,
            currency=currency,
            status="succeeded",
        )

    def parse_webhook(self, headers: dict[str, str], body: bytes) -> GatewayEvent:
        raise InvalidInput(
            "SEPA direct debit has no webhooks; staff import the bank's camt.053 statements"
        )

    def detach_method(self, method_external_id: str) -> None:
        raise Conflict(
            "A direct debit mandate is withdrawn on the Direct debit page; it is then removed "
            "here too."
        )

    def charge_saved_method(
        self,
        *,
        method_external_id: str,
        customer_external_id: str | None,
        amount: Decimal,
        currency: str,
        invoice_number: str,
        idempotency_key: str,
        books: ChargeBooks | None = None,
    ) -> PaymentIntent:
        """Queue the invoice's collection under the mandate (the one waiting, if any)."""
        if books is None:
            raise Conflict("A direct debit is queued inside a billing transaction.")
        session, invoice = books.session, books.invoice
        mandate = session.get(SepaMandate, method_external_id)
        if mandate is None or mandate.status != MandateStatus.ACTIVE.value:
            return self._failed(amount, currency, "The direct debit mandate was withdrawn.")
        collection = pending_collection(session, invoice.id)
        if collection is None:
            attempt = (
                session.scalar(
                    select(func.max(SepaCollection.attempt)).where(
                        SepaCollection.invoice_id == invoice.id
                    )
                )
                or 0
            ) + 1
            try:
                collection = queue_collection(
                    session,
                    books.clock,
                    invoice,
                    mandate,
                    idempotency_key=collection_key(invoice.id, attempt),
                    actor=books.actor,
                )
            except Conflict as exc:
                return self._failed(amount, currency, exc.detail)
        return PaymentIntent(
            gateway=self.name,
            external_id=collection.id,
            amount=collection.amount,
            currency=collection.currency,
            status="processing",
            instructions=collection_notice(collection, method_label(mandate)),
        )

    def _failed(self, amount: Decimal, currency: str, message: str) -> PaymentIntent:
        return PaymentIntent(
            gateway=self.name,
            external_id=f"sepa-refused-{new_id()}",
            amount=amount,
            currency=currency,
            status="failed",
            failure_message=message,
        )
