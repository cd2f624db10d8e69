"""API shapes of billing. Amounts travel as decimal strings, never floats."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from imhost.catalog.intervals import interval_words
from imhost.kit.decimals import Amount, AmountsByCurrency, CurrencyAmounts, Quantity
from imhost.kit.text import MultilineText, PlainText

Money = Decimal
"""An amount in a request body (responses use :data:`imhost.kit.decimals.Amount`)."""


class _In(BaseModel):
    """Request bodies: unknown fields are refused, and every time must carry its zone."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _aware_times(cls, value: object) -> object:
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-12-01T00:00:00Z")
        return value


class _Out(CurrencyAmounts):
    """Responses: amounts with the minor unit of the model's (or its parent's) currency."""

    model_config = ConfigDict(from_attributes=True)


class SubscriptionOut(_Out):
    id: str
    organization_id: str
    plan_version_id: str
    currency: str
    interval: str
    status: str
    billing_anchor_day: int
    # The interval in plain words ("every 3 months"), computed from ``interval``.
    interval_description: str = ""
    current_period_start: datetime
    current_period_end: datetime
    next_billing_at: datetime | None
    trial_end: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None
    paused_at: datetime | None
    add_ons: dict[str, int] = {}

    @model_validator(mode="after")
    def _describe_interval(self) -> SubscriptionOut:
        self.interval_description = interval_words(self.interval)
        return self


class SubscribeIn(_In):
    plan_version_id: PlainText = Field(min_length=1, max_length=32)
    add_ons: dict[PlainText, int] = Field(default_factory=dict, max_length=50)
    anchor_day: int | None = Field(None, ge=1, le=31)
    with_trial: bool = True


class ChangeIn(_In):
    plan_version_id: PlainText = Field(min_length=1, max_length=32)
    add_ons: dict[PlainText, int] | None = Field(None, max_length=50)


class CancelIn(_In):
    at_period_end: bool = True


class ProrationLineOut(_Out):
    description: str
    amount: Amount
    calculation: str


class ChangePreviewOut(_Out):
    subscription_id: str
    from_plan_version_id: str
    to_plan_version_id: str
    at: datetime
    currency: str
    lines: list[ProrationLineOut]
    total: Amount


class InvoiceLineOut(_Out):
    id: str
    position: int
    kind: str
    description: str
    calculation: str
    quantity: Quantity | None
    amount: Amount
    counts_in_total: bool
    metric: str | None
    period_start: datetime | None
    period_end: datetime | None
    usage_url: str | None = None


class InvoiceOut(_Out):
    id: str
    organization_id: str
    subscription_id: str | None
    kind: str
    number: str | None
    status: str
    currency: str
    period_start: datetime | None
    period_end: datetime | None
    usage_period_start: datetime | None
    usage_period_end: datetime | None
    issued_at: datetime | None
    due_at: datetime | None
    paid_at: datetime | None
    subtotal: Amount
    tax_total: Amount
    total: Amount
    amount_paid: Amount
    amount_credited: Amount
    amount_due: Amount
    prices_include_tax: bool
    tax_note: str | None
    customer_name: str


class InvoiceDetailOut(InvoiceOut):
    lines: list[InvoiceLineOut]


class InvoicePage(BaseModel):
    items: list[InvoiceOut]
    limit: int
    offset: int


class PaymentOut(_Out):
    id: str
    organization_id: str
    invoice_id: str | None
    amount: Amount
    applied_to_invoice: Amount
    currency: str
    method: str
    driver: str
    reference: str | None
    received_at: datetime
    refunded_amount: Amount


class PaymentIn(_In):
    amount: Money = Field(gt=0, max_digits=20, decimal_places=4)
    currency: PlainText = Field(min_length=3, max_length=3)
    method: Literal["bank_transfer", "cash", "cheque", "card", "other"] = "bank_transfer"
    reference: PlainText | None = Field(None, max_length=200)
    received_at: datetime | None = None


