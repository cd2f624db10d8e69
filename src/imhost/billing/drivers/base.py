"""The payment gateway interface.

A gateway moves money; billing keeps the books. The flow for a card gateway: billing asks
``create_payment_intent`` for an invoice's amount due and hands the client secret to the
portal; the gateway confirms through a signed webhook, which ``parse_webhook`` turns into a
``GatewayEvent``; billing then records the payment (idempotent on the gateway's id). Refunds
go back through ``refund``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class PaymentIntent:
    gateway: str
    external_id: str
    amount: Decimal
    currency: str
    status: str  # requires_action | processing | succeeded
    client_secret: str | None = None
    instructions: str | None = None


@dataclass(frozen=True)
class GatewayRefund:
    gateway: str
    external_id: str
    amount: Decimal
    currency: str
    status: str  # pending | succeeded


@dataclass(frozen=True)
class GatewayEvent:
    """A gateway's webhook, parsed and verified."""

    gateway: str
    kind: str  # payment_succeeded | payment_failed | refund_succeeded
    external_id: str
    amount: Decimal
    currency: str
    invoice_reference: str | None = None
    raw: dict[str, object] = field(default_factory=dict)


class PaymentGateway(ABC):
    name: str

    @abstractmethod
    def create_payment_intent(
        self, *, amount: Decimal, currency: str, invoice_number: str, customer_ref: str
    ) -> PaymentIntent: ...

    @abstractmethod
    def capture(self, external_id: str, amount: Decimal, currency: str) -> PaymentIntent: ...

    @abstractmethod
    def refund(
        self, *, payment_external_id: str | None, amount: Decimal, currency: str, reason: str
    ) -> GatewayRefund: ...

    @abstractmethod
    def parse_webhook(self, headers: dict[str, str], body: bytes) -> GatewayEvent: ...
