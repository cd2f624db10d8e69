"""Billing periods and proration, pure functions (no database).

Intervals (``catalog.intervals``) are a whole number of months or weeks, anniversary or
calendar aligned. Anniversary periods of months run from 00:00 UTC on the billing anchor day
to 00:00 UTC on the anchor day ``count`` months later. An anchor past the end of a shorter
month is clamped to that month's last day (anchor 31: 31 Jan, 28 Feb (29 in a leap year),
31 Mar, 30 Apr ...), and returns to the anchor in the months that have it. Anniversary
periods of weeks run ``7 × count`` days from the start day. Calendar periods end on the next
calendar boundary: the 1st of a month whose number the count divides, or a Monday.

A period can be shorter than its interval: the first one, when the subscription starts
between two boundaries (a chosen anchor day, a calendar interval). Every price of a period is
charged by the second over the **full** period that ends where it ends (:func:`full_period`),
whoever charges it: the invoice's base fee and add-ons in advance, and the plan changes,
cancellations and resumptions that prorate them (:func:`charge_for_part`, :func:`split_at`).
So a short first period costs its share of the interval's price, and a credit for its unused
part is a share of that, never more than was paid.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from imhost.catalog.intervals import Interval, IntervalUnit, parse_interval
from imhost.kit.errors import InvalidInput
from imhost.kit.money import format_amount, round_minor

# Calendar-aligned intervals of several weeks count weeks from this Monday.
WEEK_EPOCH = datetime(1970, 1, 5, tzinfo=UTC)
_WEEK = timedelta(days=7)


def interval_of(interval: str | Interval) -> Interval:
    """The interval a stored code names (a clear 4xx when it names none)."""
    return parse_interval(interval)


def anchored_date(year: int, month: int, anchor_day: int) -> datetime:
    """00:00 UTC on ``anchor_day`` of the month, clamped to the month's last day."""
    last = calendar.monthrange(year, month)[1]
    return datetime(year, month, min(anchor_day, last), tzinfo=UTC)


def add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def _next_calendar_boundary(moment: datetime, iv: Interval) -> datetime:
    """The first calendar boundary of ``iv`` strictly after ``moment``."""
    if iv.unit == IntervalUnit.WEEK:
        weeks = (moment - WEEK_EPOCH) // _WEEK + 1
        weeks += (-weeks) % iv.count
        return WEEK_EPOCH + weeks * _WEEK
    index = moment.year * 12 + moment.month - 1 + 1  # the next month's first day
    index += (-index) % iv.count
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def period_end(start: datetime, anchor_day: int, interval: str | Interval) -> datetime:
    """The end of the period that starts at ``start``: one interval later on the anchor day,
    or the next calendar boundary."""
    iv = interval_of(interval)
    if iv.calendar:
        return _next_calendar_boundary(start, iv)
    if iv.unit == IntervalUnit.WEEK:
        return start + iv.count * _WEEK
    y, m = add_months(start.year, start.month, iv.count)
    return anchored_date(y, m, anchor_day)


def first_boundary_after(
    moment: datetime, anchor_day: int, interval: str | Interval = "monthly"
) -> datetime:
    """The first boundary strictly after ``moment``: the next anchor day (anniversary
    intervals of months, whatever their count), the next calendar boundary, or a week on."""
    iv = interval_of(interval)
    if iv.calendar:
        return _next_calendar_boundary(moment, iv)
    if iv.unit == IntervalUnit.WEEK:
        return moment + iv.count * _WEEK
    candidate = anchored_date(moment.year, moment.month, anchor_day)
    if candidate > moment:
        return candidate
    y, m = add_months(moment.year, moment.month, 1)
    return anchored_date(y, m, anchor_day)


def period_before(end: datetime, anchor_day: int, interval: str | Interval) -> datetime:
    """The start of the full period that ends at ``end``."""
    iv = interval_of(interval)
    if iv.unit == IntervalUnit.WEEK:
        return end - iv.count * _WEEK
    y, m = add_months(end.year, end.month, -iv.count)
    return anchored_date(y, m, 1 if iv.calendar else anchor_day)


def full_period(
    start: datetime, end: datetime, anchor_day: int, interval: str | Interval
) -> tuple[datetime, datetime]:
    """The full period that the period ``[start, end)`` is (a part of): the one interval
    that ends at ``end``. Its length is the denominator of every proration in the period."""
    return min(start, period_before(end, anchor_day, interval)), end


