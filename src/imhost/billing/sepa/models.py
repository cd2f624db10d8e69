"""Tables of SEPA direct debit: the creditor's settings, mandates, collections, the
exported pain.008 batches and the imported camt.053 statements with their entries."""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Date, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from imhost.db.base import Base, CreatedMixin, IdMixin
from imhost.db.types import Amount, UtcDateTime


class MandateStatus(enum.StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class CollectionStatus(enum.StrEnum):
    QUEUED = "queued"  # waiting for the next export
    EXPORTED = "exported"  # in a pain.008 batch handed to the bank
    COLLECTED = "collected"  # the bank statement shows the money
    FAILED = "failed"  # returned or rejected by the debtor's bank
    CANCELLED = "cancelled"  # withdrawn before export (invoice paid otherwise, mandate revoked)


PENDING_COLLECTION = (CollectionStatus.QUEUED.value, CollectionStatus.EXPORTED.value)


class SequenceType(enum.StrEnum):
    """EPC SDD Core rulebook: the first collection under a mandate, then recurring ones."""

    FIRST = "FRST"
    RECURRING = "RCUR"


class EntryOutcome(enum.StrEnum):
    COLLECTED = "collected"  # credit for one of our collections
    RETURNED = "returned"  # an R-transaction for one of our collections
    INVOICE_PAID = "invoice_paid"  # a bank transfer naming an invoice
    UNMATCHED = "unmatched"  # waits for staff
    ASSIGNED = "assigned"  # staff assigned it to an invoice by hand
    IGNORED = "ignored"  # staff marked it as not a customer payment


class SepaSettings(IdMixin, Base):
    """The provider as SEPA creditor (one row, key ``default``)."""

    __tablename__ = "sepa_settings"

    key: Mapped[str] = mapped_column(String(32), unique=True, default="default")
    creditor_name: Mapped[str] = mapped_column(String(70), default="")
    creditor_id: Mapped[str] = mapped_column(String(35), default="")
    creditor_iban: Mapped[str] = mapped_column(String(34), default="")
    creditor_bic: Mapped[str | None] = mapped_column(String(11), default=None)
    pre_notification_days: Mapped[int] = mapped_column(Integer, default=14)


class SepaMandate(IdMixin, CreatedMixin, Base):
    """A SEPA Core mandate a customer gave in the portal (EPC SDD Core rulebook, 4.7.2)."""

    __tablename__ = "sepa_mandates"
    __table_args__ = (Index("ix_sepa_mandates_org_status", "organization_id", "status"),)

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    reference: Mapped[str] = mapped_column(String(35), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=MandateStatus.ACTIVE.value)
    account_holder: Mapped[str] = mapped_column(String(70))
    iban: Mapped[str] = mapped_column(String(34))
    bic: Mapped[str | None] = mapped_column(String(11), default=None)
    creditor_name: Mapped[str] = mapped_column(String(70))
    creditor_id: Mapped[str] = mapped_column(String(35))
    mandate_text: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    signed_by: Mapped[str] = mapped_column(String(320))
    signed_from: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    revoked_by: Mapped[str | None] = mapped_column(String(320), default=None)


class SepaBatch(IdMixin, CreatedMixin, Base):
    """One exported pain.008 file, stored so that downloading it again gives the same bytes."""

    __tablename__ = "sepa_batches"

    message_id: Mapped[str] = mapped_column(String(35), unique=True)
    export_key: Mapped[str] = mapped_column(String(128), unique=True)
    schema: Mapped[str] = mapped_column(String(32))
    up_to: Mapped[date] = mapped_column(Date)
    count: Mapped[int] = mapped_column(Integer)
    control_sum: Mapped[Decimal] = mapped_column(Amount())
    currency: Mapped[str] = mapped_column(String(3))
    xml: Mapped[bytes] = mapped_column(LargeBinary)
    exported_by: Mapped[str] = mapped_column(String(320))


class SepaCollection(IdMixin, CreatedMixin, Base):
    """One direct debit of one invoice (``attempt`` counts the tries of that invoice)."""

    __tablename__ = "sepa_collections"
    __table_args__ = (
        Index("uq_sepa_collections_invoice_attempt", "invoice_id", "attempt", unique=True),
        Index("ix_sepa_collections_status_date", "status", "collection_date"),
    )

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id", ondelete="CASCADE"))
    mandate_id: Mapped[str] = mapped_column(ForeignKey("sepa_mandates.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    end_to_end_id: Mapped[str] = mapped_column(String(35), unique=True)
    amount: Mapped[Decimal] = mapped_column(Amount())
    currency: Mapped[str] = mapped_column(String(3))
    sequence_type: Mapped[str] = mapped_column(String(4))
    collection_date: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default=CollectionStatus.QUEUED.value)
    batch_id: Mapped[str | None] = mapped_column(
        ForeignKey("sepa_batches.id"), index=True, default=None
    )
    payment_id: Mapped[str | None] = mapped_column(String(32), default=None)
    return_reason: Mapped[str | None] = mapped_column(String(8), default=None)
    settled_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class SepaStatement(IdMixin, CreatedMixin, Base):
    """One imported camt.053 file (the same file twice is one statement)."""

    __tablename__ = "sepa_statements"

    digest: Mapped[str] = mapped_column(String(64), unique=True)
    message_id: Mapped[str] = mapped_column(String(35))
    statement_ids: Mapped[str] = mapped_column(String(500))
    account_iban: Mapped[str | None] = mapped_column(String(34), default=None)
    file_name: Mapped[str] = mapped_column(String(200), default="")
    imported_by: Mapped[str] = mapped_column(String(320))
    entry_count: Mapped[int] = mapped_column(Integer, default=0)


class SepaStatementEntry(IdMixin, CreatedMixin, Base):
    """One booked transaction of a statement and what the import did with it.

    ``bank_reference`` identifies the transaction at the bank; it is unique, so a transaction
    seen in a second statement (or the same statement again) is recorded once.
    """

    __tablename__ = "sepa_statement_entries"

    statement_id: Mapped[str] = mapped_column(
        ForeignKey("sepa_statements.id", ondelete="CASCADE"), index=True
    )
    bank_reference: Mapped[str] = mapped_column(String(200), unique=True)
    booking_date: Mapped[date | None] = mapped_column(Date, default=None)
    direction: Mapped[str] = mapped_column(String(4))  # CRDT | DBIT
    amount: Mapped[Decimal] = mapped_column(Amount())
    currency: Mapped[str] = mapped_column(String(3))
    end_to_end_id: Mapped[str | None] = mapped_column(String(35), default=None)
    return_reason: Mapped[str | None] = mapped_column(String(8), default=None)
    counterparty: Mapped[str] = mapped_column(String(140), default="")
    remittance: Mapped[str] = mapped_column(String(500), default="")
    outcome: Mapped[str] = mapped_column(String(16))
    collection_id: Mapped[str | None] = mapped_column(String(32), default=None)
    invoice_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    payment_id: Mapped[str | None] = mapped_column(String(32), default=None)
    note: Mapped[str] = mapped_column(String(500), default="")
    resolved_by: Mapped[str | None] = mapped_column(String(320), default=None)
