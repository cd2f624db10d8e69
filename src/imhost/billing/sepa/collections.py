"""Collections: one direct debit per invoice and attempt, never two at once.

``queue_collection`` is what a generic payment-method layer calls for an invoice whose
customer pays by SEPA direct debit. The collection date respects the pre-notification lead
time (the customer is told amount and date that many days ahead) and the banking calendar;
the export later moves it forward if the file goes to the bank too late for it (D-2).
"""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.audit import Actor
from imhost.billing import audit
from imhost.billing.collection import charge_method
from imhost.billing.models import (
    Invoice,
    InvoiceStatus,
    PaymentAttempt,
    PaymentAttemptStatus,
    PaymentMethod,
    PaymentMethodStatus,
)
from imhost.billing.repository import lock_invoice
from imhost.billing.sepa.calendar import earliest_collection_date, next_banking_day
from imhost.billing.sepa.identifiers import sepa_id
from imhost.billing.sepa.models import (
    PENDING_COLLECTION,
    CollectionStatus,
    MandateStatus,
    SepaCollection,
    SepaMandate,
    SequenceType,
)
from imhost.billing.sepa.settings import ready_creditor
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput

SEPA_CURRENCY = "EUR"
SEPA_GATEWAY = "sepa"  # the payment gateway of direct debit (``sepa.gateway``)


def end_to_end_id(invoice_number: str, attempt: int) -> str:
    """The end-to-end id of an invoice's collection: its number, and the attempt after the
    first (``INV-2026-000042``, ``INV-2026-000042-R2``); at most 35 characters."""
    suffix = "" if attempt == 1 else f"-R{attempt}"
    return sepa_id(invoice_number, 35 - len(suffix)) + suffix


def collection_date_for(
    today: date, due: date | None, pre_notification_days: int, requested: date | None = None
) -> date:
    """The earliest date the rules allow, not before the invoice's due date (or ``requested``):
    pre-notification lead time, then D-2 for the file, then a banking day."""
    earliest = max(today + timedelta(days=pre_notification_days), earliest_collection_date(today))
    wanted = max(d for d in (earliest, due, requested) if d is not None)
    return next_banking_day(wanted)


def next_sequence_type(session: Session, mandate_id: str) -> SequenceType:
    """FRST until a collection under the mandate went to the bank and was not returned."""
    used = session.scalar(
        select(func.count())
        .select_from(SepaCollection)
        .where(
            SepaCollection.mandate_id == mandate_id,
            SepaCollection.status.in_([*PENDING_COLLECTION, CollectionStatus.COLLECTED.value]),
        )
    )
    return SequenceType.RECURRING if used else SequenceType.FIRST


def pending_collection(session: Session, invoice_id: str) -> SepaCollection | None:
    return session.scalar(
        select(SepaCollection).where(
            SepaCollection.invoice_id == invoice_id,
            SepaCollection.status.in_(PENDING_COLLECTION),
        )
    )


