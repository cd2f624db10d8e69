"""Rating: turn a billable quantity into a charge, with its calculation in words.

This module is pure (no database, no clock). Billing, the forecast and the budget checks all
rate through :func:`rate`, so a charge is computed the same way wherever it is shown.

The pricing models (docs/billing.md, "Plans and pricing models", has an example of each):

``per_unit``
    ``billable × unit_price``.
``graduated``
    Each band of the quantity is charged at its own band's unit price, plus the band's flat fee
    once the band is reached (at least some quantity falls in it). Stripe's "graduated",
    Lago's "graduated", Kill Bill's "tiered".
``volume``
    The whole quantity is charged at the unit price of the band it falls in, plus that band's
    flat fee. Stripe's and Lago's "volume".
``package``
    ``ceil(billable / package_size) × unit_price``: a partial block costs a whole block.
    ``unit_price`` is the price of one block. Stripe's "package"/"transform_quantity".
``flat_tier``
    The flat fee of the band the quantity falls in; no unit price ("stairstep"). A fee for
    every band reached on the way up is a ``graduated`` price with unit prices of zero.

Common rules, applied in this order:

1. The included quantity is deducted first: ``billable = max(0, quantity - included)``; the
   bands and blocks apply to the billable quantity.
2. A billable quantity of zero reaches no band and charges nothing.
3. The exact (unrounded) amount is then limited by the cap (the most a period can cost) and
   raised to the minimum (the least a period costs, even with no usage).
4. The result is rounded once, to the currency's minor unit, half up
   (:func:`imhost.kit.money.round_minor`). Step amounts are shown exactly.

A tier's ``up_to`` is inclusive: ``[{"up_to": 1000, ...}, {"up_to": None, ...}]`` charges units
1 to 1000 in the first band and 1001 onwards in the second, as Stripe does.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

from imhost.kit.errors import InvalidInput
from imhost.kit.money import (
    MINOR_UNITS,
    check_currency,
    format_amount,
    format_money,
    round_minor,
)

__all__ = [
    "PriceSpec",
    "PricingModel",
    "RatedCharge",
    "RatingStep",
    "Tier",
    "parse_tiers",
    "rate",
    "tidy",
    "tidy_money",
    "tiers_to_json",
]

ZERO = Decimal(0)


class PricingModel(enum.StrEnum):
    PER_UNIT = "per_unit"
    GRADUATED = "graduated"
    VOLUME = "volume"
    PACKAGE = "package"
    FLAT_TIER = "flat_tier"


TIERED_MODELS = frozenset({PricingModel.GRADUATED, PricingModel.VOLUME, PricingModel.FLAT_TIER})


@dataclass(frozen=True, slots=True)
class Tier:
    """One band: quantities up to ``up_to`` inclusive (``None``: no upper bound)."""

    up_to: Decimal | None
    unit_price: Decimal = ZERO
    flat_fee: Decimal = ZERO

    def to_json(self) -> dict[str, Any]:
        up_to: int | str | None
        if self.up_to is None:
            up_to = None
        elif self.up_to == self.up_to.to_integral_value():
            up_to = int(self.up_to)
        else:
            up_to = format(self.up_to, "f")
        return {
            "up_to": up_to,
            "unit_price": format(self.unit_price, "f"),
            "flat_fee": format(self.flat_fee, "f"),
        }


@dataclass(frozen=True, slots=True)
class RatingStep:
    """One part of a calculation: a band, a block count, the cap or the minimum."""

    label: str
    quantity: Decimal
    unit_price: Decimal
    flat_fee: Decimal
    amount: Decimal
    """Exact (unrounded) amount of this step."""
    text: str


@dataclass(frozen=True, slots=True)
class RatedCharge:
    amount: Decimal
    """Rounded to the currency's minor unit (half up), after cap and minimum."""
    quantity: Decimal
    """The quantity that was measured."""
    billable_quantity: Decimal
    """The quantity after the included allowance."""
    explanation: str
    steps: list[RatingStep]
    metric: str = ""
    currency: str = ""
    exact_amount: Decimal = ZERO
    """The amount before rounding (after cap and minimum)."""


