"""An injectable clock so that time is read in one place and tests can travel.

Every time in imhost is timezone-aware UTC. Code that needs "now" takes a ``Clock``
(usually through a service or ``app.state``) instead of calling ``datetime.now``.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for timeouts and rate limits)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FrozenClock:
    """A clock for tests: stands still until told to move.

    ``monotonic`` advances together with ``now`` so that rate limits and lockouts see the
    same travel.
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
        self._now = ensure_utc(start)
        self._mono = 1_000_000.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, delta: timedelta | float) -> datetime:
        """Move forward by ``delta`` (a timedelta, or seconds)."""
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        if seconds < 0:
            raise ValueError("a clock never goes back")
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds
            return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (forward only)."""
        when = ensure_utc(when)
        with self._lock:
            if when < self._now:
                raise ValueError("a clock never goes back")
            self._mono += (when - self._now).total_seconds()
            self._now = when


def ensure_utc(value: datetime) -> datetime:
    """Return ``value`` as aware UTC; a naive value is taken to be UTC already.

    SQLite gives back naive datetimes; everything we store is UTC, so this is exact.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    """Shorthand for an aware UTC datetime."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
