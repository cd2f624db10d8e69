"""Tables of the billing package.

Money columns are ``Amount`` (exact decimals); every time is ``UtcDateTime``. Balances are
never a mutable number alone: account credit is the sum of ``CreditLedgerEntry`` rows, an
invoice's paid amount is backed by ``Payment`` rows.
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from imhost.db.base import Base, CreatedMixin, IdMixin
from imhost.db.types import Amount, UtcDateTime


class SubscriptionStatus(enum.StrEnum):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAUSED = "paused"
    CANCELED = "canceled"


SUBSCRIPTION_STATUS_LABELS: dict[str, str] = {
    "trialing": "free trial",
    "active": "active",
    "paused": "paused",
    "canceled": "cancelled",
}
"""What customers read for a subscription's status."""


class InvoiceStatus(enum.StrEnum):
    DRAFT = "draft"
    OPEN = "open"  # finalized, amount due > 0
    PAID = "paid"
    VOID = "void"


class InvoiceKind(enum.StrEnum):
    SUBSCRIPTION = "subscription"  # made by the billing run
    LATE_FEE = "late_fee"  # made by dunning


class LineKind(enum.StrEnum):
    USAGE = "usage"
    BASE_FEE = "base_fee"
    SETUP_FEE = "setup_fee"
    ADD_ON = "add_on"
    PRORATION = "proration"
    ONE_OFF = "one_off"
    DOMAIN = "domain"
    LATE_FEE = "late_fee"
    DISCOUNT = "discount"
    CARRIED_TO_CREDIT = "carried_to_credit"
    TAX = "tax"


class BillingProfile(IdMixin, Base):
    """The provider's billing settings (one row, key ``default``)."""

    __tablename__ = "billing_profiles"

    key: Mapped[str] = mapped_column(String(32), unique=True, default="default")
    # The seller on every invoice: legal name, postal address (street lines in ``address``,
    # one per line; the country is ``home_country``), VAT ID and, optionally, the trade
    # register number and a contact e-mail.
    legal_name: Mapped[str] = mapped_column(String(200), default="imhost")
    address: Mapped[str] = mapped_column(Text, default="")
    postcode: Mapped[str] = mapped_column(String(16), default="")
    city: Mapped[str] = mapped_column(String(100), default="")
    home_country: Mapped[str] = mapped_column(String(2), default="DE")
    provider_tax_id: Mapped[str | None] = mapped_column(String(64), default=None)
    registration_number: Mapped[str | None] = mapped_column(String(100), default=None)
    contact_email: Mapped[str | None] = mapped_column(String(320), default=None)
    prices_include_tax: Mapped[bool] = mapped_column(Boolean, default=False)
    invoice_number_format: Mapped[str] = mapped_column(String(64), default="INV-{year}-{seq:06d}")
    credit_note_number_format: Mapped[str] = mapped_column(
        String(64), default="CN-{year}-{seq:06d}"
    )
    payment_terms_days: Mapped[int] = mapped_column(Integer, default=14)
    bank_details: Mapped[str] = mapped_column(Text, default="")
    # Dunning policy (docs/billing.md, "Dunning"); offsets in days relative to the due date.
    reminder_offsets: Mapped[list[int]] = mapped_column(JSON, default=lambda: [-3, 0, 3, 7, 14])
    late_fee_after_days: Mapped[int | None] = mapped_column(Integer, default=7)
    late_fee_percent: Mapped[Decimal | None] = mapped_column(Amount(), default=Decimal("5"))
    late_fee_minimum: Mapped[Decimal] = mapped_column(Amount(), default=Decimal("5.00"))
    late_fee_flat: Mapped[Decimal | None] = mapped_column(Amount(), default=None)
    suspend_after_days: Mapped[int | None] = mapped_column(Integer, default=14)
    terminate_after_days: Mapped[int | None] = mapped_column(Integer, default=45)


