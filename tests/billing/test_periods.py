"""Periods and proration by the second, worked by hand across month lengths."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imhost.billing.periods import (
    charge_for_part,
    first_boundary_after,
    full_period,
    period_before,
    period_end,
    seconds_between,
    split_at,
    split_by_seconds,
)
from imhost.catalog.intervals import parse_interval
from imhost.kit.clock import utc
from imhost.kit.errors import InvalidInput
from imhost.kit.money import round_minor

DAY = 86_400


def test_an_anchor_on_the_31st_clamps_to_short_months_and_comes_back() -> None:
    start = utc(2027, 1, 31)
    ends = []
    for _ in range(4):
        start = period_end(start, 31, "monthly")
        ends.append(start)
    assert ends == [utc(2027, 2, 28), utc(2027, 3, 31), utc(2027, 4, 30), utc(2027, 5, 31)]


def test_a_leap_february_ends_on_the_29th_for_an_anchor_of_30() -> None:
    assert period_end(utc(2028, 1, 30), 30, "monthly") == utc(2028, 2, 29)
    assert period_end(utc(2028, 2, 29), 30, "monthly") == utc(2028, 3, 30)


def test_a_yearly_period_from_29_february_ends_on_28_february_next_year() -> None:
    assert period_end(utc(2028, 2, 29), 29, "yearly") == utc(2029, 2, 28)
    assert period_before(utc(2029, 2, 28), 29, "yearly") == utc(2028, 2, 29)


def test_the_first_boundary_after_a_start_uses_the_anchor_of_this_or_next_month() -> None:
    assert first_boundary_after(utc(2026, 11, 10), 15) == utc(2026, 11, 15)
    assert first_boundary_after(utc(2026, 11, 20), 15) == utc(2026, 12, 15)


@pytest.mark.parametrize(
    ("start", "end", "days"),
    [
        (utc(2027, 2, 1), utc(2027, 3, 1), 28),
        (utc(2028, 2, 1), utc(2028, 3, 1), 29),
        (utc(2026, 11, 1), utc(2026, 12, 1), 30),
        (utc(2026, 12, 1), utc(2027, 1, 1), 31),
    ],
)
def test_ten_days_left_is_ten_days_over_the_real_length_of_the_month(
    start: object, end: object, days: int
) -> None:
    at = end - timedelta(days=10)  # type: ignore[operator]
    split = split_by_seconds(Decimal("49.00"), "EUR", start, at, end)  # type: ignore[arg-type]
    assert split.seconds_total == days * DAY
    assert split.seconds_unused == 10 * DAY
    expected = (Decimal("49.00") * 10 / days).quantize(Decimal("0.01"))
    assert split.unused == expected
    assert split.used + split.unused == Decimal("49.00")


def test_the_hand_worked_february_and_leap_february_examples() -> None:
    # 28-day February, 14 days left: 49.00 x 1,209,600 / 2,419,200 = 24.50
    feb = split_by_seconds(
        Decimal("49.00"), "EUR", utc(2027, 2, 1), utc(2027, 2, 15), utc(2027, 3, 1)
    )
    assert feb.unused == Decimal("24.50")
    assert feb.unused_calculation("EUR") == "49.00 × 14 days / 28 days = 24.50"
    # 29-day February, 14 days left: 49.00 x 1,209,600 / 2,505,600 = 23.655... = 23.66
    leap = split_by_seconds(
        Decimal("49.00"), "EUR", utc(2028, 2, 1), utc(2028, 2, 16), utc(2028, 3, 1)
    )
    assert leap.seconds_total == 2_505_600
    assert leap.unused == Decimal("23.66")
    assert leap.used == Decimal("25.34")
    # A leap year of 366 days, changed 100 days before its end: 120.00 x 100/366 = 32.79
    year = split_by_seconds(
        Decimal("120.00"), "EUR", utc(2028, 1, 1), utc(2028, 9, 23), utc(2029, 1, 1)
    )
    assert year.seconds_total == 366 * DAY and year.seconds_unused == 100 * DAY
    assert year.unused == Decimal("32.79")


def test_a_change_outside_the_period_is_refused() -> None:
    with pytest.raises(InvalidInput):
        split_by_seconds(Decimal("10"), "EUR", utc(2026, 11, 1), utc(2026, 12, 2), utc(2026, 12, 1))


@given(
    price=st.decimals(min_value=0, max_value=100_000, places=2),
    offset=st.integers(min_value=0, max_value=31 * DAY),
    month=st.integers(min_value=1, max_value=12),
    year=st.sampled_from([2026, 2027, 2028]),
    currency=st.sampled_from(["EUR", "JPY", "BHD"]),
)
def test_proration_pieces_always_add_up_to_the_full_price(
    price: Decimal, offset: int, month: int, year: int, currency: str
) -> None:
    start = utc(year, month, 1)
    end = period_end(start, 1, "monthly")
    at = min(start + timedelta(seconds=offset), end)
    split = split_by_seconds(price, currency, start, at, end)
    assert split.full == round_minor(price, currency)  # a full period is charged its price
    assert split.used + split.unused == split.full
    assert split.seconds_used + split.seconds_unused == split.seconds_total
    assert split.unused >= 0


# --- one proration rule, shorter first periods included ----------------------------------

INTERVALS = [
    "monthly",
    "quarterly",
    "half-yearly",
    "yearly",
    "every-2-months",
    "weekly",
    "every-3-weeks",
    "calendar-monthly",
    "calendar-quarterly",
    "calendar-yearly",
    "calendar-weekly",
    "calendar-every-2-weeks",
]


def _first_period(start: datetime, anchor: int, interval: str) -> tuple[datetime, datetime]:
    """The first period of a subscription started at ``start`` (chosen anchor for months)."""
    iv = parse_interval(interval)
    if iv.calendar or iv.months == 0 or anchor == start.day:
        return start, period_end(start, anchor, interval)
    return start, first_boundary_after(start, anchor, interval)


@given(
    price=st.decimals(min_value=0, max_value=100_000, places=2),
    day=st.integers(min_value=0, max_value=3 * 366),
    anchor=st.integers(min_value=1, max_value=31),
    cut=st.floats(min_value=0, max_value=1),
    interval=st.sampled_from(INTERVALS),
    currency=st.sampled_from(["EUR", "JPY", "BHD"]),
)
def test_a_credit_never_exceeds_what_was_paid_for_the_unused_part_even_in_a_short_first_period(
    price: Decimal, day: int, anchor: int, cut: float, interval: str, currency: str
) -> None:
    start = utc(2026, 1, 1) + timedelta(days=day)
    s, e = _first_period(start, anchor, interval)
    full = full_period(s, e, anchor, interval)
    assert full[1] == e and full[0] <= s
    paid = charge_for_part(price, currency, s, e, full).amount  # what the invoice charged
    at = s + timedelta(seconds=int(seconds_between(s, e) * cut))
    split = split_at(price, currency, s, at, e, full=full)
    # The pieces sum to what the period was charged ...
    assert split.full == paid
    assert split.used + split.unused == paid
    assert split.seconds_used + split.seconds_unused == seconds_between(s, e)
    # ... and the credit for the unused part is never more than was paid for it: at most
    # the paid amount, and at most the price's share of the unused seconds (rounded).
    assert 0 <= split.unused <= paid
    exact = price * Decimal(seconds_between(at, e)) / Decimal(seconds_between(*full))
    assert split.unused == round_minor(exact, currency)
    # A full period is charged its price; a shorter one its share.
    assert paid <= round_minor(price, currency)


def test_a_short_first_period_divides_by_the_full_interval_not_by_its_own_length() -> None:
    # Started on 20 November with the anchor on the 1st: [20 Nov, 1 Dec) of November.
    s, e = utc(2026, 11, 20), utc(2026, 12, 1)
    full = full_period(s, e, 1, "monthly")
    assert full == (utc(2026, 11, 1), e)
    paid = charge_for_part(Decimal("49.00"), "EUR", s, e, full)
    assert paid.amount == Decimal("17.97")  # 49.00 x 11/30
    split = split_at(Decimal("49.00"), "EUR", s, utc(2026, 11, 21), e, full=full)
    assert split.unused == Decimal("16.33")  # 49.00 x 10/30, not 49.00 x 10/11 = 44.55
    assert split.unused_calculation("EUR") == "49.00 × 10 days / 30 days = 16.33"
    assert split.used == Decimal("1.64")


# --- intervals of any months or weeks, anniversary or calendar aligned -------------------


def test_a_quarterly_period_runs_three_months_on_the_anchor_day_clamped_like_months() -> None:
    assert period_end(utc(2026, 11, 30), 30, "quarterly") == utc(2027, 2, 28)
    assert period_end(utc(2027, 2, 28), 30, "quarterly") == utc(2027, 5, 30)
    assert period_end(utc(2026, 1, 15), 15, "half-yearly") == utc(2026, 7, 15)
    assert period_before(utc(2027, 2, 28), 30, "quarterly") == utc(2026, 11, 30)


def test_weekly_periods_run_seven_days_times_the_count_from_the_start_day() -> None:
    assert period_end(utc(2026, 12, 3), 3, "weekly") == utc(2026, 12, 10)
    assert period_end(utc(2026, 12, 3), 3, "every-3-weeks") == utc(2026, 12, 24)
    assert period_before(utc(2026, 12, 24), 3, "every-3-weeks") == utc(2026, 12, 3)


def test_calendar_periods_end_on_the_next_calendar_boundary() -> None:
    # Quarters start on 1 January, April, July and October; half-years in January and July.
    assert period_end(utc(2026, 11, 20), 1, "calendar-quarterly") == utc(2027, 1, 1)
    assert period_end(utc(2027, 1, 1), 1, "calendar-quarterly") == utc(2027, 4, 1)
    assert period_end(utc(2026, 3, 31), 1, "calendar-half-yearly") == utc(2026, 7, 1)
    assert period_end(utc(2026, 7, 1), 1, "calendar-yearly") == utc(2027, 1, 1)
    assert period_end(utc(2026, 12, 31), 1, "calendar-monthly") == utc(2027, 1, 1)
    # Weeks start on Mondays; 3 December 2026 is a Thursday.
    assert period_end(utc(2026, 12, 3), 3, "calendar-weekly") == utc(2026, 12, 7)
    two = period_end(utc(2026, 12, 3), 3, "calendar-every-2-weeks")
    assert two.weekday() == 0 and two in (utc(2026, 12, 7), utc(2026, 12, 14))
    assert period_end(two, 3, "calendar-every-2-weeks") == two + timedelta(days=14)


def test_a_partial_first_calendar_quarter_is_charged_by_the_real_days_of_the_quarter() -> None:
    s, e = utc(2026, 11, 20), utc(2027, 1, 1)
    full = full_period(s, e, 1, "calendar-quarterly")
    assert full == (utc(2026, 10, 1), e)  # 92 days: October 31, November 30, December 31
    part = charge_for_part(Decimal("92.00"), "EUR", s, e, full)
    assert (part.seconds, part.seconds_full) == (42 * DAY, 92 * DAY)
    assert part.amount == Decimal("42.00")
    # The first quarter of a year has 90 days (91 in a leap year).
    q1 = full_period(utc(2028, 2, 1), utc(2028, 4, 1), 1, "calendar-quarterly")
    assert seconds_between(*q1) == 91 * DAY
    week = full_period(utc(2026, 12, 3), utc(2026, 12, 7), 3, "calendar-weekly")
    assert week == (utc(2026, 11, 30), utc(2026, 12, 7))


@given(
    day=st.integers(min_value=0, max_value=3 * 366),
    interval=st.sampled_from(INTERVALS),
)
def test_every_period_after_the_first_is_one_full_interval(day: int, interval: str) -> None:
    start = utc(2026, 1, 1) + timedelta(days=day)
    anchor = 1 if parse_interval(interval).calendar else start.day
    _s, e = _first_period(start, anchor, interval)
    for _ in range(4):
        s, e = e, period_end(e, anchor, interval)
        assert s < e
        assert full_period(s, e, anchor, interval) == (s, e)  # no later period is short
