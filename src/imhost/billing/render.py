"""Invoices as HTML (Jinja2) and PDF (fpdf2 with its built-in core fonts, no downloads).

The core fonts cover Latin-1; characters outside it (rare in names) print as ``?`` in the PDF
and are exact in the HTML.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from fpdf import FPDF
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.orm import Session

from imhost.billing.invoicing import invoice_lines
from imhost.billing.models import Invoice, InvoiceLine
from imhost.billing.periods import fmt
from imhost.billing.settings import read_profile

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
        return fmt(amount, invoice.currency)

    return _env.get_template("invoice.html").render(
        invoice=invoice, lines=lines, profile=profile, money=money, usage_link=usage_link
    )


def _latin1(text: str) -> str:
    text = text.replace("\u2013", "-").replace("\u2014", "-").replace("\u2026", "...")
    return text.encode("latin-1", "replace").decode("latin-1")


def render_invoice_pdf(session: Session, invoice: Invoice) -> bytes:
    profile = read_profile(session)
    lines = invoice_lines(session, invoice.id)
    cur = invoice.currency

    pdf = FPDF(format="A4")
    pdf.set_title(_latin1(f"Invoice {invoice.number or 'draft'}"))
    pdf.set_author(_latin1(profile.legal_name))
    pdf.set_creation_date(invoice.issued_at or invoice.created_at)
    pdf.add_page()
    pdf.set_auto_page_break(auto=True, margin=15)
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def text(value: str, size: int = 10, style: str = "", h: float = 5) -> None:
        pdf.set_font("Helvetica", style, size)
        pdf.multi_cell(width, h, _latin1(value), new_x="LMARGIN", new_y="NEXT")

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
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(desc_w, 7, "Description", border="B")
    pdf.cell(
        amount_w,
        7,
        _latin1(f"Amount ({cur})"),
        border="B",
        align="R",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    for line in lines:
        amount = fmt(line.amount, cur)
        if not line.counts_in_total:
            amount = f"({amount})"
        y = pdf.get_y()
        pdf.set_font("Helvetica", "", 10)
        pdf.multi_cell(desc_w, 5, _latin1(line.description), new_x="RIGHT", new_y="TOP")
        pdf.cell(amount_w, 5, amount, align="R", new_x="LMARGIN", new_y="NEXT")
        pdf.set_y(max(pdf.get_y(), y + 5))
        if line.calculation:
            pdf.set_font("Helvetica", "I", 8)
            pdf.multi_cell(desc_w, 4, _latin1(line.calculation), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
    pdf.ln(2)
    for label, value in (
        ("Subtotal (net)", invoice.subtotal),
        ("Tax", invoice.tax_total),
        ("Total", invoice.total),
        ("Amount due", invoice.amount_due),
    ):
        pdf.set_font("Helvetica", "B" if label in ("Total", "Amount due") else "", 10)
        pdf.cell(desc_w, 6, label, align="R")
        pdf.cell(amount_w, 6, fmt(value, cur), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    if invoice.prices_include_tax:
        text("Prices include tax; the tax line states the tax they contain.", 9)
    if invoice.tax_note:
        text(invoice.tax_note, 9)
    if invoice.amount_due > 0 and profile.bank_details:
        text(
            f"Please transfer {fmt(invoice.amount_due, cur)} {cur} with the reference "
            f"{invoice.number} to: {profile.bank_details}",
            9,
        )
    text(
        "Amounts are rounded per line to the currency's minor unit, half up; totals are the "
        "sums of the lines.",
        8,
    )
    return bytes(pdf.output())