class CustomerBillingDetails(IdMixin, CreatedMixin, Base):
    """What a customer's invoices are addressed to: the name (person or company) and postal
    address, and where invoices are e-mailed. The country and VAT ID, which decide the tax,
    stay on the organization (``Organization.country``/``tax_id``)."""

    __tablename__ = "billing_customer_details"

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), unique=True
    )
    name: Mapped[str] = mapped_column(String(200), default="")
    address: Mapped[str] = mapped_column(Text, default="")  # street lines, one per line
    postcode: Mapped[str] = mapped_column(String(16), default="")
    city: Mapped[str] = mapped_column(String(100), default="")
    invoice_email: Mapped[str | None] = mapped_column(String(320), default=None)
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class DocumentCounter(IdMixin, Base):
    """Gapless numbering: one row per (scope, year), locked while a number is taken."""

    __tablename__ = "billing_document_counters"
    __table_args__ = (UniqueConstraint("scope", "year"),)

    scope: Mapped[str] = mapped_column(String(32))  # invoice | credit_note
    year: Mapped[int] = mapped_column(Integer)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)


class TaxRate(IdMixin, CreatedMixin, Base):
    """A tax rate per customer country, set by the provider (e.g. DE 19 % VAT)."""

    __tablename__ = "tax_rates"

    country: Mapped[str] = mapped_column(String(2), unique=True)
    name: Mapped[str] = mapped_column(String(64), default="VAT")
    percent: Mapped[Decimal] = mapped_column(Amount())


class Subscription(IdMixin, CreatedMixin, Base):
    """An organization's plan, its periods and its state.

    ``next_billing_at`` is the next billing point: the start of the first paid period (its
    base fee is billed in advance) or the end of the current period (usage in arrears and the
    next period's base fee in advance). ``None`` once the subscription has ended.
    """

    __tablename__ = "subscriptions"
    __table_args__ = (Index("ix_subscriptions_due", "next_billing_at", "id"),)

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    plan_version_id: Mapped[str] = mapped_column(String(32), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    # The plan's interval code (catalog.intervals): monthly, every-3-months, calendar-weekly
    interval: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    billing_anchor_day: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    current_period_start: Mapped[datetime] = mapped_column(UtcDateTime())
    current_period_end: Mapped[datetime] = mapped_column(UtcDateTime())
    next_billing_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    trial_end: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    setup_fee_billed: Mapped[bool] = mapped_column(Boolean, default=False)
    # Whether the current period's base fee has been invoiced (in advance); not while paused.
    period_base_billed: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    canceled_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    paused_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    coupon_redemption_id: Mapped[str | None] = mapped_column(String(32), default=None)


class PlanChange(IdMixin, CreatedMixin, Base):
    """A plan change of a subscription: from ``changed_at`` on, ``to_plan_version_id``'s prices
    are in force. Usage before it is rated at ``from_plan_version_id``'s (docs/billing.md,
    "Prices in force")."""

    __tablename__ = "subscription_plan_changes"
    __table_args__ = (Index("ix_subscription_plan_changes_sub", "subscription_id", "changed_at"),)

    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"))
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    from_plan_version_id: Mapped[str] = mapped_column(String(32))
    to_plan_version_id: Mapped[str] = mapped_column(String(32))


class SubscriptionAddOn(IdMixin, CreatedMixin, Base):
    __tablename__ = "subscription_add_ons"
    __table_args__ = (UniqueConstraint("subscription_id", "add_on_id"),)

    subscription_id: Mapped[str] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True
    )
    add_on_id: Mapped[str] = mapped_column(String(32))
    quantity: Mapped[int] = mapped_column(Integer, default=1)


class PendingCharge(IdMixin, CreatedMixin, Base):
    """A charge (or a credit, when negative) waiting for the customer's next invoice.

    Prorations, one-off charges staff add and domain fees land here; the billing run moves
    them onto an invoice and records which one. ``(source, reference)`` is unique so that the
    same domain renewal reported twice is charged once.
    """

    __tablename__ = "pending_charges"
    __table_args__ = (UniqueConstraint("source", "reference"),)

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # LineKind value
    source: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(String(500))
    calculation: Mapped[str] = mapped_column(Text, default="")
    amount: Mapped[Decimal] = mapped_column(Amount())
    currency: Mapped[str] = mapped_column(String(3))
    taxable: Mapped[bool] = mapped_column(Boolean, default=True)
    reason: Mapped[str | None] = mapped_column(String(500), default=None)
    created_by: Mapped[str | None] = mapped_column(String(320), default=None)
    period_start: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    period_end: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    invoice_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)


