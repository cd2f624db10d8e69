"""Pydantic models of metering: usage records in, results and usage out, budgets."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from imhost.kit.decimals import Amount, CurrencyAmounts, Quantity
from imhost.kit.text import PlainText

MAX_BATCH = 10_000
"""The most records one API call may carry."""


class UsageIn(BaseModel):
    """One usage record as sent by an engine or a tool.

    ``organization_id`` is taken from the URL on a customer route and required on the staff
    route. Everything else is checked record by record by :func:`metering.ingestion.ingest`, so
    a bad record is refused with its reason instead of failing the whole batch.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    organization_id: PlainText | None = Field(None, max_length=32)
    service_id: PlainText | None = Field(None, max_length=64)
    metric: PlainText = Field(max_length=40)
    bucket_start: datetime
    quantity: Decimal = Field(allow_inf_nan=True)
    subject: PlainText | None = Field(None, max_length=255)
    idempotency_key: PlainText = Field(min_length=1, max_length=200)


class UsageBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    records: list[UsageIn] = Field(max_length=MAX_BATCH)
    atomic: bool = Field(
        True,
        description="True: any refused record refuses the whole batch (nothing is written). "
        "False: the valid records are kept and the refused ones listed.",
    )


class RejectionOut(BaseModel):
    index: int
    key: str
    reason: str


class IngestResultOut(BaseModel):
    accepted: int
    duplicates: int
    corrected: int
    rejected: list[RejectionOut]


class UsageToDateOut(BaseModel):
    organization_id: str
    period_start: datetime
    period_end: datetime
    as_of: datetime
    quantities: dict[str, Quantity]
    units: dict[str, str]


class ForecastLineOut(BaseModel):
    """Amounts in the currency of the forecast around it."""

    metric: str
    usage_to_date: Quantity
    projected_quantity: Quantity
    projected_amount: Amount
    explanation: str


class ForecastInvoiceLineOut(BaseModel):
    """A line of the forecast invoice, as the billing run will write it."""

    kind: str
    description: str
    amount: Amount
    calculation: str


class ForecastOut(CurrencyAmounts):
    """The forecast of the next invoice (``total``, tax included) and the usage projection
    behind it (``lines``: each metric rated over the current period)."""

    organization_id: str
    period_start: datetime
    period_end: datetime
    as_of: datetime
    currency: str
    base_fee: Amount
    lines: list[ForecastLineOut]
    invoice_at: datetime | None = None
    """When the forecast invoice is made (None without a subscription)."""
    trial_end: datetime | None = None
    """During a free trial: when it ends (the forecast invoice is the first paid one)."""
    invoice_lines: list[ForecastInvoiceLineOut] = Field(default_factory=list)
    subtotal: Amount
    tax_total: Amount
    total: Amount
    amount_due: Amount
    """The total less the account credit that will pay part of it."""
    method: str


class BudgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Decimal = Field(gt=0, lt=Decimal("1e12"))
    currency: PlainText = Field(pattern=r"^[A-Z]{3}$")
    thresholds: list[int] = Field(default_factory=lambda: [50, 80, 100], max_length=10)
    hard_cap: bool = False

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("give at least one threshold (percent of the budget)")
        if any(t < 1 or t > 1000 for t in value):
            raise ValueError("thresholds are percentages from 1 to 1000")
        if len(set(value)) != len(value):
            raise ValueError("thresholds must be different")
        return sorted(value)


class BudgetOut(CurrencyAmounts):
    id: str
    organization_id: str
    amount: Amount
    currency: str
    thresholds: list[int]
    hard_cap: bool
    created_at: datetime
    updated_at: datetime | None


class BudgetAlertOut(CurrencyAmounts):
    period_start: datetime
    threshold: int
    amount: Amount
    budget_amount: Amount
    currency: str
    created_at: datetime
