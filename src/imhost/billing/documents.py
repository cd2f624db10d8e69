"""An invoice or credit note as a legal document: parties, lines at their net amounts, the
VAT breakdown per category and rate, totals. Pure once built.

The HTML page, the PDF and the EN 16931 e-invoice (``billing.einvoice``) all read this one
view, so what a person reads and what accounting software reads cannot differ.

VAT categories are those of EN 16931 (UNTDID 5305): ``S`` standard rate, ``Z`` a 0 % rate
configured for the country, ``AE`` reverse charge, ``O`` not subject to VAT (no rate for the
country: outside the provider's tax scope), and ``E`` for the charges that are outside the
tax on an invoice that is otherwise taxed (a late fee, the credit carried to the account).

Lines of tax-inclusive prices are gross; their net amounts are their share of the category's
net total (``gross × 100 / (100 + rate)``, rounded per line, the rounding difference on the
largest line), so that the net lines add up exactly to the taxed amount less its tax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost.billing.invoicing import invoice_lines
from imhost.billing.models import (
    CreditNote,
    CreditNoteLine,
    Invoice,
    InvoiceLine,
    LineKind,
    Payment,
)
from imhost.billing.parties import Party, bank_details_of, buyer_of, seller_of
from imhost.billing.settings import read_profile
from imhost.billing.taxes import REVERSE_CHARGE_NOTE
from imhost.kit.errors import NotFound
from imhost.kit.money import round_minor

INVOICE = "380"  # UNTDID 1001: commercial invoice
CREDIT_NOTE = "381"  # UNTDID 1001: credit note


def rate_label(category: str, percent: Decimal) -> str:
    """A VAT category and rate in words: "19 % VAT", "0 %, reverse charge"."""
    if category == "S":
        return f"{percent.normalize():f} % VAT"
    return {
        "Z": "0 % VAT",
        "AE": "0 %, reverse charge",
        "O": "0 %, not subject to VAT",
        "E": "0 %, outside the VAT",
    }.get(category, f"{percent.normalize():f} %")


EXEMPTION_REASONS = {
    "AE": ("Reverse charge", "VATEX-EU-AE"),
    "O": ("Not subject to VAT", "VATEX-EU-O"),
    "E": ("Not a payment for a supply of services: outside the VAT", None),
}
CREDITED_TAX_PREFIX = "Tax on the credited lines"  # billing.payments.issue_credit_note


@dataclass(frozen=True)
class DocumentLine:
    position: int
    description: str
    calculation: str
    net: Decimal  # the line's amount net of VAT
    charged: Decimal  # as charged (gross for tax-inclusive prices)
    category: str
    percent: Decimal
    period: tuple[datetime, datetime] | None = None


@dataclass(frozen=True)
class VatGroup:
    category: str
    percent: Decimal
    base: Decimal
    tax: Decimal

    @property
    def label(self) -> str:
        return rate_label(self.category, self.percent)

    @property
    def exemption(self) -> tuple[str, str | None] | None:
        return EXEMPTION_REASONS.get(self.category)


@dataclass(frozen=True)
class LegalDocument:
    type_code: str
    number: str
    issued_at: datetime
    due_at: datetime | None
    currency: str
    seller: Party
    buyer: Party
    lines: list[DocumentLine]
    vat: list[VatGroup]
    prepaid: Decimal
    prices_include_tax: bool
    period: tuple[datetime, datetime] | None
    notes: list[str] = field(default_factory=list)
    bank_details: str = ""
    payment_terms: str | None = None
    preceding: tuple[str, datetime] | None = None  # the credited invoice (number, issued)

    @property
    def title(self) -> str:
        return "Credit note" if self.type_code == CREDIT_NOTE else "Invoice"

    @property
    def net_total(self) -> Decimal:
        return sum((line.net for line in self.lines), Decimal(0))

    @property
    def tax_total(self) -> Decimal:
        return sum((group.tax for group in self.vat), Decimal(0))

    @property
    def grand_total(self) -> Decimal:
        return self.net_total + self.tax_total

    @property
    def due_payable(self) -> Decimal:
        return self.grand_total - self.prepaid

    @property
    def reverse_charge(self) -> bool:
        return any(group.category == "AE" for group in self.vat)


# --- the tax decision of an invoice -----------------------------------------------------------


def tax_decision_of(invoice: Invoice, lines: list[InvoiceLine]) -> tuple[str, Decimal]:
    """The invoice's VAT category and rate: as stored, or (invoices made before they were
    stored) as its tax line and note say."""
    if invoice.tax_category is not None and invoice.tax_percent is not None:
        return invoice.tax_category, invoice.tax_percent
    if invoice.tax_note == REVERSE_CHARGE_NOTE:
        return "AE", Decimal(0)
    percent = Decimal(0)
    for line in lines:
        if line.kind == LineKind.TAX.value:
            head = line.description.split(" % ", 1)[0]
            try:
                percent = Decimal(head)
            except ArithmeticError:
                percent = Decimal(0)
    if invoice.tax_note and invoice.tax_note.startswith("No tax rate"):
        return "O", Decimal(0)
    return ("S" if percent > 0 else "Z"), percent


def _line_category(line: InvoiceLine, main: tuple[str, Decimal]) -> tuple[str, Decimal]:
    if line.taxable and line.kind != LineKind.LATE_FEE.value:
        return main
    if line.kind == LineKind.CARRIED_TO_CREDIT.value:
        return main  # it offsets taxed credits: it belongs with them
    if main[0] == "O":
        return main
    return "E", Decimal(0)


def _net_shares(
    gross: list[Decimal], tax: Decimal, percent: Decimal, currency: str
) -> list[Decimal]:
    """Net amounts of tax-inclusive ``gross`` amounts that add up to ``sum(gross) - tax``."""
    if not gross:
        return []
    nets = [round_minor(g * 100 / (100 + percent), currency) for g in gross]
    difference = sum(gross, Decimal(0)) - tax - sum(nets, Decimal(0))
    largest = max(range(len(gross)), key=lambda i: abs(gross[i]))
    nets[largest] += difference
    return nets


def _period(line_periods: list[tuple[datetime, datetime]]) -> tuple[datetime, datetime] | None:
    periods = [p for p in line_periods if p[1] > p[0]]
    if not periods:
        return None
    return min(p[0] for p in periods), max(p[1] for p in periods)


def _groups(lines: list[DocumentLine], taxes: dict[tuple[str, Decimal], Decimal]) -> list[VatGroup]:
    order: list[tuple[str, Decimal]] = []
    for line in lines:
        key = (line.category, line.percent)
        if key not in order:
            order.append(key)
    return [
        VatGroup(
            category=key[0],
            percent=key[1],
            base=sum(
                (line.net for line in lines if (line.category, line.percent) == key), Decimal(0)
            ),
            tax=taxes.get(key, Decimal(0)),
        )
        for key in order
    ]


def _notes(category: str, seller: Party, buyer: Party, tax_note: str | None) -> list[str]:
    if category == "AE":
        return [
            f"{REVERSE_CHARGE_NOTE} Supplier's VAT ID: {seller.vat_id or 'not given'}; "
            f"customer's VAT ID: {buyer.vat_id or 'not given'}."
        ]
    return [tax_note] if tax_note else []


def _payment_terms(issued: datetime, due: datetime | None) -> str | None:
    if due is None:
        return None
    days = max((due - issued).days, 0)
    if days == 0:
        return f"Payable on receipt, by {due:%Y-%m-%d}."
    return f"Payable within {days} days of the invoice date, by {due:%Y-%m-%d}."


def _lines_in(
    rows: Sequence[
        tuple[int, str, str, Decimal, tuple[str, Decimal], tuple[datetime, datetime] | None]
    ],
    taxes: dict[tuple[str, Decimal], Decimal],
    *,
    gross: bool,
    currency: str,
) -> list[DocumentLine]:
    """Document lines of (position, description, calculation, amount, (category, rate),
    period) rows; gross amounts are made net per category."""
    nets = {i: row[3] for i, row in enumerate(rows)}
    if gross:
        for key in {row[4] for row in rows}:
            members = [i for i, row in enumerate(rows) if row[4] == key]
            shares = _net_shares(
                [rows[i][3] for i in members], taxes.get(key, Decimal(0)), key[1], currency
            )
            nets.update(zip(members, shares, strict=True))
    return [
        DocumentLine(
            position=row[0],
            description=row[1],
            calculation=row[2],
            net=nets[i],
            charged=row[3],
            category=row[4][0],
            percent=row[4][1],
            period=row[5],
        )
        for i, row in enumerate(rows)
    ]


# --- an invoice ------------------------------------------------------------------------------


def invoice_document(session: Session, invoice: Invoice) -> LegalDocument:
    profile = read_profile(session)
    stored = invoice_lines(session, invoice.id)
    main = tax_decision_of(invoice, stored)
    seller, buyer = seller_of(invoice, profile), buyer_of(invoice)
    if buyer.country is None:  # taxed as at home (docs/billing.md, "Taxes"): addressed so too
        buyer = replace(buyer, country=seller.country)
    cur = invoice.currency
    rows = []
    for line in stored:
        if line.kind == LineKind.TAX.value:
            continue
        period = (
            (line.period_start, line.period_end)
            if line.period_start is not None and line.period_end is not None
            else None
        )
        rows.append(
            (
                line.position,
                line.description,
                line.calculation,
                line.amount,
                _line_category(line, main),
                period,
            )
        )
    if not rows:  # an invoice of nothing (a free trial's period) still has its one line
        rows.append((1, "No charges for this period", "", Decimal(0), main, None))
    taxes = {main: invoice.tax_total}
    lines = _lines_in(rows, taxes, gross=invoice.prices_include_tax, currency=cur)
    issued = invoice.issued_at or invoice.created_at
    periods = [line.period for line in lines if line.period is not None]
    for start, end in (
        (invoice.period_start, invoice.period_end),
        (invoice.usage_period_start, invoice.usage_period_end),
    ):
        if start is not None and end is not None:
            periods.append((start, end))
    prepaid = sum(
        session.scalars(
            select(Payment.applied_to_invoice).where(
                Payment.invoice_id == invoice.id, Payment.received_at <= issued
            )
        ),
        Decimal(0),
    )
    return LegalDocument(
        type_code=INVOICE,
        number=invoice.number or "draft",
        issued_at=issued,
        due_at=invoice.due_at,
        currency=cur,
        seller=seller,
        buyer=buyer,
        lines=lines,
        vat=_groups(lines, taxes),
        prepaid=prepaid,
        prices_include_tax=invoice.prices_include_tax,
        period=_period(periods),
        notes=_notes(main[0], seller, buyer, invoice.tax_note),
        bank_details=bank_details_of(invoice, profile),
        payment_terms=_payment_terms(issued, invoice.due_at),
    )


# --- a credit note ---------------------------------------------------------------------------


def get_credit_note(
    session: Session, credit_note_id: str, organization_id: str | None = None
) -> CreditNote:
    note = session.get(CreditNote, credit_note_id)
    if note is None or (organization_id is not None and note.organization_id != organization_id):
        raise NotFound(f"no credit note {credit_note_id!r}")
    return note


def credit_note_document(session: Session, note: CreditNote) -> LegalDocument:
    """A credit note: its lines in the credited invoice's categories; the VAT it takes back
    is the "tax on the credited lines" it states (prices net of tax), or the VAT contained in
    its amounts (tax-inclusive prices, and a credit of the whole invoice)."""
    invoice = session.get_one(Invoice, note.invoice_id)
    invoice_doc = invoice_document(session, invoice)
    source = {line.id: line for line in invoice_lines(session, invoice.id)}
    main = tax_decision_of(invoice, list(source.values()))
    cur = note.currency
    note_lines = list(
        session.scalars(
            select(CreditNoteLine)
            .where(CreditNoteLine.credit_note_id == note.id)
            .order_by(CreditNoteLine.id)
        )
    )
    taxes: dict[tuple[str, Decimal], Decimal] = {}
    rows = []
    gross = invoice.prices_include_tax
    whole = [line for line in note_lines if line.invoice_line_id is None]
    if len(note_lines) == 1 and whole and note.total == invoice.total:
        # The whole invoice, as it was: one line per VAT category and rate.
        for n, group in enumerate(invoice_doc.vat, start=1):
            key = (group.category, group.percent)
            rows.append(
                (n, f"Credit of invoice {invoice.number}: {group.label}", "", group.base, key, None)
            )
            taxes[key] = group.tax
        gross = False
    elif whole and len(note_lines) == 1:
        # The rest of an invoice credited in part before: its amount includes the VAT.
        line = whole[0]
        rows.append((1, line.description, "", line.amount, main, None))
        taxes[main] = (
            round_minor(line.amount * main[1] / (100 + main[1]), cur)
            if main[0] == "S"
            else Decimal(0)
        )
        gross = True
    else:
        for n, line in enumerate(note_lines, start=1):
            if line.invoice_line_id is None and line.description.startswith(CREDITED_TAX_PREFIX):
                taxes[main] = taxes.get(main, Decimal(0)) + line.amount
                continue
            credited = source.get(line.invoice_line_id or "")
            key = _line_category(credited, main) if credited is not None else main
            rows.append((n, line.description, "", line.amount, key, None))
        if gross:
            for key in {row[4] for row in rows}:
                if key[0] == "S":
                    base = sum((row[3] for row in rows if row[4] == key), Decimal(0))
                    taxes[key] = round_minor(base * key[1] / (100 + key[1]), cur)
    lines = _lines_in(rows, taxes, gross=gross, currency=cur)
    seller, buyer = invoice_doc.seller, invoice_doc.buyer
    return LegalDocument(
        type_code=CREDIT_NOTE,
        number=note.number,
        issued_at=note.created_at,
        due_at=None,
        currency=cur,
        seller=seller,
        buyer=buyer,
        lines=lines,
        vat=_groups(lines, taxes),
        prepaid=Decimal(0),
        prices_include_tax=invoice.prices_include_tax,
        period=invoice_doc.period,
        notes=[f"Reason: {note.reason}", *_notes(main[0], seller, buyer, invoice.tax_note)],
        bank_details="",
        payment_terms=None,
        preceding=(invoice.number or "", invoice.issued_at or invoice.created_at),
    )


def last_day(end: datetime) -> datetime:
    """The last day a period ending at ``end`` (exclusive, at midnight) covers."""
    return end - timedelta(microseconds=1)
