"""Payment methods and Pay now in the portal: with only bank transfer, and with a card gateway
(the Stripe stand-in on loopback) where a card is added on the provider's page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import OrgRole
from imhost.billing.composition import DraftLine
from imhost.billing.drivers import register_gateway, unregister_gateway
from imhost.billing.drivers.stripe import StripeGateway
from imhost.billing.invoicing import issue_standalone_invoice
from imhost.billing.models import Invoice, PaymentAttempt
from imhost.config import StripeSettings
from imhost.kit.clock import FrozenClock
from imhost.web import console, portal
from tests.billing.stripe_standin import SECRET_KEY, WEBHOOK_SECRET, StripeStandin
from tests.factories import World, make_world
from tests.web.test_pages import as_user


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        made = make_world(session, clock)
        session.commit()
        return made


@pytest.fixture
def pages(app: FastAPI) -> FastAPI:
    portal.install(app)
    console.install(app)
    return app


@pytest.fixture
def standin(clock: FrozenClock) -> Iterator[StripeStandin]:
    server = StripeStandin(now=lambda: clock.now().timestamp()).start()
    register_gateway(
        StripeGateway(
            StripeSettings(
                api_key=SecretStr(SECRET_KEY),
                webhook_secret=SecretStr(WEBHOOK_SECRET),
                api_base=server.url,
            ),
            clock,
        )
    )
    try:
        yield server
    finally:
        unregister_gateway("stripe")
        server.stop()


def _invoice(
    session_factory: sessionmaker[Session], clock: FrozenClock, world: World, amount: str
) -> Invoice:
    with session_factory() as s:
        invoice = issue_standalone_invoice(
            s,
            clock,
            world.org.id,
            [
                DraftLine(
                    kind="one_off",
                    description="Setup help",
                    amount=Decimal(amount),
                    calculation="fixed",
                    taxable=False,
                    discountable=False,
                )
            ],
            currency="EUR",
            kind="subscription",
        )
        s.commit()
        return invoice


def _provider_page(html: str, standin: StripeStandin) -> str:
    """The link to the gateway's page on the "continue" page."""
    match = re.search(r'href="(' + re.escape(standin.url) + r'/checkout/\w+)"', html)
    assert match is not None, html[:500]
    return match.group(1)


def _attempts(session_factory: sessionmaker[Session], invoice_id: str) -> int:
    with session_factory() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(PaymentAttempt)
                .where(PaymentAttempt.invoice_id == invoice_id)
            )
            or 0
        )


