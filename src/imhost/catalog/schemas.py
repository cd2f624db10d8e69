"""Pydantic models of the catalog: what staff send to create plans and add-ons, and what the
public API shows. Amounts travel as strings (exact decimals)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from imhost.catalog.intervals import Interval, parse_interval
from imhost.catalog.models import AddOnKind
from imhost.kit.decimals import Amount, CurrencyAmounts, Quantity
from imhost.kit.errors import InvalidInput
from imhost.kit.text import MultilineText, PlainText

CODE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
MAX_AMOUNT = Decimal("1e15")


def _interval_code(value: str) -> str:
    try:
        return parse_interval(value).code
    except InvalidInput as exc:
        raise ValueError(str(exc)) from None


IntervalCode = Annotated[
    str,
    Field(
        max_length=40,
        description="weekly, monthly, quarterly, half-yearly, yearly, every-N-months (1-36) "
        "or every-N-weeks (1-52); calendar- in front for calendar-aligned periods",
    ),
    AfterValidator(_interval_code),
]


class IntervalOut(BaseModel):
    """A billing interval: ``count`` ``unit``s, ``alignment``, and in plain words."""

    count: int
    unit: str
    alignment: str
    description: str

    @classmethod
    def of(cls, code: str) -> IntervalOut:
        iv: Interval = parse_interval(code)
        return cls(
            count=iv.count,
            unit=iv.unit.value,
            alignment=iv.alignment.value,
            description=iv.description,
        )


class TierIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    up_to: Decimal | None = Field(None, gt=0, description="Inclusive upper bound; null: open.")
    unit_price: Decimal = Field(Decimal(0), ge=0, lt=MAX_AMOUNT)
    flat_fee: Decimal = Field(Decimal(0), ge=0, lt=MAX_AMOUNT)


class PriceComponentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: PlainText = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    pricing_model: PlainText = Field(
        description="per_unit, graduated, volume, package or flat_tier"
    )
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
    max_rooms: int | None = Field(None, ge=0, le=10_000_000)
    max_room_occupants: int | None = Field(None, ge=1, le=1_000_000)
    archive_days: int | None = Field(None, ge=1, le=36_500)


class PlanVersionIn(BaseModel):
    """The prices and limits of one price book (currency and interval) of a plan."""

    model_config = ConfigDict(extra="forbid")

    currency: PlainText = Field("EUR", pattern=CURRENCY_PATTERN)
    billing_interval: IntervalCode = "monthly"
    base_fee: Decimal = Field(ge=0, lt=MAX_AMOUNT)
    setup_fee: Decimal = Field(Decimal(0), ge=0, lt=MAX_AMOUNT)
    trial_days: int = Field(0, ge=0, le=365)
    limits: LimitsIn = LimitsIn()
    components: list[PriceComponentIn] = Field(default_factory=list, max_length=20)
    change_note: MultilineText = Field("", max_length=500)


class PlanCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: PlainText = Field(pattern=CODE_PATTERN)
    name: PlainText = Field(min_length=1, max_length=100)
    description: MultilineText = Field("", max_length=5000)
    is_public: bool = True
    position: int = Field(0, ge=0, le=10_000)
    version: PlanVersionIn


class PlanUpdate(BaseModel):
    """Changes that are not prices and so need no new version."""

    model_config = ConfigDict(extra="forbid")

    name: PlainText | None = Field(None, min_length=1, max_length=100)
    description: MultilineText | None = Field(None, max_length=5000)
    is_public: bool | None = None
    position: int | None = Field(None, ge=0, le=10_000)


class PlanVersionChange(BaseModel):
    """A new version of one price book: the current version copied, these fields changed.

    ``currency`` and ``billing_interval`` name the price book. For a currency the plan has no
    price book in yet, ``base_fee`` is required and the components are those given.
    """

    model_config = ConfigDict(extra="forbid")

    currency: PlainText = Field("EUR", pattern=CURRENCY_PATTERN)
    billing_interval: IntervalCode = "monthly"
    base_fee: Decimal | None = Field(None, ge=0, lt=MAX_AMOUNT)
    setup_fee: Decimal | None = Field(None, ge=0, lt=MAX_AMOUNT)
    trial_days: int | None = Field(None, ge=0, le=365)
    limits: LimitsIn | None = Field(
        None, description="Replaces the limits; unlimited where a field is null."
    )
    components: list[PriceComponentIn] | None = Field(
        None, max_length=20, description="Replaces every usage price when given."
    )
    change_note: MultilineText = Field("", max_length=500)


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
    interval: IntervalOut
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

    code: PlainText = Field(pattern=CODE_PATTERN)
    name: PlainText = Field(min_length=1, max_length=100)
    description: MultilineText = Field("", max_length=5000)
    kind: AddOnKind
    currency: PlainText = Field("EUR", pattern=CURRENCY_PATTERN)
    price: Decimal = Field(ge=0, lt=MAX_AMOUNT)
    billing_interval: IntervalCode = "monthly"
    limit_deltas: dict[PlainText, int] = Field(default_factory=dict)


class AddOnUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: PlainText | None = Field(None, min_length=1, max_length=100)
    description: MultilineText | None = Field(None, max_length=5000)
    price: Decimal | None = Field(None, ge=0, lt=MAX_AMOUNT)
    limit_deltas: dict[PlainText, int] | None = None
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
    interval: IntervalOut
    limit_deltas: dict[str, int]
    is_active: bool
