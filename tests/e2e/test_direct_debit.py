"""The SEPA mandate form in a real browser at a phone's and a desktop's size: the mandate
text, a wrong IBAN refused in plain words (error summary and beside the field), then a mandate
given and shown with the IBAN masked. Screenshots are saved for a person to look at."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from imhost.billing.sepa.settings import update_creditor
from imhost.kit.clock import SystemClock
from tests.e2e.conftest import SHOTS, Site
from tests.e2e.test_portal_and_console import arrive, sign_in

pytestmark = pytest.mark.e2e

SIZES = ((390, 844), (1280, 800))


def _creditor(site: Site) -> None:
    with site.runtime.session_factory() as session:
        update_creditor(
            session,
            SystemClock(),
            creditor_name="Hosting Provider GmbH",
            creditor_id="DE98ZZZ09999999999",
            iban="DE02120300000000202051",
        )
        session.commit()


def _shot(page: Any, tmp_path: Path, name: str) -> None:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SHOTS / shot.name)


def test_the_mandate_form_at_a_phone_and_a_desktop(
    site: Site, browser_page: Any, tmp_path: Path
) -> None:
    _creditor(site)
    page = browser_page
    email, password = site.acme_owner
    sign_in(page, site, email, password)
    arrive(page, rf"/portal/orgs/{site.acme_slug}/")
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{site.url}/portal/orgs/{site.acme_slug}/billing/invoices")
        page.get_by_role("link", name="Direct debit").click()
        arrive(page, rf"/portal/orgs/{site.acme_slug}/billing/direct-debit")
        expect(page.get_by_text("Creditor identifier: DE98ZZZ09999999999")).to_be_visible()
        page.get_by_label("Account holder", exact=True).fill("Ann Acme")
        page.get_by_label("IBAN", exact=True).fill("DE89 3704 0044 0532 0130 01")
        page.get_by_label("I am the account holder").check()
        page.get_by_role("button", name="Accept the mandate").click()
        summary = page.locator("[data-error-summary]")
        expect(summary).to_be_visible()
        expect(summary).to_contain_text("its check digits do not match")
        expect(page.locator("#e-iban")).to_contain_text("check digits")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        _shot(page, tmp_path, f"direct-debit-error-{width}x{height}.png")
        page.get_by_label("IBAN", exact=True).fill("DE89 3704 0044 0532 0130 00")
        page.get_by_label("I am the account holder").check()
        page.get_by_role("button", name="Accept the mandate").click()
        expect(page.get_by_text("your mandate IMH-")).to_be_visible()
        expect(page.get_by_text("DE89 **** 3000").first).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        button = page.get_by_role("button", name="Withdraw the mandate")
        box = button.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        _shot(page, tmp_path, f"direct-debit-given-{width}x{height}.png")
