"""SLA timers counted in business hours.

A :class:`BusinessCalendar` says when staff work: a time zone (IANA name, read with
:mod:`zoneinfo`), the hours of each weekday in local wall-clock time and the holidays. An
:class:`SlaPolicy` gives the targets of one support tier (the plan's), in business hours: the
first response and the resolution. Time is counted as real elapsed time inside the calendar's
windows, so a daylight-saving change that falls inside a window makes that window an hour
shorter or longer, exactly as the clock on the wall says.

A ticket's timer (:class:`SlaTimer`) is stored as when it started, the target, and the business
time it spent paused (waiting on the customer); its due time is always recomputed from those,
so a pause extends the due time by exactly the business time it lasted and a recomputation
after a calendar change is consistent.

Pure functions: no database, no clock of their own (``now`` is passed in).
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from imhost.kit.clock import ensure_utc
from imhost.kit.errors import InvalidInput

MINUTES_PER_DAY = 24 * 60
MAX_SEARCH_DAYS = 3 * 366
"""How far ahead a due time is searched before the calendar is judged to have no time in it."""

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True, order=True)
class Window:
    """Working time on one weekday, local minutes since midnight; ``end`` may be 1440."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not (0 <= self.start < self.end <= MINUTES_PER_DAY):
            raise InvalidInput("Working hours must start before they end, within one day.")

    @classmethod
    def parse(cls, text: str) -> Window:
        """``"09:00-17:30"`` (``24:00`` allowed as an end)."""
        try:
            start_text, end_text = text.strip().split("-")
            return cls(_minutes(start_text), _minutes(end_text))
        except ValueError as exc:
            raise InvalidInput(
                f"{text.strip()!r} is not a time range; write it like 09:00-17:00."
            ) from exc

    def __str__(self) -> str:
        return (
            f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"
        )


def _minutes(text: str) -> int:
    hours, minutes = text.strip().split(":")
    if not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(text)
    value = int(hours) * 60 + int(minutes)
    if int(minutes) >= 60 or value > MINUTES_PER_DAY:
        raise ValueError(text)
    return value


@dataclass(frozen=True)
class BusinessCalendar:
    """When staff work. ``weekly[0]`` is Monday's windows, ``weekly[6]`` Sunday's."""

    timezone: str = "UTC"
    weekly: tuple[tuple[Window, ...], ...] = field(
        default_factory=lambda: tuple(
            (Window(9 * 60, 17 * 60),) if day < 5 else () for day in range(7)
        )
    )
    holidays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidInput(f"{self.timezone!r} is not a known time zone.") from exc
        if len(self.weekly) != 7:
            raise InvalidInput("Working hours need one entry for each day of the week.")
        for windows in self.weekly:
            _check_day(windows)
        if not any(self.weekly):
            raise InvalidInput("The calendar needs working hours on at least one day.")

    @classmethod
    def around_the_clock(cls) -> BusinessCalendar:
        return cls("UTC", tuple((Window(0, MINUTES_PER_DAY),) for _ in range(7)))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def windows_on(self, day: date) -> list[tuple[datetime, datetime]]:
        """The working windows of local ``day`` as UTC instants (none on a holiday)."""
        if day in self.holidays:
            return []
        zone = self.zone
        out = []
        for window in sorted(self.weekly[day.weekday()]):
            out.append((_instant(day, window.start, zone), _instant(day, window.end, zone)))
        return [(start, end) for start, end in out if start < end]

    def is_open(self, when: datetime) -> bool:
        when = ensure_utc(when)
        day = when.astimezone(self.zone).date()
        return any(start <= when < end for start, end in self.windows_on(day))


def _check_day(windows: tuple[Window, ...]) -> None:
    for before, after in itertools.pairwise(sorted(windows)):
        if after.start < before.end:
            raise InvalidInput("Working hours of one day must not overlap.")


def _instant(day: date, minute: int, zone: ZoneInfo) -> datetime:
    if minute >= MINUTES_PER_DAY:
        day, minute = day + timedelta(days=1), 0
    local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=zone)
    instant = local.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None):
        return instant
    # A wall time skipped by a DST change does not exist: take the moment the clocks jump,
    # the first instant whose wall time is past it (PEP 495 would give a later one).
    low = local.replace(fold=1).astimezone(UTC)
    high = instant
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= local.replace(tzinfo=None):
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def add_business_time(start: datetime, duration: timedelta, calendar: BusinessCalendar) -> datetime:
    """The instant when ``duration`` of business time has passed since ``start``."""
    start = ensure_utc(start)
    if duration <= timedelta(0):
        return start
    remaining = duration
    day = start.astimezone(calendar.zone).date() - timedelta(days=1)
    for _ in range(MAX_SEARCH_DAYS):
        for window_start, window_end in calendar.windows_on(day):
            begin = max(window_start, start)
            if begin >= window_end:
                continue
            available = window_end - begin
            if remaining <= available:
                return begin + remaining
            remaining -= available
        day += timedelta(days=1)
    raise InvalidInput("The calendar has too little working time to reach this target.")


