"""The EN 16931 e-invoice: UN/CEFACT Cross Industry Invoice (CII) XML, Factur-X / ZUGFeRD
profile EN 16931, and the Factur-X PDF that carries it.

The XML is written from ``billing.documents.LegalDocument``, the same view the HTML page and
the PDF print, following the Factur-X 1.0 EN 16931 schema (element order matters) with the
specification identifier ``urn:cen.eu:en16931:2017`` (BT-24). Business terms (BT-...) are
named where each element is written. The amounts add up by construction (BR-CO-10, -13, -15,
-16): the line total is the sum of the lines, the VAT total the sum of the VAT breakdown.

A seller or customer who is not subject to VAT (category ``O``) carries no VAT ID in the XML
(BR-O-02 and following); the seller is then identified by its trade register number, or by
its VAT ID given as a plain seller identifier (BT-29).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from lxml import etree
from sqlalchemy.orm import Session
from stdnum import iban

from imhost.billing.documents import LegalDocument, credit_note_document, invoice_document, last_day
from imhost.billing.models import CreditNote, Invoice
from imhost.billing.parties import Party
from imhost.kit.money import quantum
from imhost.kit.vat import is_eu_vat_id

GUIDELINE = "urn:cen.eu:en16931:2017"
RSM = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
RAM = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
UDT = "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"
QDT = "urn:un:unece:uncefact:data:standard:QualifiedDataType:100"
NSMAP = {"rsm": RSM, "ram": RAM, "udt": UDT, "qdt": QDT}
XML_FILENAME = "factur-x.xml"

SEPA_CREDIT_TRANSFER = "58"  # UNTDID 4461
NOT_DEFINED = "1"


def _el(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    prefix, name = tag.split(":")
    element = etree.SubElement(parent, f"{{{NSMAP[prefix]}}}{name}", attrs)
    if text is not None:
        element.text = text
    return element


def _amount(value: Decimal, currency: str) -> str:
    """An amount with the currency's decimals (at most two, BR-DEC-*)."""
    return str(value.quantize(max(quantum(currency), Decimal("0.01"))))


def _percent(value: Decimal) -> str:
    text = f"{value.normalize():f}"
    return text if "." in text else f"{text}.00"


def _date(parent: etree._Element, tag: str, moment: datetime, *, qualified: bool = False) -> None:
    holder = _el(parent, tag)
    _el(
        holder,
        "qdt:DateTimeString" if qualified else "udt:DateTimeString",
        f"{moment:%Y%m%d}",
        format="102",
    )


def _iban(bank_details: str) -> str | None:
    """The IBAN in the provider's bank details, if there is one that checks out."""
    words = bank_details.replace(":", " ").replace(",", " ").split()
    for start in range(len(words)):
        candidate = ""
        for word in words[start : start + 9]:
            candidate += word
            if iban.is_valid(candidate):
                return str(iban.compact(candidate))
    return None


def _party(parent: etree._Element, tag: str, party: Party, *, show_vat: bool, seller: bool) -> None:
    node = _el(parent, tag)
    if seller and not show_vat and not party.registration_number and party.vat_id:
        _el(node, "ram:ID", party.vat_id)  # BT-29, so that the seller is identified (BR-CO-26)
    _el(node, "ram:Name", party.name or "-")  # BT-27 / BT-44
    if party.registration_number:
        legal = _el(node, "ram:SpecifiedLegalOrganization")
        _el(legal, "ram:ID", party.registration_number)  # BT-30 / BT-47
    if seller and party.email:
        contact = _el(node, "ram:DefinedTradeContact")
        email = _el(contact, "ram:EmailURIUniversalCommunication")
        _el(email, "ram:URIID", party.email)  # BT-43
    address = _el(node, "ram:PostalTradeAddress")  # BG-5 / BG-8
    if party.postcode:
        _el(address, "ram:PostcodeCode", party.postcode)
    for tag_name, line in zip(
        ("ram:LineOne", "ram:LineTwo", "ram:LineThree"), party.street_lines, strict=False
    ):
        _el(address, tag_name, line)
    if party.city:
        _el(address, "ram:CityName", party.city)
    _el(address, "ram:CountryID", party.country or "")  # BT-40 / BT-55
    if party.email:
        uri = _el(node, "ram:URIUniversalCommunication")
        _el(uri, "ram:URIID", party.email, schemeID="EM")  # BT-34 / BT-49
    if show_vat and party.vat_id and is_eu_vat_id(party.vat_id):
        registration = _el(node, "ram:SpecifiedTaxRegistration")
        _el(registration, "ram:ID", party.vat_id, schemeID="VA")  # BT-31 / BT-48


