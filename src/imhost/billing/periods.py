"""Billing periods and proration, pure functions (no database).

Periods run from 00:00 UTC on the billing anchor day to 00:00 UTC on the anchor day one
interval later. An anchor past the end of a shorter month is clamped to that month's last
day (anchor 31: 31 Jan, 28 Feb (29 in a leap year), 31 Mar, 30 Apr ...), and returns to the
anchor in the months that have it.

Proration is by the second. The fraction is ``seconds remaining / seconds in the period``,
where the denominator is the real length of the current period: 28, 29, 30 or 31 days for a
monthly plan, 365 or 366 days for a yearly one.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from imhost.kit.errors import InvalidInput
from imhost.kit.money import format_amount, round_minor

INTERVAL_MONTHS = {"monthly": 1, "yearly": 12}


def interval_months(interval: str) -> int:
    try:
        return INTERVAL_MONTHS[interval]
    except KeyError:
        raise InvalidInput(
            f"unknown billing interval {interval!r}; expected monthly or yearly", field="interval"
        ) from None


def anchored_date(year: int, month: int, anchor_day: int) -> datetime:
    """00:00 UTC on ``anchor_day`` of the month, clamped to the month's last day."""
    last = calendar.monthrange(year, month)[1]
    return datetime(year, month, min(anchor_day, last), tzinfo=UTC)


def add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def period_end(start: datetime, anchor_day: int, interval: str) -> datetime:
    """The end of the period that starts at ``start``, a boundary on the anchor day."""
    y, m = add_months(start.year, start.month, interval_months(interval))
    return anchored_date(y, m, anchor_day)


def first_boundary_after(moment: datetime, anchor_day: int) -> datetime:
    """The first anchor-day boundary strictly after ``moment`` (monthly anchors)."""
    candidate = anchored_date(moment.year, moment.month, anchor_day)
    if candidate > moment:
        return candidate
    y, m = add_months(moment.year, moment.month, 1)
    return anchored_date(y, m, anchor_day)


def period_before(end: datetime, anchor_day: int, interval: str) -> datetime:
    """The start of the full period that ends at ``end``."""
    y, m = add_months(end.year, end.month, -interval_months(interval))
    return anchored_date(y, m, anchor_day)


def day_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def seconds_between(start: datetime, end: datetime) -> int:
    return int((end - start) // timedelta(seconds=1))


@dataclass(frozen=True)
class ProrationSplit:
    """A price split at a moment of its period: ``used`` + ``unused`` == ``full``."""

    full: Decimal
    used: Decimal
    unused: Decimal
    seconds_used: int
    seconds_unused: int
    seconds_total: int

    def unused_calculation(self, currency: str) -> str:
        return (
            f"{fmt(self.full, currency)} × {self.seconds_unused:,} s / "
            f"{self.seconds_total:,} s = {fmt(self.unused, currency)}"
        )

    def used_calculation(self, currency: str) -> str:
        return (
            f"{fmt(self.full, currency)} × {self.seconds_used:,} s / "
            f"{self.seconds_total:,} s = {fmt(self.used, currency)}"
        )


def split_by_seconds(
    full: Decimal, currency: str, start: datetime, at: datetime, end: datetime
) -> ProrationSplit:
    """Split ``full`` (the price of [start, end)) at ``at``, by the second.

    The unused part is rounded once to the minor unit (half up); the used part is the rest,
    so the two pieces always add up to the full price.
    """
    if not start <= at <= end or start >= end:
        raise InvalidInput("the change time must fall inside the current period", field="at")
    total = seconds_between(start, end)
    unused_s = seconds_between(at, end)
    unused = round_minor(full * Decimal(unused_s) / Decimal(total), currency)
    return ProrationSplit(
        full=full,
        used=full - unused,
        unused=unused,
        seconds_used=total - unused_s,
        seconds_unused=unused_s,
        seconds_total=total,
    )


def fmt(amount: Decimal, currency: str) -> str:
    """An amount rounded to the currency's minor unit, the number alone (``49.00``, ``1,000``
    for JPY): ``kit.money.format_amount``, the one way amounts are shown."""
    return format_amount(round_minor(amount, currency), currency)


def fmt_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")