class RefundIn(_In):
    amount: Money = Field(gt=0, max_digits=20, decimal_places=4)
    reason: MultilineText = Field(min_length=1, max_length=500)


class RefundOut(_Out):
    id: str
    payment_id: str
    amount: Amount
    currency: str
    destination: str
    reason: str
    created_at: datetime


class CreditNoteIn(_In):
    reason: MultilineText = Field(min_length=1, max_length=500)
    lines: dict[PlainText, Money] | None = Field(None, max_length=200)
    refund_to: Literal["credit", "original"] = "credit"


class CreditNoteOut(_Out):
    id: str
    number: str
    invoice_id: str
    currency: str
    reason: str
    total: Amount
    applied_to_invoice: Amount
    to_credit: Amount
    refunded: Amount
    created_at: datetime


class VoidIn(_In):
    reason: MultilineText = Field(min_length=1, max_length=500)


class CreditEntryOut(_Out):
    id: str
    currency: str
    amount: Amount
    kind: str
    description: str
    invoice_id: str | None
    created_at: datetime


class CreditOut(BaseModel):
    balances: AmountsByCurrency
    entries: list[CreditEntryOut]


class CouponApplyIn(_In):
    code: PlainText = Field(min_length=1, max_length=64)


class CouponIn(_In):
    code: PlainText = Field(min_length=1, max_length=64)
    name: PlainText = Field("", max_length=200)
    kind: Literal["percent", "amount"]
    percent_off: Money | None = Field(None, gt=0, le=100)
    amount_off: Money | None = Field(None, gt=0, max_digits=20, decimal_places=4)
    currency: PlainText | None = Field(None, min_length=3, max_length=3)
    duration: Literal["once", "repeating", "forever"]
    duration_periods: int | None = Field(None, ge=1, le=120)
    max_redemptions: int | None = Field(None, ge=1)
    redeem_by: datetime | None = None


class CouponPatch(_In):
    name: PlainText | None = Field(None, max_length=200)
    active: bool | None = None
    max_redemptions: int | None = Field(None, ge=1)
    redeem_by: datetime | None = None


class CouponOut(_Out):
    id: str
    code: str
    name: str
    kind: str
    percent_off: Quantity | None
    amount_off: Amount | None
    currency: str | None
    duration: str
    duration_periods: int | None
    max_redemptions: int | None
    redeem_by: datetime | None
    active: bool


class RedemptionOut(_Out):
    id: str
    coupon_id: str
    subscription_id: str
    periods_applied: int


class TaxRateIn(_In):
    percent: Money = Field(ge=0, le=100)
    name: PlainText = Field("VAT", min_length=1, max_length=64)


class TaxRateOut(_Out):
    country: str
    name: str
    percent: Quantity


class ChargeIn(_In):
    description: MultilineText = Field(min_length=1, max_length=500)
    amount: Money = Field(gt=0, max_digits=20, decimal_places=4)
    currency: PlainText = Field(min_length=3, max_length=3)
    reason: MultilineText = Field(min_length=1, max_length=500)


class PendingChargeOut(_Out):
    id: str
    organization_id: str
    kind: str
    source: str
    reference: str
    description: str
    calculation: str
    amount: Amount
    currency: str
    reason: str | None
    created_at: datetime


class RunIn(_In):
    as_of: datetime | None = None

    @field_validator("as_of")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-12-01T00:00:00Z")
        return value


class RunFailureOut(BaseModel):
    subscription_id: str
    organization_id: str
    billing_point: datetime
    error: str


class RunOut(BaseModel):
    as_of: datetime
    invoices: int
    skipped: int
    totals: AmountsByCurrency
    invoice_numbers: list[str]
    failures: list[RunFailureOut]
    seconds: float


class DunningOut(CurrencyAmounts):
    invoice_id: str
    number: str | None
    organization_id: str
    due_at: datetime | None
    amount_due: Amount
    currency: str
    steps_done: list[str]


