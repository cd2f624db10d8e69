"""Pydantic models of the catalog: what staff send to create plans and add-ons, and what the
public API shows. Amounts travel as strings (exact decimals)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from imhost.catalog.models import AddOnKind, BillingInterval
from imhost.kit.decimals import Amount, CurrencyAmounts, Quantity

CODE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
MAX_AMOUNT = Decimal("1e15")


class TierIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    up_to: Decimal | None = Field(None, gt=0, description="Inclusive upper bound; null: open.")
    unit_price: Decimal = Field(Decimal(0), ge=0, lt=MAX_AMOUNT)
    flat_fee: Decimal = Field(Decimal(0), ge=0, lt=MAX_AMOUNT)


class PriceComponentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    pricing_model: str = Field(description="per_unit, graduated, volume, package or flat_tier")
    unit_price: Decimal | None = Field(None, ge=0, lt=MAX_AMOUNT)
    tiers: list[TierIn] | None = Field(None, max_length=50)
    package_size: Decimal | None = Field(None, gt=0, lt=MAX_AMOUNT)
    included_quantity: Decimal = Field(Decimal(0), ge=0, lt=MAX_AMOUNT)
    cap: Decimal | None = Field(None, ge=0, lt=MAX_AMOUNT)
    minimum: Decimal | None = Field(None, ge=0, lt=MAX_AMOUNT)


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_xmpp_accounts: int | None = Field(None, ge=0, le=10_000_000)
    max_connections: int | None = Field(None, ge=0, le=10_000_000)
    max_connections_per_account: int | None = Field(None, ge=1, le=1000)
    message_rate_per_second: int | None = Field(None, ge=1, le=100_000)
    message_burst: int | None = Field(None, ge=1, le=1_000_000)
    storage_mb: int | None = Field(None, ge=0, le=1_000_000_000)
    max_custom_domains: int | None = Field(None, ge=0, le=100_000)
    max_offline_messages: int | None = Field(None, ge=0, le=10_000_000)


class PlanVersionIn(BaseModel):
    """The prices and limits of one price book (currency and interval) of a plan."""

    model_config = ConfigDict(extra="forbid")

    currency: str = Field("EUR", pattern=CURRENCY_PATTERN)
    billing_interval: BillingInterval = BillingInterval.MONTHLY
    base_fee: Decimal = Field(ge=0, lt=MAX_AMOUNT)
    setup_fee: Decimal = Field(Decimal(0), ge=0, lt=MAX_AMOUNT)
    trial_days: int = Field(0, ge=0, le=365)
    limits: LimitsIn = LimitsIn()
    components: list[PriceComponentIn] = Field(default_factory=list, max_length=20)
    change_note: str = Field("", max_length=500)


class PlanCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=CODE_PATTERN)
    name: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=5000)
    is_public: bool = True
    position: int = Field(0, ge=0, le=10_000)
    version: PlanVersionIn


class PlanUpdate(BaseModel):
    """Changes that are not prices and so need no new version."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=100)
    description: str | None = Field(None, max_length=5000)
    is_public: bool | None = None
    position: int | None = Field(None, ge=0, le=10_000)


class PlanVersionChange(BaseModel):
    """A new version of one price book: the current version copied, these fields changed.

    ``currency`` and ``billing_interval`` name the price book. For a currency the plan has no
    price book in yet, ``base_fee`` is required and the components are those given.
    """

    model_config = ConfigDict(extra="forbid")

    currency: str = Field("EUR", pattern=CURRENCY_PATTERN)
    billing_interval: BillingInterval = BillingInterval.MONTHLY
    base_fee: Decimal | None = Field(None, ge=0, lt=MAX_AMOUNT)
    setup_fee: Decimal | None = Field(None, ge=0, lt=MAX_AMOUNT)
    trial_days: int | None = Field(None, ge=0, le=365)
    limits: LimitsIn | None = Field(
        None, description="Replaces the limits; unlimited where a field is null."
    )
    components: list[PriceComponentIn] | None = Field(
        None, max_length=20, description="Replaces every usage price when given."
    )
    change_note: str = Field("", max_length=500)


class PriceComponentOut(BaseModel):
    """Amounts in the currency of the price book around it (:class:`PlanVersionOut`)."""

    metric: str
    pricing_model: str
    unit_price: Amount | None
    tiers: list[dict[str, Any]] | None
    package_size: Quantity | None
    included_quantity: Quantity
    cap: Amount | None
    minimum: Amount | None


class PlanVersionOut(CurrencyAmounts):
    id: str
    version: int
    currency: str
    billing_interval: str
    base_fee: Amount
    setup_fee: Amount
    trial_days: int
    limits: dict[str, int | None]
    components: list[PriceComponentOut]
    change_note: str
    created_at: datetime
    superseded_at: datetime | None


class PlanOut(BaseModel):
    id: str
    code: str
    name: str
    description: str
    is_public: bool
    versions: list[PlanVersionOut]


class AddOnIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=CODE_PATTERN)
    name: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=5000)
    kind: AddOnKind
    currency: str = Field("EUR", pattern=CURRENCY_PATTERN)
    price: Decimal = Field(ge=0, lt=MAX_AMOUNT)
    billing_interval: BillingInterval = BillingInterval.MONTHLY
    limit_deltas: dict[str, int] = Field(default_factory=dict)


class AddOnUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=100)
    description: str | None = Field(None, max_length=5000)
    price: Decimal | None = Field(None, ge=0, lt=MAX_AMOUNT)
    limit_deltas: dict[str, int] | None = None
    is_active: bool | None = None


class AddOnOut(CurrencyAmounts):
    id: str
    code: str
    name: str
    description: str
    kind: str
    currency: str
    price: Amount
    billing_interval: str
    limit_deltas: dict[str, int]
    is_active: bool
