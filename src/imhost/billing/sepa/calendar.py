"""TARGET2 banking days, on which SEPA collections are settled.

TARGET2 is closed on Saturdays and Sundays, 1 January, Good Friday, Easter Monday, 1 May,
25 and 26 December (ECB, TARGET2 calendar). The Core scheme lets a file reach the bank up to
one banking day before the collection date; many banks ask for two, and so do we (D-2).
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache

SUBMISSION_LEAD_BANKING_DAYS = 2


def easter_sunday(year: int) -> date:
    """Gregorian Easter (the anonymous Gregorian algorithm, Meeus/Jones/Butcher)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month, day = divmod(h + ell - 7 * m + 114, 31)
    return date(year, month, day + 1)


@lru_cache(maxsize=64)
def target_holidays(year: int) -> frozenset[date]:
    easter = easter_sunday(year)
    return frozenset(
        {
            date(year, 1, 1),
            easter - timedelta(days=2),
            easter + timedelta(days=1),
            date(year, 5, 1),
            date(year, 12, 25),
            date(year, 12, 26),
        }
    )


def is_banking_day(day: date) -> bool:
    return day.weekday() < 5 and day not in target_holidays(day.year)


def next_banking_day(day: date) -> date:
    """``day`` itself when it is a banking day, else the next one."""
    while not is_banking_day(day):
        day += timedelta(days=1)
    return day


def add_banking_days(day: date, count: int) -> date:
    """The banking day ``count`` banking days after ``day``."""
    current = day
    added = 0
    while added < count:
        current += timedelta(days=1)
        if is_banking_day(current):
            added += 1
    return current


def earliest_collection_date(today: date) -> date:
    """The first collection date a file sent today can still ask for (D-2)."""
    return add_banking_days(today, SUBMISSION_LEAD_BANKING_DAYS)
