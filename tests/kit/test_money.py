"""kit.money: one way to show an amount, by currency (ISO 4217 minor unit) and locale (CLDR)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from imhost.kit.money import MINOR_UNITS, Money, format_amount, format_money, register_currency

NBSP = "\u00a0"


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "shown"),
    [
        ("1000", "JPY", "en", "¥1,000"),  # no minor unit: no decimals
        ("1000.00", "JPY", "en", "¥1,000"),
        ("1000", "JPY", "ja", "￥1,000"),
        ("1234.5", "EUR", "en", "€1,234.50"),
        ("1234.5", "EUR", "de", f"1.234,50{NBSP}€"),
        ("1234.5", "EUR", "fr", f"1\u202f234,50{NBSP}€"),
        ("1234.5", "USD", "en", "$1,234.50"),
        ("1.234", "KWD", "en", f"KWD{NBSP}1.234"),  # three decimals, symbol kept apart
        ("1.2", "BHD", "en", f"BHD{NBSP}1.200"),
        ("-1234.5", "USD", "en", "-$1,234.50"),  # negative amounts: a credit, a refund
        ("-1000", "JPY", "en", "-¥1,000"),
        ("-0.5", "KWD", "en", f"-KWD{NBSP}0.500"),
        ("-1234.5", "EUR", "de", f"-1.234,50{NBSP}€"),
        ("7.000000000000", "EUR", "en", "€7.00"),  # as PostgreSQL's NUMERIC returns it
        ("0E-12", "EUR", "en", "€0.00"),
        ("-0.00", "EUR", "en", "€0.00"),
        ("0.0004", "EUR", "en", "€0.0004"),  # a unit price keeps its digits
        ("1234.56", "HUF", "en", f"HUF{NBSP}1,234.56"),  # ISO 4217's two digits, as billed
    ],
)
def test_format_money_by_currency_and_locale(
    amount: str, currency: str, locale: str, shown: str
) -> None:
    assert format_money(Decimal(amount), currency, locale) == shown


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        ("1000", "JPY", "1,000"),
        ("49", "EUR", "49.00"),
        ("1.5", "KWD", "1.500"),
        ("-3.25", "USD", "-3.25"),
        ("0.0004", "EUR", "0.0004"),
    ],
)
def test_format_amount_is_the_number_alone(amount: str, currency: str, shown: str) -> None:
    assert format_amount(Decimal(amount), currency) == shown


def test_every_known_currency_shows_its_minor_unit() -> None:
    for currency, digits in MINOR_UNITS.items():
        number = format_amount(Decimal("1"), currency)
        assert number == ("1." + "0" * digits if digits else "1"), currency


def test_money_format_rounds_to_the_minor_unit_half_up() -> None:
    assert str(Money.of("12.345", "EUR")) == "€12.35"
    assert Money.of("999.5", "JPY").format() == "¥1,000"
    assert Money.of("1.0005", "BHD").format("en") == f"BHD{NBSP}1.001"


def test_unknown_currency_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown currency"):
        format_money(Decimal(1), "XYZ")


def test_a_registered_currency_is_shown_with_its_minor_unit_even_when_changed() -> None:
    register_currency("XTS", 3)  # ISO 4217's code for tests
    try:
        assert format_amount(Decimal("1.5"), "XTS") == "1.500"
        register_currency("XTS", 0)
        assert format_amount(Decimal("2"), "XTS") == "2"  # no stale cached pattern
    finally:
        del MINOR_UNITS["XTS"]
