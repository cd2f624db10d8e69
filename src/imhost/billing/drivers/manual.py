"""The built-in manual gateway: money moves outside imhost (bank transfer, cash, cheque).

Paying means transferring the amount with the invoice number as the reference; staff then
record the payment. A refund is a transfer staff make by hand; it is recorded as done.
"""

from __future__ import annotations

from decimal import Decimal

from imhost.billing.drivers.base import GatewayEvent, GatewayRefund, PaymentGateway, PaymentIntent
from imhost.kit.errors import InvalidInput
from imhost.kit.ids import new_id


class ManualGateway(PaymentGateway):
    name = "manual"
    label = "bank transfer"

    def create_payment_intent(
        self, *, amount: Decimal, currency: str, invoice_number: str, customer_ref: str
    ) -> PaymentIntent:
        return PaymentIntent(
            gateway=self.name,
            external_id=f"manual-{new_id()}",
            amount=amount,
            currency=currency,
            status="requires_action",
            instructions=(
                f"Transfer {amount} {currency} to the provider's bank account with the "
                f"reference {invoice_number}."
            ),
        )

    def capture(self, external_id: str, amount: Decimal, currency: str) -> PaymentIntent:
        return PaymentIntent(
            gateway=self.name,
            external_id=external_id,
            amount=amount,
            currency=currency,
            status="succeeded",
        )

    def refund(
        self, *, payment_external_id: str | None, amount: Decimal, currency: str, reason: str
    ) -> GatewayRefund:
        return GatewayRefund(
            gateway=self.name,
            external_id=f"manual-refund-{new_id()}",
            amount=amount,
            currency=currency,
            status="succeeded",
        )

    def parse_webhook(self, headers: dict[str, str], body: bytes) -> GatewayEvent:
        raise InvalidInput("the manual gateway has no webhooks; staff record payments")
