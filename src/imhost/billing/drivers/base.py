"""The payment gateway interface.

A gateway moves money; billing keeps the books. The flow for a card gateway: billing asks
``create_payment_intent`` for an invoice's amount due and hands the client secret (or the
gateway's payment page, ``redirect_url``) to the portal; the gateway confirms through a signed
webhook, which ``parse_webhook`` turns into a ``GatewayEvent``; billing then records the
payment (idempotent on the gateway's id). Refunds go back through ``refund``.

Saved methods: ``start_method_setup`` sends the customer to the gateway's page where the card
(or the mandate) is entered; the gateway says it is saved (``GatewayEvent`` of kind
``method_saved``, or ``complete_method_setup`` on the way back) and ``describe_method`` gives
its label. ``charge_saved_method`` then charges it off-session. Its answer may be final
(``succeeded``, ``failed``) or not yet (``processing``: a SEPA debit until the bank statement
shows it; ``requires_action``: the customer must confirm), in which case a later webhook
settles it. A gateway that cannot save methods keeps the defaults, which say so plainly.

A gateway whose work is kept in imhost's own database (SEPA direct debit: the collection is
queued here and exported to the bank as a file) gets the caller's transaction as ``books``
(``ChargeBooks``) with the charge; the others ignore it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from imhost.kit.errors import Conflict, DomainError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from imhost.accounts.audit import Actor
    from imhost.billing.models import Invoice
    from imhost.kit.clock import Clock


class GatewayUnavailable(DomainError):
    """The gateway could not be reached or did not answer sensibly (its outage, or our
    configuration); nothing can be said about the money, so the caller tries again later."""

    status = 503
    type_slug = "gateway-unavailable"
    title = "Payment provider unavailable"


@dataclass(frozen=True)
class PaymentIntent:
    gateway: str
    external_id: str
    amount: Decimal
    currency: str
    status: str  # requires_action | processing | succeeded | failed
    client_secret: str | None = None
    instructions: str | None = None
    redirect_url: str | None = None
    failure_message: str | None = None  # plain words, e.g. "Your card was declined."


@dataclass(frozen=True)
class GatewayRefund:
    gateway: str
    external_id: str
    amount: Decimal
    currency: str
    status: str  # pending | succeeded


@dataclass(frozen=True)
class MethodSetup:
    """A started "save a payment method": where to send the customer."""

    gateway: str
    external_id: str
    customer_external_id: str | None
    redirect_url: str | None = None
    client_secret: str | None = None


@dataclass(frozen=True)
class SavedMethod:
    """A payment method as the gateway describes it."""

    gateway: str
    external_id: str
    customer_external_id: str | None
    kind: str  # card | sepa_debit | ...
    label: str  # "Visa ending 4242, expires 12/2028"


@dataclass(frozen=True)
class GatewayEvent:
    """A gateway's webhook, parsed and verified."""

    gateway: str
    kind: str  # payment_succeeded | payment_failed | refund_succeeded | method_saved | ignored
    external_id: str
    amount: Decimal
    currency: str
    invoice_reference: str | None = None
    attempt_key: str | None = None  # the idempotency key of our PaymentAttempt
    organization_ref: str | None = None
    method_external_id: str | None = None
    customer_external_id: str | None = None
    failure_message: str | None = None
    raw: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ChargeBooks:
    """The caller's transaction, for a gateway that keeps its work in imhost's database: the
    session, the clock, the invoice being charged (locked by the caller) and who acts."""

    session: Session
    clock: Clock
    invoice: Invoice
    actor: Actor | None = None


class PaymentGateway(ABC):
    name: str
    label: str = "payment provider"

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

    # --- saved payment methods (optional) ------------------------------------------------

    @property
    def saves_methods(self) -> bool:
        return False

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
        """Start paying one invoice without a saved method (the gateway's own flow)."""
        return self.create_payment_intent(
            amount=amount,
            currency=currency,
            invoice_number=invoice_number,
            customer_ref=customer_ref,
        )

    def ensure_customer(self, *, organization_id: str, name: str, email: str | None) -> str:
        raise Conflict(f"{self.label.capitalize()} cannot keep payment methods.")

    def start_method_setup(
        self, *, customer_external_id: str, organization_id: str, return_url: str
    ) -> MethodSetup:
        raise Conflict(f"{self.label.capitalize()} cannot keep payment methods.")

    def complete_method_setup(self, setup_external_id: str) -> str | None:
        """The method a finished setup saved (the customer is back from the gateway's page);
        None while it is not finished. The webhook says the same; either may come first."""
        return None

    def describe_method(self, method_external_id: str) -> SavedMethod:
        raise Conflict(f"{self.label.capitalize()} cannot keep payment methods.")

    def detach_method(self, method_external_id: str) -> None:
        raise Conflict(f"{self.label.capitalize()} cannot keep payment methods.")

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
        raise Conflict(f"{self.label.capitalize()} cannot charge a saved payment method.")
