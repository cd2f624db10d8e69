"""Saved payment methods, Pay now and the Stripe driver, against a Stripe stand-in on loopback.

The stand-in (``stripe_standin``) is the external service: real HTTP, real state, Stripe's
idempotency and authentication rules, signed webhooks delivered to the app's webhook route.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from imhost.accounts.models import AuditEvent, OrgRole
from imhost.billing import collection, payment_methods
from imhost.billing.composition import DraftLine
from imhost.billing.drivers import register_gateway, unregister_gateway
from imhost.billing.drivers.base import GatewayUnavailable
from imhost.billing.drivers.stripe import StripeGateway, method_label, sign_payload
from imhost.billing.invoicing import issue_standalone_invoice
from imhost.billing.models import Invoice, Payment, PaymentAttempt
from imhost.billing.tasks import run_dunning
from imhost.config import StripeSettings
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.notify.models import OutboundEmail
from imhost.runtime import Runtime
from tests.factories import make_world
from tests.web.conftest import signed_in

from .stripe_standin import SECRET_KEY, WEBHOOK_SECRET, StripeStandin

WEBHOOK = "/api/v1/payments/webhooks/stripe"


@dataclass
class Shop:
    app: FastAPI
    runtime: Runtime
    clock: FrozenClock
    standin: StripeStandin
    gateway: StripeGateway
    org_id: str
    owner: TestClient
    webhook_client: TestClient

    def invoice(self, amount: str = "119.00") -> str:
        with transaction(self.runtime.session_factory) as s:
            invoice = issue_standalone_invoice(
                s,
                self.clock,
                self.org_id,
                [
                    DraftLine(
                        kind="one_off",
                        description="Migration help",
                        amount=Decimal(amount),
                        calculation="fixed",
                        taxable=False,
                        discountable=False,
                    )
                ],
                currency="EUR",
                kind="subscription",
            )
            return invoice.id

    def save_card(self, number: str = "4242424242424242") -> dict[str, object]:
        """The customer's way: start a setup, submit the card on the gateway's page, come
        back; the gateway's webhook tells the app."""
        r = self.owner.post(
            f"/api/v1/orgs/{self.org_id}/billing/payment-methods/setup",
            json={"return_url": "http://testserver/portal/back"},
        )
        assert r.status_code == 200, r.text
        page = r.json()["redirect_url"]
        assert page.startswith(self.standin.url)
        done = httpx.post(page, data={"card": number})
        assert done.status_code == 303
        assert done.headers["location"].startswith("http://testserver/portal/back?setup=cs_")
        assert self.standin.deliver_pending() >= 1
        methods = self.owner.get(f"/api/v1/orgs/{self.org_id}/billing/payment-methods").json()
        return dict(methods[0])

    def pay(self, invoice_id: str) -> httpx.Response:
        response: httpx.Response = self.owner.post(
            f"/api/v1/orgs/{self.org_id}/billing/invoices/{invoice_id}/pay", json={}
        )
        return response

    def intents(self) -> list[dict[str, object]]:
        return [o for o in self.standin.objects.values() if o["object"] == "payment_intent"]


@pytest.fixture
def shop(app: FastAPI, clock: FrozenClock) -> Iterator[Shop]:
    runtime: Runtime = app.state.runtime
    clock.set(utc(2026, 11, 1, 8))
    with transaction(runtime.session_factory) as s:
        world = make_world(s, clock)
        org_id = world.org.id
        owner_user = world.members[OrgRole.OWNER]
    standin = StripeStandin(now=lambda: clock.now().timestamp()).start()
    gateway = StripeGateway(
        StripeSettings(
            api_key=SecretStr(SECRET_KEY),
            webhook_secret=SecretStr(WEBHOOK_SECRET),
            api_base=standin.url,
        ),
        clock,
    )
    register_gateway(gateway)
    webhook_client = TestClient(app)
    results: list[str] = []

    def deliver(body: bytes, headers: dict[str, str]) -> None:
        r = webhook_client.post(WEBHOOK, content=body, headers=headers)
        assert r.status_code == 200, r.text
        results.append(r.json()["result"])

    standin.deliver = deliver
    try:
        yield Shop(
            app,
            runtime,
            clock,
            standin,
            gateway,
            org_id,
            signed_in(app, owner_user),
            webhook_client,
        )
    finally:
        unregister_gateway("stripe")
        standin.stop()


