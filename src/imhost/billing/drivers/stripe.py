"""Stripe, through its REST API (https://docs.stripe.com/api) with httpx; no SDK.

Requests are form encoded, authenticated with the secret key as a bearer token, and every
request that creates something carries an ``Idempotency-Key`` (Stripe answers a repeated key
with the first answer, so a retry never charges twice).

- Saving a card: a Customer per organization, then a Checkout Session in ``setup`` mode (the
  customer types the card on Stripe's page; imhost never sees it). Stripe reports the saved
  PaymentMethod with ``setup_intent.succeeded``; ``describe_method`` reads its label.
- Charging a saved method: a PaymentIntent confirmed off-session. A decline comes back as
  HTTP 402 with the PaymentIntent in the error; it is a ``failed`` intent with plain words.
- Paying without a saved method: a Checkout Session in ``payment`` mode (Stripe's page).
- Refunds: ``POST /v1/refunds`` for the PaymentIntent.
- Webhooks: ``Stripe-Signature: t=<unix time>,v1=<hex>[,v1=...]``, the HMAC-SHA256 of
  ``"<t>.<raw body>"`` under the endpoint's signing secret
  (https://docs.stripe.com/webhooks#verify-manually); stale (outside the tolerance) or
  unmatched signatures are refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from decimal import Decimal
from typing import Any

import httpx

from imhost.billing.drivers.base import (
    ChargeBooks,
    GatewayEvent,
    GatewayRefund,
    GatewayUnavailable,
    MethodSetup,
    PaymentGateway,
    PaymentIntent,
    SavedMethod,
)
from imhost.config import StripeSettings
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput
from imhost.kit.money import MINOR_UNITS

log = logging.getLogger(__name__)

BRANDS: dict[str, str] = {
    "visa": "Visa",
    "mastercard": "Mastercard",
    "amex": "American Express",
    "discover": "Discover",
    "diners": "Diners Club",
    "jcb": "JCB",
    "unionpay": "UnionPay",
    "cartes_bancaires": "Cartes Bancaires",
}

DECLINES: dict[str, str] = {
    "card_declined": "Your card was declined.",
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card was declined: there is not enough money on it.",
    "lost_card": "Your card was declined.",
    "stolen_card": "Your card was declined.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "The card's security code is wrong.",
    "processing_error": "The card could not be charged just now; try again in a few minutes.",
    "authentication_required": (
        "Your bank asks you to confirm this payment: pay on the card provider's page."
    ),
    "do_not_honor": "Your card was declined.",
}
"""Stripe's decline codes (https://docs.stripe.com/declines/codes) in words for customers."""

DEFAULT_DECLINE = "The payment did not go through."


def decline_message(error: dict[str, Any]) -> str:
    for key in ("decline_code", "code"):
        code = error.get(key)
        if isinstance(code, str) and code in DECLINES:
            return DECLINES[code]
    return DEFAULT_DECLINE


def to_minor(amount: Decimal, currency: str) -> int:
    """Stripe's amounts are integers in the currency's minor unit (cents)."""
    digits = MINOR_UNITS.get(currency.upper(), 2)
    value = amount.scaleb(digits)
    if value != value.to_integral_value():
        raise InvalidInput(f"{amount} has more decimals than {currency} allows")
    return int(value)


def from_minor(value: int, currency: str) -> Decimal:
    return Decimal(value).scaleb(-MINOR_UNITS.get(currency.upper(), 2))


def method_label(method: dict[str, Any]) -> tuple[str, str]:
    """(kind, label) of a Stripe PaymentMethod, e.g. ("card", "Visa ending 4242, expires
    12/2028") or ("sepa_debit", "SEPA Direct Debit, IBAN DE.. ... 3000")."""
    kind = str(method.get("type") or "card")
    if kind == "card":
        card = method.get("card") or {}
        brand = BRANDS.get(str(card.get("brand", "")), "Card")
        label = f"{brand} ending {card.get('last4', '????')}"
        if card.get("exp_month") and card.get("exp_year"):
            label += f", expires {int(card['exp_month']):02d}/{int(card['exp_year'])}"
        return kind, label
    if kind == "sepa_debit":
        sepa = method.get("sepa_debit") or {}
        return (
            kind,
            f"SEPA Direct Debit, IBAN {sepa.get('country', '')}.. ... {sepa.get('last4', '')}",
        )
    return kind, kind.replace("_", " ").capitalize()


