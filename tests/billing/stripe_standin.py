"""A small Stripe-compatible HTTP server on loopback: a stand-in for the external service.

It implements only the endpoints imhost calls, keeps real state (customers, payment methods,
setup intents, checkout sessions, payment intents, refunds), checks the secret key like
Stripe (401 without it), replays an ``Idempotency-Key`` with the first answer (and refuses the
same key with other parameters, 400), declines Stripe's test cards the way Stripe does (HTTP
402 with the PaymentIntent in the error), serves a bare "checkout page" a browser can submit,
and signs webhooks (``Stripe-Signature``) that are queued and delivered to the app.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger(__name__)

SECRET_KEY = "sk_test_standin_0123456789"
WEBHOOK_SECRET = "whsec_standin_0123456789"

# Stripe's test card numbers: https://docs.stripe.com/testing
CARDS: dict[str, dict[str, Any]] = {
    "4242424242424242": {"brand": "visa", "last4": "4242"},
    "5555555555554444": {"brand": "mastercard", "last4": "4444"},
    "4000000000000002": {"brand": "visa", "last4": "0002", "decline": "generic_decline"},
    "4000000000009995": {"brand": "visa", "last4": "9995", "decline": "insufficient_funds"},
}

IDEMPOTENCY_MISMATCH = (
    "Keys for idempotent requests can only be used with the same parameters they were first "
    "used with."
)

Delivery = Callable[[bytes, dict[str, str]], None]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _nested(form: dict[str, str], prefix: str) -> dict[str, str]:
    """``metadata[a]=1`` -> {"a": "1"} for prefix "metadata"."""
    start = prefix + "["
    return {
        k[len(start) : -1]: v
        for k, v in form.items()
        if k.startswith(start) and "][" not in k[len(start) :]
    }


@dataclass
class StripeStandin:
    now: Callable[[], float] = time.time
    deliver: Delivery | None = None
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    idempotency: dict[str, tuple[str, int, dict[str, Any]]] = field(default_factory=dict)
    pending_webhooks: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    url: str = ""
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _deliverer: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    # --- life ---------------------------------------------------------------------------

    def start(self, *, deliver_in_background: bool = False) -> StripeStandin:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                return

            def do_GET(self) -> None:
                standin._handle(self, "GET")

            def do_POST(self) -> None:
                standin._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        if deliver_in_background:
            self._deliverer = threading.Thread(target=self._deliver_loop, daemon=True)
            self._deliverer.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _deliver_loop(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.deliver_pending()
            except OSError as exc:  # the app is not listening (yet, or any more)
                log.warning("stand-in webhook delivery: %s", exc)

    # --- webhooks -----------------------------------------------------------------------

    def _event(self, kind: str, obj: dict[str, Any]) -> None:
        event = {
            "id": self._new("evt"),
            "object": "event",
            "type": kind,
            "created": int(self.now()),
            "data": {"object": json.loads(json.dumps(obj))},
        }
        self.pending_webhooks.append(event)

    def signed(
        self, event: dict[str, Any], *, secret: str = WEBHOOK_SECRET
    ) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(event).encode()
        headers = {
            "Stripe-Signature": sign(secret, int(self.now()), body),
            "Content-Type": "application/json",
        }
        return body, headers

    def deliver_pending(self) -> int:
        with self._lock:
            events, self.pending_webhooks = self.pending_webhooks, []
        for event in events:
            assert self.deliver is not None, "set deliver to send webhooks to the app"
            body, headers = self.signed(event)
            self.deliver(body, headers)
        return len(events)

    # --- objects ------------------------------------------------------------------------

    def _new(self, prefix: str) -> str:
        return f"{prefix}_standin{next(self._ids):06d}"

    def card_method(self, number: str, customer: str | None) -> dict[str, Any]:
        card = CARDS[number]
        pm = {
            "id": self._new("pm"),
            "object": "payment_method",
            "type": "card",
            "customer": customer,
            "card": {
                "brand": card["brand"],
                "last4": card["last4"],
                "exp_month": 12,
                "exp_year": 2028,
            },
            "_number": number,
        }
        self.objects[str(pm["id"])] = pm
        return pm

    def save_card(self, customer: str, number: str, metadata: dict[str, str] | None = None) -> str:
        """What a customer does on the setup page: the card is saved, the webhook queued."""
        return str(self._setup(customer, number, metadata)["payment_method"])

    def _setup(self, customer: str, number: str, metadata: dict[str, str] | None) -> dict[str, Any]:
        pm = self.card_method(number, customer)
        seti = {
            "id": self._new("seti"),
            "object": "setup_intent",
            "status": "succeeded",
            "customer": customer,
            "payment_method": pm["id"],
            "metadata": metadata or {},
        }
        self.objects[seti["id"]] = seti
        self._event("setup_intent.succeeded", seti)
        return seti

    def _public(self, obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    def _charge(self, form: dict[str, str], pm: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        currency = form.get("currency", "eur")
        pi = {
            "id": self._new("pi"),
            "object": "payment_intent",
            "amount": int(form["amount"]),
            "currency": currency,
            "customer": form.get("customer"),
            "payment_method": pm["id"],
            "metadata": _nested(form, "metadata"),
            "status": "succeeded",
            "amount_received": int(form["amount"]),
            "last_payment_error": None,
        }
        decline = CARDS.get(pm.get("_number", ""), {}).get("decline")
        if decline:
            pi["status"] = "requires_payment_method"
            pi["amount_received"] = 0
            pi["last_payment_error"] = {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": decline,
                "message": "Your card was declined.",
            }
        self.objects[pi["id"]] = pi
        if decline:
            self._event("payment_intent.payment_failed", pi)
            return 402, {"error": {**pi["last_payment_error"], "payment_intent": pi}}
        self._event("payment_intent.succeeded", pi)
        return 200, pi

    # --- HTTP ---------------------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        path = urlsplit(req.path).path
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        if path.startswith("/checkout/"):
            self._checkout_page(req, method, path.removeprefix("/checkout/"), form)
            return
        with self._lock:
            self.requests.append((method, path, form))
            if req.headers.get("Authorization") != f"Bearer {SECRET_KEY}":
                self._send(
                    req,
                    401,
                    {
                        "error": {
                            "type": "invalid_request_error",
                            "message": "Invalid API Key provided",
                        }
                    },
                )
                return
            key = req.headers.get("Idempotency-Key")
            fingerprint = f"{method} {path} {sorted(form.items())}"
            if method == "POST" and key:
                seen = self.idempotency.get(key)
                if seen is not None:
                    if seen[0] != fingerprint:
                        self._send(
                            req,
                            400,
                            {
                                "error": {
                                    "type": "idempotency_error",
                                    "message": IDEMPOTENCY_MISMATCH,
                                }
                            },
                        )
                        return
                    self._send(req, seen[1], seen[2], replayed=True)
                    return
            status, body = self._route(method, path, form)
            if method == "POST" and key and status < 500:
                self.idempotency[key] = (fingerprint, status, body)
        self._send(req, status, body)

    def _route(self, method: str, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        missing = (
            404,
            {
                "error": {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "message": "No such object",
                }
            },
        )
        if method == "POST" and path == "/v1/customers":
            cus = {
                "id": self._new("cus"),
                "object": "customer",
                "name": form.get("name"),
                "email": form.get("email"),
                "metadata": _nested(form, "metadata"),
            }
            self.objects[str(cus["id"])] = cus
            return 200, cus
        if method == "POST" and path == "/v1/checkout/sessions":
            if form.get("customer") not in self.objects:
                return missing
            cs_id = self._new("cs")
            cs = {
                "id": cs_id,
                "object": "checkout.session",
                "mode": form["mode"],
                "customer": form.get("customer"),
                "success_url": form["success_url"],
                "cancel_url": form.get("cancel_url"),
                "url": f"{self.url}/checkout/{cs_id}",
                "status": "open",
                "setup_intent": None,
                "payment_intent": None,
                "_form": form,
            }
            self.objects[cs_id] = cs
            return 200, self._public(cs)
        if (
            method == "GET"
            and len(parts) == 4
            and parts[1] in ("checkout", "setup_intents", "payment_methods")
        ):
            obj = self.objects.get(parts[-1])
            return (200, self._public(obj)) if obj else missing
        if method == "GET" and len(parts) == 3 and parts[1] in ("setup_intents", "payment_methods"):
            obj = self.objects.get(parts[2])
            return (200, self._public(obj)) if obj else missing
        if (
            method == "POST"
            and len(parts) == 4
            and parts[1] == "payment_methods"
            and parts[3] == "detach"
        ):
            pm = self.objects.get(parts[2])
            if pm is None:
                return missing
            pm["customer"] = None
            return 200, self._public(pm)
        if method == "POST" and path == "/v1/payment_intents":
            pm = self.objects.get(form.get("payment_method", ""))
            if pm is None:
                return missing
            if pm.get("customer") != form.get("customer"):
                return 400, {
                    "error": {
                        "type": "invalid_request_error",
                        "message": "The PaymentMethod does not belong to the Customer.",
                    }
                }
            return self._charge(form, pm)
        if method == "POST" and path == "/v1/refunds":
            pi = self.objects.get(form.get("payment_intent", ""))
            if pi is None or pi["status"] != "succeeded":
                return missing
            amount = int(form.get("amount") or pi["amount_received"])
            refunded = pi.get("_refunded", 0) + amount
            if refunded > pi["amount_received"]:
                return 400, {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "charge_already_refunded",
                        "message": "Too much",
                    }
                }
            pi["_refunded"] = refunded
            re = {
                "id": self._new("re"),
                "object": "refund",
                "amount": amount,
                "currency": pi["currency"],
                "payment_intent": pi["id"],
                "status": "succeeded",
            }
            self.objects[re["id"]] = re
            self._event(
                "charge.refunded",
                {
                    "id": self._new("ch"),
                    "object": "charge",
                    "payment_intent": pi["id"],
                    "amount_refunded": refunded,
                    "currency": pi["currency"],
                },
            )
            return 200, re
        return missing

    def _checkout_page(
        self, req: BaseHTTPRequestHandler, method: str, cs_id: str, form: dict[str, str]
    ) -> None:
        cs = self.objects.get(cs_id)
        if cs is None:
            self._send_html(req, 404, "<p>No such checkout session</p>")
            return
        if method == "GET":
            options = "".join(
                f'<option value="{n}">{html.escape(c["brand"])} {n}</option>'
                for n, c in CARDS.items()
            )
            self._send_html(
                req,
                200,
                f'<h1>Stand-in checkout ({cs["mode"]})</h1><form method="post">'
                f'<label>Card <select name="card">{options}</select></label>'
                f'<button type="submit">Confirm</button></form>',
            )
            return
        number = form.get("card", "4242424242424242")
        with self._lock:
            created = cs["_form"]
            if cs["mode"] == "setup":
                seti = self._setup(
                    cs["customer"], number, _nested(created, "setup_intent_data[metadata]")
                )
                cs["setup_intent"] = seti["id"]
            else:
                pm = self.card_method(number, cs["customer"])
                charge_form = {
                    "amount": created["line_items[0][price_data][unit_amount]"],
                    "currency": created["line_items[0][price_data][currency]"],
                    "customer": cs["customer"],
                    **{
                        f"metadata[{k}]": v
                        for k, v in _nested(created, "payment_intent_data[metadata]").items()
                    },
                }
                status, body = self._charge(charge_form, pm)
                if status != 200:
                    self._send_html(req, 200, "<p>Your card was declined.</p>")
                    return
                cs["payment_intent"] = body["id"]
            cs["status"] = "complete"
        target = cs["success_url"].replace("{CHECKOUT_SESSION_ID}", cs_id)
        req.send_response(303)
        req.send_header("Location", target)
        req.send_header("Content-Length", "0")
        req.end_headers()

    def _send(
        self,
        req: BaseHTTPRequestHandler,
        status: int,
        body: dict[str, Any],
        *,
        replayed: bool = False,
    ) -> None:
        data = json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        if replayed:
            req.send_header("Idempotent-Replayed", "true")
        req.end_headers()
        req.wfile.write(data)

    def _send_html(self, req: BaseHTTPRequestHandler, status: int, body: str) -> None:
        head = "<!doctype html><meta name=viewport content='width=device-width'>"
        data = f"{head}<title>Checkout</title>{body}".encode()
        req.send_response(status)
        req.send_header("Content-Type", "text/html; charset=utf-8")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)