@dataclass(frozen=True)
class PriceSpec:
    """How one billable metric is priced. Validated on construction (:class:`InvalidInput`).

    ``tiers`` may be given as :class:`Tier` objects or as the JSON form
    ``[{"up_to": 1000, "unit_price": "0.002", "flat_fee": "0"}, ...]``; numbers may be given
    as ``Decimal``, ``int`` or ``str`` (never ``float``).
    """

    model: str
    metric: str
    currency: str
    unit_price: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    package_size: Decimal | None = None
    included_quantity: Decimal = ZERO
    cap: Decimal | None = None
    minimum: Decimal | None = None

    def __post_init__(self) -> None:
        try:
            model = PricingModel(self.model)
        except ValueError:
            raise InvalidInput(
                f"unknown pricing model {self.model!r}; expected one of "
                + ", ".join(m.value for m in PricingModel),
                field="model",
            ) from None
        object.__setattr__(self, "model", model)
        if not self.metric or not isinstance(self.metric, str):
            raise InvalidInput("a price needs the metric it rates", field="metric")
        try:
            check_currency(self.currency)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="currency") from None
        unit_price = _opt_decimal(self.unit_price, "unit_price")
        package_size = _opt_decimal(self.package_size, "package_size")
        included = _opt_decimal(self.included_quantity, "included_quantity") or ZERO
        cap = _opt_decimal(self.cap, "cap")
        minimum = _opt_decimal(self.minimum, "minimum")
        tiers = parse_tiers(self.tiers) if self.tiers else ()
        object.__setattr__(self, "unit_price", unit_price)
        object.__setattr__(self, "package_size", package_size)
        object.__setattr__(self, "included_quantity", included)
        object.__setattr__(self, "cap", cap)
        object.__setattr__(self, "minimum", minimum)
        object.__setattr__(self, "tiers", tiers)

        for name, value in (
            ("unit_price", unit_price),
            ("included_quantity", included),
            ("cap", cap),
            ("minimum", minimum),
        ):
            if value is not None and value < 0:
                raise InvalidInput(f"{name} cannot be negative", field=name)
        if cap is not None and minimum is not None and minimum > cap:
            raise InvalidInput("the minimum cannot exceed the cap", field="minimum")

        if model in (PricingModel.PER_UNIT, PricingModel.PACKAGE):
            if unit_price is None:
                what = "price per block" if model is PricingModel.PACKAGE else "unit price"
                raise InvalidInput(f"a {model.value} price needs a {what}", field="unit_price")
            if tiers:
                raise InvalidInput(f"a {model.value} price has no tiers", field="tiers")
        if model is PricingModel.PACKAGE:
            if package_size is None or package_size <= 0:
                raise InvalidInput(
                    "a package price needs a package size above zero", field="package_size"
                )
        elif package_size is not None:
            raise InvalidInput("only a package price has a package size", field="package_size")
        if model in TIERED_MODELS:
            if not tiers:
                raise InvalidInput(f"a {model.value} price needs tiers", field="tiers")
            if unit_price is not None:
                raise InvalidInput(
                    f"a {model.value} price takes its unit prices from its tiers",
                    field="unit_price",
                )
        if model is PricingModel.FLAT_TIER and any(t.unit_price != 0 for t in tiers):
            raise InvalidInput(
                "flat_tier tiers carry a flat fee only; use graduated or volume for unit prices",
                field="tiers",
            )

    def tiers_json(self) -> list[dict[str, Any]]:
        return tiers_to_json(self.tiers)


def _opt_decimal(value: Any, name: str) -> Decimal | None:
    if value is None:
        return None
    return _decimal(value, name)


def _decimal(value: Any, name: str) -> Decimal:
    if isinstance(value, (bool, float)):
        raise InvalidInput(f"{name} must be an exact number (a string or integer)", field=name)
    try:
        result = value if isinstance(value, Decimal) else Decimal(str(value))
    except ArithmeticError:
        raise InvalidInput(f"{name} is not a number: {value!r}", field=name) from None
    if not result.is_finite():
        raise InvalidInput(f"{name} must be a finite number", field=name)
    return result


