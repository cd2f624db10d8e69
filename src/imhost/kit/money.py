"""Money: exact decimals in a currency, rounded to its minor unit by one rule, shown one way.

The rule (docs/billing.md): every amount that is charged, an invoice line, a tax, a fee, is
rounded to the currency's minor unit with ROUND_HALF_UP at the moment it becomes a line.
Unit prices and intermediate products keep full precision. Totals are sums of rounded lines,
so a total always equals the sum of its lines.

Shown to people, an amount goes through :func:`format_money` (``€1,234.50``, ``¥1,000``,
``KWD 1.234``) or, in a column whose heading names the currency, :func:`format_amount`
(``1,234.50``): the locale's symbols, grouping and sign from Babel (Unicode CLDR), the
digits of the currency's minor unit as billed here (ISO 4217), and never fewer digits than
the amount has (a unit price of 0.0004 EUR shows as ``€0.0004``, not ``€0.00``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache

from babel import Locale
from babel.numbers import NumberPattern, get_currency_symbol

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

# The locale amounts are shown in: CLDR's English. One place to change it.
DEFAULT_LOCALE = "en"


def register_currency(code: str, minor_unit: int) -> None:
    if len(code) != 3 or not code.isalpha() or not code.isupper():
        raise ValueError("a currency code is three upper-case letters (ISO 4217)")
    if not 0 <= minor_unit <= 4:
        raise ValueError("a minor unit is 0 to 4 digits")
    MINOR_UNITS[code] = minor_unit
    for cached in (_patterns, _format_money, _format_amount):
        cached.cache_clear()


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


@lru_cache(maxsize=256)
def _patterns(locale: str, currency: str) -> tuple[Locale, NumberPattern, NumberPattern, str]:
    """The locale's currency and decimal patterns with the currency's minor unit as digits."""
    loc = Locale.parse(locale)
    digits = MINOR_UNITS[check_currency(currency)]
    money_pattern = copy.copy(loc.currency_formats["standard"])
    money_pattern.frac_prec = (digits, digits)
    number_pattern = copy.copy(loc.decimal_formats[None])
    number_pattern.frac_prec = (digits, digits)
    return loc, money_pattern, number_pattern, get_currency_symbol(currency, locale=loc)


def _shown(amount: Decimal | int | str) -> Decimal:
    value = to_decimal(amount)
    # -0.00 is shown as 0.00: a sign on nothing only confuses.
    return value if value != 0 else Decimal(0)


def format_money(amount: Decimal | int | str, currency: str, locale: str = DEFAULT_LOCALE) -> str:
    """An amount with its currency, as the locale writes it: ``€1,234.50``, ``-$5.00``.

    Digits: the currency's minor unit (``¥1,000``, ``BHD 1.250``), more only when the amount
    has more (unit prices). CLDR's currency spacing is applied: a symbol made of letters is
    kept apart from the digits by a no-break space (``KWD 1.234``, not ``KWD1.234``).
    """
    return _format_money(_shown(amount), currency, locale)


def format_amount(amount: Decimal | int | str, currency: str, locale: str = DEFAULT_LOCALE) -> str:
    """The number alone, as :func:`format_money` writes it (for a column headed by the code)."""
    return _format_amount(_shown(amount), currency, locale)


# Equal decimals (49, 49.00, 49.000000000000) are shown alike, so a cache may share them.
@lru_cache(maxsize=8192)
def _format_money(value: Decimal, currency: str, locale: str) -> str:
    loc, pattern, _, symbol = _patterns(locale, currency)
    text = str(
        pattern.apply(
            value, loc, currency=currency, currency_digits=False, decimal_quantization=False
        )
    )
    if symbol and symbol in text:
        before, _, after = text.partition(symbol)
        if symbol[-1].isalpha() and after[:1].isdigit():
            after = "\u00a0" + after
        if symbol[0].isalpha() and before[-1:].isdigit():
            before = before + "\u00a0"
        text = before + symbol + after
    return text


@lru_cache(maxsize=8192)
def _format_amount(value: Decimal, currency: str, locale: str) -> str:
    loc, _, pattern, _ = _patterns(locale, currency)
    return str(pattern.apply(value, loc, decimal_quantization=False))


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

    def format(self, locale: str = DEFAULT_LOCALE) -> str:
        """``€12.30``: the amount rounded to the minor unit, shown by :func:`format_money`."""
        return format_money(round_minor(self.amount, self.currency), self.currency, locale)

    def __str__(self) -> str:
        return self.format()