def queue_collection(
    session: Session,
    clock: Clock,
    invoice: Invoice,
    mandate: SepaMandate,
    *,
    idempotency_key: str,
    requested_date: date | None = None,
    actor: Actor | None = None,
) -> SepaCollection:
    """Queue the direct debit of ``invoice``'s amount due under ``mandate``.

    The same ``idempotency_key`` gives back the same collection. An invoice has at most one
    collection waiting or at the bank; a new attempt is possible once the previous one failed.
    """
    key = idempotency_key.strip()
    if not key or len(key) > 128:
        raise InvalidInput("an idempotency key is 1 to 128 characters", field="idempotency_key")
    existing = session.scalar(select(SepaCollection).where(SepaCollection.idempotency_key == key))
    if existing is not None:
        if existing.invoice_id != invoice.id:
            raise Conflict("this idempotency key was used for another invoice")
        return existing
    if invoice.status != InvoiceStatus.OPEN.value or invoice.amount_due <= 0:
        raise Conflict(f"invoice {invoice.number or invoice.id} has nothing to collect")
    if invoice.currency != SEPA_CURRENCY:
        raise Conflict(
            f"SEPA direct debit collects euros; invoice {invoice.number} is in {invoice.currency}"
        )
    if mandate.organization_id != invoice.organization_id:
        raise Conflict("the mandate is not the invoice's customer's")
    if mandate.status != MandateStatus.ACTIVE.value:
        raise Conflict("the mandate is revoked")
    if pending_collection(session, invoice.id) is not None:
        raise Conflict(f"invoice {invoice.number} is being collected already")
    creditor = ready_creditor(session)
    now = clock.now()
    attempt = (
        session.scalar(
            select(func.max(SepaCollection.attempt)).where(SepaCollection.invoice_id == invoice.id)
        )
        or 0
    ) + 1
    collection = SepaCollection(
        organization_id=invoice.organization_id,
        invoice_id=invoice.id,
        mandate_id=mandate.id,
        attempt=attempt,
        idempotency_key=key,
        end_to_end_id=end_to_end_id(invoice.number or invoice.id, attempt),
        amount=invoice.amount_due,
        currency=invoice.currency,
        sequence_type=next_sequence_type(session, mandate.id).value,
        collection_date=collection_date_for(
            now.date(),
            invoice.due_at.date() if invoice.due_at else None,
            creditor.pre_notification_days,
            requested_date,
        ),
        status=CollectionStatus.QUEUED.value,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(collection)
    except IntegrityError:
        # A concurrent call with the same key (or for the same attempt) won the race.
        winner = session.scalar(select(SepaCollection).where(SepaCollection.idempotency_key == key))
        if winner is not None and winner.invoice_id == invoice.id:
            return winner
        raise Conflict(f"invoice {invoice.number} is being collected already") from None
    events.publish(
        session,
        events.DirectDebitEvent(
            at=now,
            organization_id=invoice.organization_id,
            collection_id=collection.id,
            kind="scheduled",
        ),
    )
    audit.record(
        session,
        clock,
        actor,
        "sepa_collection_queued",
        organization_id=invoice.organization_id,
        target_type="invoice",
        target_id=invoice.id,
        collection_id=collection.id,
        end_to_end_id=collection.end_to_end_id,
        amount=str(collection.amount),
        collection_date=collection.collection_date.isoformat(),
        sequence_type=collection.sequence_type,
    )
    return collection


def queue_due_collections(
    session: Session, clock: Clock, *, actor: Actor | None = None
) -> list[SepaCollection]:
    """Announce a debit for every open euro invoice of a customer whose default payment
    method is a direct debit mandate, early enough to collect it on its due date.

    It goes through the generic layer (``collection.charge_method``), like Pay now and
    dunning, so every collection has its payment attempt and no path queues a second one: an
    invoice with a payment under way, or with a collection waiting or failed (dunning retries
    a failed one at its next step), is left alone. Safe to run again: the attempt's key is the
    collection's, ``invoice:<id>:<attempt>``.
    """
    rows = session.execute(
        select(Invoice, PaymentMethod)
        .join(
            PaymentMethod,
            (PaymentMethod.organization_id == Invoice.organization_id)
            & (PaymentMethod.status == PaymentMethodStatus.ACTIVE.value)
            & PaymentMethod.is_default.is_(True)
            & (PaymentMethod.gateway == SEPA_GATEWAY),
        )
        .where(
            Invoice.status == InvoiceStatus.OPEN.value,
            Invoice.currency == SEPA_CURRENCY,
            ~select(SepaCollection.id)
            .where(
                SepaCollection.invoice_id == Invoice.id,
                SepaCollection.status.in_([*PENDING_COLLECTION, CollectionStatus.FAILED.value]),
            )
            .exists(),
            ~select(PaymentAttempt.id)
            .where(
                PaymentAttempt.invoice_id == Invoice.id,
                PaymentAttempt.status == PaymentAttemptStatus.PROCESSING.value,
            )
            .exists(),
        )
        .order_by(Invoice.issued_at, Invoice.id)
    ).all()
    queued: list[SepaCollection] = []
    for invoice, method in rows:
        locked = lock_invoice(session, invoice.id)
        if locked is None or locked.status != InvoiceStatus.OPEN.value or locked.amount_due <= 0:
            continue
        attempts = session.scalar(
            select(func.count())
            .select_from(SepaCollection)
            .where(SepaCollection.invoice_id == invoice.id)
        )
        attempt = charge_method(
            session,
            clock,
            locked,
            method,
            key=f"invoice:{invoice.id}:{(attempts or 0) + 1}",
            source="direct_debit_schedule",
            actor=actor,
        )
        collection = session.get(SepaCollection, attempt.external_id or "")
        if collection is not None and collection.status in PENDING_COLLECTION:
            queued.append(collection)
    return queued


def cancel_settled_collections(session: Session, clock: Clock) -> int:
    """Withdraw queued collections of invoices that were paid otherwise or voided."""
    rows = session.execute(
        select(SepaCollection, Invoice)
        .join(Invoice, Invoice.id == SepaCollection.invoice_id)
        .where(
            SepaCollection.status == CollectionStatus.QUEUED.value,
            Invoice.status != InvoiceStatus.OPEN.value,
        )
    ).all()
    for collection, invoice in rows:
        collection.status = CollectionStatus.CANCELLED.value
        audit.record(
            session,
            clock,
            None,
            "sepa_collection_cancelled",
            organization_id=collection.organization_id,
            target_type="invoice",
            target_id=invoice.id,
            collection_id=collection.id,
            reason=f"invoice is {invoice.status}",
        )
    session.flush()
    return len(rows)


def list_collections(
    session: Session,
    *,
    organization_id: str | None = None,
    status: str | None = None,
    limit: int = 200,
) -> list[SepaCollection]:
    query = select(SepaCollection)
    if organization_id:
        query = query.where(SepaCollection.organization_id == organization_id)
    if status:
        query = query.where(SepaCollection.status == status)
    return list(
        session.scalars(
            query.order_by(
                SepaCollection.collection_date.desc(), SepaCollection.created_at.desc()
            ).limit(limit)
        )
    )
