"""The pure rules of monitoring: when a check changes state, when a probe runs, maintenance
occurrences, and uptime from state-change intervals. No database, no I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from zoneinfo import ZoneInfo

from imhost.kit.clock import ensure_utc

from .models import CheckState, Recurrence

MIN_INTERVAL_SECONDS = 10
DEFAULT_INTERVAL_SECONDS = 60

Interval = tuple[datetime, datetime]


@dataclass(frozen=True)
class Policy:
    """A check goes down after ``down_after`` consecutive failures and up again after
    ``up_after`` consecutive successes (a single lost probe changes nothing)."""

    down_after: int = 3
    up_after: int = 2

    def __post_init__(self) -> None:
        if self.down_after < 1 or self.up_after < 1:
            raise ValueError("down_after and up_after must be at least 1")


@dataclass(frozen=True)
class Counters:
    state: CheckState
    failures: int
    successes: int


def advance(current: Counters, ok: bool, policy: Policy) -> tuple[Counters, bool]:
    """The counters after one probe result, and whether the state changed."""
    failures = 0 if ok else current.failures + 1
    successes = current.successes + 1 if ok else 0
    state = current.state
    if ok and state is not CheckState.UP and successes >= policy.up_after:
        state = CheckState.UP
    elif not ok and state is not CheckState.DOWN and failures >= policy.down_after:
        state = CheckState.DOWN
    return Counters(state, failures, successes), state is not current.state


def interval_seconds(plan_seconds: int | None) -> int:
    """The probe interval of a plan: 60 s unless the plan says otherwise, never under 10 s."""
    if plan_seconds is None:
        return DEFAULT_INTERVAL_SECONDS
    return max(MIN_INTERVAL_SECONDS, int(plan_seconds))


def offset_seconds(key: str, interval: int) -> float:
    """Where in the interval a subject's probe runs: a stable spread by a hash of its id, so
    that thousands of services are not all probed in the same second."""
    digest = hashlib.sha256(key.encode()).digest()
    millis = int.from_bytes(digest[:8], "big") % (interval * 1000)
    return millis / 1000


def next_run(now: datetime, key: str, interval: int) -> datetime:
    """The first slot of ``key`` strictly after ``now``: slots are ``epoch + offset + k *
    interval``, the same on every node and after every restart."""
    now = ensure_utc(now)
    offset = offset_seconds(key, interval)
    epoch_seconds = now.timestamp()
    k = int((epoch_seconds - offset) // interval) + 1
    return datetime.fromtimestamp(offset + k * interval, tz=now.tzinfo)


# -- maintenance --------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowRule:
    timezone: str
    local_start: datetime  # naive wall-clock time in ``timezone``
    duration: timedelta
    recurrence: Recurrence
    until: datetime | None = None


def occurrences(rule: WindowRule, start: datetime, end: datetime) -> list[Interval]:
    """The UTC intervals of a window that overlap ``[start, end)``. Recurring windows keep
    their wall-clock time across daylight-saving changes."""
    zone = ZoneInfo(rule.timezone)
    step = {
        Recurrence.NONE: None,
        Recurrence.DAILY: timedelta(days=1),
        Recurrence.WEEKLY: timedelta(days=7),
    }[rule.recurrence]
    found: list[Interval] = []
    local = rule.local_start
    if step is not None:
        # jump close to ``start`` without walking every day since the first occurrence
        first_utc = local.replace(tzinfo=zone).astimezone(start.tzinfo)
        if first_utc < start - rule.duration - step:
            skip = (start - rule.duration - first_utc) // step
            local = local + step * skip
    while True:
        begin = ensure_utc(local.replace(tzinfo=zone))
        if begin >= end or (rule.until is not None and begin >= rule.until):
            break
        finish = begin + rule.duration
        if finish > start:
            found.append((max(begin, start), min(finish, end)))
        if step is None:
            break
        local = local + step
    return found


# -- intervals and uptime -----------------------------------------------------------------


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for begin, finish in sorted(i for i in intervals if i[1] > i[0]):
        if out and begin <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], finish))
        else:
            out.append((begin, finish))
    return out


def subtract(intervals: Sequence[Interval], cuts: Sequence[Interval]) -> list[Interval]:
    """``intervals`` minus ``cuts`` (both may overlap themselves)."""
    result: list[Interval] = []
    cuts = merge(cuts)
    for begin, finish in merge(intervals):
        pieces = [(begin, finish)]
        for cb, cf in cuts:
            nxt: list[Interval] = []
            for pb, pf in pieces:
                if cf <= pb or cb >= pf:
                    nxt.append((pb, pf))
                    continue
                if pb < cb:
                    nxt.append((pb, cb))
                if cf < pf:
                    nxt.append((cf, pf))
            pieces = nxt
        result.extend(pieces)
    return result


def total(intervals: Iterable[Interval]) -> timedelta:
    return sum((finish - begin for begin, finish in merge(intervals)), timedelta())


def down_intervals(
    changes: Sequence[tuple[datetime, CheckState]],
    start: datetime,
    end: datetime,
    state_before: CheckState = CheckState.UP,
) -> list[Interval]:
    """The down intervals of one check within ``[start, end)``, from its state changes (in
    time order) and its state at ``start``. Unknown counts as up (never measured as down)."""
    down: list[Interval] = []
    state = state_before
    since = start
    for at, new in changes:
        at = min(max(at, start), end)
        if state is CheckState.DOWN and new is not CheckState.DOWN:
            down.append((since, at))
        if new is CheckState.DOWN and state is not CheckState.DOWN:
            since = at
        state = new
    if state is CheckState.DOWN:
        down.append((since, end))
    return merge(down)


@dataclass(frozen=True)
class Uptime:
    """Measured over ``[start, end)`` with maintenance taken out of both the downtime and the
    period: ``ratio = (period - maintenance - downtime) / (period - maintenance)``."""

    start: datetime
    end: datetime
    downtime: timedelta
    maintenance: timedelta

    @property
    def measured(self) -> timedelta:
        return self.end - self.start - self.maintenance

    @property
    def ratio(self) -> Decimal:
        seconds = Decimal(int(self.measured.total_seconds()))
        if seconds <= 0:
            return Decimal(1)
        down = Decimal(int(self.downtime.total_seconds()))
        return (seconds - down) / seconds

    @property
    def percent(self) -> Decimal:
        """Uptime in percent, cut (not rounded up) to three decimals: 99.9996 % is 99.999 %."""
        return (self.ratio * 100).quantize(Decimal("0.001"), rounding=ROUND_DOWN)

    @property
    def minutes_down(self) -> int:
        return int(self.downtime.total_seconds() // 60)


def uptime(
    start: datetime, end: datetime, down: Sequence[Interval], maintenance: Sequence[Interval]
) -> Uptime:
    clipped_maintenance = [(max(b, start), min(f, end)) for b, f in maintenance]
    counted = subtract([(max(b, start), min(f, end)) for b, f in down], clipped_maintenance)
    return Uptime(start, end, total(counted), total(clipped_maintenance))