def sign_payload(secret: str, timestamp: int, body: bytes) -> str:
    """The v1 signature of ``body`` sent at ``timestamp`` (what Stripe computes)."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify_signature(
    header: str | None, body: bytes, secret: str, *, now: float, tolerance: int
) -> None:
    """Raise InvalidInput (a 400 for the webhook route) unless ``header`` signs ``body``."""
    if not header:
        raise InvalidInput("missing Stripe-Signature header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise InvalidInput("bad timestamp in Stripe-Signature") from None
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise InvalidInput("Stripe-Signature has no timestamp or no v1 signature")
    expected = sign_payload(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, sig) for sig in signatures):
        raise InvalidInput("no Stripe-Signature matches the payload")
    if abs(now - timestamp) > tolerance:
        raise InvalidInput("the Stripe-Signature timestamp is outside the tolerance")


_ID = re.compile(r"^[A-Za-z0-9_]{1,200}$")


def _id(value: str) -> str:
    """A Stripe object id, safe to put in a path (ids are letters, digits and ``_``)."""
    if not _ID.match(value):
        raise InvalidInput("That is not an id of the card payment provider.")
    return value


def _form(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Stripe's nested form encoding: ``metadata[invoice]=...``, ``a[0][b]=...``."""
    out: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}[{key}]" if prefix else key
        if value is None:
            continue
        if isinstance(value, dict):
            out.extend(_form(value, name))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    out.extend(_form(item, f"{name}[{i}]"))
                else:
                    out.append((f"{name}[{i}]", str(item)))
        elif isinstance(value, bool):
            out.append((name, "true" if value else "false"))
        else:
            out.append((name, str(value)))
    return out


