"""Pay now on the portal home, clicked in a real browser at a phone's and a desktop's width,
for a customer who pays by SEPA direct debit: the mandate is the default payment method, the
click announces one collection and says plainly on which day it is collected; clicking again
queues nothing more. Screenshots are saved for a person to look at."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from imhost.billing.sepa.models import SepaCollection
from tests.e2e.conftest import Site
from tests.e2e.test_direct_debit import _creditor
from tests.e2e.test_portal_and_console import arrive, sign_in
from tests.e2e.test_portal_home import PASSWORD, _customer, _fits, _shot

pytestmark = pytest.mark.e2e

SIZES = ((390, 844), (1280, 800))


def test_pay_now_on_the_home_page_announces_one_direct_debit(
    site: Site, browser_page: Any, tmp_path: Path
) -> None:
    _creditor(site)
    email = "dora@debit-e2e.example.com"
    slug = _customer(site, "debit-home", email)
    page = browser_page
    sign_in(page, site, email, PASSWORD)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{site.url}/portal/orgs/{slug}/billing/direct-debit")
    page.get_by_label("Account holder", exact=True).fill("Dora Debit")
    page.get_by_label("IBAN", exact=True).fill("DE89 3704 0044 0532 0130 00")
    page.get_by_label("I am the account holder").check()
    page.get_by_role("button", name="Accept the mandate").click()
    expect(page.get_by_text("your mandate IMH-")).to_be_visible()
    page.goto(f"{site.url}/portal/orgs/{slug}/billing/payment-methods")
    expect(page.locator("td[data-label=Method]")).to_have_text(
        "SEPA Direct Debit, IBAN DE89 **** 3000"
    )
    expect(page.get_by_text("default", exact=True)).to_be_visible()
    _fits(page, 390)
    _shot(page, tmp_path, "sepa-payment-methods-390")
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{site.url}/portal/orgs/{slug}/")
        pay = page.get_by_role("button", name=re.compile(r"^Pay now")).first
        expect(pay).to_be_visible()
        box = pay.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        _shot(page, tmp_path, f"sepa-home-{width}")
        pay.click()
        arrive(page, rf"/portal/orgs/{slug}/billing/invoices/[^/]+$")
        notice = page.get_by_text(re.compile(r"will be collected by direct debit")).first
        expect(notice).to_be_visible()
        expect(notice).to_contain_text("SEPA Direct Debit, IBAN DE89 **** 3000")
        expect(notice).to_contain_text(re.compile(r"on \d{1,2} [A-Z][a-z]+ \d{4}"))
        _fits(page, width)
        _shot(page, tmp_path, f"sepa-pay-now-{width}")
    with site.runtime.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(SepaCollection)) == 1