def parse_tiers(raw: Iterable[Tier | Mapping[str, Any]]) -> tuple[Tier, ...]:
    """Validate tiers: ascending ``up_to``, only the last open-ended, no negative price."""
    tiers: list[Tier] = []
    items = list(raw)
    if not items:
        raise InvalidInput("at least one tier is needed", field="tiers")
    for i, item in enumerate(items):
        where = f"tiers[{i}]"
        if isinstance(item, Tier):
            up_to_raw: Any = item.up_to
            unit_raw: Any = item.unit_price
            fee_raw: Any = item.flat_fee
        elif isinstance(item, Mapping):
            unknown = set(item) - {"up_to", "unit_price", "flat_fee"}
            if unknown:
                raise InvalidInput(
                    f"{where} has unknown fields: {', '.join(sorted(map(str, unknown)))}",
                    field=where,
                )
            if "up_to" not in item:
                raise InvalidInput(f"{where} needs up_to (null for the last tier)", field=where)
            up_to_raw = item["up_to"]
            unit_raw = item.get("unit_price", "0")
            fee_raw = item.get("flat_fee", "0")
        else:
            raise InvalidInput(f"{where} must be an object", field=where)
        up_to = _opt_decimal(up_to_raw, f"{where}.up_to")
        unit_price = _decimal(unit_raw if unit_raw is not None else "0", f"{where}.unit_price")
        flat_fee = _decimal(fee_raw if fee_raw is not None else "0", f"{where}.flat_fee")
        if unit_price < 0:
            raise InvalidInput(
                f"{where}.unit_price cannot be negative", field=f"{where}.unit_price"
            )
        if flat_fee < 0:
            raise InvalidInput(f"{where}.flat_fee cannot be negative", field=f"{where}.flat_fee")
        last = i == len(items) - 1
        if up_to is None and not last:
            raise InvalidInput(
                f"{where}: only the last tier may be open-ended (up_to null)",
                field=f"{where}.up_to",
            )
        if up_to is not None and last:
            raise InvalidInput(
                f"{where}: the last tier must be open-ended (up_to null)", field=f"{where}.up_to"
            )
        if up_to is not None:
            if up_to <= 0:
                raise InvalidInput(f"{where}.up_to must be above zero", field=f"{where}.up_to")
            if tiers and tiers[-1].up_to is not None and up_to <= tiers[-1].up_to:
                raise InvalidInput(
                    f"{where}.up_to must be above the previous tier's ({tiers[-1].up_to})",
                    field=f"{where}.up_to",
                )
        tiers.append(Tier(up_to=up_to, unit_price=unit_price, flat_fee=flat_fee))
    return tuple(tiers)


def tiers_to_json(tiers: Sequence[Tier]) -> list[dict[str, Any]]:
    return [t.to_json() for t in tiers]


# --- rating -------------------------------------------------------------------------------


def rate(spec: PriceSpec, quantity: Decimal) -> RatedCharge:
    """Rate ``quantity`` of ``spec.metric``; see the module docstring for the rules."""
    q = _decimal(quantity, "quantity")
    if q < 0:
        raise InvalidInput("a quantity cannot be negative", field="quantity")
    currency = spec.currency
    included = spec.included_quantity
    billable = max(ZERO, q - included)
    model = PricingModel(spec.model)

    if model is PricingModel.PER_UNIT:
        steps = _per_unit(spec, billable)
    elif model is PricingModel.GRADUATED:
        steps = _graduated(spec, billable)
    elif model is PricingModel.VOLUME:
        steps = _volume(spec, billable, flat_only=False)
    elif model is PricingModel.FLAT_TIER:
        steps = _volume(spec, billable, flat_only=True)
    else:
        steps = _package(spec, billable)

    exact = sum((s.amount for s in steps), ZERO)
    notes: list[str] = []
    if spec.cap is not None and exact > spec.cap:
        notes.append(f"capped at {_money(spec.cap, currency)}")
        exact = spec.cap
    if spec.minimum is not None and exact < spec.minimum:
        notes.append(f"minimum {_money(spec.minimum, currency)} applies")
        exact = spec.minimum
    amount = round_minor(exact, currency)

    if not steps:
        head = f"{_qty(q)} used" + (f", {_qty(included)} included" if included else "")
        explanation = "; ".join([f"{head}: nothing to charge", *notes])
    else:
        head = ""
        if included:
            head = f"{_qty(q)} used, {_qty(included)} included, {_qty(billable)} charged; "
        explanation = head + "; ".join([s.text for s in steps] + notes)
    if notes or len(steps) > 1 or (steps and steps[0].amount != amount):
        explanation += f"; total {_money(amount, currency)}"
    return RatedCharge(
        amount=amount,
        quantity=q,
        billable_quantity=billable,
        explanation=explanation,
        steps=steps,
        metric=spec.metric,
        currency=currency,
        exact_amount=exact,
    )


