"""camt.053 import: collections collected, returns with reasons, transfers by invoice
number, duplicates, unmatched entries assigned by hand, and files that are not statements."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.billing.models import Invoice, Payment
from imhost.billing.sepa.camt053 import parse_camt053
from imhost.billing.sepa.collections import queue_collection
from imhost.billing.sepa.exports import export_batch
from imhost.billing.sepa.imports import assign_entry, ignore_entry, import_statement
from imhost.billing.sepa.models import CollectionStatus, SepaCollection, SepaStatementEntry
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.kit.errors import Conflict, InvalidInput
from imhost.notify.models import OutboundEmail
from imhost.runtime import Runtime

from .helpers import (
    Tx,
    assert_schema_valid,
    camt053,
    customer_with_mandate,
    open_invoice,
    set_up_creditor,
)


def _exported(
    factory: sessionmaker[Session], clock: FrozenClock, amounts: list[str]
) -> list[tuple[str, str, str]]:
    """Customers with a mandate and an exported collection each: (invoice id, number, e2e)."""
    out = []
    with transaction(factory) as s:
        set_up_creditor(s, clock)
        for n, amount in enumerate(amounts):
            customer = customer_with_mandate(s, clock, name=f"Customer {n}")
            invoice = open_invoice(s, clock, customer.org_id, amount)
            collection = queue_collection(
                s, clock, invoice, customer.mandate, idempotency_key=f"k{n}"
            )
            out.append((invoice.id, invoice.number or "", collection.end_to_end_id))
        assert export_batch(s, clock, up_to=date(2026, 3, 1), exported_by="staff") is not None
    return out


def _clock() -> FrozenClock:
    return FrozenClock(utc(2026, 2, 2, 9))


def _import(factory: sessionmaker[Session], clock: FrozenClock, data: bytes) -> dict[str, int]:
    assert_schema_valid("camt.053.001.02", data)
    with transaction(factory) as s:
        result = import_statement(s, clock, data, file_name="s.xml", imported_by="staff")
        counts = {
            o: sum(1 for e in result.entries if e.outcome == o)
            for o in ("collected", "returned", "invoice_paid", "unmatched", "ignored")
        }
        counts["seen_before"] = result.seen_before
        counts["again"] = int(result.already_imported)
        return counts


def test_a_batch_credit_collects_each_collection_once(
    session_factory: sessionmaker[Session],
) -> None:
    clock = _clock()
    (inv1, _, e2e1), (inv2, _, e2e2) = _exported(session_factory, clock, ["49.00", "10.50"])
    clock.set(utc(2026, 2, 17, 8))
    data = camt053(
        [
            Tx("49.00", end_to_end_id=e2e1, reference="BANK-1"),
            Tx("10.50", end_to_end_id=e2e2, reference="BANK-2"),
        ],
        batch=True,
    )
    counts = _import(session_factory, clock, data)
    assert counts["collected"] == 2
    with session_factory() as s:
        for invoice_id in (inv1, inv2):
            invoice = s.get(Invoice, invoice_id)
            assert invoice is not None and invoice.status == "paid"
        payments = s.scalars(select(Payment)).all()
        assert sorted(p.amount for p in payments) == [Decimal("10.50"), Decimal("49.00")]
        assert {p.method for p in payments} == {"direct_debit"}
        assert {c.status for c in s.scalars(select(SepaCollection))} == {"collected"}
    # the same file again changes nothing
    again = _import(session_factory, clock, data)
    assert again["again"] == 1
    # the same transactions in another statement are seen as imported before
    other = camt053([Tx("49.00", end_to_end_id=e2e1, reference="BANK-1")], message_id="STMT-2")
    assert _import(session_factory, clock, other)["seen_before"] == 1
    with session_factory() as s:
        assert len(s.scalars(select(Payment)).all()) == 2
        assert len(s.scalars(select(SepaStatementEntry)).all()) == 2


def test_a_return_fails_the_collection_reopens_the_invoice_and_tells_the_customer(
    runtime: Runtime, clock: FrozenClock
) -> None:
    session_factory = runtime.session_factory
    clock.set(utc(2026, 2, 2, 9))
    ((invoice_id, number, e2e),) = _exported(session_factory, clock, ["49.00"])
    clock.set(utc(2026, 2, 17, 8))
    _import(session_factory, clock, camt053([Tx("49.00", end_to_end_id=e2e, reference="C1")]))
    with session_factory() as s:
        invoice = s.get(Invoice, invoice_id)
        assert invoice is not None and invoice.status == "paid"
    clock.set(utc(2026, 2, 20, 8))
    returned = camt053(
        [Tx("49.00", direction="DBIT", end_to_end_id=e2e, reference="R1", return_reason="AM04")],
        message_id="STMT-3",
    )
    counts = _import(session_factory, clock, returned)
    assert counts["returned"] == 1
    with session_factory() as s:
        invoice = s.get(Invoice, invoice_id)
        assert invoice is not None
        assert invoice.status == "open"
        assert invoice.amount_due == Decimal("49.00")
        collection = s.scalars(select(SepaCollection)).one()
        assert collection.status == CollectionStatus.FAILED.value
        assert collection.return_reason == "AM04"
        payment = s.scalars(select(Payment)).one()
        assert payment.refunded_amount == Decimal("49.00")
        mails = s.scalars(
            select(OutboundEmail).where(OutboundEmail.kind == "direct-debit-returned")
        )
        bodies = [m.text for m in mails]
    assert len(bodies) == 1
    assert "did not have enough money" in bodies[0]
    assert number in bodies[0]
    assert "AM04" not in bodies[0]


@pytest.mark.parametrize(
    ("code", "words"),
    [("AC04", "the account is closed"), ("MD06", "asked the bank to refund it")],
)
def test_a_return_before_the_credit_fails_the_collection(
    session_factory: sessionmaker[Session], code: str, words: str
) -> None:
    clock = _clock()
    ((invoice_id, _, e2e),) = _exported(session_factory, clock, ["49.00"])
    clock.set(utc(2026, 2, 17, 8))
    data = camt053(
        [Tx("49.00", direction="DBIT", end_to_end_id=e2e, reference="R", return_reason=code)]
    )
    assert _import(session_factory, clock, data)["returned"] == 1
    with session_factory() as s:
        entry = s.scalars(select(SepaStatementEntry)).one()
        assert words in entry.note
        invoice = s.get(Invoice, invoice_id)
        assert invoice is not None and invoice.status == "open"
        assert s.scalars(select(SepaCollection)).one().status == "failed"


def test_a_transfer_naming_an_invoice_pays_it(session_factory: sessionmaker[Session]) -> None:
    clock = _clock()
    with transaction(session_factory) as s:
        set_up_creditor(s, clock)
        customer = customer_with_mandate(s, clock)
        invoice = open_invoice(s, clock, customer.org_id, "19.99")
        invoice_id, number = invoice.id, invoice.number
    data = camt053(
        [
            Tx("19.99", remittance=f"Payment {number} thanks", reference="T1"),
            Tx("5.00", remittance=f"Payment {number}", reference="T2"),  # not the amount due
            Tx("7.00", remittance="no number here", reference="T3"),
            Tx("2.50", direction="DBIT", remittance="bank fees", reference="T4"),
        ]
    )
    counts = _import(session_factory, clock, data)
    assert counts["invoice_paid"] == 1
    assert counts["unmatched"] == 2
    assert counts["ignored"] == 1
    with session_factory() as s:
        invoice_row = s.get(Invoice, invoice_id)
        assert invoice_row is not None and invoice_row.status == "paid"
        payment = s.scalars(select(Payment)).one()
        assert payment.method == "bank_transfer"
        assert payment.received_at == utc(2026, 2, 10, 12)


def test_staff_assign_an_unmatched_credit_to_an_invoice(
    session_factory: sessionmaker[Session],
) -> None:
    clock = _clock()
    with transaction(session_factory) as s:
        set_up_creditor(s, clock)
        customer = customer_with_mandate(s, clock)
        invoice = open_invoice(s, clock, customer.org_id, "30.00")
        number = invoice.number or ""
    _import(session_factory, clock, camt053([Tx("30.00", remittance="April", reference="U1")]))
    with transaction(session_factory) as s:
        entry = s.scalars(select(SepaStatementEntry)).one()
        assert entry.outcome == "unmatched"
        with pytest.raises(InvalidInput, match="no invoice"):
            assign_entry(s, clock, entry.id, "INV-NOPE", resolved_by="staff")
        assign_entry(s, clock, entry.id, number, resolved_by="staff")
        with pytest.raises(Conflict, match="settled already"):
            assign_entry(s, clock, entry.id, number, resolved_by="staff")
        with pytest.raises(Conflict, match="settled already"):
            ignore_entry(s, clock, entry.id, reason="x", resolved_by="staff")
    with session_factory() as s:
        assert s.scalars(select(Invoice)).one().status == "paid"
        assert s.scalars(select(SepaStatementEntry)).one().outcome == "assigned"


def test_pending_entries_are_not_booked(session_factory: sessionmaker[Session]) -> None:
    clock = _clock()
    with transaction(session_factory) as s:
        set_up_creditor(s, clock)
    data = camt053([Tx("1.00", status="PDNG", reference="P1")])
    with transaction(session_factory) as s:
        result = import_statement(s, clock, data, imported_by="staff")
        assert result.not_booked == 1 and result.entries == []


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not xml at all",
        b"<Document/>",
        b'<?xml version="1.0"?><Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.008.001.02"/>',
        b'<!DOCTYPE x [<!ENTITY a "aaaa">]><Document>&a;</Document>',
        b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt>'
        b"<GrpHdr><MsgId>M</MsgId></GrpHdr></BkToCstmrStmt></Document>",
        camt053([Tx("abc", reference="X")]),
    ],
)
def test_a_file_that_is_not_a_statement_is_refused_plainly(data: bytes) -> None:
    with pytest.raises(InvalidInput, match=r"This is not a camt\.053 bank statement\."):
        parse_camt053(data)


def test_the_test_statements_are_valid_camt053() -> None:
    data = camt053(
        [
            Tx("1.00", end_to_end_id="E1", reference="A"),
            Tx("2.00", direction="DBIT", end_to_end_id="E2", return_reason="AC04"),
        ]
    )
    assert_schema_valid("camt.053.001.02", data)
    parsed = parse_camt053(data)
    assert parsed.version == "camt.053.001.02"
    assert [t.amount for t in parsed.transactions] == [Decimal("1.00"), Decimal("2.00")]
    assert parsed.transactions[1].is_return
    assert parsed.transactions[1].return_reason == "AC04"