class BillingSettingsOut(_Out):
    legal_name: str
    address: str
    postcode: str
    city: str
    home_country: str
    provider_tax_id: str | None
    registration_number: str | None
    contact_email: str | None
    prices_include_tax: bool
    invoice_number_format: str
    credit_note_number_format: str
    payment_terms_days: int
    bank_details: str
    reminder_offsets: list[int]
    late_fee_after_days: int | None
    late_fee_percent: Quantity | None
    late_fee_minimum: Amount
    late_fee_flat: Amount | None
    suspend_after_days: int | None
    terminate_after_days: int | None


class BillingSettingsIn(_In):
    legal_name: PlainText | None = Field(None, min_length=1, max_length=200)
    address: MultilineText | None = Field(None, max_length=2000)
    postcode: PlainText | None = Field(None, max_length=16)
    city: PlainText | None = Field(None, max_length=100)
    home_country: PlainText | None = Field(None, min_length=2, max_length=2)
    provider_tax_id: PlainText | None = Field(None, max_length=64)
    registration_number: PlainText | None = Field(None, max_length=100)
    contact_email: PlainText | None = Field(None, max_length=320)
    prices_include_tax: bool | None = None
    invoice_number_format: PlainText | None = Field(None, min_length=1, max_length=64)
    credit_note_number_format: PlainText | None = Field(None, min_length=1, max_length=64)
    payment_terms_days: int | None = Field(None, ge=0, le=365)
    bank_details: MultilineText | None = Field(None, max_length=2000)
    reminder_offsets: list[int] | None = Field(None, max_length=20)
    late_fee_after_days: int | None = Field(None, ge=0, le=365)
    late_fee_percent: Money | None = Field(None, ge=0, le=100)
    late_fee_minimum: Money | None = Field(None, ge=0)
    late_fee_flat: Money | None = Field(None, ge=0)
    suspend_after_days: int | None = Field(None, ge=0, le=365)
    terminate_after_days: int | None = Field(None, ge=0, le=3650)

    @field_validator("reminder_offsets")
    @classmethod
    def _offsets(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(not -60 <= v <= 365 for v in value):
            raise ValueError("reminder offsets are days from the due date, -60 to 365")
        return value


class CustomerDetailsOut(BaseModel):
    """What the organization's invoices are addressed to."""

    name: str
    address: str
    postcode: str
    city: str
    country: str | None
    tax_id: str | None
    invoice_email: str | None


class CustomerDetailsIn(_In):
    """All of the billing details at once (a field left out is emptied, except the country)."""

    name: PlainText = Field("", max_length=200)
    address: MultilineText = Field("", max_length=400)
    postcode: PlainText = Field("", max_length=16)
    city: PlainText = Field("", max_length=100)
    country: PlainText = Field(min_length=2, max_length=2)
    tax_id: PlainText = Field("", max_length=64)
    invoice_email: PlainText = Field("", max_length=320)


class PaymentMethodOut(_Out):
    id: str
    gateway: str
    kind: str
    label: str
    is_default: bool
    created_at: datetime


class PaymentMethodSetupIn(_In):
    gateway: PlainText | None = Field(
        None, max_length=32, description="Which gateway; the first that saves methods if unset."
    )
    return_url: PlainText = Field(
        min_length=8, max_length=1000, description="Where the gateway sends the customer back."
    )


class PaymentMethodSetupOut(BaseModel):
    gateway: str
    setup_id: str
    redirect_url: str | None
    client_secret: str | None


class PaymentMethodAttachIn(_In):
    gateway: PlainText = Field(min_length=1, max_length=32)
    external_id: PlainText = Field(
        min_length=1, max_length=128, description="The gateway's id of a method it saved."
    )


class PayIn(_In):
    return_url: PlainText | None = Field(
        None, max_length=1000, description="Where a gateway's payment page sends back."
    )
    use_saved_method: bool = Field(
        True, description="False: the gateway's payment page even with a saved method."
    )


class PayOut(BaseModel):
    status: Literal["paid", "processing", "requires_action", "failed"]
    message: str
    attempt_id: str | None
    redirect_url: str | None