def _per_unit(spec: PriceSpec, billable: Decimal) -> list[RatingStep]:
    if billable == 0:
        return []
    price = spec.unit_price if spec.unit_price is not None else ZERO
    amount = billable * price
    text = (
        f"{_qty(billable)} at {_price(price, spec.currency)} each = {_money(amount, spec.currency)}"
    )
    return [RatingStep(_num(billable), billable, price, ZERO, amount, text)]


def _graduated(spec: PriceSpec, billable: Decimal) -> list[RatingStep]:
    steps: list[RatingStep] = []
    lower = ZERO
    for tier in spec.tiers:
        if billable <= lower:
            break
        upper = billable if tier.up_to is None else min(billable, tier.up_to)
        band = upper - lower
        amount = band * tier.unit_price + tier.flat_fee
        label = _band_label(lower, upper)
        words = _band_words(lower, upper)
        if tier.unit_price == 0 and not tier.flat_fee:
            text = f"{words} free"
        else:
            text = f"{words} at {_price(tier.unit_price, spec.currency)} each"
            if tier.flat_fee:
                text += f" + {_money(tier.flat_fee, spec.currency)} flat"
            text += f" = {_money(amount, spec.currency)}"
        steps.append(RatingStep(label, band, tier.unit_price, tier.flat_fee, amount, text))
        if tier.up_to is None:
            break
        lower = tier.up_to
    return steps


def _volume(spec: PriceSpec, billable: Decimal, *, flat_only: bool) -> list[RatingStep]:
    if billable == 0:
        return []
    lower = ZERO
    for tier in spec.tiers:
        if tier.up_to is None or billable <= tier.up_to:
            label = _band_label(lower, tier.up_to, open_ended=tier.up_to is None)
            words = _band_words(lower, tier.up_to, tier=True)
            if flat_only:
                amount = tier.flat_fee
                text = (
                    f"{_qty(billable)} in the tier {words}: a flat "
                    f"{_money(tier.flat_fee, spec.currency)}"
                )
            else:
                amount = billable * tier.unit_price + tier.flat_fee
                text = (
                    f"{_qty(billable)} in the tier {words}, "
                    f"all at {_price(tier.unit_price, spec.currency)} each"
                )
                if tier.flat_fee:
                    text += f" + {_money(tier.flat_fee, spec.currency)} flat"
                text += f" = {_money(amount, spec.currency)}"
            return [RatingStep(label, billable, tier.unit_price, tier.flat_fee, amount, text)]
        lower = tier.up_to
    raise AssertionError("validated tiers always end open-ended")  # pragma: no cover


def _package(spec: PriceSpec, billable: Decimal) -> list[RatingStep]:
    if billable == 0:
        return []
    size = spec.package_size if spec.package_size is not None else Decimal(1)
    price = spec.unit_price if spec.unit_price is not None else ZERO
    blocks = (billable / size).to_integral_value(rounding=ROUND_CEILING)
    amount = blocks * price
    plural = "block" if blocks == 1 else "blocks"
    text = (
        f"{_qty(billable)} in {_qty(blocks)} {plural} of {_qty(size)} "
        f"at {_price(price, spec.currency)} a block "
        f"= {_money(amount, spec.currency)}"
    )
    return [RatingStep(f"{_num(blocks)} x {_num(size)}", billable, price, ZERO, amount, text)]


def _band_label(lower: Decimal, upper: Decimal | None, *, open_ended: bool = False) -> str:
    """``1001-10000`` for whole units; ``100-150.5`` (a continuous range) otherwise."""
    integral = lower == lower.to_integral_value() and (
        upper is None or upper == upper.to_integral_value()
    )
    start = _num(lower + 1) if integral else _num(lower)
    if open_ended or upper is None:
        return f"{start}+"
    end = _num(upper)
    return start if start == end else f"{start}-{end}"


