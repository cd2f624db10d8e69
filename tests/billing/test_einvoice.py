"""The EN 16931 e-invoice of every kind of invoice: valid against the official Factur-X schema
and business rules, its sums worked again, and the same XML inside the PDF."""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import pytest
from pypdf import PdfReader
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import Organization
from imhost.billing import service
from imhost.billing.composition import DraftLine
from imhost.billing.einvoice import GUIDELINE, XML_FILENAME
from imhost.billing.flows import run_billing
from imhost.billing.invoicing import issue_standalone_invoice
from imhost.billing.models import CreditNote, Invoice, InvoiceKind, LineKind
from imhost.billing.render import render_invoice_html, render_invoice_pdf
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.notify.models import OutboundEmail
from imhost.runtime import Runtime

from .einvoice_checks import check_all, text
from .factories import make_add_on, make_org, make_plan

SELLER_VAT = "DE136695976"
FR_VAT = "FR40303265045"


def _provider(s: Session, clock: FrozenClock, **changes: Any) -> None:
    service.update_profile(
        s,
        clock,
        legal_name="imhost GmbH",
        address="Hauptstraße 1\nAufgang B",
        postcode="10115",
        city="Berlin",
        home_country="DE",
        provider_tax_id=SELLER_VAT,
        registration_number="HRB 123456, Amtsgericht Berlin",
        contact_email="billing@imhost.example",
        bank_details="IBAN: DE89 3704 0044 0532 0130 00, BIC COBADEFF",
        **changes,
    )
    service.set_tax_rate(s, clock, "DE", "19")
    service.set_tax_rate(s, clock, "FR", "20", "TVA")
    service.set_tax_rate(s, clock, "CH", "0")


def _invoice(
    session_factory: sessionmaker[Session],
    *,
    country: str,
    tax_id: str | None = None,
    fee: str = "49.00",
    credit: str | None = None,
    add_on: str | None = None,
    **profile: Any,
) -> tuple[FrozenClock, str]:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    with transaction(session_factory) as s:
        _provider(s, clock, **profile)
        org = make_org(s, clock, org_id="org1", name="Client SARL", country=country)
        service.update_customer_details(
            s,
            clock,
            org,
            name="Client SARL",
            address="12 rue de la Paix",
            postcode="75002",
            city="Paris",
            country=country,
            tax_id=tax_id or "",
            invoice_email="compta@client.example",
        )
        if credit is not None:
            service.add_credit(
                s, clock, org.id, Decimal(credit), "EUR", kind="goodwill", description="Goodwill"
            )
        add_ons = {}
        if add_on is not None:
            add_ons[make_add_on(s, clock, price=add_on).id] = 1
        service.start_subscription(
            s, clock, org.id, make_plan(s, clock, base_fee=fee).id, add_ons=add_ons
        )
    run_billing(session_factory, clock, clock.now())
    with session_factory() as s:
        return clock, s.scalars(select(Invoice.id)).one()


def _xml(session_factory: sessionmaker[Session], invoice_id: str) -> bytes:
    with session_factory() as s:
        return service.invoice_xml(s, s.get_one(Invoice, invoice_id))


def test_a_domestic_invoice_is_a_valid_en16931_invoice_at_the_standard_rate(
    runtime: Runtime,
) -> None:
    session_factory = runtime.session_factory  # with the e-mail subscribers of the app
    _clock, invoice_id = _invoice(session_factory, country="DE")
    xml = _xml(session_factory, invoice_id)
    found = check_all(xml)
    root = found["root"]
    assert text(root, ".//ram:GuidelineSpecifiedDocumentContextParameter/ram:ID") == [GUIDELINE]
    assert text(root, "rsm:ExchangedDocument/ram:TypeCode") == ["380"]
    assert found["breakdown"] == {("S", Decimal("19")): (Decimal("49.00"), Decimal("9.31"))}
    assert found["grand"] == Decimal("58.31") and found["due"] == Decimal("58.31")
    assert text(root, ".//ram:SellerTradeParty/ram:SpecifiedTaxRegistration/ram:ID") == [SELLER_VAT]
    assert text(root, ".//ram:SellerTradeParty/ram:PostalTradeAddress/ram:LineOne") == [
        "Hauptstraße 1"
    ]
    assert text(root, ".//ram:BuyerTradeParty/ram:PostalTradeAddress/ram:CityName") == ["Paris"]
    assert text(root, ".//ram:PayeePartyCreditorFinancialAccount/ram:IBANID") == [
        "DE89370400440532013000"
    ]
    assert text(
        root, ".//ram:SpecifiedTradePaymentTerms/ram:DueDateDateTime/udt:DateTimeString"
    ) == ["20261115"]
    with session_factory() as s:  # sent to the invoice e-mail of the billing details
        mail = s.scalars(select(OutboundEmail).where(OutboundEmail.kind == "invoice")).one()
    assert mail.to == ["compta@client.example"]
    # The service period: the base fee's month, the last day included.
    assert text(
        root,
        ".//ram:ApplicableHeaderTradeSettlement/ram:BillingSpecifiedPeriod//udt:DateTimeString",
    ) == [
        "20261101",
        "20261130",
    ]


