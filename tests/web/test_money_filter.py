"""The portal's and console's ``money`` filter shows amounts the one way kit.money does."""

from __future__ import annotations

from decimal import Decimal

import pytest

from imhost.web.pages import templates


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (Decimal("1000"), "JPY", "¥1,000"),  # was "1,000.00 JPY"
        (Decimal("49.00"), "EUR", "€49.00"),
        (Decimal("7.000000000000"), "USD", "$7.00"),  # PostgreSQL's NUMERIC scale
        (Decimal("1.5"), "KWD", "KWD\u00a01.500"),
        (Decimal("-12.5"), "EUR", "-€12.50"),
        (Decimal("0.0004"), "EUR", "€0.0004"),  # a unit price keeps its digits
        (None, "EUR", "-"),
    ],
)
def test_money_filter(amount: Decimal | None, currency: str, shown: str) -> None:
    rendered = templates.from_string("{{ amount|money(currency) }}").render(
        amount=amount, currency=currency
    )
    assert rendered == shown
