"""Decimals in API responses: the same JSON whatever the database stored.

PostgreSQL gives amounts back as ``numeric(38, 12)`` (``7.000000000000``, ``0E-12``) and
SQLite as the text they were written with (``7.00``), so the same data answered differently
by database. Every API schema types its decimals with one of these, and the API tests check
that no response schema has a bare ``Decimal`` (tests/web/test_decimals.py):

- :data:`Quantity`: a quantity, count or percentage, without trailing zeros and never in
  exponent form (``7``, ``3.5``, ``0.000000001``).
- :data:`Amount`: money. A model with a ``currency`` field (:class:`CurrencyAmounts`) shows
  its amounts, and those of the models inside it, with the currency's minor unit (``7.00``
  EUR, ``1000`` JPY, ``1.500`` KWD); digits beyond it are kept where a price has them
  (``0.0001`` EUR per message). Without a currency an amount is shown like a quantity.
- :data:`AmountsByCurrency`: a mapping of currency to amount (balances, run totals).

Decimals travel as JSON strings (exact), as before.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, get_args, get_origin

from pydantic import AfterValidator, BaseModel, PlainSerializer, model_validator

from imhost.kit.money import MINOR_UNITS


def plain(value: Decimal) -> Decimal:
    """``value`` without the zeros a database pads it with, never in exponent form:
    ``7.000000000000`` -> ``7``, ``0E-12`` -> ``0``, ``3.50`` -> ``3.5``, ``-0`` -> ``0``."""
    if not value.is_finite():
        return value
    if value == value.to_integral_value():
        return value.quantize(Decimal(1)) + 0  # + 0 turns -0 into 0
    return value.normalize()


def with_minor_unit(value: Decimal, currency: str | None) -> Decimal:
    """``value`` plain, with at least the currency's minor digits (``3.5`` EUR -> ``3.50``)."""
    value = plain(value)
    digits = MINOR_UNITS.get(currency or "")
    if digits is None or not value.is_finite():
        return value
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent < digits:
        return value.quantize(Decimal(1).scaleb(-digits))
    return value


def text(value: Decimal) -> str:
    """The JSON text of a decimal: positional notation, never an exponent."""
    return format(value, "f")


class _AmountMark:
    """Marks :data:`Amount` fields for :class:`CurrencyAmounts`."""

    def __repr__(self) -> str:
        return "Amount"


AMOUNT_MARK = _AmountMark()

DECIMAL_JSON = PlainSerializer(text, return_type=str, when_used="json")

Quantity = Annotated[Decimal, AfterValidator(plain), DECIMAL_JSON]
Amount = Annotated[Decimal, AfterValidator(plain), DECIMAL_JSON, AMOUNT_MARK]


def _by_currency(values: dict[str, Decimal]) -> dict[str, Decimal]:
    return {currency: with_minor_unit(v, currency) for currency, v in values.items()}


AmountsByCurrency = Annotated[
    dict[str, Annotated[Decimal, DECIMAL_JSON]], AfterValidator(_by_currency)
]


def _marked(annotation: Any) -> bool:
    if get_origin(annotation) is Annotated:
        args = get_args(annotation)
        return any(a is AMOUNT_MARK for a in args[1:]) or _marked(args[0])
    return any(_marked(a) for a in get_args(annotation))


def amount_fields(model: type[BaseModel]) -> list[str]:
    """The names of the model's :data:`Amount` fields (alone, optional, in lists or dicts)."""
    return [
        name
        for name, info in model.model_fields.items()
        if any(m is AMOUNT_MARK for m in info.metadata) or _marked(info.annotation)
    ]


def _apply(value: Any, currency: str) -> Any:
    if isinstance(value, Decimal):
        return with_minor_unit(value, currency)
    if isinstance(value, list):
        return [_apply(v, currency) for v in value]
    if isinstance(value, dict):
        return {k: _apply(v, currency) for k, v in value.items()}
    return value


def apply_currency(model: BaseModel, currency: str) -> None:
    """Show the model's amounts, and those of the models inside it, in ``currency``."""
    for name in amount_fields(type(model)):
        object.__setattr__(model, name, _apply(getattr(model, name), currency))
    for name in type(model).model_fields:
        value = getattr(model, name)
        children = value if isinstance(value, list) else [value]
        for child in children:
            if isinstance(child, BaseModel) and not isinstance(
                getattr(child, "currency", None), str
            ):
                apply_currency(child, currency)  # a child with its own currency keeps it


class CurrencyAmounts(BaseModel):
    """A response model whose ``currency`` field sets how its amounts are shown (with the
    currency's minor unit), its nested models' amounts included."""

    @model_validator(mode="after")
    def _amounts_in_currency(self) -> Any:
        currency = getattr(self, "currency", None)
        if isinstance(currency, str):
            apply_currency(self, currency)
        return self
