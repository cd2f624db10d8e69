"""Billing intervals: a whole number of months or weeks, anniversary or calendar aligned.

A plan version (and an add-on) carries its interval as one short code, stored as text and
read back with :func:`parse_interval`:

=====================  ===============================================================
code                   meaning
=====================  ===============================================================
``weekly``             every week, from the subscription's start day
``monthly``            every month, on the anchor day (the start day unless chosen)
``quarterly``          every 3 months
``half-yearly``        every 6 months
``yearly``             every 12 months
``every-5-weeks``      any other count: ``every-N-weeks``, ``every-N-months``
``calendar-...``       the same count, on calendar boundaries: months on the 1st of a month
                       whose number the count divides (``calendar-quarterly``: 1 January,
                       1 April, 1 July, 1 October), weeks on Mondays (counted from Monday
                       5 January 1970 for counts above one)
=====================  ===============================================================

Bounds: 1 to 36 months, 1 to 52 weeks. A calendar interval of months must divide a year
(1, 2, 3, 4 or 6 months) or be whole years (12, 24 or 36 months), so that its boundaries are
the same every year. The periods themselves are computed in ``billing.periods``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache

from imhost.kit.errors import InvalidInput

MAX_MONTHS = 36
MAX_WEEKS = 52


class IntervalUnit(enum.StrEnum):
    MONTH = "month"
    WEEK = "week"


class Alignment(enum.StrEnum):
    ANNIVERSARY = "anniversary"  # from the subscription's start (or anchor) day
    CALENDAR = "calendar"  # on calendar boundaries (1st of the month, Monday)


_NAMES: dict[tuple[int, IntervalUnit], str] = {
    (1, IntervalUnit.WEEK): "weekly",
    (1, IntervalUnit.MONTH): "monthly",
    (3, IntervalUnit.MONTH): "quarterly",
    (6, IntervalUnit.MONTH): "half-yearly",
    (12, IntervalUnit.MONTH): "yearly",
}
_BY_NAME = {name: key for key, name in _NAMES.items()}
_ALIASES = {"annually": "yearly", "annual": "yearly", "semi-annually": "half-yearly"}
CALENDAR_PREFIX = "calendar-"


@dataclass(frozen=True)
class Interval:
    """``count`` months or weeks, anniversary or calendar aligned (validated on creation)."""

    count: int
    unit: IntervalUnit
    alignment: Alignment = Alignment.ANNIVERSARY

    def __post_init__(self) -> None:
        most = MAX_MONTHS if self.unit == IntervalUnit.MONTH else MAX_WEEKS
        if not 1 <= self.count <= most:
            raise InvalidInput(
                f"a billing interval is 1 to {most} {self.unit.value}s, not {self.count}",
                field="billing_interval",
            )
        if (
            self.alignment == Alignment.CALENDAR
            and self.unit == IntervalUnit.MONTH
            and 12 % self.count != 0
            and self.count % 12 != 0
        ):
            raise InvalidInput(
                f"a calendar-aligned interval of {self.count} months would start on different "
                "months every year; use 1, 2, 3, 4 or 6 months, or whole years",
                field="billing_interval",
            )

    @property
    def months(self) -> int:
        """The length in months (0 for an interval of weeks)."""
        return self.count if self.unit == IntervalUnit.MONTH else 0

    @property
    def days(self) -> int:
        """The length in days of an interval of weeks (0 for months, whose length varies)."""
        return 7 * self.count if self.unit == IntervalUnit.WEEK else 0

    @property
    def calendar(self) -> bool:
        return self.alignment == Alignment.CALENDAR

    @property
    def code(self) -> str:
        """The stored form: ``monthly``, ``every-5-weeks``, ``calendar-quarterly``."""
        base = _NAMES.get((self.count, self.unit)) or f"every-{self.count}-{self.unit.value}s"
        return CALENDAR_PREFIX + base if self.calendar else base

    @property
    def adjective(self) -> str:
        """How an invoice line names it: ``monthly``, ``quarterly``, ``every 5 weeks``."""
        return _NAMES.get((self.count, self.unit)) or self.words

    @property
    def words(self) -> str:
        """The interval in plain words: ``every month``, ``every 3 months``, ``every 2 years``."""
        if self.unit == IntervalUnit.MONTH and self.count % 12 == 0:
            years = self.count // 12
            return "every year" if years == 1 else f"every {years} years"
        if self.count == 1:
            return f"every {self.unit.value}"
        return f"every {self.count} {self.unit.value}s"

    @property
    def description(self) -> str:
        """:attr:`words` and how the periods are aligned, for people."""
        if not self.calendar:
            return self.words
        if self.unit == IntervalUnit.WEEK:
            return f"{self.words}, from Mondays"
        if self.count == 1:
            return f"{self.words}, from the 1st"
        return f"{self.words}, from the calendar's {self._calendar_part}"

    @property
    def _calendar_part(self) -> str:
        return {
            2: "two-month periods",
            3: "quarters",
            4: "four-month periods",
            6: "half-years",
        }.get(self.count, "years")


MONTHLY = Interval(1, IntervalUnit.MONTH)
YEARLY = Interval(12, IntervalUnit.MONTH)


@lru_cache(maxsize=256)
def _parse(text: str) -> Interval:
    code = text.strip().lower().replace("_", "-").replace(" ", "-")
    alignment = Alignment.ANNIVERSARY
    if code.startswith(CALENDAR_PREFIX):
        code, alignment = code[len(CALENDAR_PREFIX) :], Alignment.CALENDAR
    code = _ALIASES.get(code, code)
    if code in _BY_NAME:
        count, unit = _BY_NAME[code]
        return Interval(count, unit, alignment)
    parts = code.split("-")
    if parts and parts[0] == "every":
        parts = parts[1:]
    if len(parts) == 1:
        parts = ["1", *parts]
    if len(parts) == 2 and parts[0].isdigit() and len(parts[0]) <= 4:
        unit_word = parts[1].removesuffix("s")
        if unit_word in ("month", "week", "year"):
            count = int(parts[0])
            if unit_word == "year":
                return Interval(count * 12, IntervalUnit.MONTH, alignment)
            return Interval(count, IntervalUnit(unit_word), alignment)
    raise InvalidInput(
        f"unknown billing interval {text[:40]!r}; write weekly, monthly, quarterly, "
        "half-yearly, yearly or every-N-months / every-N-weeks, with calendar- in front for "
        "calendar-aligned periods",
        field="billing_interval",
    )


def parse_interval(text: str | Interval) -> Interval:
    """The interval a code names (``monthly``, ``every-3-months``, ``calendar-weekly``);
    refused with the accepted forms when it names none or is out of bounds."""
    if isinstance(text, Interval):
        return text
    if not isinstance(text, str) or len(text) > 64:
        raise InvalidInput("a billing interval is a short text such as 'quarterly'")
    return _parse(text)


def interval_words(code: str) -> str:
    """The plain words of a stored interval code (the code itself if it no longer parses)."""
    try:
        return parse_interval(code).description
    except InvalidInput:
        return code