def price_words(spec: PriceSpec) -> list[str]:
    """Every price of ``spec`` in plain words, one sentence each, for a customer choosing a
    plan: what is included, each tier with its price, a package size, the cap and minimum.
    Quantities count after the included quantity, as :func:`rate` does."""
    cur = spec.currency
    model = PricingModel(spec.model)
    out: list[str] = []
    if spec.included_quantity:
        out.append(f"{_qty(spec.included_quantity)} included")
    after = "then " if spec.included_quantity else ""
    price = spec.unit_price if spec.unit_price is not None else ZERO
    if model is PricingModel.PER_UNIT:
        out.append(f"{after}{format_money(price, cur)} each")
    elif model is PricingModel.PACKAGE:
        size = spec.package_size if spec.package_size is not None else Decimal(1)
        each = format_money(price, cur)
        out.append(f"{after}{each} per {_qty(size)} (a part of {_qty(size)} counts whole)")
    else:
        lower = ZERO
        for tier in spec.tiers:
            band = _band_words(lower, tier.up_to, tier=model is not PricingModel.GRADUATED)
            if model is PricingModel.FLAT_TIER:
                flat = format_money(tier.flat_fee, cur)
                out.append(f"{band}: {'free' if tier.flat_fee == 0 else 'a flat ' + flat}")
            else:
                text = (
                    "free" if tier.unit_price == 0 else f"{format_money(tier.unit_price, cur)} each"
                )
                if tier.flat_fee:
                    text += f" + {format_money(tier.flat_fee, cur)} once reached"
                out.append(f"{band}: {text}")
            if tier.up_to is None:
                break
            lower = tier.up_to
        if model is PricingModel.VOLUME:
            out.append("all units at the price of the tier the total falls in")
    if spec.cap is not None:
        out.append(f"at most {format_money(spec.cap, cur)} a period")
    if spec.minimum is not None:
        out.append(f"at least {format_money(spec.minimum, cur)} a period")
    return out


def _band_words(lower: Decimal, upper: Decimal | None, *, tier: bool = False) -> str:
    """A band of a tiered price as people read it: ``the first 1,000``, ``1,001 to 10,000``,
    ``above 10,000`` (``1 to 1,000`` as a tier a whole quantity falls in)."""
    integral = lower == lower.to_integral_value() and (
        upper is None or upper == upper.to_integral_value()
    )
    if upper is None:
        return f"above {_qty(lower)}"
    if lower == 0 and not tier:
        return f"the first {_qty(upper)}"
    start = lower + 1 if integral else lower
    if start == upper:
        return _qty(upper)
    return f"{_qty(start)} to {_qty(upper)}"


def _qty(value: Decimal) -> str:
    """A quantity as people read it: ``53,437``, ``150.5``, ``1,000.25``."""
    if value == value.to_integral_value():
        return f"{int(value):,}"
    return f"{value.normalize():,f}"


def tidy(value: Decimal) -> Decimal:
    """``value`` without the trailing zeros a ``numeric(38, 12)`` column pads it with
    (``3.500000000000`` -> ``3.5``, ``100.000`` -> ``100``), never in exponent form."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


def tidy_money(value: Decimal, currency: str) -> Decimal:
    """An amount tidied but with at least the currency's minor digits (``3.5`` -> ``3.50``)."""
    value = tidy(value)
    exponent = value.as_tuple().exponent
    digits = MINOR_UNITS.get(currency, 2)
    if isinstance(exponent, int) and -exponent < digits:
        return value.quantize(Decimal(1).scaleb(-digits))
    return value


def _num(value: Decimal) -> str:
    """A quantity without trailing zeros or exponent: ``1000``, ``150.5``."""
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return format(value.normalize(), "f")


def _price(value: Decimal, currency: str) -> str:
    """A unit price with at least the currency's minor digits and no padding beyond its own:
    ``4.00``, ``0.50``, ``0.002``, the same on every database (PostgreSQL reads ``4`` back as
    ``4.000000000000``): ``kit.money.format_amount``, the one way amounts are shown."""
    return format_amount(value, currency)


def _money(value: Decimal, currency: str) -> str:
    """An amount at the currency's precision, or exactly when it has more digits."""
    return format_amount(value, currency)


def spec_with(spec: PriceSpec, **changes: Any) -> PriceSpec:
    """A copy of ``spec`` with some fields changed (validated again)."""
    values: dict[str, Any] = {f: getattr(spec, f) for f in _SPEC_FIELDS}
    values.update(changes)
    return PriceSpec(**values)


_SPEC_FIELDS = (
    "model",
    "metric",
    "currency",
    "unit_price",
    "tiers",
    "package_size",
    "included_quantity",
    "cap",
    "minimum",
)