def test_without_a_card_provider_pay_now_gives_bank_transfer_instructions_once(
    pages: FastAPI,
    world: World,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    invoice = _invoice(session_factory, clock, world, "25.00")
    client, csrf = as_user(pages, world.members[OrgRole.BILLING])
    base = f"/portal/orgs/{world.org.slug}/billing"
    page = client.get(f"{base}/invoices/{invoice.id}")
    assert page.status_code == 200 and "Pay now" in page.text
    listing = client.get(f"{base}/invoices")
    assert f"/invoices/{invoice.id}/pay" in listing.text
    for _ in range(2):  # a double click
        done = client.post(f"{base}/invoices/{invoice.id}/pay", data={"csrf_token": csrf})
        assert done.status_code == 303
    assert _attempts(session_factory, invoice.id) == 1
    shown = client.get(done.headers["location"])
    assert f"with the reference {invoice.number}" in shown.text

    methods = client.get(f"{base}/payment-methods")
    assert methods.status_code == 200
    assert "No saved payment method" in methods.text
    assert "Add a card" not in methods.text
    refused = client.post(f"{base}/payment-methods/add", data={"csrf_token": csrf})
    assert refused.status_code == 409
    assert "no card payment provider is set up" in refused.text
    assert "There is a problem" in refused.text

    read_only, ro_csrf = as_user(pages, world.members[OrgRole.READ_ONLY])
    assert "Pay now" not in read_only.get(f"{base}/invoices/{invoice.id}").text
    denied = read_only.post(f"{base}/invoices/{invoice.id}/pay", data={"csrf_token": ro_csrf})
    assert denied.status_code == 403


def test_a_card_added_on_the_provider_page_pays_the_invoice_at_once(
    pages: FastAPI,
    world: World,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
    standin: StripeStandin,
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    base = f"/portal/orgs/{world.org.slug}/billing"
    assert "Add a card" in client.get(f"{base}/payment-methods").text
    start = client.post(f"{base}/payment-methods/add", data={"csrf_token": csrf})
    assert start.status_code == 200 and "Continue to the payment page" in start.text
    back = httpx.post(_provider_page(start.text, standin), data={"card": "4242424242424242"})
    assert back.status_code == 303
    location = back.headers["location"]
    assert "/billing/payment-methods?setup=cs_" in location
    # Back from the provider's page (before its webhook): the card is saved at once.
    parts = urlsplit(location)
    page = client.get(f"{parts.path}?{parts.query}")
    assert page.status_code == 200
    assert "Visa ending 4242, expires 12/2028" in page.text
    assert "Your payment method is saved." in page.text

    invoice = _invoice(session_factory, clock, world, "59.00")
    paid = client.post(f"{base}/invoices/{invoice.id}/pay", data={"csrf_token": csrf})
    assert paid.status_code == 303
    again = client.post(f"{base}/invoices/{invoice.id}/pay", data={"csrf_token": csrf})
    assert again.status_code == 409 and "nothing is due" in again.text
    assert len([o for o in standin.objects.values() if o["object"] == "payment_intent"]) == 1
    with session_factory() as s:
        stored = s.get(Invoice, invoice.id)
        assert stored is not None and stored.status == "paid"


def test_removing_a_card_asks_first_and_the_next_one_becomes_default(
    pages: FastAPI,
    world: World,
    standin: StripeStandin,
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    base = f"/portal/orgs/{world.org.slug}/billing"
    for card in ("4242424242424242", "5555555555554444"):
        start = client.post(f"{base}/payment-methods/add", data={"csrf_token": csrf})
        back = httpx.post(_provider_page(start.text, standin), data={"card": card})
        setup = back.headers["location"].split("setup=")[1]
        client.get(f"{base}/payment-methods", params={"setup": setup})
    page = client.get(f"{base}/payment-methods").text
    assert page.count("Remove<span") == 2 and page.count("Make default") == 1
    # The default (the first card) is listed first.
    visa_id = re.findall(r"/payment-methods/(\w+)/remove", page)[0]
    ask = client.post(f"{base}/payment-methods/{visa_id}/remove", data={"csrf_token": csrf})
    assert ask.status_code == 200 and "Remove Visa ending 4242" in ask.text
    done = client.post(
        f"{base}/payment-methods/{visa_id}/remove", data={"csrf_token": csrf, "confirmed": "yes"}
    )
    assert done.status_code == 303
    after = client.get(f"{base}/payment-methods").text
    assert "Visa ending 4242" not in after.split("<h1>")[1].split("</table>")[0]
    assert "Mastercard ending 4444" in after and ">default<" in after
    missing = client.post(f"{base}/payment-methods/{'0' * 32}/default", data={"csrf_token": csrf})
    assert missing.status_code == 404


def test_after_a_decline_the_invoice_offers_paying_with_another_card(
    pages: FastAPI,
    world: World,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
    standin: StripeStandin,
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    base = f"/portal/orgs/{world.org.slug}/billing"
    start = client.post(f"{base}/payment-methods/add", data={"csrf_token": csrf})
    back = httpx.post(_provider_page(start.text, standin), data={"card": "4000000000000002"})
    client.get(f"{base}/payment-methods", params={"setup": back.headers["location"].split("=")[1]})
    invoice = _invoice(session_factory, clock, world, "12.00")
    page = client.get(f"{base}/invoices/{invoice.id}").text
    assert "Pay with another card" not in page
    declined = client.post(f"{base}/invoices/{invoice.id}/pay", data={"csrf_token": csrf})
    assert declined.status_code == 303
    page = client.get(declined.headers["location"]).text
    assert "The last try did not go through: Your card was declined." in page
    assert "Pay with another card" in page
    other = client.post(
        f"{base}/invoices/{invoice.id}/pay", data={"csrf_token": csrf, "via": "page"}
    )
    assert other.status_code == 200 and "Continue to the payment page" in other.text
    paid = httpx.post(_provider_page(other.text, standin), data={"card": "4242424242424242"})
    assert paid.status_code == 303 and paid.headers["location"].endswith("?paid=1")
    intents = [o for o in standin.objects.values() if o["object"] == "payment_intent"]
    assert [i["status"] for i in intents] == ["requires_payment_method", "succeeded"]