class StripeGateway(PaymentGateway):
    name = "stripe"
    label = "card payments"

    def __init__(
        self,
        settings: StripeSettings,
        clock: Clock,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if settings.api_key is None:
            raise ValueError("the Stripe gateway needs IMHOST_STRIPE__API_KEY")
        self.settings = settings
        self.clock = clock
        self._client = httpx.Client(
            base_url=settings.api_base,
            timeout=settings.timeout_seconds,
            headers={
                "Authorization": f"Bearer {settings.api_key.get_secret_value()}",
                "Stripe-Version": "2024-06-20",
            },
            transport=transport,
        )

    @property
    def saves_methods(self) -> bool:
        return True

    # --- HTTP -------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        data: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        try:
            response = self._client.request(
                method, path, data=dict(_form(data)) if data else None, headers=headers
            )
        except httpx.HTTPError as exc:
            log.warning("Stripe %s %s: %s", method, path, exc)
            raise GatewayUnavailable("The card payment provider could not be reached.") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if response.status_code in (401, 403) or response.status_code >= 500:
            log.error("Stripe %s %s answered %s", method, path, response.status_code)
            raise GatewayUnavailable("The card payment provider is not available just now.")
        return response.status_code, body

    def _ok(
        self,
        method: str,
        path: str,
        data: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        status, body = self._call(method, path, data, idempotency_key=idempotency_key)
        if status >= 400:
            error = body.get("error") or {}
            log.warning("Stripe %s %s refused: %s", method, path, error.get("message"))
            if status == 404:
                raise Conflict("The card payment provider does not know this payment method.")
            raise Conflict("The card payment provider refused the request.")
        return body

    # --- payments ---------------------------------------------------------------------------

    def create_payment_intent(
        self, *, amount: Decimal, currency: str, invoice_number: str, customer_ref: str
    ) -> PaymentIntent:
        body = self._ok(
            "POST",
            "/v1/payment_intents",
            {
                "amount": to_minor(amount, currency),
                "currency": currency.lower(),
                "customer": customer_ref,
                "description": f"Invoice {invoice_number}",
                "metadata": {"invoice_number": invoice_number},
            },
            idempotency_key=f"intent-{invoice_number}-{amount}",
        )
        return self._intent(body, amount, currency)

    def _intent(self, body: dict[str, Any], amount: Decimal, currency: str) -> PaymentIntent:
        status = str(body.get("status", ""))
        mapped = {
            "succeeded": "succeeded",
            "processing": "processing",
            "requires_payment_method": "failed"
            if body.get("last_payment_error")
            else "requires_action",
            "canceled": "failed",
        }.get(status, "requires_action")
        error = body.get("last_payment_error") or {}
        return PaymentIntent(
            gateway=self.name,
            external_id=str(body.get("id", "")),
            amount=amount,
            currency=currency,
            status=mapped,
            client_secret=body.get("client_secret"),
            failure_message=decline_message(error) if mapped == "failed" else None,
        )

    def capture(self, external_id: str, amount: Decimal, currency: str) -> PaymentIntent:
        body = self._ok(
            "POST",
            f"/v1/payment_intents/{_id(external_id)}/capture",
            {"amount_to_capture": to_minor(amount, currency)},
            idempotency_key=f"capture-{external_id}",
        )
        return self._intent(body, amount, currency)

    def start_payment(
        self,
        *,
        amount: Decimal,
        currency: str,
        invoice_number: str,
        customer_ref: str,
        idempotency_key: str,
        return_url: str,
    ) -> PaymentIntent:
        separator = "&" if "?" in return_url else "?"
        body = self._ok(
            "POST",
            "/v1/checkout/sessions",
            {
                "mode": "payment",
                "customer": customer_ref,
                "success_url": f"{return_url}{separator}paid=1",
                "cancel_url": return_url,
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": currency.lower(),
                            "unit_amount": to_minor(amount, currency),
                            "product_data": {"name": f"Invoice {invoice_number}"},
                        },
                    }
                ],
                "payment_intent_data": {
                    "metadata": {
                        "invoice_number": invoice_number,
                        "imhost_attempt": idempotency_key,
                    }
                },
            },
            idempotency_key=idempotency_key,
        )
        return PaymentIntent(
            gateway=self.name,
            external_id=str(body.get("id", "")),
            amount=amount,
            currency=currency,
            status="requires_action",
            redirect_url=body.get("url"),
            instructions="Enter your card on the payment page.",
        )

    def charge_saved_method(
        self,
        *,
        method_external_id: str,
        customer_external_id: str | None,
        amount: Decimal,
        currency: str,
        invoice_number: str,
        idempotency_key: str,
        books: ChargeBooks | None = None,
    ) -> PaymentIntent:
        status, body = self._call(
            "POST",
            "/v1/payment_intents",
            {
                "amount": to_minor(amount, currency),
                "currency": currency.lower(),
                "customer": customer_external_id,
                "payment_method": method_external_id,
                "off_session": True,
                "confirm": True,
                "description": f"Invoice {invoice_number}",
                "metadata": {"invoice_number": invoice_number, "imhost_attempt": idempotency_key},
            },
            idempotency_key=idempotency_key,
        )
        if status == 402 or (
            status >= 400 and (body.get("error") or {}).get("type") == "card_error"
        ):
            error = body.get("error") or {}
            intent = error.get("payment_intent") or {}
            return PaymentIntent(
                gateway=self.name,
                external_id=str(intent.get("id") or f"declined-{idempotency_key}"),
                amount=amount,
                currency=currency,
                status="failed",
                failure_message=decline_message(error),
            )
        if status >= 400:
            log.warning("Stripe refused a charge: %s", (body.get("error") or {}).get("message"))
            return PaymentIntent(
                gateway=self.name,
                external_id=f"refused-{idempotency_key}",
                amount=amount,
                currency=currency,
                status="failed",
                failure_message="The card payment provider refused the payment.",
            )
        return self._intent(body, amount, currency)

    def refund(
        self, *, payment_external_id: str | None, amount: Decimal, currency: str, reason: str
    ) -> GatewayRefund:
        if not payment_external_id:
            raise Conflict("This payment has no card payment to refund to.")
        body = self._ok(
            "POST",
            "/v1/refunds",
            {
                "payment_intent": payment_external_id,
                "amount": to_minor(amount, currency),
                "metadata": {"reason": reason[:400]},
            },
            idempotency_key=f"refund-{payment_external_id}-{to_minor(amount, currency)}-"
            + hashlib.sha256(reason.encode()).hexdigest()[:16],
        )
        return GatewayRefund(
            gateway=self.name,
            external_id=str(body.get("id", "")),
            amount=amount,
            currency=currency,
            status="succeeded" if body.get("status") == "succeeded" else "pending",
        )

    # --- saved methods ----------------------------------------------------------------------

    def ensure_customer(self, *, organization_id: str, name: str, email: str | None) -> str:
        body = self._ok(
            "POST",
            "/v1/customers",
            {"name": name, "email": email, "metadata": {"organization_id": organization_id}},
            idempotency_key=f"customer-{organization_id}",
        )
        return str(body["id"])

    def start_method_setup(
        self, *, customer_external_id: str, organization_id: str, return_url: str
    ) -> MethodSetup:
        separator = "&" if "?" in return_url else "?"
        body = self._ok(
            "POST",
            "/v1/checkout/sessions",
            {
                "mode": "setup",
                "customer": customer_external_id,
                "payment_method_types": ["card"],
                "success_url": f"{return_url}{separator}setup={{CHECKOUT_SESSION_ID}}",
                "cancel_url": return_url,
                "setup_intent_data": {"metadata": {"organization_id": organization_id}},
            },
        )
        return MethodSetup(
            gateway=self.name,
            external_id=str(body.get("id", "")),
            customer_external_id=customer_external_id,
            redirect_url=body.get("url"),
        )

    def complete_method_setup(self, setup_external_id: str) -> str | None:
        """The PaymentMethod a finished setup Checkout Session saved (None while unfinished)."""
        session = self._ok("GET", f"/v1/checkout/sessions/{_id(setup_external_id)}")
        setup_intent = session.get("setup_intent")
        if not isinstance(setup_intent, str):
            return None
        intent = self._ok("GET", f"/v1/setup_intents/{_id(setup_intent)}")
        if intent.get("status") != "succeeded":
            return None
        method = intent.get("payment_method")
        return method if isinstance(method, str) else None

    def describe_method(self, method_external_id: str) -> SavedMethod:
        body = self._ok("GET", f"/v1/payment_methods/{_id(method_external_id)}")
        kind, label = method_label(body)
        customer = body.get("customer")
        return SavedMethod(
            gateway=self.name,
            external_id=str(body.get("id", method_external_id)),
            customer_external_id=customer if isinstance(customer, str) else None,
            kind=kind,
            label=label,
        )

    def detach_method(self, method_external_id: str) -> None:
        status, _ = self._call("POST", f"/v1/payment_methods/{_id(method_external_id)}/detach")
        if status >= 400 and status != 404:
            raise Conflict("The card payment provider would not remove this payment method.")

    # --- webhooks ---------------------------------------------------------------------------

    def parse_webhook(self, headers: dict[str, str], body: bytes) -> GatewayEvent:
        secret = self.settings.webhook_secret
        if secret is None:
            raise InvalidInput("no webhook signing secret is configured for Stripe")
        lowered = {k.lower(): v for k, v in headers.items()}
        verify_signature(
            lowered.get("stripe-signature"),
            body,
            secret.get_secret_value(),
            now=self.clock.now().timestamp(),
            tolerance=self.settings.webhook_tolerance_seconds,
        )
        try:
            event = json.loads(body)
            kind = str(event["type"])
            obj = event["data"]["object"]
        except (ValueError, KeyError, TypeError):
            raise InvalidInput("the webhook body is not a Stripe event") from None
        if not isinstance(obj, dict):
            raise InvalidInput("the webhook body is not a Stripe event")
        found = obj.get("metadata")
        metadata: dict[str, Any] = found if isinstance(found, dict) else {}
        currency = str(obj.get("currency") or "eur").upper()
        common: dict[str, Any] = {
            "gateway": self.name,
            "external_id": str(obj.get("id", "")),
            "currency": currency,
            "raw": {"id": event.get("id"), "type": kind},
        }
        if kind in ("payment_intent.succeeded", "payment_intent.payment_failed"):
            amount = obj.get("amount_received") or obj.get("amount") or 0
            return GatewayEvent(
                kind="payment_succeeded" if kind.endswith("succeeded") else "payment_failed",
                amount=from_minor(int(amount), currency),
                invoice_reference=metadata.get("invoice_number"),
                attempt_key=metadata.get("imhost_attempt"),
                customer_external_id=obj.get("customer")
                if isinstance(obj.get("customer"), str)
                else None,
                failure_message=decline_message(obj.get("last_payment_error") or {})
                if kind.endswith("failed")
                else None,
                **common,
            )
        if kind == "charge.refunded":
            return GatewayEvent(
                kind="refund_succeeded",
                amount=from_minor(int(obj.get("amount_refunded") or 0), currency),
                **common,
            )
        if kind == "setup_intent.succeeded":
            method = obj.get("payment_method")
            customer = obj.get("customer")
            return GatewayEvent(
                kind="method_saved",
                amount=Decimal(0),
                organization_ref=metadata.get("organization_id"),
                method_external_id=method if isinstance(method, str) else None,
                customer_external_id=customer if isinstance(customer, str) else None,
                **common,
            )
        return GatewayEvent(kind="ignored", amount=Decimal(0), **common)