class Invoice(IdMixin, CreatedMixin, Base):
    """One invoice. ``(subscription_id, period_start)`` is unique: one invoice per period.

    ``period_start``/``period_end`` is the period whose base fee it bills in advance;
    ``usage_period_*`` the period whose usage it bills in arrears. Amounts are the sums of the
    lines (``total`` = sum of the lines that count); ``amount_paid`` sums the payments and
    credit notes applied.
    """

    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("subscription_id", "period_start"),
        Index("ix_invoices_org_status", "organization_id", "status"),
    )

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    subscription_id: Mapped[str | None] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="SET NULL"), default=None
    )
    kind: Mapped[str] = mapped_column(String(16), default=InvoiceKind.SUBSCRIPTION.value)
    related_invoice_id: Mapped[str | None] = mapped_column(String(32), default=None)
    number: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    status: Mapped[str] = mapped_column(String(16), default=InvoiceStatus.DRAFT.value)
    currency: Mapped[str] = mapped_column(String(3))
    period_start: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    period_end: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    usage_period_start: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    usage_period_end: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    issued_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), index=True, default=None)
    paid_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    voided_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    void_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    subtotal: Mapped[Decimal] = mapped_column(Amount(), default=Decimal(0))
    tax_total: Mapped[Decimal] = mapped_column(Amount(), default=Decimal(0))
    total: Mapped[Decimal] = mapped_column(Amount(), default=Decimal(0))
    amount_paid: Mapped[Decimal] = mapped_column(Amount(), default=Decimal(0))
    amount_credited: Mapped[Decimal] = mapped_column(Amount(), default=Decimal(0))
    prices_include_tax: Mapped[bool] = mapped_column(Boolean, default=False)
    tax_note: Mapped[str | None] = mapped_column(Text, default=None)
    customer_name: Mapped[str] = mapped_column(String(200), default="")
    customer_country: Mapped[str | None] = mapped_column(String(2), default=None)
    customer_tax_id: Mapped[str | None] = mapped_column(String(64), default=None)
    customer_email: Mapped[str | None] = mapped_column(String(320), default=None)
    plan_version_id: Mapped[str | None] = mapped_column(String(32), default=None)
    # Taken when the invoice is made, so later edits of the provider's or the customer's
    # details never change an issued invoice: the seller (billing.parties.Party fields plus
    # bank_details), the customer's street lines, postcode and city (name, country and VAT ID
    # are the customer_* columns), and the tax decision's EN 16931 VAT category and rate.
    seller: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    customer_address: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    tax_category: Mapped[str | None] = mapped_column(String(2), default=None)
    tax_percent: Mapped[Decimal | None] = mapped_column(Amount(), default=None)

    @property
    def amount_due(self) -> Decimal:
        if self.status in (InvoiceStatus.VOID.value, InvoiceStatus.DRAFT.value):
            return Decimal(0)
        return max(self.total - self.amount_paid - self.amount_credited, Decimal(0))


