"""Importing a camt.053 bank statement: each booked transaction is matched and acted on once.

- A credit whose end-to-end id is one of our collections: the collection is collected and the
  payment recorded (``billing.payments.record_payment``, idempotent on the bank's reference).
- A return (an R-transaction, e.g. AC04, MD06, AM04) of one of our collections: the collection
  fails; if its money had been recorded, that payment is taken back and the invoice reopened
  for dunning; the customer is told why in plain words.
- A credit naming an invoice number in its remittance information, for exactly the amount
  due: that invoice's payment is recorded.
- Everything else is listed as unmatched for staff to assign by hand (or to set aside).

A transaction is stored under its bank reference (unique), so the same statement imported
twice, or a transaction repeated in the next statement, is acted on once.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, time

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.audit import Actor
from imhost.billing import audit
from imhost.billing.credits import add_credit
from imhost.billing.models import Invoice, InvoiceStatus, Payment
from imhost.billing.payments import record_payment
from imhost.billing.repository import lock_invoice
from imhost.billing.sepa.camt053 import BankTransaction, parse_camt053
from imhost.billing.sepa.gateway import (
    GATEWAY,
    attempt_of,
    collected_through_attempt,
    fail_attempt_of,
)
from imhost.billing.sepa.models import (
    CollectionStatus,
    EntryOutcome,
    SepaCollection,
    SepaStatement,
    SepaStatementEntry,
)
from imhost.billing.sepa.returns import return_reason_words
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, DomainError, InvalidInput, NotFound

log = logging.getLogger(__name__)

PAYMENT_DRIVER = "manual"
DIRECT_DEBIT_METHOD = "direct_debit"
TRANSFER_METHOD = "bank_transfer"

_INVOICE_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-/_.]{2,62}[A-Za-z0-9]")


@dataclass
class ImportResult:
    statement: SepaStatement
    already_imported: bool = False
    entries: list[SepaStatementEntry] = field(default_factory=list)
    seen_before: int = 0
    not_booked: int = 0

    def count(self, outcome: EntryOutcome) -> int:
        return sum(1 for e in self.entries if e.outcome == outcome.value)


def _external_id(bank_reference: str) -> str:
    return f"camt:{bank_reference}"[:128]


def _received_at(tx: BankTransaction, clock: Clock) -> datetime:
    if tx.booking_date is None:
        return clock.now()
    return datetime.combine(tx.booking_date, time(12, 0), tzinfo=UTC)


def import_statement(
    session: Session,
    clock: Clock,
    data: bytes,
    *,
    file_name: str = "",
    imported_by: str,
    actor: Actor | None = None,
) -> ImportResult:
    """Import a camt.053 file. The same file again returns its first import, changing nothing."""
    parsed = parse_camt053(data)
    digest = hashlib.sha256(data).hexdigest()
    earlier = session.scalar(select(SepaStatement).where(SepaStatement.digest == digest))
    if earlier is not None:
        return ImportResult(
            statement=earlier, already_imported=True, entries=statement_entries(session, earlier.id)
        )
    now = clock.now()
    statement = SepaStatement(
        digest=digest,
        message_id=parsed.message_id,
        statement_ids=", ".join(parsed.statement_ids)[:500],
        account_iban=parsed.account_iban,
        file_name=file_name[:200],
        imported_by=imported_by[:320],
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(statement)
    except IntegrityError:
        raise Conflict("this statement is being imported right now; reload in a moment") from None
    result = ImportResult(statement=statement)
    for tx in parsed.transactions:
        if not tx.booked:
            result.not_booked += 1
            continue
        exists = session.scalar(
            select(SepaStatementEntry.id).where(
                SepaStatementEntry.bank_reference == tx.bank_reference
            )
        )
        if exists is not None:
            result.seen_before += 1
            continue
        entry = _store(session, clock, statement, tx)
        if entry is None:  # another import stored it at the same moment
            result.seen_before += 1
            continue
        _match(session, clock, entry, tx, actor=actor)
        result.entries.append(entry)
    statement.entry_count = len(result.entries)
    session.flush()
    audit.record(
        session,
        clock,
        actor,
        "sepa_statement_imported",
        organization_id=None,
        target_type="sepa_statement",
        target_id=statement.id,
        message_id=parsed.message_id,
        entries=len(result.entries),
        collected=result.count(EntryOutcome.COLLECTED),
        returned=result.count(EntryOutcome.RETURNED),
        invoices_paid=result.count(EntryOutcome.INVOICE_PAID),
        unmatched=result.count(EntryOutcome.UNMATCHED),
        seen_before=result.seen_before,
    )
    return result


def _store(
    session: Session, clock: Clock, statement: SepaStatement, tx: BankTransaction
) -> SepaStatementEntry | None:
    entry = SepaStatementEntry(
        statement_id=statement.id,
        bank_reference=tx.bank_reference,
        booking_date=tx.booking_date,
        direction=tx.direction,
        amount=tx.amount,
        currency=tx.currency,
        end_to_end_id=tx.end_to_end_id,
        return_reason=tx.return_reason,
        counterparty=tx.counterparty,
        remittance=tx.remittance,
        outcome=EntryOutcome.UNMATCHED.value,
        created_at=clock.now(),
    )
    try:
        with session.begin_nested():
            session.add(entry)
    except IntegrityError:
        return None
    return entry


def _collection_for(session: Session, end_to_end_id: str | None) -> SepaCollection | None:
    if not end_to_end_id:
        return None
    return session.scalar(
        select(SepaCollection).where(SepaCollection.end_to_end_id == end_to_end_id)
    )


def _match(
    session: Session,
    clock: Clock,
    entry: SepaStatementEntry,
    tx: BankTransaction,
    *,
    actor: Actor | None,
) -> None:
    collection = _collection_for(session, tx.end_to_end_id)
    if tx.direction == "DBIT" or tx.is_return:
        if collection is not None and (tx.is_return or tx.return_reason):
            _returned(session, clock, entry, collection, tx, actor=actor)
        elif tx.is_return or tx.return_reason:
            entry.note = "A returned debit we cannot match to a collection."
        else:
            entry.outcome = EntryOutcome.IGNORED.value
            entry.note = "Money out of the account, not a customer's payment."
        return
    if collection is not None:
        _collected(session, clock, entry, collection, tx, actor=actor)
        return
    _match_invoice(session, clock, entry, tx, actor=actor)


def _collected(
    session: Session,
    clock: Clock,
    entry: SepaStatementEntry,
    collection: SepaCollection,
    tx: BankTransaction,
    *,
    actor: Actor | None,
) -> None:
    entry.collection_id = collection.id
    entry.invoice_id = collection.invoice_id
    if collection.status != CollectionStatus.EXPORTED.value:
        entry.note = f"The collection was {collection.status}, not at the bank."
        return
    if tx.amount != collection.amount or tx.currency != collection.currency:
        entry.note = "The amount differs from the collection's."
        return
    queued_by_attempt = attempt_of(session, collection) is not None
    try:
        with session.begin_nested():
            payment = record_payment(
                session,
                clock,
                collection.invoice_id,
                amount=tx.amount,
                currency=tx.currency,
                method=DIRECT_DEBIT_METHOD,
                reference=collection.end_to_end_id,
                received_at=_received_at(tx, clock),
                recorded_by="bank statement",
                driver=GATEWAY if queued_by_attempt else PAYMENT_DRIVER,
                external_id=_external_id(entry.bank_reference),
                actor=actor,
            )
            if queued_by_attempt:
                # The payment attempt that queued it is settled by the generic layer, which
                # finds the payment just recorded (same gateway and id): recorded once.
                collected_through_attempt(session, clock, collection, payment.external_id or "")
    except DomainError as exc:
        entry.note = f"Not recorded: {exc.detail}"[:500]
        return
    collection.status = CollectionStatus.COLLECTED.value
    collection.payment_id = payment.id
    collection.settled_at = clock.now()
    entry.payment_id = payment.id
    entry.outcome = EntryOutcome.COLLECTED.value
    session.flush()
    events.publish(
        session,
        events.DirectDebitEvent(
            at=clock.now(),
            organization_id=collection.organization_id,
            collection_id=collection.id,
            kind="collected",
        ),
    )


def _returned(
    session: Session,
    clock: Clock,
    entry: SepaStatementEntry,
    collection: SepaCollection,
    tx: BankTransaction,
    *,
    actor: Actor | None,
) -> None:
    entry.collection_id = collection.id
    entry.invoice_id = collection.invoice_id
    if collection.status == CollectionStatus.FAILED.value:
        entry.outcome = EntryOutcome.RETURNED.value
        entry.note = "This collection had failed already."
        return
    reopened = False
    if collection.status == CollectionStatus.COLLECTED.value and collection.payment_id:
        reopened = _take_back_payment(session, clock, collection)
    collection.status = CollectionStatus.FAILED.value
    collection.return_reason = tx.return_reason or "MS03"
    collection.settled_at = clock.now()
    entry.outcome = EntryOutcome.RETURNED.value
    entry.note = f"Returned: {return_reason_words(tx.return_reason)}."
    session.flush()
    fail_attempt_of(
        session,
        clock,
        collection,
        f"Your bank sent the direct debit back: {return_reason_words(tx.return_reason)}.",
    )
    events.publish(
        session,
        events.DirectDebitEvent(
            at=clock.now(),
            organization_id=collection.organization_id,
            collection_id=collection.id,
            kind="returned",
            reason=collection.return_reason,
        ),
    )
    audit.record(
        session,
        clock,
        actor,
        "sepa_collection_returned",
        organization_id=collection.organization_id,
        target_type="invoice",
        target_id=collection.invoice_id,
        collection_id=collection.id,
        reason=collection.return_reason,
        invoice_reopened=reopened or None,
    )


def _take_back_payment(session: Session, clock: Clock, collection: SepaCollection) -> bool:
    """The money of a collected debit went back: undo its payment; reopen the invoice."""
    payment = session.get(Payment, collection.payment_id)
    invoice = lock_invoice(session, collection.invoice_id)
    if payment is None or invoice is None:
        return False
    applied = payment.applied_to_invoice
    rest = payment.amount - applied
    payment.refunded_amount = payment.amount
    invoice.amount_paid -= applied
    reopened = False
    if (
        invoice.status == InvoiceStatus.PAID.value
        and invoice.total - invoice.amount_paid - (invoice.amount_credited) > 0
    ):
        invoice.status = InvoiceStatus.OPEN.value
        invoice.paid_at = None
        reopened = True
    if rest > 0:
        try:
            with session.begin_nested():
                add_credit(
                    session,
                    clock,
                    payment.organization_id,
                    -rest,
                    payment.currency,
                    kind="direct_debit_return",
                    description=f"Direct debit {collection.end_to_end_id} was returned",
                    invoice_id=invoice.id,
                    payment_id=payment.id,
                )
        except DomainError:
            # The credit was spent already; the reopened invoice shows what is due.
            log.info("credit of returned direct debit %s was spent", collection.id)
    session.flush()
    events.publish(
        session,
        events.PaymentEvent(
            at=clock.now(),
            organization_id=payment.organization_id,
            payment_id=payment.id,
            kind="returned",
        ),
    )
    if reopened:
        events.publish(
            session,
            events.InvoiceEvent(
                at=clock.now(),
                organization_id=invoice.organization_id,
                invoice_id=invoice.id,
                kind="reopened",
            ),
        )
    return reopened


def _invoices_named(session: Session, text: str) -> list[Invoice]:
    tokens = {t.upper() for t in _INVOICE_TOKEN.findall(text)}
    tokens |= set(_INVOICE_TOKEN.findall(text))
    if not tokens:
        return []
    return list(session.scalars(select(Invoice).where(Invoice.number.in_(tokens))))


def _match_invoice(
    session: Session,
    clock: Clock,
    entry: SepaStatementEntry,
    tx: BankTransaction,
    *,
    actor: Actor | None,
) -> None:
    named = _invoices_named(session, f"{tx.remittance} {tx.end_to_end_id or ''}")
    if not named:
        entry.note = "No invoice number in the payment reference."
        return
    if len(named) > 1:
        entry.note = "The payment reference names several invoices."
        return
    invoice = named[0]
    entry.invoice_id = invoice.id
    if invoice.status != InvoiceStatus.OPEN.value:
        entry.note = f"Invoice {invoice.number} is {invoice.status}."
        return
    if tx.currency != invoice.currency or tx.amount != invoice.amount_due:
        entry.note = f"The amount differs from what invoice {invoice.number} has due."
        return
    if not _pay(session, clock, entry, invoice, tx, actor=actor):
        return
    entry.outcome = EntryOutcome.INVOICE_PAID.value


def _pay(
    session: Session,
    clock: Clock,
    entry: SepaStatementEntry,
    invoice: Invoice,
    tx: BankTransaction | None,
    *,
    actor: Actor | None,
    recorded_by: str = "bank statement",
) -> bool:
    try:
        with session.begin_nested():
            payment = record_payment(
                session,
                clock,
                invoice.id,
                amount=entry.amount,
                currency=entry.currency,
                method=TRANSFER_METHOD,
                reference=(entry.remittance or invoice.number or "")[:200],
                received_at=_received_at(tx, clock)
                if tx is not None
                else (
                    datetime.combine(entry.booking_date, time(12, 0), tzinfo=UTC)
                    if entry.booking_date
                    else clock.now()
                ),
                recorded_by=recorded_by,
                driver=PAYMENT_DRIVER,
                external_id=_external_id(entry.bank_reference),
                actor=actor,
            )
    except DomainError as exc:
        entry.note = f"Not recorded: {exc.detail}"[:500]
        return False
    entry.payment_id = payment.id
    entry.invoice_id = invoice.id
    session.flush()
    return True


def assign_entry(
    session: Session,
    clock: Clock,
    entry_id: str,
    invoice_number: str,
    *,
    resolved_by: str,
    actor: Actor | None = None,
) -> SepaStatementEntry:
    """Staff assign an unmatched credit to an invoice: its payment is recorded."""
    entry = get_entry(session, entry_id)
    if entry.outcome != EntryOutcome.UNMATCHED.value:
        raise Conflict("This bank entry is settled already.")
    if entry.direction != "CRDT":
        raise Conflict("Only money received can be assigned to an invoice.")
    number = invoice_number.strip()
    invoice = session.scalar(
        select(Invoice).where((Invoice.number == number) | (Invoice.number == number.upper()))
    )
    if invoice is None:
        raise InvalidInput(f"There is no invoice {number or '(empty)'}.", field="invoice")
    if invoice.status != InvoiceStatus.OPEN.value:
        raise InvalidInput(f"Invoice {invoice.number} is {invoice.status}.", field="invoice")
    if invoice.currency != entry.currency:
        raise InvalidInput(
            f"Invoice {invoice.number} is in {invoice.currency}, the money in {entry.currency}.",
            field="invoice",
        )
    if not _pay(
        session,
        clock,
        entry,
        invoice,
        None,
        actor=actor,
        recorded_by=resolved_by,
    ):
        raise Conflict(entry.note)
    entry.outcome = EntryOutcome.ASSIGNED.value
    entry.resolved_by = resolved_by[:320]
    entry.note = f"Assigned to invoice {invoice.number} by {resolved_by}."[:500]
    session.flush()
    audit.record(
        session,
        clock,
        actor,
        "sepa_entry_assigned",
        organization_id=invoice.organization_id,
        target_type="sepa_statement_entry",
        target_id=entry.id,
        invoice_id=invoice.id,
        amount=str(entry.amount),
    )
    return entry


def ignore_entry(
    session: Session,
    clock: Clock,
    entry_id: str,
    *,
    reason: str,
    resolved_by: str,
    actor: Actor | None = None,
) -> SepaStatementEntry:
    """Staff set an unmatched entry aside (not a customer's payment)."""
    entry = get_entry(session, entry_id)
    if entry.outcome != EntryOutcome.UNMATCHED.value:
        raise Conflict("This bank entry is settled already.")
    if not reason.strip():
        raise InvalidInput("Say why this entry is set aside.", field="reason")
    entry.outcome = EntryOutcome.IGNORED.value
    entry.resolved_by = resolved_by[:320]
    entry.note = reason.strip()[:500]
    session.flush()
    audit.record(
        session,
        clock,
        actor,
        "sepa_entry_set_aside",
        organization_id=None,
        target_type="sepa_statement_entry",
        target_id=entry.id,
        reason=entry.note,
    )
    return entry


def get_entry(session: Session, entry_id: str) -> SepaStatementEntry:
    entry = session.get(SepaStatementEntry, entry_id)
    if entry is None:
        raise NotFound("no such bank entry")
    return entry


def get_statement(session: Session, statement_id: str) -> SepaStatement:
    statement = session.get(SepaStatement, statement_id)
    if statement is None:
        raise NotFound("no such bank statement")
    return statement


def statement_entries(session: Session, statement_id: str) -> list[SepaStatementEntry]:
    return list(
        session.scalars(
            select(SepaStatementEntry)
            .where(SepaStatementEntry.statement_id == statement_id)
            .order_by(SepaStatementEntry.created_at, SepaStatementEntry.bank_reference)
        )
    )


def list_statements(session: Session, limit: int = 50) -> list[SepaStatement]:
    return list(
        session.scalars(
            select(SepaStatement).order_by(SepaStatement.created_at.desc()).limit(limit)
        )
    )


def unmatched_entries(session: Session, limit: int = 200) -> list[SepaStatementEntry]:
    return list(
        session.scalars(
            select(SepaStatementEntry)
            .where(SepaStatementEntry.outcome == EntryOutcome.UNMATCHED.value)
            .order_by(SepaStatementEntry.booking_date, SepaStatementEntry.created_at)
            .limit(limit)
        )
    )
