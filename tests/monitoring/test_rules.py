"""The pure rules: damping, scheduling spread, maintenance occurrences, uptime."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from imhost.kit.clock import utc
from imhost.monitoring import rules
from imhost.monitoring.models import CheckState, Recurrence

UP, DOWN, UNKNOWN = CheckState.UP, CheckState.DOWN, CheckState.UNKNOWN


def test_down_after_n_failures_and_up_after_m_successes() -> None:
    policy = rules.Policy(down_after=3, up_after=2)
    c = rules.Counters(UP, 0, 5)
    seen = []
    for ok in [False, False, True, False, False, False, True, True, True]:
        c, changed = rules.advance(c, ok, policy)
        seen.append((c.state, changed))
    assert seen == [
        (UP, False),
        (UP, False),
        (UP, False),  # a success resets the failures
        (UP, False),
        (UP, False),
        (DOWN, True),
        (DOWN, False),
        (UP, True),
        (UP, False),
    ]
    first, changed = rules.advance(rules.Counters(UNKNOWN, 0, 0), True, rules.Policy(up_after=1))
    assert first.state is UP and changed
    with pytest.raises(ValueError):
        rules.Policy(down_after=0)


def test_interval_per_plan_defaults_to_60_and_is_never_under_10() -> None:
    assert rules.interval_seconds(None) == 60
    assert rules.interval_seconds(3) == 10
    assert rules.interval_seconds(30) == 30


def test_probes_are_spread_over_the_interval() -> None:
    interval = 60
    offsets = [rules.offset_seconds(f"service:{n}", interval) for n in range(6000)]
    assert all(0 <= o < interval for o in offsets)
    per_second = Counter(int(o) for o in offsets)
    assert len(per_second) == 60
    assert max(per_second.values()) < 2 * 6000 / 60  # no second gets twice its share
    # stable: the same service always gets the same slot
    assert rules.offset_seconds("service:7", 60) == rules.offset_seconds("service:7", 60)
    now = utc(2026, 3, 1, 12, 0, 0)
    first = rules.next_run(now, "service:7", 60)
    assert now < first <= now + timedelta(seconds=60)
    assert rules.next_run(first, "service:7", 60) == first + timedelta(seconds=60)


def test_recurring_maintenance_keeps_its_wall_clock_time_across_dst() -> None:
    rule = rules.WindowRule(
        timezone="Europe/Berlin",
        local_start=datetime(2026, 3, 25, 2, 30),
        duration=timedelta(hours=1),
        recurrence=Recurrence.DAILY,
    )
    got = rules.occurrences(rule, utc(2026, 3, 27), utc(2026, 3, 31))
    # 02:30 Berlin is 01:30 UTC in winter, 00:30 UTC in summer (from 29 March); on 29 March
    # 02:30 does not exist and zoneinfo reads it as 03:30 CEST (01:30 UTC).
    assert [b for b, _ in got] == [
        utc(2026, 3, 27, 1, 30),
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 30, 0, 30),
    ]
    assert all(f - b == timedelta(hours=1) for b, f in got)
    weekly = rules.WindowRule(
        "UTC",
        datetime(2026, 1, 4, 22, 0),
        timedelta(hours=4),
        Recurrence.WEEKLY,
        until=utc(2026, 2, 1),
    )
    starts = [b for b, _ in rules.occurrences(weekly, utc(2026, 1, 1), utc(2026, 3, 1))]
    assert starts == [utc(2026, 1, d, 22) for d in (4, 11, 18, 25)]
    # an occurrence that began before the range is clipped to it
    clipped = rules.occurrences(weekly, utc(2026, 1, 5), utc(2026, 1, 6))
    assert clipped == [(utc(2026, 1, 5), utc(2026, 1, 5, 2))]


def test_uptime_is_exact_from_intervals_with_maintenance_excluded() -> None:
    start, end = utc(2026, 3, 1), utc(2026, 4, 1)  # 31 days = 44640 minutes
    down = rules.down_intervals(
        [
            (utc(2026, 3, 2, 10, 0), DOWN),
            (utc(2026, 3, 2, 10, 30), UP),  # 30 min
            (utc(2026, 3, 10, 23, 50), DOWN),
            (utc(2026, 3, 11, 0, 35), UP),  # 45 min, 20 of them in maintenance
        ],
        start,
        end,
    )
    assert rules.total(down) == timedelta(minutes=75)
    maintenance = [(utc(2026, 3, 11, 0, 15), utc(2026, 3, 11, 1, 15))]  # 60 min
    u = rules.uptime(start, end, down, maintenance)
    assert u.minutes_down == 55
    assert u.maintenance == timedelta(minutes=60)
    assert u.ratio == Decimal(44580 - 55) / Decimal(44580)
    assert u.percent == Decimal("99.876")


def test_down_at_the_start_and_still_down_at_the_end() -> None:
    start, end = utc(2026, 3, 1), utc(2026, 3, 2)
    down = rules.down_intervals(
        [(utc(2026, 3, 1, 1), UP), (utc(2026, 3, 1, 23), DOWN)], start, end, DOWN
    )
    assert down == [(start, utc(2026, 3, 1, 1)), (utc(2026, 3, 1, 23), end)]
    assert rules.uptime(start, end, down, []).minutes_down == 120
    assert rules.uptime(start, end, [], [(start, end)]).ratio == 1