def test_a_reverse_charge_invoice_names_both_vat_ids_and_the_exemption(
    session_factory: sessionmaker[Session],
) -> None:
    _clock, invoice_id = _invoice(session_factory, country="FR", tax_id="FR 40 303 265 045")
    xml = _xml(session_factory, invoice_id)
    found = check_all(xml)
    root = found["root"]
    assert found["breakdown"] == {("AE", Decimal("0")): (Decimal("49.00"), Decimal("0.00"))}
    assert text(
        root,
        ".//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax/ram:ExemptionReasonCode",
    ) == ["VATEX-EU-AE"]
    assert text(root, ".//ram:BuyerTradeParty/ram:SpecifiedTaxRegistration/ram:ID") == [FR_VAT]
    assert text(root, ".//ram:SellerTradeParty/ram:SpecifiedTaxRegistration/ram:ID") == [SELLER_VAT]
    note = " ".join(text(root, ".//rsm:ExchangedDocument/ram:IncludedNote/ram:Content"))
    assert "Article 196" in note and SELLER_VAT in note and FR_VAT in note


@pytest.mark.parametrize(
    ("country", "category"),
    [("US", "O"), ("CH", "Z")],
    ids=["no rate: not subject to VAT", "a 0 % rate configured"],
)
def test_a_zero_rated_export_is_valid_in_its_category(
    session_factory: sessionmaker[Session], country: str, category: str
) -> None:
    _clock, invoice_id = _invoice(session_factory, country=country, tax_id="12-3456789")
    found = check_all(_xml(session_factory, invoice_id))
    assert [key[0] for key in found["breakdown"]] == [category]
    assert found["tax"] == 0 and found["grand"] == Decimal("49.00")
    vat_ids = text(found["root"], ".//ram:SpecifiedTaxRegistration/ram:ID")
    # Outside the VAT (O), no VAT ID may be given (BR-O-02); the seller is named by its
    # trade register number instead.
    assert vat_ids == ([] if category == "O" else [SELLER_VAT])