def _count(shop: Shop, model: type, **where: object) -> int:
    with shop.runtime.session_factory() as s:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int(s.scalar(query) or 0)


def test_a_card_saved_on_the_gateway_page_is_listed_with_its_label_as_the_default(
    shop: Shop,
) -> None:
    card = shop.save_card()
    assert card["label"] == "Visa ending 4242, expires 12/2028"
    assert card["is_default"] is True and card["gateway"] == "stripe"
    # The same webhook delivered again keeps one method.
    assert shop.standin.pending_webhooks == []
    seti = next(o for o in shop.standin.objects.values() if o["object"] == "setup_intent")
    shop.standin._event("setup_intent.succeeded", seti)
    shop.standin.deliver_pending()
    methods = shop.owner.get(f"/api/v1/orgs/{shop.org_id}/billing/payment-methods").json()
    assert len(methods) == 1
    # A second card is saved but does not take the default.
    shop.save_card("5555555555554444")
    methods = shop.owner.get(f"/api/v1/orgs/{shop.org_id}/billing/payment-methods").json()
    assert [(m["label"], m["is_default"]) for m in methods] == [
        ("Visa ending 4242, expires 12/2028", True),
        ("Mastercard ending 4444, expires 12/2028", False),
    ]


def test_making_default_and_removing_keep_one_default_and_detach_at_the_gateway(
    shop: Shop,
) -> None:
    visa = shop.save_card()
    shop.save_card("5555555555554444")
    methods = shop.owner.get(f"/api/v1/orgs/{shop.org_id}/billing/payment-methods").json()
    master = next(m for m in methods if "Mastercard" in m["label"])
    r = shop.owner.post(
        f"/api/v1/orgs/{shop.org_id}/billing/payment-methods/{master['id']}/default"
    )
    assert r.status_code == 200 and r.json()["is_default"] is True
    r = shop.owner.delete(f"/api/v1/orgs/{shop.org_id}/billing/payment-methods/{master['id']}")
    assert r.status_code == 204
    methods = shop.owner.get(f"/api/v1/orgs/{shop.org_id}/billing/payment-methods").json()
    assert [(m["id"], m["is_default"]) for m in methods] == [(visa["id"], True)]
    detached = [p for p in shop.standin.requests if p[1].endswith("/detach")]
    assert len(detached) == 1
    # Another organization's method, or a removed one, is a 404.
    r = shop.owner.delete(f"/api/v1/orgs/{shop.org_id}/billing/payment-methods/{master['id']}")
    assert r.status_code == 404


def test_pay_now_charges_the_default_card_once_and_the_webhook_does_not_pay_twice(
    shop: Shop,
) -> None:
    shop.save_card()
    invoice_id = shop.invoice("119.00")
    r = shop.pay(invoice_id)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "paid"
    assert "Visa ending 4242" in r.json()["message"]
    [intent] = shop.intents()
    assert intent["amount"] == 11900 and intent["currency"] == "eur"
    assert intent["metadata"]["imhost_attempt"].startswith(f"{invoice_id}:pay_now:")  # type: ignore[index]
    # The gateway's webhook for the same charge arrives: recorded once.
    shop.standin.deliver_pending()
    assert _count(shop, Payment, invoice_id=invoice_id) == 1
    # Pressing Pay now again: nothing is due, nothing is charged.
    r = shop.pay(invoice_id)
    assert r.status_code == 409 and "nothing is due" in r.json()["detail"]
    assert len(shop.intents()) == 1
    with shop.runtime.session_factory() as s:
        invoice = s.get(Invoice, invoice_id)
        assert invoice is not None and invoice.status == "paid"


