"""Invoices as HTML (Jinja2) and PDF (fpdf2).

An invoice whose every character is in Windows-1252 (most of them) is written with the PDF's
built-in Helvetica, as fast as ever (about a millisecond). Any other is written again with
DejaVu Sans embedded (shipped in ``billing/fonts/``: Latin, Greek, Cyrillic, Armenian and
Georgian letters, punctuation, currency and math signs; each PDF carries only the glyphs it
uses, and loading the font costs about a tenth of a second), so a name prints as written:
"Dvořák", "Παπαδόπουλος", "Достоевский", never with a "?". The PDF of an issued invoice is
a Factur-X PDF: its EN 16931 XML (``billing.einvoice``) is attached inside. Amounts are shown by
``kit.money`` (the number alone in the columns headed by the currency, with the currency
in sentences).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from importlib.resources import as_file, files
from typing import TYPE_CHECKING

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.orm import Session

from imhost.billing.documents import LegalDocument, invoice_document, rate_label
from imhost.billing.einvoice import cii_xml, embed_in_pdf
from imhost.billing.invoicing import invoice_lines
from imhost.billing.models import Invoice, InvoiceLine
from imhost.billing.parties import Party
from imhost.kit.money import format_amount, format_money

if TYPE_CHECKING:
    from fpdf import FPDF

_env = Environment(
    loader=PackageLoader("imhost.billing", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

UsageLink = Callable[[InvoiceLine], str]


def render_invoice_html(
    session: Session, invoice: Invoice, *, usage_link: UsageLink | None = None
) -> str:
    doc = invoice_document(session, invoice)
    links = (
        {
            line.position: usage_link(line)
            for line in invoice_lines(session, invoice.id)
            if line.metric
        }
        if usage_link is not None
        else {}
    )

    def money(amount: Decimal) -> str:
        return format_amount(amount, invoice.currency)

    def money_text(amount: Decimal) -> str:
        return format_money(amount, invoice.currency)

    return _env.get_template("invoice.html").render(
        invoice=invoice,
        doc=doc,
        money=money,
        money_text=money_text,
        usage_links=links,
        rate=lambda line: rate_label(line.category, line.percent),
        group_label=lambda group: group.label,
    )


CORE_FONT = "Helvetica"
FONT = "DejaVuSans"
_FONT_FILES = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf"}


def _add_fonts(pdf: FPDF) -> None:
    """Embed the Unicode font the invoice is written in (regular and bold)."""
    folder = files("imhost.billing") / "fonts"
    for style, name in _FONT_FILES.items():
        with as_file(folder / name) as path:
            pdf.add_font(FONT, style, str(path))


def render_invoice_pdf(session: Session, invoice: Invoice) -> bytes:
    """The invoice as a Factur-X PDF: the printed invoice with its EN 16931 XML inside."""
    doc = invoice_document(session, invoice)
    if invoice.number is None:
        return _plain_pdf(invoice, doc)  # a draft is not an invoice yet: no e-invoice inside
    # Factur-X is PDF/A-3: every font embedded (the Unicode font, never a core font) and the
    # sRGB output intent fpdf2 adds when asked for PDF/A-3B.
    pdf = _render_pdf(invoice, doc, unicode_font=True, pdfa=True)
    return embed_in_pdf(pdf, cii_xml(doc), doc)


def _plain_pdf(invoice: Invoice, doc: LegalDocument) -> bytes:
    # fpdf2 (with fontTools and numpy, ~25 MB) is imported by the first PDF rendered,
    # not by every process that might send an invoice.
    from fpdf.errors import FPDFUnicodeEncodingException

    try:
        return _render_pdf(invoice, doc, unicode_font=False)
    except FPDFUnicodeEncodingException:
        # A character outside Windows-1252 (ř, Greek, Cyrillic ...): embed the Unicode font.
        return _render_pdf(invoice, doc, unicode_font=True)


def _render_pdf(
    invoice: Invoice, doc: LegalDocument, *, unicode_font: bool, pdfa: bool = False
) -> bytes:
    from fpdf import FPDF

    cur = invoice.currency
    pdf = FPDF(format="A4", enforce_compliance="PDF/A-3B" if pdfa else None)
    if unicode_font:
        _add_fonts(pdf)
        font, calc_style = FONT, ""
    else:
        pdf.core_fonts_encoding = "windows-1252"  # the WinAnsiEncoding of the core fonts
        font, calc_style = CORE_FONT, "I"
    pdf.set_title(f"{doc.title} {invoice.number or 'draft'}")
    pdf.set_author(doc.seller.name)
    pdf.set_creation_date(invoice.issued_at or invoice.created_at)
    pdf.add_page()
    pdf.set_auto_page_break(auto=True, margin=15)
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def text(value: str, size: int = 10, style: str = "", h: float = 5) -> None:
        pdf.set_font(font, style, size)
        pdf.multi_cell(width, h, value, new_x="LMARGIN", new_y="NEXT")

    def party(who: Party) -> None:
        for line in who.address_lines:
            text(line, 9)
        if who.vat_id:
            text(f"VAT ID: {who.vat_id}", 9)

    text(doc.seller.name, 12, "B")
    party(doc.seller)
    if doc.seller.registration_number:
        text(f"Registration: {doc.seller.registration_number}", 9)
    if doc.seller.email:
        text(doc.seller.email, 9)
    pdf.ln(4)
    text(f"{doc.title} {invoice.number or '(draft)'}", 16, "B", 8)
    if invoice.issued_at:
        text(f"Issue date: {invoice.issued_at:%Y-%m-%d}")
    if invoice.due_at:
        text(f"Due date: {invoice.due_at:%Y-%m-%d}")
    if doc.period:
        text(f"Service period: {doc.period[0]:%Y-%m-%d} to {doc.period[1]:%Y-%m-%d}")
    pdf.ln(2)
    text("Bill to", 10, "B")
    text(doc.buyer.name)
    party(doc.buyer)
    pdf.ln(4)

    amount_w, rate_w = 32.0, 30.0
    desc_w = width - amount_w - rate_w
    pdf.set_font(font, "B", 10)
    pdf.cell(desc_w, 7, "Description", border="B")
    pdf.cell(rate_w, 7, "VAT", border="B", align="R")
    pdf.cell(amount_w, 7, f"Net ({cur})", border="B", align="R", new_x="LMARGIN", new_y="NEXT")
    for line in doc.lines:
        y = pdf.get_y()
        pdf.set_font(font, "", 10)
        pdf.multi_cell(desc_w, 5, line.description, new_x="RIGHT", new_y="TOP")
        pdf.set_font(font, "", 8)
        pdf.cell(rate_w, 5, rate_label(line.category, line.percent), align="R")
        pdf.set_font(font, "", 10)
        pdf.cell(
            amount_w, 5, format_amount(line.net, cur), align="R", new_x="LMARGIN", new_y="NEXT"
        )
        pdf.set_y(max(pdf.get_y(), y + 5))
        details = []
        if line.period:
            details.append(f"Period: {line.period[0]:%Y-%m-%d} to {line.period[1]:%Y-%m-%d}")
        if line.calculation:
            details.append(line.calculation)
        if doc.prices_include_tax and line.charged != line.net:
            details.append(f"Charged {format_money(line.charged, cur)} including VAT")
        if details:
            pdf.set_font(font, calc_style, 8)
            pdf.multi_cell(desc_w, 4, "\n".join(details), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
    pdf.ln(2)
    pdf.set_font(font, "B", 10)
    pdf.cell(desc_w, 6, "VAT rate", border="B")
    pdf.cell(rate_w, 6, "Net", border="B", align="R")
    pdf.cell(amount_w, 6, "VAT", border="B", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(font, "", 10)
    for group in doc.vat:
        pdf.cell(desc_w, 6, group.label)
        pdf.cell(rate_w, 6, format_amount(group.base, cur), align="R")
        pdf.cell(
            amount_w, 6, format_amount(group.tax, cur), align="R", new_x="LMARGIN", new_y="NEXT"
        )
    pdf.ln(2)
    totals = [("Total net", doc.net_total), ("Total VAT", doc.tax_total), ("Total", invoice.total)]
    if invoice.amount_paid:
        totals.append(("Paid", invoice.amount_paid))
    if invoice.amount_credited:
        totals.append(("Credited", invoice.amount_credited))
    totals.append(("Amount due", invoice.amount_due))
    for label, value in totals:
        pdf.set_font(font, "B" if label in ("Total", "Amount due") else "", 10)
        pdf.cell(desc_w + rate_w, 6, label, align="R")
        pdf.cell(amount_w, 6, format_amount(value, cur), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    if doc.prices_include_tax:
        text("Prices include VAT; the net amounts and the VAT they contain are shown.", 9)
    for note in doc.notes:
        text(note, 9)
    if doc.payment_terms and invoice.amount_due > 0:
        text(doc.payment_terms, 9)
    if invoice.amount_due > 0 and doc.bank_details:
        text(
            f"Please transfer {format_money(invoice.amount_due, cur)} with the reference "
            f"{invoice.number} to: {doc.bank_details}",
            9,
        )
    text(
        "Amounts are rounded per line to the currency's minor unit, half up; totals are the "
        "sums of the lines.",
        8,
    )
    return bytes(pdf.output())
