"""Exporting queued collections as a pain.008 batch for the bank.

An export takes every queued collection due up to a date, moves collection dates the file
can no longer reach (D-2 banking days) to the earliest possible one, writes the file and
stores it with the batch. The collections are then ``exported``: a second export does not
take them again, and downloading the batch again gives the same bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imhost.accounts.audit import Actor
from imhost.billing import audit
from imhost.billing.models import Invoice
from imhost.billing.sepa.calendar import earliest_collection_date
from imhost.billing.sepa.collections import SEPA_CURRENCY, cancel_settled_collections
from imhost.billing.sepa.models import (
    CollectionStatus,
    MandateStatus,
    SepaBatch,
    SepaCollection,
    SepaMandate,
)
from imhost.billing.sepa.pain008 import PAIN_008_SCHEMA, DebitLine, build_pain008
from imhost.billing.sepa.settings import ready_creditor
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, NotFound
from imhost.kit.ids import public_code


@dataclass(frozen=True)
class ExportPreview:
    """What an export up to a date would take."""

    up_to: date
    count: int
    control_sum: str
    earliest_date: date


def _queued_up_to(session: Session, up_to: date) -> list[SepaCollection]:
    return list(
        session.scalars(
            select(SepaCollection)
            .where(
                SepaCollection.status == CollectionStatus.QUEUED.value,
                SepaCollection.collection_date <= up_to,
                SepaCollection.currency == SEPA_CURRENCY,
            )
            .order_by(SepaCollection.collection_date, SepaCollection.end_to_end_id)
            .with_for_update()
        )
    )


def preview_export(session: Session, clock: Clock, up_to: date) -> ExportPreview:
    rows = list(
        session.scalars(
            select(SepaCollection).where(
                SepaCollection.status == CollectionStatus.QUEUED.value,
                SepaCollection.collection_date <= up_to,
            )
        )
    )
    total = sum((c.amount for c in rows), Decimal(0))
    return ExportPreview(
        up_to=up_to,
        count=len(rows),
        control_sum=f"{total:.2f}",
        earliest_date=earliest_collection_date(clock.now().date()),
    )


def export_batch(
    session: Session,
    clock: Clock,
    *,
    up_to: date,
    exported_by: str,
    actor: Actor | None = None,
) -> SepaBatch | None:
    """Export the queued collections due up to ``up_to``; None when there are none."""
    creditor = ready_creditor(session)
    cancel_settled_collections(session, clock)
    collections = _queued_up_to(session, up_to)
    if not collections:
        return None
    now = clock.now()
    earliest = earliest_collection_date(now.date())
    mandates = {
        m.id: m
        for m in session.scalars(
            select(SepaMandate).where(SepaMandate.id.in_({c.mandate_id for c in collections}))
        )
    }
    invoices = {
        i.id: i
        for i in session.scalars(
            select(Invoice).where(Invoice.id.in_({c.invoice_id for c in collections}))
        )
    }
    lines: list[DebitLine] = []
    taken: list[SepaCollection] = []
    for collection in collections:
        mandate = mandates[collection.mandate_id]
        if mandate.status != MandateStatus.ACTIVE.value:
            collection.status = CollectionStatus.CANCELLED.value
            continue
        if collection.collection_date < earliest:
            collection.collection_date = earliest
        invoice = invoices[collection.invoice_id]
        lines.append(
            DebitLine(
                end_to_end_id=collection.end_to_end_id,
                amount=collection.amount,
                currency=collection.currency,
                sequence_type=collection.sequence_type,
                collection_date=collection.collection_date,
                mandate_reference=mandate.reference,
                mandate_signed_on=mandate.signed_at.date(),
                debtor_name=mandate.account_holder,
                debtor_iban=mandate.iban,
                debtor_bic=mandate.bic,
                remittance=f"Invoice {invoice.number}",
            )
        )
        taken.append(collection)
    if not taken:
        session.flush()
        return None
    message_id = f"IMH-{now:%Y%m%d%H%M%S}-{public_code('', 6)}"
    xml = build_pain008(message_id=message_id, created_at=now, creditor=creditor, lines=lines)
    export_key = hashlib.sha256(",".join(sorted(c.id for c in taken)).encode()).hexdigest()
    batch = SepaBatch(
        message_id=message_id,
        export_key=export_key,
        schema=PAIN_008_SCHEMA,
        up_to=up_to,
        count=len(taken),
        control_sum=sum((c.amount for c in taken), Decimal(0)),
        currency=SEPA_CURRENCY,
        xml=xml,
        exported_by=exported_by[:320],
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(batch)
    except IntegrityError:
        raise Conflict("these collections were exported at the same moment; reload") from None
    for collection in taken:
        collection.status = CollectionStatus.EXPORTED.value
        collection.batch_id = batch.id
    session.flush()
    audit.record(
        session,
        clock,
        actor,
        "sepa_batch_exported",
        organization_id=None,
        target_type="sepa_batch",
        target_id=batch.id,
        message_id=message_id,
        count=batch.count,
        control_sum=str(batch.control_sum),
        up_to=up_to.isoformat(),
    )
    return batch


def get_batch(session: Session, batch_id: str) -> SepaBatch:
    batch = session.get(SepaBatch, batch_id)
    if batch is None:
        raise NotFound("no such export")
    return batch


def list_batches(session: Session, limit: int = 50) -> list[SepaBatch]:
    return list(
        session.scalars(select(SepaBatch).order_by(SepaBatch.created_at.desc()).limit(limit))
    )


def batch_file_name(batch: SepaBatch) -> str:
    return f"{batch.message_id}.xml"