def test_a_retried_charge_with_the_same_key_is_answered_with_the_first_charge(
    shop: Shop,
) -> None:
    card = shop.save_card()
    with shop.runtime.session_factory() as s:
        method = payment_methods.get_method(s, shop.org_id, str(card["id"]))
    args = {
        "method_external_id": method.external_id,
        "customer_external_id": method.customer_external_id,
        "amount": Decimal("10.00"),
        "currency": "EUR",
        "invoice_number": "INV-1",
        "idempotency_key": "inv-1:pay_now:x:1",
    }
    first = shop.gateway.charge_saved_method(**args)  # type: ignore[arg-type]
    second = shop.gateway.charge_saved_method(**args)  # type: ignore[arg-type]
    assert first.status == second.status == "succeeded"
    assert first.external_id == second.external_id
    assert len(shop.intents()) == 1
    # The same key with another amount is refused by the gateway, not charged.
    other = shop.gateway.charge_saved_method(**{**args, "amount": Decimal("11.00")})  # type: ignore[arg-type]
    assert other.status == "failed" and len(shop.intents()) == 1


def test_a_pay_now_whose_transaction_was_lost_is_retried_with_the_same_key(
    shop: Shop,
) -> None:
    """The charge went through but our transaction rolled back (a crash after the gateway
    answered): the retry sends the same key, the gateway replays, one charge in all."""
    shop.save_card()
    invoice_id = shop.invoice("20.00")
    for _ in range(2):
        s = shop.runtime.session_factory()
        outcome = collection.pay_now(
            s, shop.clock, invoice_id, shop.org_id, return_url="http://testserver/"
        )
        assert outcome.status == "paid"
        s.rollback()
        s.close()
    assert len(shop.intents()) == 1
    r = shop.pay(invoice_id)
    assert r.json()["status"] == "paid"
    assert len(shop.intents()) == 1
    assert _count(shop, Payment, invoice_id=invoice_id) == 1


def test_a_declined_card_says_so_in_plain_words_and_a_new_try_is_a_new_charge(
    shop: Shop,
) -> None:
    shop.save_card("4000000000000002")
    invoice_id = shop.invoice("50.00")
    r = shop.pay(invoice_id)
    assert r.status_code == 200
    assert r.json()["status"] == "failed"
    assert r.json()["message"].startswith("Your card was declined.")
    assert "decline" not in r.json()["message"].replace("declined", "")
    shop.standin.deliver_pending()  # payment_intent.payment_failed: already failed
    assert _count(shop, PaymentAttempt, invoice_id=invoice_id, status="failed") == 1
    r = shop.pay(invoice_id)
    assert r.json()["status"] == "failed"
    assert len(shop.intents()) == 2
    assert _count(shop, Payment, invoice_id=invoice_id) == 0
    with shop.runtime.session_factory() as s:
        actions = set(s.scalars(select(AuditEvent.action)))
    assert {"billing.payment_failed", "billing.payment_method_added"} <= actions