def business_time_between(start: datetime, end: datetime, calendar: BusinessCalendar) -> timedelta:
    """Business time inside ``[start, end)`` (zero when ``end`` is not after ``start``)."""
    start, end = ensure_utc(start), ensure_utc(end)
    total = timedelta(0)
    if end <= start:
        return total
    day = start.astimezone(calendar.zone).date() - timedelta(days=1)
    last = end.astimezone(calendar.zone).date()
    while day <= last:
        for window_start, window_end in calendar.windows_on(day):
            overlap = min(window_end, end) - max(window_start, start)
            if overlap > timedelta(0):
                total += overlap
        day += timedelta(days=1)
    return total


# --- policies and timers ----------------------------------------------------------------------


@dataclass(frozen=True)
class SlaPolicy:
    """The targets of one support tier, in business time."""

    tier: str
    first_response: timedelta
    resolution: timedelta
    warn_before: timedelta = timedelta(hours=1)
    """How long (in real time) before a breach staff are warned."""

    def __post_init__(self) -> None:
        if self.first_response <= timedelta(0) or self.resolution <= timedelta(0):
            raise InvalidInput("SLA targets must be longer than zero.")
        if self.resolution < self.first_response:
            raise InvalidInput("The resolution target cannot be shorter than the first response.")
        if self.warn_before < timedelta(0):
            raise InvalidInput("The warning must come before the breach.")


DEFAULT_POLICIES: dict[str, SlaPolicy] = {
    "basic": SlaPolicy("basic", timedelta(hours=8), timedelta(hours=40), timedelta(hours=2)),
    "standard": SlaPolicy("standard", timedelta(hours=4), timedelta(hours=24), timedelta(hours=1)),
    "top": SlaPolicy("top", timedelta(hours=1), timedelta(hours=8), timedelta(minutes=15)),
}
"""Shipped targets (business hours): basic one business day to answer and five to resolve (of
8 h), top one hour and one business day. Staff change them on the console."""


class TimerState(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    MET = "met"


@dataclass(frozen=True)
class SlaTimer:
    """One target's clock on one ticket."""

    started_at: datetime
    target: timedelta
    paused_for: timedelta = timedelta(0)
    """Business time already spent paused (waiting on the customer)."""
    paused_at: datetime | None = None
    met_at: datetime | None = None

    @property
    def state(self) -> TimerState:
        if self.met_at is not None:
            return TimerState.MET
        return TimerState.PAUSED if self.paused_at is not None else TimerState.RUNNING

    def due_at(self, calendar: BusinessCalendar) -> datetime:
        """When the target is breached, counting the pauses so far (a running pause counts up
        to now only once it ends, so the stored due time stays until then)."""
        return add_business_time(self.started_at, self.target + self.paused_for, calendar)

    def pause(self, now: datetime) -> SlaTimer:
        if self.state is not TimerState.RUNNING:
            return self
        return replace(self, paused_at=ensure_utc(now))

    def resume(self, now: datetime, calendar: BusinessCalendar) -> SlaTimer:
        if self.paused_at is None or self.met_at is not None:
            return self
        paused = business_time_between(self.paused_at, now, calendar)
        return replace(self, paused_at=None, paused_for=self.paused_for + paused)

    def meet(self, now: datetime) -> SlaTimer:
        if self.met_at is not None:
            return self
        return replace(self, met_at=ensure_utc(now), paused_at=None)

    def used(self, now: datetime, calendar: BusinessCalendar) -> timedelta:
        """Business time counted against the target up to ``now`` (or until met/paused)."""
        end = self.met_at or self.paused_at or ensure_utc(now)
        return business_time_between(self.started_at, end, calendar) - self.paused_for


class Urgency(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    BREACHED = "breached"


def urgency(
    due_at: datetime, now: datetime, warn_before: timedelta, *, paused: bool = False
) -> Urgency:
    """Where a running timer stands: warned ``warn_before`` (real time) ahead, breached at
    the due time. A paused timer never warns or breaches while paused."""
    if paused:
        return Urgency.OK
    now, due_at = ensure_utc(now), ensure_utc(due_at)
    if now >= due_at:
        return Urgency.BREACHED
    if now >= due_at - warn_before:
        return Urgency.WARNING
    return Urgency.OK


def parse_weekly(lines: dict[str, str]) -> tuple[tuple[Window, ...], ...]:
    """Weekly hours from text per weekday name, e.g. ``{"monday": "09:00-12:00, 13:00-17:00"}``;
    a missing or empty day is closed."""
    unknown = set(lines) - set(WEEKDAYS)
    if unknown:
        raise InvalidInput(f"Unknown day {sorted(unknown)[0]!r}.")
    weekly: list[tuple[Window, ...]] = []
    for name in WEEKDAYS:
        text = lines.get(name, "").strip()
        parts = [p for p in text.replace(";", ",").split(",") if p.strip()]
        try:
            windows = tuple(Window.parse(p) for p in parts)
            _check_day(windows)
        except InvalidInput as exc:
            raise InvalidInput(f"{name.capitalize()}: {exc.detail}", field=name) from None
        weekly.append(windows)
    return tuple(weekly)


def format_weekly(weekly: tuple[tuple[Window, ...], ...]) -> dict[str, str]:
    return {
        name: ", ".join(str(w) for w in sorted(windows))
        for name, windows in zip(WEEKDAYS, weekly, strict=True)
    }
