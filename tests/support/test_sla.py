"""SLA timers: time travel across nights, weekends, holidays, DST changes and pauses."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from imhost.kit.clock import FrozenClock
from imhost.kit.errors import InvalidInput
from imhost.support.sla import (
    DEFAULT_POLICIES,
    BusinessCalendar,
    SlaPolicy,
    SlaTimer,
    TimerState,
    Urgency,
    Window,
    add_business_time,
    business_time_between,
    format_weekly,
    parse_weekly,
    urgency,
)

BERLIN = ZoneInfo("Europe/Berlin")
H = timedelta(hours=1)


def berlin(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=BERLIN).astimezone(UTC)


OFFICE = BusinessCalendar(
    "Europe/Berlin",
    parse_weekly(
        dict.fromkeys(("monday", "tuesday", "wednesday", "thursday", "friday"), "09:00-17:00")
    ),
    frozenset({date(2026, 12, 25), date(2026, 12, 26), date(2027, 1, 1)}),
)


def test_a_target_inside_one_working_day() -> None:
    assert add_business_time(berlin(2026, 12, 1, 10), 3 * H, OFFICE) == berlin(2026, 12, 1, 13)


def test_the_night_does_not_count() -> None:
    # Tuesday 20:00: nothing until Wednesday 09:00, then one hour
    assert add_business_time(berlin(2026, 12, 1, 20), H, OFFICE) == berlin(2026, 12, 2, 10)
    # ending exactly at closing time stays on that day
    assert add_business_time(berlin(2026, 12, 1, 16), H, OFFICE) == berlin(2026, 12, 1, 17)


def test_the_weekend_does_not_count() -> None:
    # Friday 16:00 + 8 h: 1 h on Friday, 7 h on Monday
    assert add_business_time(berlin(2026, 12, 4, 16), 8 * H, OFFICE) == berlin(2026, 12, 7, 16)
    # Saturday counts from Monday morning
    assert add_business_time(berlin(2026, 12, 5, 11), 2 * H, OFFICE) == berlin(2026, 12, 7, 11)


def test_holidays_do_not_count() -> None:
    # Thursday 24 Dec 16:00: 1 h, then the 25th (holiday), weekend, Monday 28th 7 h
    assert add_business_time(berlin(2026, 12, 24, 16), 8 * H, OFFICE) == berlin(2026, 12, 28, 16)
    # over New Year's Day (Friday) to Monday 4 January
    assert add_business_time(berlin(2026, 12, 31, 17), H, OFFICE) == berlin(2027, 1, 4, 10)


def test_business_time_between_is_the_inverse() -> None:
    start = berlin(2026, 12, 4, 16)
    for hours in (1, 5, 8, 9, 17, 40, 41):
        due = add_business_time(start, hours * H, OFFICE)
        assert business_time_between(start, due, OFFICE) == hours * H
    assert business_time_between(
        berlin(2026, 12, 5, 0), berlin(2026, 12, 7, 0), OFFICE
    ) == timedelta(0)
    assert business_time_between(
        berlin(2026, 12, 7, 0), berlin(2026, 12, 5, 0), OFFICE
    ) == timedelta(0)


def test_dst_end_makes_a_wall_clock_day_25_hours_long() -> None:
    always = BusinessCalendar("Europe/Berlin", tuple((Window(0, 1440),) for _ in range(7)))
    # Sunday 25 October 2026 has 25 hours in Berlin
    assert business_time_between(berlin(2026, 10, 25, 0), berlin(2026, 10, 26, 0), always) == 25 * H
    # 24 business hours from Saturday noon end at Sunday 11:00 wall time (24 real hours)
    due = add_business_time(berlin(2026, 10, 24, 12), 24 * H, always)
    assert due == berlin(2026, 10, 24, 12) + 24 * H
    assert due.astimezone(BERLIN).hour == 11


def test_a_window_across_a_dst_change_counts_real_time() -> None:
    nights = BusinessCalendar("Europe/Berlin", parse_weekly({"sunday": "01:00-04:00"}))
    # autumn (clocks back at 03:00): 01:00-04:00 lasts 4 real hours
    autumn = business_time_between(berlin(2026, 10, 25, 0), berlin(2026, 10, 25, 5), nights)
    assert autumn == 4 * H
    # spring (clocks forward at 02:00): 01:00-04:00 lasts 2 real hours
    spring = business_time_between(berlin(2026, 3, 29, 0), berlin(2026, 3, 29, 5), nights)
    assert spring == 2 * H
    # a window that starts in the skipped hour (02:30) starts when clocks reach 03:00
    gap = BusinessCalendar("Europe/Berlin", parse_weekly({"sunday": "02:30-05:00"}))
    assert business_time_between(berlin(2026, 3, 29, 0), berlin(2026, 3, 29, 6), gap) == 2 * H


def test_office_hours_over_the_dst_weekend_keep_their_local_times() -> None:
    # Friday 23 October 16:00 (UTC+2) + 2 h: Monday 26 October 10:00 local (UTC+1)
    due = add_business_time(berlin(2026, 10, 23, 16), 2 * H, OFFICE)
    assert due == berlin(2026, 10, 26, 10)
    assert due.utcoffset() == timedelta(0)
    assert due == datetime(2026, 10, 26, 9, tzinfo=UTC)


def test_a_pause_while_waiting_on_the_customer_extends_the_due_time() -> None:
    clock = FrozenClock(berlin(2026, 11, 30, 9))  # Monday 09:00
    timer = SlaTimer(started_at=clock.now(), target=8 * H)
    assert timer.due_at(OFFICE) == berlin(2026, 11, 30, 17)
    clock.set(berlin(2026, 11, 30, 11))
    timer = timer.pause(clock.now())
    assert timer.state is TimerState.PAUSED
    assert urgency(timer.due_at(OFFICE), berlin(2026, 12, 1, 9), H, paused=True) is Urgency.OK
    clock.set(berlin(2026, 12, 2, 11))  # Wednesday 11:00: 16 business hours later
    timer = timer.resume(clock.now(), OFFICE)
    assert timer.state is TimerState.RUNNING
    assert timer.paused_for == 16 * H
    assert timer.due_at(OFFICE) == berlin(2026, 12, 2, 17)
    assert timer.used(clock.now(), OFFICE) == 2 * H
    # a second pause over the weekend only costs nothing
    timer = timer.pause(berlin(2026, 12, 4, 18)).resume(berlin(2026, 12, 7, 8), OFFICE)
    assert timer.paused_for == 16 * H
    # pausing twice or resuming a running timer changes nothing
    assert timer.resume(berlin(2026, 12, 8, 9), OFFICE) == timer
    paused = timer.pause(berlin(2026, 12, 3, 9))
    assert paused.pause(berlin(2026, 12, 3, 10)) == paused


def test_meeting_a_target_stops_the_timer() -> None:
    timer = SlaTimer(started_at=berlin(2026, 11, 30, 9), target=8 * H)
    met = timer.meet(berlin(2026, 11, 30, 10))
    assert met.state is TimerState.MET
    assert met.used(berlin(2026, 12, 30, 10), OFFICE) == H
    assert met.meet(berlin(2026, 11, 30, 12)) == met
    assert met.pause(berlin(2026, 11, 30, 12)) == met


def test_urgency_warns_before_and_alerts_at_the_breach() -> None:
    due = berlin(2026, 12, 1, 17)
    assert urgency(due, due - 2 * H, H) is Urgency.OK
    assert urgency(due, due - H, H) is Urgency.WARNING
    assert urgency(due, due - timedelta(minutes=1), H) is Urgency.WARNING
    assert urgency(due, due, H) is Urgency.BREACHED


def test_default_policies_and_their_checks() -> None:
    assert DEFAULT_POLICIES["basic"].first_response == 8 * H
    assert DEFAULT_POLICIES["top"].first_response == H
    with pytest.raises(InvalidInput):
        SlaPolicy("x", timedelta(0), H)
    with pytest.raises(InvalidInput):
        SlaPolicy("x", 2 * H, H)


def test_calendar_settings_are_validated_with_plain_messages() -> None:
    with pytest.raises(InvalidInput, match="time zone"):
        BusinessCalendar("Mars/Olympus", OFFICE.weekly)
    with pytest.raises(InvalidInput, match="at least one day"):
        BusinessCalendar("UTC", tuple(() for _ in range(7)))
    with pytest.raises(InvalidInput, match="overlap"):
        BusinessCalendar("UTC", parse_weekly({"monday": "09:00-12:00, 11:00-13:00"}))
    with pytest.raises(InvalidInput, match="09:00-17:00"):
        parse_weekly({"monday": "nine to five"})
    with pytest.raises(InvalidInput):
        parse_weekly({"monday": "17:00-09:00"})
    with pytest.raises(InvalidInput, match="Unknown day"):
        parse_weekly({"funday": "09:00-10:00"})
    split = parse_weekly({"monday": "13:00-17:00, 08:00-12:00", "sunday": "00:00-24:00"})
    assert format_weekly(split)["monday"] == "08:00-12:00, 13:00-17:00"
    assert format_weekly(split)["sunday"] == "00:00-24:00"
    assert format_weekly(split)["tuesday"] == ""


def test_split_days_and_is_open() -> None:
    lunch = BusinessCalendar("Europe/Berlin", parse_weekly({"monday": "08:00-12:00, 13:00-17:00"}))
    assert add_business_time(berlin(2026, 11, 30, 11), 2 * H, lunch) == berlin(2026, 11, 30, 14)
    assert lunch.is_open(berlin(2026, 11, 30, 8))
    assert not lunch.is_open(berlin(2026, 11, 30, 12, 30))
    assert not lunch.is_open(berlin(2026, 11, 30, 17))