def test_a_customer_without_a_country_is_addressed_and_taxed_as_at_home(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    with transaction(session_factory) as s:
        _provider(s, clock)
        org = make_org(s, clock, country=None)
        service.start_subscription(s, clock, org.id, make_plan(s, clock).id)
    run_billing(session_factory, clock, clock.now())
    with session_factory() as s:
        xml = service.invoice_xml(s, s.scalars(select(Invoice)).one())
    found = check_all(xml)
    assert list(found["breakdown"]) == [("S", Decimal("19"))]
    assert text(found["root"], ".//ram:BuyerTradeParty//ram:CountryID") == ["DE"]


def test_account_credit_applied_at_issue_is_the_prepaid_amount(
    session_factory: sessionmaker[Session],
) -> None:
    _clock, invoice_id = _invoice(session_factory, country="DE", credit="20.00")
    found = check_all(_xml(session_factory, invoice_id))
    assert found["prepaid"] == Decimal("20.00")
    assert found["due"] == Decimal("38.31")
    with session_factory() as s:
        assert s.get_one(Invoice, invoice_id).amount_due == Decimal("38.31")


def test_tax_inclusive_prices_have_net_lines_that_add_up_to_the_total(
    session_factory: sessionmaker[Session],
) -> None:
    _clock, invoice_id = _invoice(
        session_factory, country="DE", fee="49.99", add_on="10.01", prices_include_tax=True
    )
    found = check_all(_xml(session_factory, invoice_id))
    with session_factory() as s:
        invoice = s.get_one(Invoice, invoice_id)
    assert found["grand"] == invoice.total == Decimal("60.00")
    assert found["tax"] == invoice.tax_total == Decimal("9.58")
    assert found["lines"] == 2


def test_credit_notes_whole_and_in_part_are_valid_type_381(
    session_factory: sessionmaker[Session],
) -> None:
    clock, invoice_id = _invoice(session_factory, country="DE", add_on="10.00")
    with transaction(session_factory) as s:
        line = next(
            x for x in service.invoice_lines(s, invoice_id) if x.kind == LineKind.ADD_ON.value
        )
        service.issue_credit_note(
            s, clock, invoice_id, reason="Add-on not delivered", lines={line.id: "10.00"}
        )
        service.issue_credit_note(s, clock, invoice_id, reason="Cancelled")
    with session_factory() as s:
        notes = s.scalars(select(CreditNote).order_by(CreditNote.number)).all()
        xmls = [service.credit_note_xml(s, note) for note in notes]
        totals = [note.total for note in notes]
    assert totals == [Decimal("11.90"), Decimal("58.31")]
    for xml, total in zip(xmls, totals, strict=True):
        found = check_all(xml)
        root = found["root"]
        assert text(root, "rsm:ExchangedDocument/ram:TypeCode") == ["381"]
        assert text(root, ".//ram:InvoiceReferencedDocument/ram:IssuerAssignedID") == [
            "INV-2026-000001"
        ]
        assert found["grand"] == total


def test_a_late_fee_outside_the_vat_is_exempt_with_its_reason(
    session_factory: sessionmaker[Session],
) -> None:
    clock, _ = _invoice(session_factory, country="DE")
    with transaction(session_factory) as s:
        fee = issue_standalone_invoice(
            s,
            clock,
            "org1",
            [
                DraftLine(
                    kind=LineKind.LATE_FEE.value,
                    description="Late fee",
                    amount=Decimal("5.00"),
                    taxable=False,
                )
            ],
            currency="EUR",
            kind=InvoiceKind.LATE_FEE.value,
        )
        xml = service.invoice_xml(s, fee)
    found = check_all(xml)
    assert found["breakdown"] == {("E", Decimal("0")): (Decimal("5.00"), Decimal("0.00"))}


def test_the_pdf_is_a_factur_x_pdf_carrying_the_same_xml(
    session_factory: sessionmaker[Session],
) -> None:
    _clock, invoice_id = _invoice(session_factory, country="FR", tax_id=FR_VAT)
    with session_factory() as s:
        invoice = s.get_one(Invoice, invoice_id)
        pdf = render_invoice_pdf(s, invoice)
        xml = service.invoice_xml(s, invoice)
    reader = PdfReader(io.BytesIO(pdf))
    assert reader.attachments == {XML_FILENAME: [xml]}
    metadata = reader.xmp_metadata
    assert metadata is not None
    xmp = metadata.stream.get_data().decode()
    assert "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#" in xmp
    assert "EN 16931" in xmp and XML_FILENAME in xmp
    assert "<pdfaid:part>3</pdfaid:part>" in xmp  # declared PDF/A-3
    # ... and made as one: every font embedded, an sRGB output intent for the colours.
    intents = reader.trailer["/Root"]["/OutputIntents"]
    assert [i.get_object()["/S"] for i in intents] == ["/GTS_PDFA1"]
    assert intents[0].get_object()["/DestOutputProfile"] is not None
    fonts = reader.pages[0]["/Resources"]["/Font"]
    assert fonts
    for font in fonts.values():
        descendant = font.get_object()["/DescendantFonts"][0].get_object()
        assert "/FontFile2" in descendant["/FontDescriptor"].get_object()
    page = reader.pages[0].extract_text()
    assert "Reverse charge" in page and SELLER_VAT in page and FR_VAT in page


def test_an_issued_invoice_keeps_the_details_it_was_issued_with(
    session_factory: sessionmaker[Session],
) -> None:
    clock, invoice_id = _invoice(session_factory, country="DE")
    with transaction(session_factory) as s:
        service.update_profile(s, clock, legal_name="Renamed AG", city="Hamburg", postcode="20095")
        issued = s.get_one(Invoice, invoice_id)
        service.update_customer_details(
            s,
            clock,
            s.get_one(Organization, issued.organization_id),
            name="Moved Ltd",
            address="1 New Street",
            postcode="1000",
            city="Brussels",
            country="BE",
            tax_id="",
            invoice_email="",
        )
    with session_factory() as s:
        invoice = s.get_one(Invoice, invoice_id)
        html = render_invoice_html(s, invoice)
        xml = service.invoice_xml(s, invoice).decode()
    for shown in (html, xml):
        assert "imhost GmbH" in shown and "Berlin" in shown and "Paris" in shown
        assert "Renamed AG" not in shown and "Moved Ltd" not in shown and "Brussels" not in shown
    assert invoice.customer_email == "compta@client.example"


@pytest.mark.parametrize(
    ("country", "tax_id", "expected"),
    [("DE", None, ("S", Decimal("19"))), ("FR", FR_VAT, ("AE", Decimal("0")))],
)
def test_invoices_issued_before_invoices_kept_their_vat_category_still_have_an_e_invoice(
    session_factory: sessionmaker[Session],
    country: str,
    tax_id: str | None,
    expected: tuple[str, Decimal],
) -> None:
    """Their category is read back from their tax line and note; the seller is the current."""
    _clock, invoice_id = _invoice(session_factory, country=country, tax_id=tax_id)
    with transaction(session_factory) as s:
        invoice = s.get_one(Invoice, invoice_id)
        invoice.tax_category, invoice.tax_percent, invoice.seller = None, None, None
    found = check_all(_xml(session_factory, invoice_id))
    assert list(found["breakdown"]) == [expected]
    assert text(found["root"], ".//ram:SellerTradeParty/ram:Name") == ["imhost GmbH"]