class InvoiceLine(IdMixin, Base):
    __tablename__ = "invoice_lines"
    __table_args__ = (UniqueConstraint("invoice_id", "position"),)

    invoice_id: Mapped[str] = mapped_column(
        ForeignKey("invoices.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(24))
    description: Mapped[str] = mapped_column(String(500))
    calculation: Mapped[str] = mapped_column(Text, default="")
    quantity: Mapped[Decimal | None] = mapped_column(Amount(), default=None)
    amount: Mapped[Decimal] = mapped_column(Amount())
    # False only for the tax line of tax-inclusive prices: it states the tax contained in
    # the other lines and is not added again.
    counts_in_total: Mapped[bool] = mapped_column(Boolean, default=True)
    # False for a charge outside the tax (a late fee, the credit carried to the account).
    taxable: Mapped[bool] = mapped_column(Boolean, default=True)
    metric: Mapped[str | None] = mapped_column(String(64), default=None)
    period_start: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    period_end: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    pending_charge_id: Mapped[str | None] = mapped_column(String(32), default=None)


class Coupon(IdMixin, CreatedMixin, Base):
    __tablename__ = "coupons"

    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(16))  # percent | amount
    percent_off: Mapped[Decimal | None] = mapped_column(Amount(), default=None)
    amount_off: Mapped[Decimal | None] = mapped_column(Amount(), default=None)
    currency: Mapped[str | None] = mapped_column(String(3), default=None)
    duration: Mapped[str] = mapped_column(String(16))  # once | repeating | forever
    duration_periods: Mapped[int | None] = mapped_column(Integer, default=None)
    max_redemptions: Mapped[int | None] = mapped_column(Integer, default=None)
    redeem_by: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class CouponRedemption(IdMixin, CreatedMixin, Base):
    __tablename__ = "coupon_redemptions"
    __table_args__ = (UniqueConstraint("coupon_id", "organization_id"),)

    coupon_id: Mapped[str] = mapped_column(ForeignKey("coupons.id", ondelete="CASCADE"))
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    subscription_id: Mapped[str] = mapped_column(String(32))
    periods_applied: Mapped[int] = mapped_column(Integer, default=0)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class CreditLedgerEntry(IdMixin, CreatedMixin, Base):
    """Account credit moves: positive adds credit, negative uses it. Balance = the sum."""

    __tablename__ = "credit_ledger"
    __table_args__ = (Index("ix_credit_ledger_org_currency", "organization_id", "currency"),)

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Amount())
    kind: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(String(500))
    invoice_id: Mapped[str | None] = mapped_column(String(32), default=None)
    payment_id: Mapped[str | None] = mapped_column(String(32), default=None)
    credit_note_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_by: Mapped[str | None] = mapped_column(String(320), default=None)


class CreditNote(IdMixin, CreatedMixin, Base):
    __tablename__ = "credit_notes"

    number: Mapped[str] = mapped_column(String(64), unique=True)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"), index=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(String(500))
    total: Mapped[Decimal] = mapped_column(Amount())
    applied_to_invoice: Mapped[Decimal] = mapped_column(Amount(), default=Decimal(0))
    to_credit: Mapped[Decimal] = mapped_column(Amount(), default=Decimal(0))
    refunded: Mapped[Decimal] = mapped_column(Amount(), default=Decimal(0))
    created_by: Mapped[str | None] = mapped_column(String(320), default=None)


class CreditNoteLine(IdMixin, Base):
    __tablename__ = "credit_note_lines"

    credit_note_id: Mapped[str] = mapped_column(
        ForeignKey("credit_notes.id", ondelete="CASCADE"), index=True
    )
    invoice_line_id: Mapped[str | None] = mapped_column(String(32), default=None)
    description: Mapped[str] = mapped_column(String(500))
    amount: Mapped[Decimal] = mapped_column(Amount())


class Payment(IdMixin, CreatedMixin, Base):
    """Money received (or taken from account credit) for an invoice."""

    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("driver", "external_id"),)

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    invoice_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    amount: Mapped[Decimal] = mapped_column(Amount())
    applied_to_invoice: Mapped[Decimal] = mapped_column(Amount(), default=Decimal(0))
    currency: Mapped[str] = mapped_column(String(3))
    method: Mapped[str] = mapped_column(String(32))  # bank_transfer | account_credit | card ...
    driver: Mapped[str] = mapped_column(String(32), default="manual")
    external_id: Mapped[str | None] = mapped_column(String(128), default=None)
    reference: Mapped[str | None] = mapped_column(String(200), default=None)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    recorded_by: Mapped[str | None] = mapped_column(String(320), default=None)
    refunded_amount: Mapped[Decimal] = mapped_column(Amount(), default=Decimal(0))


