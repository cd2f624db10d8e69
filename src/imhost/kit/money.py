"""Money: exact decimals in a currency, rounded to its minor unit by one rule.

The rule (docs/billing.md): every amount that is charged, an invoice line, a tax, a fee, is
rounded to the currency's minor unit with ROUND_HALF_UP at the moment it becomes a line.
Unit prices and intermediate products keep full precision. Totals are sums of rounded lines,
so a total always equals the sum of its lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# ISO 4217 minor units for the currencies a provider is likely to bill in. Any other
# three-letter code must be registered with ``register_currency`` before use.
MINOR_UNITS: dict[str, int] = {
    "AUD": 2,
    "BGN": 2,
    "BHD": 3,
    "BRL": 2,
    "CAD": 2,
    "CHF": 2,
    "CLP": 0,
    "CNY": 2,
    "CZK": 2,
    "DKK": 2,
    "EUR": 2,
    "GBP": 2,
    "HKD": 2,
    "HUF": 2,
    "IDR": 2,
    "ILS": 2,
    "INR": 2,
    "ISK": 0,
    "JOD": 3,
    "JPY": 0,
    "KRW": 0,
    "KWD": 3,
    "MXN": 2,
    "NOK": 2,
    "NZD": 2,
    "OMR": 3,
    "PLN": 2,
    "RON": 2,
    "SEK": 2,
    "SGD": 2,
    "THB": 2,
    "TND": 3,
    "TRY": 2,
    "TWD": 2,
    "UAH": 2,
    "USD": 2,
    "VND": 0,
    "ZAR": 2,
}

ROUNDING = ROUND_HALF_UP


def register_currency(code: str, minor_unit: int) -> None:
    if len(code) != 3 or not code.isalpha() or not code.isupper():
        raise ValueError("a currency code is three upper-case letters (ISO 4217)")
    if not 0 <= minor_unit <= 4:
        raise ValueError("a minor unit is 0 to 4 digits")
    MINOR_UNITS[code] = minor_unit


def check_currency(code: str) -> str:
    """Return ``code`` if it is a known ISO 4217 currency, else raise ``ValueError``."""
    if code not in MINOR_UNITS:
        raise ValueError(f"unknown currency {code!r} (ISO 4217 code expected, e.g. EUR)")
    return code


def quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-MINOR_UNITS[check_currency(currency)])


def round_minor(amount: Decimal, currency: str) -> Decimal:
    """Round to the currency's minor unit with the one documented rule (half up)."""
    return amount.quantize(quantum(currency), rounding=ROUNDING)


def to_decimal(value: Decimal | int | str) -> Decimal:
    """Parse an amount exactly. Floats are refused: they are not exact."""
    if isinstance(value, float):
        raise TypeError("money is never a float; pass a str or Decimal")
    try:
        result = Decimal(value)
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"{value!r} is not a number") from exc
    if not result.is_finite():
        raise ValueError(f"{value!r} is not a finite amount")
    return result


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount in one currency. Arithmetic across currencies is refused."""

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        check_currency(self.currency)
        amount: object = self.amount
        if not isinstance(amount, Decimal):
            # Callers may pass an int or str despite the annotation; floats are refused.
            object.__setattr__(self, "amount", to_decimal(amount))  # type: ignore[arg-type]

    @classmethod
    def of(cls, amount: Decimal | int | str, currency: str) -> Money:
        return cls(to_decimal(amount), currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(Decimal(0), currency)

    def rounded(self) -> Money:
        return Money(round_minor(self.amount, self.currency), self.currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} and {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __mul__(self, factor: Decimal | int | float) -> Money:
        if isinstance(factor, float):
            raise TypeError("money is never multiplied by a float")
        return Money(self.amount * Decimal(factor), self.currency)

    __rmul__ = __mul__

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount <= other.amount

    def is_zero(self) -> bool:
        return self.amount == 0

    def format(self) -> str:
        """``12.30 EUR``: the amount at the currency's precision, then the code."""
        q = round_minor(self.amount, self.currency)
        return f"{q:,.{MINOR_UNITS[self.currency]}f} {self.currency}"

    def __str__(self) -> str:
        return self.format()
