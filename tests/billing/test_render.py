"""Invoices as people read them: names in any script in the PDF, amounts by currency."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfReader
from sqlalchemy import select

from imhost.billing import service
from imhost.billing.flows import run_billing
from imhost.billing.models import Invoice
from imhost.billing.render import render_invoice_html, render_invoice_pdf
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.notify.models import OutboundEmail
from imhost.runtime import Runtime

from .factories import make_org, make_plan


def _invoice_for(
    runtime: Runtime, clock: FrozenClock, name: str, *, currency: str = "EUR", fee: str = "49.00"
) -> str:
    clock.set(utc(2026, 11, 1, 8))
    with transaction(runtime.session_factory) as s:
        org = make_org(s, clock, name=name)
        plan = make_plan(s, clock, currency=currency, base_fee=fee)
        service.start_subscription(s, clock, org.id, plan.id)
    run_billing(runtime.session_factory, clock, clock.now())
    with runtime.session_factory() as s:
        return s.scalars(select(Invoice.id)).one()


def _pdf(runtime: Runtime, invoice_id: str) -> bytes:
    with runtime.session_factory() as s:
        return render_invoice_pdf(s, s.get_one(Invoice, invoice_id))


def _pdf_text(runtime: Runtime, invoice_id: str) -> str:
    pages = PdfReader(io.BytesIO(_pdf(runtime, invoice_id))).pages
    return "\n".join(page.extract_text() for page in pages)


def _fonts(pdf: bytes) -> set[str]:
    reader = PdfReader(io.BytesIO(pdf))
    return {
        str(font["/BaseFont"])
        for page in reader.pages
        for font in page["/Resources"]["/Font"].values()
    }


@pytest.mark.parametrize(
    "name",
    [
        "Antonín Dvořák s.r.o.",  # Czech: ř is not in Latin-1
        "Παπαδόπουλος Α.Ε.",  # Greek
        "ООО Достоевский и партнёры",  # Cyrillic
        "Łódź Software Sp. z o.o.",  # Polish
    ],
)
def test_the_pdf_prints_the_customer_name_as_written(
    runtime: Runtime, clock: FrozenClock, name: str
) -> None:
    invoice_id = _invoice_for(runtime, clock, name)
    text = _pdf_text(runtime, invoice_id)
    assert name in text
    assert "?" not in text.split("Bill to")[1].splitlines()[1]
    assert any("DejaVuSans" in font for font in _fonts(_pdf(runtime, invoice_id)))


def test_an_issued_invoice_embeds_its_font_even_for_windows_1252_text(
    runtime: Runtime, clock: FrozenClock
) -> None:
    """An issued invoice is a Factur-X PDF, so PDF/A-3: no built-in font, even when every
    character is in Helvetica's encoding (ü, é, €, –)."""
    invoice_id = _invoice_for(runtime, clock, "Müller & Söhne – Café €")
    pdf = _pdf(runtime, invoice_id)
    assert _fonts(pdf) and all("DejaVuSans" in font for font in _fonts(pdf))
    assert "Müller & Söhne – Café €" in _pdf_text(runtime, invoice_id)


def test_the_pdf_and_html_show_yen_without_decimals(runtime: Runtime, clock: FrozenClock) -> None:
    invoice_id = _invoice_for(runtime, clock, "Tanaka KK", currency="JPY", fee="1000")
    text = _pdf_text(runtime, invoice_id)
    assert "Net (JPY)" in text
    assert "1,000" in text and "1,000.00" not in text
    with runtime.session_factory() as s:
        html = render_invoice_html(s, s.get_one(Invoice, invoice_id))
    assert "1,000" in html and "1,000.00" not in html


def test_the_invoice_email_shows_the_amount_with_its_currency(
    runtime: Runtime, clock: FrozenClock
) -> None:
    _invoice_for(runtime, clock, "Tanaka KK", currency="JPY", fee="1000")
    with runtime.session_factory() as s:
        mail = s.scalars(select(OutboundEmail).where(OutboundEmail.kind == "invoice")).one()
    assert "¥1,000" in mail.subject
    assert "Amount due: ¥1,000," in mail.text
    assert "1,000.00" not in mail.text
