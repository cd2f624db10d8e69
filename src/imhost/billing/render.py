"""Invoices as HTML (Jinja2) and PDF (fpdf2).

An invoice whose every character is in Windows-1252 (most of them) is written with the PDF's
built-in Helvetica, as fast as ever (about a millisecond). Any other is written again with
DejaVu Sans embedded (shipped in ``billing/fonts/``: Latin, Greek, Cyrillic, Armenian and
Georgian letters, punctuation, currency and math signs; each PDF carries only the glyphs it
uses, and loading the font costs about a tenth of a second), so a name prints as written:
"Dvořák", "Παπαδόπουλος", "Достоевский", never with a "?". Amounts are shown by
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

from imhost.billing.invoicing import invoice_lines
from imhost.billing.models import BillingProfile, Invoice, InvoiceLine
from imhost.billing.settings import read_profile
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
    profile = read_profile(session)
    lines = invoice_lines(session, invoice.id)

    def money(amount: Decimal) -> str:
        return format_amount(amount, invoice.currency)

    def money_text(amount: Decimal) -> str:
        return format_money(amount, invoice.currency)

    return _env.get_template("invoice.html").render(
        invoice=invoice,
        lines=lines,
        profile=profile,
        money=money,
        money_text=money_text,
        usage_link=usage_link,
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
    # fpdf2 (with fontTools and numpy, ~25 MB) is imported by the first PDF rendered,
    # not by every process that might send an invoice.
    from fpdf.errors import FPDFUnicodeEncodingException

    profile = read_profile(session)
    lines = invoice_lines(session, invoice.id)
    try:
        return _render_pdf(invoice, profile, lines, unicode_font=False)
    except FPDFUnicodeEncodingException:
        # A character outside Windows-1252 (ř, Greek, Cyrillic ...): embed the Unicode font.
        return _render_pdf(invoice, profile, lines, unicode_font=True)


def _render_pdf(
    invoice: Invoice, profile: BillingProfile, lines: list[InvoiceLine], *, unicode_font: bool
) -> bytes:
    from fpdf import FPDF

    cur = invoice.currency
    pdf = FPDF(format="A4")
    if unicode_font:
        _add_fonts(pdf)
        font, calc_style = FONT, ""
    else:
        pdf.core_fonts_encoding = "windows-1252"  # the WinAnsiEncoding of the core fonts
        font, calc_style = CORE_FONT, "I"
    pdf.set_title(f"Invoice {invoice.number or 'draft'}")
    pdf.set_author(profile.legal_name)
    pdf.set_creation_date(invoice.issued_at or invoice.created_at)
    pdf.add_page()
    pdf.set_auto_page_break(auto=True, margin=15)
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def text(value: str, size: int = 10, style: str = "", h: float = 5) -> None:
        pdf.set_font(font, style, size)
        pdf.multi_cell(width, h, value, new_x="LMARGIN", new_y="NEXT")

    text(profile.legal_name, 12, "B")
    if profile.address:
        text(profile.address, 9)
    if profile.provider_tax_id:
        text(f"Tax id: {profile.provider_tax_id}", 9)
    pdf.ln(4)
    text(f"Invoice {invoice.number or '(draft)'}", 16, "B", 8)
    dates = []
    if invoice.issued_at:
        dates.append(f"Issued {invoice.issued_at:%Y-%m-%d}")
    if invoice.due_at:
        dates.append(f"due {invoice.due_at:%Y-%m-%d}")
    if dates:
        text(", ".join(dates))
    pdf.ln(2)
    text("Bill to", 10, "B")
    text(invoice.customer_name)
    if invoice.customer_country:
        text(f"Country: {invoice.customer_country}")
    if invoice.customer_tax_id:
        text(f"Tax id: {invoice.customer_tax_id}")
    pdf.ln(4)

    amount_w = 35.0
    desc_w = width - amount_w
    pdf.set_font(font, "B", 10)
    pdf.cell(desc_w, 7, "Description", border="B")
    pdf.cell(
        amount_w,
        7,
        f"Amount ({cur})",
        border="B",
        align="R",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    for line in lines:
        amount = format_amount(line.amount, cur)
        if not line.counts_in_total:
            amount = f"({amount})"
        y = pdf.get_y()
        pdf.set_font(font, "", 10)
        pdf.multi_cell(desc_w, 5, line.description, new_x="RIGHT", new_y="TOP")
        pdf.cell(amount_w, 5, amount, align="R", new_x="LMARGIN", new_y="NEXT")
        pdf.set_y(max(pdf.get_y(), y + 5))
        if line.calculation:
            pdf.set_font(font, calc_style, 8)
            pdf.multi_cell(desc_w, 4, line.calculation, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
    pdf.ln(2)
    for label, value in (
        ("Subtotal (net)", invoice.subtotal),
        ("Tax", invoice.tax_total),
        ("Total", invoice.total),
        ("Amount due", invoice.amount_due),
    ):
        pdf.set_font(font, "B" if label in ("Total", "Amount due") else "", 10)
        pdf.cell(desc_w, 6, label, align="R")
        pdf.cell(amount_w, 6, format_amount(value, cur), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    if invoice.prices_include_tax:
        text("Prices include tax; the tax line states the tax they contain.", 9)
    if invoice.tax_note:
        text(invoice.tax_note, 9)
    if invoice.amount_due > 0 and profile.bank_details:
        text(
            f"Please transfer {format_money(invoice.amount_due, cur)} with the reference "
            f"{invoice.number} to: {profile.bank_details}",
            9,
        )
    text(
        "Amounts are rounded per line to the currency's minor unit, half up; totals are the "
        "sums of the lines.",
        8,
    )
    return bytes(pdf.output())
