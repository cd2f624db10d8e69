"""Saving a card and paying an invoice in a real browser, at a phone's and a desktop's width.

The card gateway is the Stripe stand-in on loopback (tests/billing/stripe_standin.py): the
browser goes to its checkout page and back, and its signed webhooks reach the running app.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from pydantic import SecretStr

from imhost.billing.drivers import register_gateway, unregister_gateway
from imhost.billing.drivers.stripe import StripeGateway
from imhost.config import StripeSettings
from imhost.kit.clock import FrozenClock, SystemClock
from tests.billing.stripe_standin import SECRET_KEY, WEBHOOK_SECRET, StripeStandin
from tests.e2e.conftest import SHOTS, Site
from tests.e2e.test_portal_and_console import arrive, sign_in

pytestmark = pytest.mark.e2e

PASSWORD = "violet harbor copper lantern"


@pytest.fixture
def stripe(site: Site) -> Iterator[StripeStandin]:
    def deliver(body: bytes, headers: dict[str, str]) -> None:
        httpx.post(f"{site.url}/api/v1/payments/webhooks/stripe", content=body, headers=headers)

    server = StripeStandin(deliver=deliver).start(deliver_in_background=True)
    register_gateway(
        StripeGateway(
            StripeSettings(
                api_key=SecretStr(SECRET_KEY),
                webhook_secret=SecretStr(WEBHOOK_SECRET),
                api_base=server.url,
            ),
            SystemClock(),
        )
    )
    try:
        yield server
    finally:
        unregister_gateway("stripe")
        server.stop()


def _customer_with_an_open_invoice(site: Site, slug: str) -> str:
    from imhost.accounts import service as accounts
    from imhost.billing import service as billing
    from imhost.billing.flows import run_billing
    from imhost.catalog import service as catalog

    runtime = site.runtime
    past = FrozenClock(SystemClock().now() - timedelta(days=3))
    email = f"owner@{slug}.example.com"
    with runtime.session_factory() as session:
        user = accounts.create_user(
            session, past, email=email, name="Paula Payer", email_verified=True
        )
        runtime.auth.set_password_directly(session, user, PASSWORD)
        org = accounts.create_organization(
            session, past, name="Pay e2e", owner=user, country="DE", slug=slug
        )
        version = catalog.current_plan_version(session, "business", "EUR")
        billing.start_subscription(session, past, org.id, version.id, with_trial=False)
        session.commit()
    run_billing(runtime.session_factory, past, past.now())
    return email


def _no_horizontal_scroll(page: Any) -> None:
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1, f"the page scrolls sideways by {overflow}px"


@pytest.mark.parametrize("width", [390, 1280])
def test_save_a_card_then_pay_an_invoice_with_it(
    site: Site, browser_page: Any, stripe: StripeStandin, width: int
) -> None:
    slug = f"pay-e2e-{width}"
    email = _customer_with_an_open_invoice(site, slug)
    page = browser_page
    page.set_viewport_size({"width": width, "height": 900})
    sign_in(page, site, email, PASSWORD)
    arrive(page, rf"/portal/orgs/{slug}/")

    page.goto(f"{site.url}/portal/orgs/{slug}/billing/payment-methods")
    expect(page.get_by_role("heading", name="Payment methods")).to_be_visible()
    expect(page.get_by_text("No saved payment method")).to_be_visible()
    page.screenshot(path=str(SHOTS / f"payment-methods-empty-{width}.png"), full_page=True)
    page.get_by_role("button", name="Add a card").click()
    page.get_by_role("link", name="Continue to the payment page").click()
    # The provider's page (the stand-in's): choose the test Visa and confirm.
    expect(page.get_by_role("heading", name=re.compile("checkout"))).to_be_visible()
    page.get_by_role("button", name="Confirm").click()
    arrive(page, rf"/portal/orgs/{slug}/billing/payment-methods\?setup=cs_\w+")
    expect(
        page.locator("td[data-label=Method]", has_text="Visa ending 4242, expires 12/2028")
    ).to_be_visible()
    expect(page.get_by_text("Your payment method is saved.")).to_be_visible()
    _no_horizontal_scroll(page)
    page.screenshot(path=str(SHOTS / f"payment-methods-{width}.png"), full_page=True)

    page.get_by_role("link", name="Invoices and payments").click()
    pay_buttons = page.get_by_role("button", name=re.compile("^Pay now"))
    expect(pay_buttons).to_have_count(1)
    _no_horizontal_scroll(page)
    page.screenshot(path=str(SHOTS / f"invoices-pay-now-{width}.png"), full_page=True)
    page.locator("td[data-label='Number'] a").first.click()
    expect(page.get_by_text("Pay now charges Visa ending 4242")).to_be_visible()
    _no_horizontal_scroll(page)
    page.screenshot(path=str(SHOTS / f"invoice-pay-now-{width}.png"), full_page=True)
    page.get_by_role("button", name="Pay now").click()
    expect(page.get_by_text(re.compile(r"Thank you: invoice .* is paid"))).to_be_visible()
    expect(page.get_by_role("button", name="Pay now")).to_have_count(0)
    page.screenshot(path=str(SHOTS / f"invoice-paid-{width}.png"), full_page=True)
    intents = [o for o in stripe.objects.values() if o["object"] == "payment_intent"]
    assert len(intents) == 1


@pytest.mark.parametrize("width", [390, 1280])
def test_a_declined_card_is_said_plainly_then_the_provider_page_pays(
    site: Site, browser_page: Any, stripe: StripeStandin, width: int
) -> None:
    slug = f"decline-e2e-{width}"
    email = _customer_with_an_open_invoice(site, slug)
    page = browser_page
    page.set_viewport_size({"width": width, "height": 900})
    sign_in(page, site, email, PASSWORD)
    arrive(page, rf"/portal/orgs/{slug}/")
    methods_url = f"{site.url}/portal/orgs/{slug}/billing/payment-methods"
    page.goto(methods_url)
    page.get_by_role("button", name="Add a card").click()
    page.get_by_role("link", name="Continue to the payment page").click()
    page.get_by_label("Card").select_option("4000000000000002")
    page.get_by_role("button", name="Confirm").click()
    expect(
        page.locator("td[data-label=Method]", has_text="Visa ending 0002, expires 12/2028")
    ).to_be_visible()

    page.goto(f"{site.url}/portal/orgs/{slug}/billing/invoices")
    page.locator("td[data-label='Number'] a").first.click()
    invoice_path = "/" + page.url.split("://", 1)[1].split("/", 1)[1]
    page.get_by_role("button", name="Pay now").click()
    expect(page.locator(".error-box")).to_contain_text(
        "The last try did not go through: Your card was declined."
    )
    expect(page.locator(".flash")).to_have_count(0)
    assert "decline_code" not in page.content() and "generic_decline" not in page.content()
    _no_horizontal_scroll(page)
    page.screenshot(path=str(SHOTS / f"invoice-card-declined-{width}.png"), full_page=True)

    # Remove the declined card (asked first), then pay on the provider's page.
    page.goto(methods_url)
    page.get_by_role("button", name=re.compile("^Remove")).click()
    expect(page.get_by_text("Remove Visa ending 0002")).to_be_visible()
    page.screenshot(path=str(SHOTS / f"payment-method-remove-{width}.png"), full_page=True)
    page.get_by_role("button", name="Remove").click()
    expect(page.get_by_text("No saved payment method")).to_be_visible()
    page.goto(site.url + invoice_path)
    page.get_by_role("button", name="Pay now").click()
    page.get_by_role("link", name="Continue to the payment page").click()
    page.get_by_label("Card").select_option("4242424242424242")
    page.get_by_role("button", name="Confirm").click()
    arrive(page, re.escape(invoice_path) + r"\?paid=1")
    # The provider's webhook reaches the app in the background: the invoice turns paid.
    deadline = time.monotonic() + 10
    while page.get_by_role("button", name="Pay now").count() and time.monotonic() < deadline:
        time.sleep(0.3)
        page.reload()
    expect(page.get_by_role("button", name="Pay now")).to_have_count(0)
    _no_horizontal_scroll(page)
    page.screenshot(path=str(SHOTS / f"invoice-paid-on-provider-page-{width}.png"), full_page=True)