def test_without_a_saved_method_pay_now_sends_to_the_gateway_page_and_the_webhook_pays(
    shop: Shop,
) -> None:
    invoice_id = shop.invoice("30.00")
    r = shop.owner.post(
        f"/api/v1/orgs/{shop.org_id}/billing/invoices/{invoice_id}/pay",
        json={"return_url": "http://testserver/portal/inv"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "requires_action" and body["redirect_url"].startswith(shop.standin.url)
    # A double click gives the same page, not a second session.
    again = shop.pay(invoice_id).json()
    assert again["redirect_url"] == body["redirect_url"]
    done = httpx.post(body["redirect_url"], data={"card": "4242424242424242"})
    assert done.status_code == 303 and done.headers["location"].endswith("paid=1")
    shop.standin.deliver_pending()
    with shop.runtime.session_factory() as s:
        invoice = s.get(Invoice, invoice_id)
        assert invoice is not None and invoice.status == "paid"
    assert _count(shop, Payment, invoice_id=invoice_id) == 1


def test_refunds_go_back_through_stripe(shop: Shop) -> None:
    from imhost.billing.payments import issue_credit_note

    shop.save_card()
    invoice_id = shop.invoice("40.00")
    assert shop.pay(invoice_id).json()["status"] == "paid"
    with transaction(shop.runtime.session_factory) as s:
        note = issue_credit_note(
            s, shop.clock, invoice_id, reason="Service outage", refund_to="original"
        )
        assert note.refunded == Decimal("40.00")
    [refund] = [o for o in shop.standin.objects.values() if o["object"] == "refund"]
    assert refund["amount"] == 4000


def test_a_wrong_api_key_is_a_plain_unavailable_error(shop: Shop, clock: FrozenClock) -> None:
    bad = StripeGateway(
        StripeSettings(api_key=SecretStr("sk_test_wrong_key"), api_base=shop.standin.url), clock
    )
    with pytest.raises(GatewayUnavailable) as err:
        bad.ensure_customer(organization_id="o1", name="Acme", email=None)
    assert "sk_" not in err.value.detail and "not available" in err.value.detail
    assert shop.standin.requests[-1][1] == "/v1/customers"


def test_attaching_another_customers_method_is_refused(shop: Shop) -> None:
    shop.save_card()
    stranger = shop.standin.objects
    cus = shop.gateway.ensure_customer(organization_id="someone-else", name="B", email=None)
    pm = shop.standin.card_method("4242424242424242", cus)
    assert cus in stranger
    r = shop.owner.post(
        f"/api/v1/orgs/{shop.org_id}/billing/payment-methods",
        json={"gateway": "stripe", "external_id": pm["id"]},
    )
    assert r.status_code == 404


# --- webhook signatures ------------------------------------------------------------------------


def _event_body(shop: Shop) -> bytes:
    return json.dumps(
        {"id": "evt_1", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}
    ).encode()


def _post(shop: Shop, body: bytes, signature: str) -> httpx.Response:
    response: httpx.Response = shop.webhook_client.post(
        WEBHOOK, content=body, headers={"Stripe-Signature": signature}
    )
    return response


def test_a_webhook_signed_with_the_endpoint_secret_is_accepted(shop: Shop) -> None:
    body = _event_body(shop)
    t = int(shop.clock.now().timestamp())
    r = _post(shop, body, f"t={t},v1={sign_payload(WEBHOOK_SECRET, t, body)}")
    assert r.status_code == 200 and r.json() == {"result": "ignored"}


def test_a_webhook_signed_with_another_secret_is_refused(shop: Shop) -> None:
    body = _event_body(shop)
    t = int(shop.clock.now().timestamp())
    r = _post(shop, body, f"t={t},v1={sign_payload('whsec_other_secret', t, body)}")
    assert r.status_code == 400
    assert "signature" in r.json()["detail"].lower()


def test_a_stale_webhook_is_refused_even_with_a_good_signature(shop: Shop) -> None:
    body = _event_body(shop)
    t = int(shop.clock.now().timestamp()) - 301
    r = _post(shop, body, f"t={t},v1={sign_payload(WEBHOOK_SECRET, t, body)}")
    assert r.status_code == 400 and "tolerance" in r.json()["detail"]
    t = int(shop.clock.now().timestamp()) - 299
    r = _post(shop, body, f"t={t},v1={sign_payload(WEBHOOK_SECRET, t, body)}")
    assert r.status_code == 200


def test_a_tampered_webhook_body_is_refused(shop: Shop) -> None:
    body = _event_body(shop)
    t = int(shop.clock.now().timestamp())
    signature = f"t={t},v1={sign_payload(WEBHOOK_SECRET, t, body)}"
    r = _post(shop, body.replace(b"cus_1", b"cus_2"), signature)
    assert r.status_code == 400


def test_one_matching_signature_among_several_is_enough(shop: Shop) -> None:
    """Stripe signs with each active secret while one is rolled: any v1 may match."""
    body = _event_body(shop)
    t = int(shop.clock.now().timestamp())
    old = sign_payload("whsec_old_secret", t, body)
    good = sign_payload(WEBHOOK_SECRET, t, body)
    assert _post(shop, body, f"t={t},v1={old},v1={good},v0=abc").status_code == 200
    assert _post(shop, body, f"t={t},v1={old},v0={good}").status_code == 400
    assert _post(shop, body, "").status_code == 400
    assert _post(shop, body, "t=notanumber,v1=00").status_code == 400


def test_payment_method_labels_are_plain_words() -> None:
    assert method_label(
        {
            "type": "card",
            "card": {"brand": "amex", "last4": "0005", "exp_month": 3, "exp_year": 2030},
        }
    ) == ("card", "American Express ending 0005, expires 03/2030")
    assert method_label(
        {"type": "sepa_debit", "sepa_debit": {"country": "DE", "last4": "3000"}}
    ) == (
        "sepa_debit",
        "SEPA Direct Debit, IBAN DE.. ... 3000",
    )


# --- dunning charges the saved method ---------------------------------------------------------


def _reminders(shop: Shop) -> list[tuple[str, str]]:
    with shop.runtime.session_factory() as s:
        return [
            (e.subject, e.text)
            for e in s.scalars(
                select(OutboundEmail)
                .where(OutboundEmail.kind == "invoice-reminder")
                .order_by(OutboundEmail.created_at)
            )
        ]


def _due(shop: Shop, invoice_id: str) -> datetime:
    with shop.runtime.session_factory() as s:
        invoice = s.get(Invoice, invoice_id)
        assert invoice is not None and invoice.due_at is not None
        return invoice.due_at


def test_on_the_due_date_dunning_charges_the_default_card_once_and_stops(shop: Shop) -> None:
    shop.save_card()
    invoice_id = shop.invoice("49.00")
    shop.clock.set(_due(shop, invoice_id) + timedelta(hours=1))
    first = run_dunning(shop.runtime.session_factory, shop.clock)
    run_dunning(shop.runtime.session_factory, shop.clock)
    assert first.actions == {"paid_by_saved_method": 1}
    assert len(shop.intents()) == 1
    with shop.runtime.session_factory() as s:
        invoice = s.get(Invoice, invoice_id)
        assert invoice is not None and invoice.status == "paid"
    assert _reminders(shop) == []
    shop.clock.set(_due(shop, invoice_id) + timedelta(days=8))
    run_dunning(shop.runtime.session_factory, shop.clock)
    assert len(shop.intents()) == 1 and _reminders(shop) == []


def test_a_failed_dunning_charge_is_recorded_and_the_reminder_says_so(shop: Shop) -> None:
    shop.save_card("4000000000009995")
    invoice_id = shop.invoice("49.00")
    due = _due(shop, invoice_id)
    shop.clock.set(due + timedelta(hours=1))
    run_dunning(shop.runtime.session_factory, shop.clock)
    run_dunning(shop.runtime.session_factory, shop.clock)
    assert len(shop.intents()) == 1  # once per step, whatever the reruns
    [(subject, body)] = _reminders(shop)
    assert "is due today" in subject
    assert "We tried to charge your Visa ending 9995, expires 12/2028" in body
    assert "there is not enough money on it" in body
    assert "/billing/payment-methods" in body and f"/billing/invoices/{invoice_id}" in body
    assert "insufficient_funds" not in body
    # The next reminder step charges again (a new key), and says so again.
    shop.clock.set(due + timedelta(days=3, hours=1))
    run_dunning(shop.runtime.session_factory, shop.clock)
    assert len(shop.intents()) == 2
    assert len(_reminders(shop)) == 2
    assert _count(shop, PaymentAttempt, invoice_id=invoice_id, status="failed") == 2


def test_without_a_saved_method_the_reminder_is_the_bank_transfer_one(shop: Shop) -> None:
    invoice_id = shop.invoice("49.00")
    shop.clock.set(_due(shop, invoice_id) + timedelta(hours=1))
    run_dunning(shop.runtime.session_factory, shop.clock)
    [(_subject, body)] = _reminders(shop)
    assert "bank transfer" in body and "tried to charge" not in body
    assert shop.intents() == []


def test_money_taken_for_an_invoice_voided_meanwhile_is_kept_as_credit(shop: Shop) -> None:
    from imhost.billing.credits import credit_balance
    from imhost.billing.invoicing import void_invoice

    invoice_id = shop.invoice("15.00")
    page = shop.pay(invoice_id).json()["redirect_url"]
    with transaction(shop.runtime.session_factory) as s:
        void_invoice(s, shop.clock, invoice_id, "issued twice")
    assert httpx.post(page, data={"card": "4242424242424242"}).status_code == 303
    [event] = shop.standin.pending_webhooks
    shop.standin.deliver_pending()
    shop.standin.pending_webhooks.append(event)  # Stripe delivers it again
    shop.standin.deliver_pending()
    with shop.runtime.session_factory() as s:
        assert credit_balance(s, shop.org_id, "EUR") == Decimal("15.00")
        invoice = s.get(Invoice, invoice_id)
        assert invoice is not None and invoice.status == "void"
    assert _count(shop, Payment, invoice_id=invoice_id) == 1


def test_two_pay_now_requests_at_once_charge_once(shop: Shop) -> None:
    """A double click sends two requests at the same moment: the invoice's lock makes the
    second find the first's attempt (same key), so the card is charged once."""
    shop.save_card()
    invoice_id = shop.invoice("33.00")
    barrier = threading.Barrier(2)
    answers: list[dict[str, object]] = []

    def click() -> None:
        barrier.wait()
        answers.append(shop.pay(invoice_id).json())

    threads = [threading.Thread(target=click) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(answers) == 2
    assert len(shop.intents()) == 1
    assert _count(shop, Payment, invoice_id=invoice_id) == 1
    assert any(a.get("status") == "paid" for a in answers)


def test_method_changes_and_failed_charges_are_sent_as_webhooks(shop: Shop) -> None:
    from imhost.notify.models import WebhookDelivery

    with transaction(shop.runtime.session_factory) as s:
        shop.runtime.webhooks.create_endpoint(
            s, shop.clock, organization_id=shop.org_id, url="http://127.0.0.1:9/hook"
        )
    visa = shop.save_card("4000000000000002")
    shop.save_card("5555555555554444")
    methods = shop.owner.get(f"/api/v1/orgs/{shop.org_id}/billing/payment-methods").json()
    master = next(m for m in methods if "Mastercard" in m["label"])
    shop.owner.post(f"/api/v1/orgs/{shop.org_id}/billing/payment-methods/{master['id']}/default")
    shop.owner.delete(f"/api/v1/orgs/{shop.org_id}/billing/payment-methods/{master['id']}")
    assert shop.pay(shop.invoice("9.00")).json()["status"] == "failed"  # the Visa again
    with shop.runtime.session_factory() as s:
        sent = list(s.scalars(select(WebhookDelivery.event_type)))
    assert sorted(t for t in sent if t.startswith("payment")) == [
        "payment.failed",
        "payment_method.added",
        "payment_method.added",
        "payment_method.made_default",
        "payment_method.removed",
    ]
    assert visa["is_default"] is True
