"""Billing details and an invoice page in a real browser at a phone's and a desktop's size:
a wrong VAT ID is refused in plain words next to its field, the saved details appear on the
next invoice with the VAT breakdown and the reverse-charge wording, and nothing runs off the
screen. Screenshots are saved for a person to look at."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from imhost.kit.clock import SystemClock
from tests.e2e.conftest import SHOTS, Site
from tests.e2e.test_portal_and_console import arrive, enrol_totp, sign_in

pytestmark = pytest.mark.e2e

EMAIL, PASSWORD = "owner@legal-e2e.example.com", "violet harbour engine saddle"
SLUG = "legal-e2e"
SIZES = ((390, 844), (1280, 800))


def _customer(site: Site) -> None:
    from imhost.accounts import service as accounts
    from imhost.billing import service as billing
    from imhost.catalog import service as catalog

    clock = SystemClock()
    with site.runtime.session_factory() as session:
        billing.update_profile(
            session,
            clock,
            legal_name="imhost Hosting GmbH",
            address="Hauptstraße 1",
            postcode="10115",
            city="Berlin",
            home_country="DE",
            provider_tax_id="DE136695976",
            registration_number="HRB 123456, Amtsgericht Berlin",
        )
        billing.set_tax_rate(session, clock, "DE", "19")
        billing.set_tax_rate(session, clock, "FR", "20", "TVA")
        user = accounts.create_user(
            session, clock, email=EMAIL, name="Lea Legal", email_verified=True
        )
        site.runtime.auth.set_password_directly(session, user, PASSWORD)
        accounts.create_organization(
            session, clock, name="Légal e2e", owner=user, country="FR", slug=SLUG
        )
        session.commit()
        assert catalog.current_plan_version(session, "business", "EUR") is not None


def _subscribe(site: Site) -> None:
    from imhost.accounts.models import Organization
    from imhost.billing import service as billing
    from imhost.billing.flows import run_billing
    from imhost.catalog import service as catalog

    clock = SystemClock()
    with site.runtime.session_factory() as session:
        org = session.query(Organization).filter_by(slug=SLUG).one()
        version = catalog.current_plan_version(session, "business", "EUR")
        billing.start_subscription(session, clock, org.id, version.id, with_trial=False)
        session.commit()
    run_billing(site.runtime.session_factory, clock, clock.now())


def test_billing_details_and_the_invoice_they_make_at_phone_and_desktop_size(
    site: Site, browser_page: Any
) -> None:
    _customer(site)
    page = browser_page
    sign_in(page, site, EMAIL, PASSWORD)
    arrive(page, rf"/portal/orgs/{SLUG}/")
    url = f"{site.url}/portal/orgs/{SLUG}/billing/details"
    SHOTS.mkdir(parents=True, exist_ok=True)
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.goto(url)
        page.get_by_label("Name or company on invoices").fill("Légal e2e SARL")
        page.get_by_label("Street address", exact=True).fill("12 rue de la Paix")
        page.get_by_label("Postcode").fill("75002")
        page.get_by_label("City").fill("Paris")
        page.get_by_label("Country (two letters, such as DE)").fill("FR")
        page.get_by_label("VAT ID (optional)").fill("FR 41 303 265 045")
        page.get_by_role("button", name="Save billing details").click()
        summary = page.locator("[data-error-summary]")
        expect(summary).to_be_visible()
        expect(page.locator("#e-tax_id")).to_contain_text("not a valid EU VAT ID")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.screenshot(path=str(SHOTS / f"billing-details-error-{width}.png"), full_page=True)
    page.get_by_label("VAT ID (optional)").fill("FR 40 303 265 045")
    page.get_by_role("button", name="Save billing details").click()
    expect(page.get_by_text("Billing details saved.")).to_be_visible()
    expect(page.get_by_label("VAT ID (optional)")).to_have_value("FR40303265045")

    _subscribe(site)
    page.goto(f"{site.url}/portal/orgs/{SLUG}/billing/invoices")
    page.get_by_role("link", name="INV-").first.click()
    arrive(page, rf"/portal/orgs/{SLUG}/billing/invoices/\w+")
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.reload()
        main = " ".join(page.locator("main").inner_text().split())
        for part in (
            "imhost Hosting GmbH",
            "10115 Berlin",
            "VAT ID: DE136695976",
            "Légal e2e SARL",
            "75002 Paris",
            "VAT ID: FR40303265045",
            "0 %, reverse charge",
            "Article 196",
        ):
            assert part in main, part
        expect(page.get_by_role("link", name="Download e-invoice (XML)")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.screenshot(path=str(SHOTS / f"invoice-legal-{width}.png"), full_page=True)
    with page.expect_download() as download:
        page.get_by_role("link", name="Download e-invoice (XML)").click()
    xml = download.value.path().read_bytes()
    assert b"urn:cen.eu:en16931:2017" in xml and b"FR40303265045" in xml


def test_staff_set_the_seller_details_at_phone_and_desktop_size(
    site: Site, browser_page: Any
) -> None:
    page = browser_page
    admin = "admin@provider.example.com"
    sign_in(page, site, admin, site.password_of(admin))
    arrive(page, r"/portal/account/mfa")
    enrol_totp(page)
    page.goto(site.url + "/console/billing")
    page.get_by_role("link", name="Seller details on invoices").click()
    arrive(page, r"/console/billing/settings")
    expect(page.locator("#seller-missing")).to_contain_text("VAT ID")
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.get_by_label("Legal name").fill("imhost Hosting GmbH")
        page.get_by_label("Street address", exact=True).fill("Hauptstraße 1")
        page.get_by_label("Postcode").fill("10115")
        page.get_by_label("City").fill("Berlin")
        page.get_by_label("VAT ID").fill("DE 136 695 977")
        page.get_by_role("button", name="Save seller details").click()
        expect(page.locator(".error-summary")).to_be_focused()
        expect(page.locator("#e-provider_tax_id")).to_contain_text("not a valid EU VAT ID")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.screenshot(path=str(SHOTS / f"console-seller-error-{width}.png"), full_page=True)
    page.get_by_label("VAT ID").fill("DE 136 695 976")
    page.get_by_role("button", name="Save seller details").click()
    expect(page.locator(".flash")).to_contain_text("Seller details saved.")
    expect(page.locator("#seller-missing")).to_have_count(0)
    expect(page.get_by_label("VAT ID")).to_have_value("DE136695976")
