"""End-to-end in chromium: staff set up direct debit in the console, announce and export the
debits of a customer with a mandate, download the pain.008 file, then upload a bank statement
and read its result, at a phone's and a desktop's width."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from imhost.billing.composition import DraftLine
from imhost.billing.invoicing import issue_standalone_invoice
from imhost.billing.sepa.mandates import sign_mandate
from imhost.billing.sepa.models import SepaCollection
from imhost.kit.clock import SystemClock
from tests.billing.sepa.helpers import Tx, assert_schema_valid, camt053
from tests.e2e.conftest import SHOTS, Site
from tests.e2e.test_portal_and_console import arrive, enrol_totp, sign_in

pytestmark = pytest.mark.e2e


def _shot(page: Any, name: str, width: int, height: int) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": width, "height": height})
    page.screenshot(path=str(SHOTS / f"{name}-{width}x{height}.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def _customer_with_mandate_and_invoice(site: Site) -> str:
    """Acme gives a mandate and has an open invoice (49.00 EUR and tax); its number."""
    from imhost.accounts import service as accounts

    clock = SystemClock()
    with site.runtime.session_factory() as session:
        org = accounts.get_organization(session, site.acme_slug)
        sign_mandate(
            session,
            clock,
            org.id,
            account_holder="Acme e2e",
            iban="DE89370400440532013000",
            accepted=True,
            signed_by="owner@acme-e2e.example.com",
            signed_from="192.0.2.1",
        )
        invoice = issue_standalone_invoice(
            session,
            clock,
            org.id,
            [DraftLine(kind="one_off", description="Hosting", amount=Decimal("49.00"))],
            currency="EUR",
            kind="subscription",
        )
        session.commit()
        return str(invoice.number)


def test_staff_export_debits_and_import_a_statement(
    site: Site, browser_page: Any, tmp_path: Path
) -> None:
    page = browser_page
    admin = "admin@provider.example.com"
    sign_in(page, site, admin, site.password_of(admin))
    arrive(page, r"/portal/account/mfa")
    enrol_totp(page)
    page.goto(site.url + "/console/")
    page.get_by_role("link", name="Direct debit").click()
    arrive(page, r"/console/sepa")
    page.get_by_label("Creditor identifier").fill("DE97ZZZ09999999999")
    page.get_by_label("IBAN of the account to collect to").fill("DE02 1203 0000 0000 2020 51")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("[data-error-summary]")).to_contain_text("check digits do not match")
    _shot(page, "console-direct-debit-error", 390, 844)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.get_by_label("Creditor identifier").fill("DE98ZZZ09999999999")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Direct debit settings saved.")).to_be_visible()

    number = _customer_with_mandate_and_invoice(site)
    page.get_by_role("button", name="Announce debits for open invoices").click()
    expect(page.get_by_text("1 debit announced to the customers.")).to_be_visible()
    expect(page.get_by_role("link", name=number)).to_be_visible()
    page.get_by_label("Debits due up to").fill("2099-12-31")
    page.get_by_role("button", name="Export pain.008 file").click()
    expect(page.get_by_text(re.compile(r"Exported 1 debit"))).to_be_visible()
    with page.expect_download() as download:
        page.get_by_role("link", name=re.compile("^Download")).first.click()
    saved = tmp_path / "pain.xml"
    download.value.save_as(saved)
    root = assert_schema_valid("pain.008.001.02", saved.read_bytes())
    ns = {"p": "urn:iso:std:iso:20022:tech:xsd:pain.008.001.02"}
    assert root.findtext(".//p:EndToEndId", namespaces=ns) == number
    for width, height in ((1280, 800), (390, 844)):
        _shot(page, "console-direct-debit", width, height)

    with site.runtime.session_factory() as session:
        collection = session.scalars(select(SepaCollection)).one()
        e2e, amount = collection.end_to_end_id, f"{collection.amount:.2f}"
    statement = tmp_path / "statement.xml"
    statement.write_bytes(
        camt053(
            [
                Tx(amount, end_to_end_id=e2e, reference="E2E-C1"),
                Tx("12.34", remittance="no invoice here", reference="E2E-U1"),
            ],
            message_id="E2E-STMT",
        )
    )
    page.set_viewport_size({"width": 1280, "height": 800})
    page.get_by_label("camt.053 file (XML)").set_input_files(str(statement))
    page.get_by_role("button", name="Import statement").click()
    arrive(page, r"/console/sepa/statements/[0-9a-f]+")
    expect(page.get_by_text("Statement imported: 2 new entries.")).to_be_visible()
    expect(page.get_by_text("direct debit collected").first).to_be_visible()
    expect(page.get_by_role("button", name="Assign")).to_be_visible()
    for width, height in ((1280, 800), (390, 844)):
        _shot(page, "console-bank-statement", width, height)
