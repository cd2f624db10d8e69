"""Mandates, collections and the pain.008 export (schema-valid, idempotent)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import AuditEvent
from imhost.billing.sepa.collections import end_to_end_id, queue_collection, queue_due_collections
from imhost.billing.sepa.exports import export_batch, get_batch
from imhost.billing.sepa.mandates import active_mandate, revoke_mandate, sign_mandate
from imhost.billing.sepa.models import CollectionStatus, SepaCollection
from imhost.billing.sepa.pain008 import PAIN_008_NS
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.kit.errors import Conflict, InvalidInput

from ..factories import make_org
from .helpers import (
    CREDITOR_ID,
    DEBTOR_IBAN,
    assert_schema_valid,
    customer_with_mandate,
    open_invoice,
    set_up_creditor,
)

NS = {"p": PAIN_008_NS}


def _clock() -> FrozenClock:
    return FrozenClock(utc(2026, 2, 2, 9))  # a Monday


def test_a_mandate_records_reference_signature_and_text(
    session_factory: sessionmaker[Session],
) -> None:
    clock = _clock()
    with transaction(session_factory) as s:
        set_up_creditor(s, clock)
        customer = customer_with_mandate(s, clock)
        mandate = customer.mandate
        assert mandate.reference.startswith("IMH-")
        assert mandate.iban == DEBTOR_IBAN
        assert mandate.signed_at == clock.now()
        assert mandate.signed_from == "192.0.2.7"
        assert mandate.signed_by == "owner@example.com"
        assert CREDITOR_ID in mandate.mandate_text
        assert "Hosting Provider GmbH" in mandate.mandate_text
        assert mandate.reference in mandate.mandate_text
        actions = s.scalars(select(AuditEvent.action)).all()
        assert "billing.sepa_mandate_signed" in actions


def test_a_bad_iban_is_refused_and_nothing_is_stored(
    session_factory: sessionmaker[Session],
) -> None:
    clock = _clock()
    with transaction(session_factory) as s:
        set_up_creditor(s, clock)
        org = make_org(s, clock)
        with pytest.raises(InvalidInput, match="check digits"):
            sign_mandate(
                s,
                clock,
                org.id,
                account_holder="Acme",
                iban="DE89370400440532013001",
                accepted=True,
                signed_by="x",
                signed_from="192.0.2.1",
            )
        with pytest.raises(InvalidInput, match="accept"):
            sign_mandate(
                s,
                clock,
                org.id,
                account_holder="Acme",
                iban=DEBTOR_IBAN,
                accepted=False,
                signed_by="x",
                signed_from="192.0.2.1",
            )
        assert active_mandate(s, org.id) is None


def test_no_mandate_before_the_creditor_is_set_up(session_factory: sessionmaker[Session]) -> None:
    clock = _clock()
    with transaction(session_factory) as s:
        org = make_org(s, clock)
        with pytest.raises(Conflict, match="not set up"):
            sign_mandate(
                s,
                clock,
                org.id,
                account_holder="Acme",
                iban=DEBTOR_IBAN,
                accepted=True,
                signed_by="x",
                signed_from="192.0.2.1",
            )


def test_a_collection_waits_for_the_pre_notification_lead_time(
    session_factory: sessionmaker[Session],
) -> None:
    clock = _clock()
    with transaction(session_factory) as s:
        set_up_creditor(s, clock, days=14)
        customer = customer_with_mandate(s, clock)
        invoice = open_invoice(s, clock, customer.org_id, "49.00")
        collection = queue_collection(s, clock, invoice, customer.mandate, idempotency_key="k1")
        # due at once, but told 14 days ahead: 2026-02-16 is a Monday and a banking day
        assert collection.collection_date == date(2026, 2, 16)
        assert collection.amount == Decimal("49.00")
        assert collection.sequence_type == "FRST"
        assert collection.end_to_end_id == invoice.number
        # the same key is the same collection; another key for the same invoice is refused
        again = queue_collection(s, clock, invoice, customer.mandate, idempotency_key="k1")
        assert again.id == collection.id
        with pytest.raises(Conflict, match="being collected already"):
            queue_collection(s, clock, invoice, customer.mandate, idempotency_key="k2")
        assert len(s.scalars(select(SepaCollection)).all()) == 1


def test_the_collection_date_is_a_banking_day_after_the_lead_time(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 12, 11, 9))  # 14 days later is 25 December
    with transaction(session_factory) as s:
        set_up_creditor(s, clock, days=14)
        customer = customer_with_mandate(s, clock)
        invoice = open_invoice(s, clock, customer.org_id)
        collection = queue_collection(s, clock, invoice, customer.mandate, idempotency_key="k")
        assert collection.collection_date == date(2026, 12, 28)


def test_end_to_end_ids_come_from_the_invoice_number() -> None:
    assert end_to_end_id("INV-2026-000042", 1) == "INV-2026-000042"
    assert end_to_end_id("INV-2026-000042", 2) == "INV-2026-000042-R2"
    assert len(end_to_end_id("X" * 40, 12)) == 35


def test_the_export_is_schema_valid_with_sums_and_blocks(
    session_factory: sessionmaker[Session],
) -> None:
    clock = _clock()
    with transaction(session_factory) as s:
        set_up_creditor(s, clock)
        first = customer_with_mandate(s, clock, name="Müller & Söhne")
        second = customer_with_mandate(s, clock, name="Beta", bic="")
        inv1 = open_invoice(s, clock, first.org_id, "49.00")
        inv2 = open_invoice(s, clock, second.org_id, "10.50")
        queue_collection(s, clock, inv1, first.mandate, idempotency_key="a")
        queue_collection(s, clock, inv2, second.mandate, idempotency_key="b")
    # a second invoice of the first customer, after its first collection: RCUR
    clock.advance(timedelta(days=1))
    with transaction(session_factory) as s:
        inv3 = open_invoice(s, clock, first.org_id, "5.25")
        third = queue_collection(s, clock, inv3, first.mandate, idempotency_key="c")
        assert third.sequence_type == "RCUR"
        assert third.collection_date == date(2026, 2, 17)
        batch = export_batch(s, clock, up_to=date(2026, 3, 1), exported_by="staff@example.com")
        assert batch is not None
        batch_id = batch.id
        assert batch.count == 3
        assert batch.control_sum == Decimal("64.75")
    with session_factory() as s:
        data = get_batch(s, batch_id).xml
    root = assert_schema_valid("pain.008.001.02", data)
    assert root.findtext("p:CstmrDrctDbtInitn/p:GrpHdr/p:NbOfTxs", namespaces=NS) == "3"
    assert root.findtext("p:CstmrDrctDbtInitn/p:GrpHdr/p:CtrlSum", namespaces=NS) == "64.75"
    blocks = root.findall("p:CstmrDrctDbtInitn/p:PmtInf", namespaces=NS)
    summary = sorted(
        (
            b.findtext("p:PmtTpInf/p:SeqTp", namespaces=NS),
            b.findtext("p:ReqdColltnDt", namespaces=NS),
            b.findtext("p:NbOfTxs", namespaces=NS),
            b.findtext("p:CtrlSum", namespaces=NS),
        )
        for b in blocks
    )
    assert summary == [
        ("FRST", "2026-02-16", "2", "59.50"),
        ("RCUR", "2026-02-17", "1", "5.25"),
    ]
    frst = next(b for b in blocks if b.findtext("p:PmtTpInf/p:SeqTp", namespaces=NS) == "FRST")
    assert frst.findtext("p:CdtrSchmeId/p:Id/p:PrvtId/p:Othr/p:Id", namespaces=NS) == CREDITOR_ID
    txs = {
        t.findtext("p:PmtId/p:EndToEndId", namespaces=NS): t
        for t in frst.findall("p:DrctDbtTxInf", namespaces=NS)
    }
    tx = txs[inv1.number]
    assert tx.findtext("p:Dbtr/p:Nm", namespaces=NS) == "Muller + Sohne"
    assert tx.findtext("p:DbtrAcct/p:Id/p:IBAN", namespaces=NS) == DEBTOR_IBAN
    assert tx.findtext("p:DrctDbtTx/p:MndtRltdInf/p:MndtId", namespaces=NS) == (
        first.mandate.reference
    )
    assert tx.findtext("p:DrctDbtTx/p:MndtRltdInf/p:DtOfSgntr", namespaces=NS) == "2026-02-02"
    assert tx.findtext("p:RmtInf/p:Ustrd", namespaces=NS) == f"Invoice {inv1.number}"
    iban_only = txs[inv2.number]
    assert iban_only.findtext("p:DbtrAgt/p:FinInstnId/p:Othr/p:Id", namespaces=NS) == (
        "NOTPROVIDED"
    )


def test_an_exported_collection_is_not_exported_again_and_the_file_stays_the_same(
    session_factory: sessionmaker[Session],
) -> None:
    clock = _clock()
    with transaction(session_factory) as s:
        set_up_creditor(s, clock)
        customer = customer_with_mandate(s, clock)
        invoice = open_invoice(s, clock, customer.org_id)
        queue_collection(s, clock, invoice, customer.mandate, idempotency_key="a")
        batch = export_batch(s, clock, up_to=date(2026, 3, 1), exported_by="staff")
        assert batch is not None
        first_bytes, batch_id = batch.xml, batch.id
    clock.advance(timedelta(hours=1))
    with transaction(session_factory) as s:
        assert export_batch(s, clock, up_to=date(2026, 3, 1), exported_by="staff") is None
        assert get_batch(s, batch_id).xml == first_bytes
        collection = s.scalars(select(SepaCollection)).one()
        assert collection.status == CollectionStatus.EXPORTED.value
        assert collection.batch_id == batch_id


def test_the_export_takes_only_collections_due_up_to_the_date(
    session_factory: sessionmaker[Session],
) -> None:
    clock = _clock()
    with transaction(session_factory) as s:
        set_up_creditor(s, clock)
        customer = customer_with_mandate(s, clock)
        invoice = open_invoice(s, clock, customer.org_id)
        queue_collection(s, clock, invoice, customer.mandate, idempotency_key="a")
        assert export_batch(s, clock, up_to=date(2026, 2, 13), exported_by="staff") is None
        assert export_batch(s, clock, up_to=date(2026, 2, 16), exported_by="staff") is not None


def test_a_late_export_moves_the_date_to_d_minus_2(
    session_factory: sessionmaker[Session],
) -> None:
    """Time travel: the collection was due 16 Feb; exported on Monday 16 Feb it can only be
    collected on Wednesday 18 Feb."""
    clock = _clock()
    with transaction(session_factory) as s:
        set_up_creditor(s, clock)
        customer = customer_with_mandate(s, clock)
        invoice = open_invoice(s, clock, customer.org_id)
        queue_collection(s, clock, invoice, customer.mandate, idempotency_key="a")
    clock.set(utc(2026, 2, 16, 8))
    with transaction(session_factory) as s:
        batch = export_batch(s, clock, up_to=date(2026, 2, 16), exported_by="staff")
        assert batch is not None
        root = assert_schema_valid("pain.008.001.02", batch.xml)
        assert (
            root.findtext("p:CstmrDrctDbtInitn/p:PmtInf/p:ReqdColltnDt", namespaces=NS)
            == "2026-02-18"
        )
        assert s.scalars(select(SepaCollection)).one().collection_date == date(2026, 2, 18)


def test_revoking_a_mandate_cancels_its_queued_collections(
    session_factory: sessionmaker[Session],
) -> None:
    clock = _clock()
    with transaction(session_factory) as s:
        set_up_creditor(s, clock)
        customer = customer_with_mandate(s, clock)
        invoice = open_invoice(s, clock, customer.org_id)
        queue_collection(s, clock, invoice, customer.mandate, idempotency_key="a")
        revoke_mandate(s, clock, customer.org_id, customer.mandate.id, revoked_by="owner")
        assert s.scalars(select(SepaCollection)).one().status == "cancelled"
        assert active_mandate(s, customer.org_id) is None
        with pytest.raises(Conflict, match="revoked already"):
            revoke_mandate(s, clock, customer.org_id, customer.mandate.id, revoked_by="owner")
        assert export_batch(s, clock, up_to=date(2026, 3, 1), exported_by="staff") is None


def test_queueing_due_invoices_is_safe_to_repeat(session_factory: sessionmaker[Session]) -> None:
    clock = _clock()
    with transaction(session_factory) as s:
        set_up_creditor(s, clock)
        customer = customer_with_mandate(s, clock)
        open_invoice(s, clock, customer.org_id, "20.00")
        open_invoice(s, clock, customer.org_id, "30.00")
        other = make_org(s, clock, name="No mandate")
        open_invoice(s, clock, other.id, "99.00")
        assert len(queue_due_collections(s, clock)) == 2
        assert queue_due_collections(s, clock) == []
        amounts = sorted(c.amount for c in s.scalars(select(SepaCollection)))
        assert amounts == [Decimal("20.00"), Decimal("30.00")]


def test_the_hourly_job_waits_for_the_creditor_then_queues_once(
    session_factory: sessionmaker[Session],
) -> None:
    from imhost.billing.sepa.tasks import scheduled_queue

    clock = _clock()
    with transaction(session_factory) as s:
        org = make_org(s, clock)
        open_invoice(s, clock, org.id, "15.00")
    assert scheduled_queue(session_factory, clock) == 0  # no creditor yet
    with transaction(session_factory) as s:
        set_up_creditor(s, clock)
        sign_mandate(
            s,
            clock,
            org.id,
            account_holder="Acme",
            iban=DEBTOR_IBAN,
            accepted=True,
            signed_by="owner",
            signed_from="192.0.2.1",
        )
    assert scheduled_queue(session_factory, clock) == 1
    assert scheduled_queue(session_factory, clock) == 0


def test_the_schema_check_would_catch_a_broken_file(session_factory: sessionmaker[Session]) -> None:
    """The XSD check is real: the same file without its number of transactions, or with an
    end-to-end id longer than 35 characters, is refused."""
    from lxml import etree

    from .helpers import schema

    clock = _clock()
    with transaction(session_factory) as s:
        set_up_creditor(s, clock)
        customer = customer_with_mandate(s, clock)
        invoice = open_invoice(s, clock, customer.org_id)
        queue_collection(s, clock, invoice, customer.mandate, idempotency_key="a")
        batch = export_batch(s, clock, up_to=date(2026, 3, 1), exported_by="staff")
        assert batch is not None
        data = batch.xml
    checker = schema("pain.008.001.02")
    assert checker.validate(etree.fromstring(data))
    without_count = etree.fromstring(data)
    header = without_count.find("p:CstmrDrctDbtInitn/p:GrpHdr", namespaces=NS)
    count = header.find("p:NbOfTxs", namespaces=NS) if header is not None else None
    assert header is not None and count is not None
    header.remove(count)
    assert not checker.validate(without_count)
    long_id = etree.fromstring(data)
    e2e = long_id.find(".//p:EndToEndId", namespaces=NS)
    assert e2e is not None
    e2e.text = "X" * 36
    assert not checker.validate(long_id)