def _period(parent: etree._Element, period: tuple[datetime, datetime]) -> None:
    start, end = period
    node = _el(parent, "ram:BillingSpecifiedPeriod")  # BG-14 / BG-26
    _date(node, "ram:StartDateTime", start)
    _date(node, "ram:EndDateTime", max(last_day(end), start))


def cii_xml(document: LegalDocument) -> bytes:
    """The document as CII XML (UTF-8), profile EN 16931."""
    cur = document.currency
    root = etree.Element(f"{{{RSM}}}CrossIndustryInvoice", nsmap=NSMAP)
    context = _el(root, "rsm:ExchangedDocumentContext")
    guideline = _el(context, "ram:GuidelineSpecifiedDocumentContextParameter")
    _el(guideline, "ram:ID", GUIDELINE)  # BT-24

    header = _el(root, "rsm:ExchangedDocument")
    _el(header, "ram:ID", document.number)  # BT-1
    _el(header, "ram:TypeCode", document.type_code)  # BT-3
    _date(header, "ram:IssueDateTime", document.issued_at)  # BT-2
    for text in document.notes:
        note = _el(header, "ram:IncludedNote")
        _el(note, "ram:Content", text)  # BT-22

    transaction = _el(root, "rsm:SupplyChainTradeTransaction")
    for line in document.lines:
        item = _el(transaction, "ram:IncludedSupplyChainTradeLineItem")  # BG-25
        line_doc = _el(item, "ram:AssociatedDocumentLineDocument")
        _el(line_doc, "ram:LineID", str(line.position))  # BT-126
        if line.calculation:
            line_note = _el(line_doc, "ram:IncludedNote")
            _el(line_note, "ram:Content", line.calculation)  # BT-127
        product = _el(item, "ram:SpecifiedTradeProduct")
        _el(product, "ram:Name", line.description or "-")  # BT-153
        agreement = _el(item, "ram:SpecifiedLineTradeAgreement")
        price = _el(agreement, "ram:NetPriceProductTradePrice")
        # A price is never negative (BR-27): a credit line is the price times -1.
        _el(price, "ram:ChargeAmount", _amount(abs(line.net), cur))  # BT-146
        delivery = _el(item, "ram:SpecifiedLineTradeDelivery")
        _el(delivery, "ram:BilledQuantity", "-1" if line.net < 0 else "1", unitCode="C62")  # BT-129
        settlement = _el(item, "ram:SpecifiedLineTradeSettlement")
        tax = _el(settlement, "ram:ApplicableTradeTax")
        _el(tax, "ram:TypeCode", "VAT")
        _el(tax, "ram:CategoryCode", line.category)  # BT-151
        if line.category != "O":
            _el(tax, "ram:RateApplicablePercent", _percent(line.percent))  # BT-152
        if line.period is not None and line.period[1] > line.period[0]:
            _period(settlement, line.period)  # BG-26
        summation = _el(settlement, "ram:SpecifiedTradeSettlementLineMonetarySummation")
        _el(summation, "ram:LineTotalAmount", _amount(line.net, cur))  # BT-131

    show_vat = all(group.category != "O" for group in document.vat)
    agreement = _el(transaction, "ram:ApplicableHeaderTradeAgreement")
    _party(agreement, "ram:SellerTradeParty", document.seller, show_vat=show_vat, seller=True)
    _party(agreement, "ram:BuyerTradeParty", document.buyer, show_vat=show_vat, seller=False)
    _el(transaction, "ram:ApplicableHeaderTradeDelivery")

    settlement = _el(transaction, "ram:ApplicableHeaderTradeSettlement")
    if document.type_code != "381":
        _el(settlement, "ram:PaymentReference", document.number)  # BT-83
    _el(settlement, "ram:InvoiceCurrencyCode", cur)  # BT-5
    if document.type_code != "381" and document.bank_details:
        iban = _iban(document.bank_details)
        means = _el(settlement, "ram:SpecifiedTradeSettlementPaymentMeans")  # BG-16
        _el(means, "ram:TypeCode", SEPA_CREDIT_TRANSFER if iban else NOT_DEFINED)  # BT-81
        _el(means, "ram:Information", "Bank transfer" if iban else document.bank_details[:500])
        if iban:
            account = _el(means, "ram:PayeePartyCreditorFinancialAccount")
            _el(account, "ram:IBANID", iban)  # BT-84
    for group in document.vat:
        tax = _el(settlement, "ram:ApplicableTradeTax")  # BG-23
        _el(tax, "ram:CalculatedAmount", _amount(group.tax, cur))  # BT-117
        _el(tax, "ram:TypeCode", "VAT")
        exemption = group.exemption
        if exemption is not None:
            _el(tax, "ram:ExemptionReason", exemption[0])  # BT-120
        _el(tax, "ram:BasisAmount", _amount(group.base, cur))  # BT-116
        _el(tax, "ram:CategoryCode", group.category)  # BT-118
        if exemption is not None and exemption[1] is not None:
            _el(tax, "ram:ExemptionReasonCode", exemption[1])  # BT-121
        if group.category != "O":
            _el(tax, "ram:RateApplicablePercent", _percent(group.percent))  # BT-119
    if document.period is not None and document.period[1] > document.period[0]:
        _period(settlement, document.period)  # BG-14
    if document.payment_terms or document.due_at is not None:
        terms = _el(settlement, "ram:SpecifiedTradePaymentTerms")
        if document.payment_terms:
            _el(terms, "ram:Description", document.payment_terms)  # BT-20
        if document.due_at is not None:
            _date(terms, "ram:DueDateDateTime", document.due_at)  # BT-9
    totals = _el(settlement, "ram:SpecifiedTradeSettlementHeaderMonetarySummation")  # BG-22
    _el(totals, "ram:LineTotalAmount", _amount(document.net_total, cur))  # BT-106
    _el(totals, "ram:TaxBasisTotalAmount", _amount(document.net_total, cur))  # BT-109
    _el(totals, "ram:TaxTotalAmount", _amount(document.tax_total, cur), currencyID=cur)  # BT-110
    _el(totals, "ram:GrandTotalAmount", _amount(document.grand_total, cur))  # BT-112
    _el(totals, "ram:TotalPrepaidAmount", _amount(document.prepaid, cur))  # BT-113
    _el(totals, "ram:DuePayableAmount", _amount(document.due_payable, cur))  # BT-115
    if document.preceding is not None:
        reference = _el(settlement, "ram:InvoiceReferencedDocument")  # BG-3
        _el(reference, "ram:IssuerAssignedID", document.preceding[0])  # BT-25
        _date(reference, "ram:FormattedIssueDateTime", document.preceding[1], qualified=True)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def invoice_xml(session: Session, invoice: Invoice) -> bytes:
    return cii_xml(invoice_document(session, invoice))


def credit_note_xml(session: Session, note: CreditNote) -> bytes:
    return cii_xml(credit_note_document(session, note))


def embed_in_pdf(pdf: bytes, xml: bytes, document: LegalDocument) -> bytes:
    """The PDF as a Factur-X PDF: the XML attached as ``factur-x.xml`` (relationship
    "Data"), with the Factur-X XMP metadata that names the EN 16931 profile."""
    from facturx import generate_from_binary

    title = f"{document.title} {document.number}"
    return bytes(
        generate_from_binary(
            pdf,
            xml,
            flavor="factur-x",
            level="en16931",
            check_xsd=False,
            pdf_metadata={
                "author": document.seller.name,
                "keywords": "Factur-X, e-invoice",
                "title": title,
                "subject": f"{title} of {document.issued_at:%Y-%m-%d} from {document.seller.name}",
            },
            lang="en-GB",
        )
    )