def day_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def seconds_between(start: datetime, end: datetime) -> int:
    return int((end - start) // timedelta(seconds=1))


def duration_words(seconds: int) -> str:
    """A length of time as people read it, exactly: ``14 days``, ``1 day 6 h 30 min``
    (proration is by the second, so seconds appear only when there are some)."""
    days, rest = divmod(max(seconds, 0), 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days:,} day{'' if days == 1 else 's'}"] if days else []
    parts += [f"{n} {unit}" for n, unit in ((hours, "h"), (minutes, "min"), (secs, "s")) if n]
    return " ".join(parts) or "0 min"


def share_words(price: str, part: int, whole: int, amount: str) -> str:
    """``49.00 × 14 days / 28 days = 24.50``: a price prorated for ``part`` of ``whole``."""
    return f"{price} × {duration_words(part)} / {duration_words(whole)} = {amount}"


@dataclass(frozen=True)
class PartCharge:
    """The charge for the part ``[start, end)`` of a full period: ``price × seconds /
    seconds_full``, rounded once to the minor unit (half up)."""

    price: Decimal
    amount: Decimal
    seconds: int
    seconds_full: int

    @property
    def whole(self) -> bool:
        return self.seconds == self.seconds_full

    def calculation(self, currency: str) -> str:
        return share_words(
            fmt(self.price, currency), self.seconds, self.seconds_full, fmt(self.amount, currency)
        )


def charge_for_part(
    price: Decimal,
    currency: str,
    start: datetime,
    end: datetime,
    full: tuple[datetime, datetime],
) -> PartCharge:
    """The one proration rule: what ``price`` (the price of the full period ``full``) costs
    for ``[start, end)``, a part of it, by the second. Every path that prorates calls it."""
    full_start, full_end = full
    if not full_start <= start <= end <= full_end or full_start >= full_end:
        raise InvalidInput("the change time must fall inside the current period", field="at")
    total = seconds_between(full_start, full_end)
    seconds = seconds_between(start, end)
    amount = (
        round_minor(price, currency)
        if seconds == total
        else round_minor(price * Decimal(seconds) / Decimal(total), currency)
    )
    return PartCharge(price=price, amount=amount, seconds=seconds, seconds_full=total)


@dataclass(frozen=True)
class ProrationSplit:
    """What was charged for a period split at a moment: ``used`` + ``unused`` == ``full``.

    ``full`` is the period's charge (the price itself for a full period, its share for a
    shorter first period); ``unused`` is the charge for the rest of the period from the
    moment, by the same rule, so it never exceeds ``full``.
    """

    price: Decimal
    full: Decimal
    used: Decimal
    unused: Decimal
    seconds_used: int
    seconds_unused: int
    seconds_total: int  # of the full period: the denominator

    def unused_calculation(self, currency: str) -> str:
        return share_words(
            fmt(self.price, currency),
            self.seconds_unused,
            self.seconds_total,
            fmt(self.unused, currency),
        )

    def used_calculation(self, currency: str) -> str:
        return share_words(
            fmt(self.price, currency),
            self.seconds_used,
            self.seconds_total,
            fmt(self.used, currency),
        )


def split_at(
    price: Decimal,
    currency: str,
    start: datetime,
    at: datetime,
    end: datetime,
    *,
    full: tuple[datetime, datetime] | None = None,
) -> ProrationSplit:
    """Split the charge of the period ``[start, end)`` at ``at``, by :func:`charge_for_part`.

    ``full``: the full period ``[start, end)`` is part of (:func:`full_period`); by default
    the period itself. The unused part is rounded once; the used part is the rest, so the
    pieces always add up to what the period was charged.
    """
    if not start <= at <= end or start >= end:
        raise InvalidInput("the change time must fall inside the current period", field="at")
    whole = full or (start, end)
    paid = charge_for_part(price, currency, start, end, whole)
    unused = charge_for_part(price, currency, at, end, whole)
    return ProrationSplit(
        price=price,
        full=paid.amount,
        used=paid.amount - unused.amount,
        unused=unused.amount,
        seconds_used=paid.seconds - unused.seconds,
        seconds_unused=unused.seconds,
        seconds_total=unused.seconds_full,
    )


def split_by_seconds(
    full: Decimal, currency: str, start: datetime, at: datetime, end: datetime
) -> ProrationSplit:
    """Split ``full`` (the price of the full period [start, end)) at ``at``, by the second."""
    return split_at(full, currency, start, at, end)


def fmt(amount: Decimal, currency: str) -> str:
    """An amount rounded to the currency's minor unit, the number alone (``49.00``, ``1,000``
    for JPY): ``kit.money.format_amount``, the one way amounts are shown."""
    return format_amount(round_minor(amount, currency), currency)


def fmt_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")