class Refund(IdMixin, CreatedMixin, Base):
    __tablename__ = "refunds"

    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    amount: Mapped[Decimal] = mapped_column(Amount())
    currency: Mapped[str] = mapped_column(String(3))
    destination: Mapped[str] = mapped_column(String(16))  # original
    reason: Mapped[str] = mapped_column(String(500))
    external_id: Mapped[str | None] = mapped_column(String(128), default=None)
    created_by: Mapped[str | None] = mapped_column(String(320), default=None)


class DunningAction(IdMixin, Base):
    """A dunning step done for an invoice. Unique per (invoice, step): never twice."""

    __tablename__ = "dunning_actions"
    __table_args__ = (UniqueConstraint("invoice_id", "step"),)

    invoice_id: Mapped[str] = mapped_column(
        ForeignKey("invoices.id", ondelete="CASCADE"), index=True
    )
    organization_id: Mapped[str] = mapped_column(String(32), index=True)
    step: Mapped[str] = mapped_column(String(32))  # reminder:-3, late_fee, suspend, terminate
    outcome: Mapped[str] = mapped_column(String(16))  # done | skipped
    at: Mapped[datetime] = mapped_column(UtcDateTime())


class PaymentMethodStatus(enum.StrEnum):
    ACTIVE = "active"
    REMOVED = "removed"


class PaymentMethod(IdMixin, CreatedMixin, Base):
    """A payment method an organization saved with a gateway (a card, a SEPA mandate, ...).

    imhost keeps only the gateway's id for it and a label a person reads ("Visa ending 4242,
    expires 12/2028"); the card number or IBAN stays with the gateway. At most one active
    method of an organization is its default (the one "Pay now" and dunning charge).
    """

    __tablename__ = "payment_methods"
    __table_args__ = (UniqueConstraint("gateway", "external_id"),)

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    gateway: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    customer_external_id: Mapped[str | None] = mapped_column(String(128), default=None)
    kind: Mapped[str] = mapped_column(String(32), default="card")  # card | sepa_debit | ...
    label: Mapped[str] = mapped_column(String(200))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default=PaymentMethodStatus.ACTIVE.value)
    removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class GatewayCustomer(IdMixin, CreatedMixin, Base):
    """The gateway's customer record of an organization (one per gateway)."""

    __tablename__ = "gateway_customers"
    __table_args__ = (UniqueConstraint("organization_id", "gateway"),)

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    gateway: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))


class PaymentAttemptStatus(enum.StrEnum):
    PROCESSING = "processing"  # the gateway works on it (SEPA: until the bank statement)
    REQUIRES_ACTION = "requires_action"  # the customer must act (transfer, card page)
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class PaymentAttempt(IdMixin, CreatedMixin, Base):
    """One try to collect an invoice through a gateway ("Pay now", or a dunning step).

    ``idempotency_key`` is unique and is sent to the gateway as well: a double click, a
    retried request or a rerun of a dunning step finds the attempt it made and never charges
    twice. The payment is recorded once the gateway confirms (at once, or by its webhook).
    """

    __tablename__ = "payment_attempts"
    __table_args__ = (
        UniqueConstraint("idempotency_key"),
        Index("ix_payment_attempts_gateway_external", "gateway", "external_id"),
    )

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    invoice_id: Mapped[str] = mapped_column(
        ForeignKey("invoices.id", ondelete="CASCADE"), index=True
    )
    payment_method_id: Mapped[str | None] = mapped_column(
        ForeignKey("payment_methods.id", ondelete="SET NULL"), default=None
    )
    gateway: Mapped[str] = mapped_column(String(32))
    idempotency_key: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(40))  # pay_now | dunning:<step>
    external_id: Mapped[str | None] = mapped_column(String(128), default=None)
    amount: Mapped[Decimal] = mapped_column(Amount())
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20))
    failure_message: Mapped[str | None] = mapped_column(String(300), default=None)
    instructions: Mapped[str | None] = mapped_column(Text, default=None)
    redirect_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    payment_id: Mapped[str | None] = mapped_column(String(32), default=None)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
