"""Aggregation specifications: each billable metric from its source records."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

import pytest
from sqlalchemy.orm import Session

from imhost.kit.clock import FrozenClock, utc
from imhost.kit.errors import InvalidInput
from imhost.metering import aggregate, ingestion
from imhost.metering.metrics import BILLABLE_CODES
from tests.metering.factories import make_org, usage

JAN = utc(2026, 1, 1)
FEB = utc(2026, 2, 1)
GB = 10**9


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(utc(2026, 2, 1, 0, 1))


def put(db: Session, clock: FrozenClock, *records: object) -> None:
    result = ingestion.ingest(db, clock, list(records), atomic=True)  # type: ignore[arg-type]
    assert result.accepted == len(records)


def test_without_usage_every_billable_metric_is_zero(db: Session, clock: FrozenClock) -> None:
    org = make_org(db, clock)
    quantities = aggregate.billable_quantities(db, org.id, JAN, FEB)
    assert set(quantities) == set(BILLABLE_CODES)
    assert all(q == 0 for q in quantities.values())


def test_messages_are_summed_over_buckets_from_the_start_up_to_not_including_the_end(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    put(
        db,
        clock,
        usage(org, "messages", utc(2025, 12, 31, 23, 59), 1000),  # previous period
        usage(org, "messages", JAN, 5),  # first bucket: included
        usage(org, "messages", utc(2026, 1, 15, 10), 7),
        usage(org, "messages", utc(2026, 1, 15, 10), 8, service_id="svc-2"),
        usage(org, "messages", utc(2026, 1, 31, 23, 59), 11),
        usage(org, "messages", FEB, 2000),  # next period
        usage(org, "stanzas_message", utc(2026, 1, 15, 10), 99),  # not billed as messages
    )
    assert aggregate.billable_quantities(db, org.id, JAN, FEB)["messages"] == 5 + 7 + 8 + 11


def test_traffic_is_bytes_in_plus_bytes_out_in_decimal_gigabytes(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    put(
        db,
        clock,
        usage(org, "bytes_in", utc(2026, 1, 2), 1_500_000_000),
        usage(org, "bytes_out", utc(2026, 1, 3), 500_000_001),
        usage(org, "traffic_gb", utc(2026, 1, 4), "0.25"),  # sent as GB by an external engine
    )
    traffic = aggregate.billable_quantities(db, org.id, JAN, FEB)["traffic_gb"]
    assert traffic == Decimal(2_000_000_001) / GB + Decimal("0.25")
    assert traffic == Decimal("2.250000001")


def test_peak_connections_adds_services_per_minute_and_takes_the_highest_minute(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    minute = utc(2026, 1, 10, 9, 30)
    put(
        db,
        clock,
        # Two flushes of the same minute from one service: the running peak, 3 then 8.
        usage(org, "connections_peak", minute, 3, service_id="a"),
        usage(org, "connections_peak", minute, 8, service_id="a"),
        usage(org, "connections_peak", minute, 5, service_id="b"),
        usage(org, "connections_peak", utc(2026, 1, 11), 12, service_id="a"),
        usage(org, "connections_peak", utc(2026, 2, 1), 500, service_id="a"),  # next period
    )
    assert aggregate.billable_quantities(db, org.id, JAN, FEB)["peak_connections"] == 13


def test_monthly_active_users_counts_distinct_subjects_in_the_period(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    put(
        db,
        clock,
        usage(org, "active_users", utc(2026, 1, 2), 1, subject="ann@acme.example"),
        usage(org, "active_users", utc(2026, 1, 9), 1, subject="ann@acme.example"),
        usage(org, "active_users", utc(2026, 1, 9), 1, subject="bob@acme.example", service_id="b"),
        usage(org, "monthly_active_users", utc(2026, 1, 20), 1, subject="cy@acme.example"),
        usage(org, "active_users", utc(2025, 12, 30), 1, subject="dee@acme.example"),
    )
    assert aggregate.billable_quantities(db, org.id, JAN, FEB)["monthly_active_users"] == 3


def _gb(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.000000001"), rounding=ROUND_HALF_UP)


def test_storage_is_the_time_weighted_average_of_the_gauges_each_holding_until_its_next_sample(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    put(
        db,
        clock,
        # Before the period: the level at its start is this last sample (10 GB).
        usage(org, "offline_storage_bytes", utc(2025, 12, 20), 4 * GB),
        usage(org, "offline_storage_bytes", utc(2025, 12, 25), 10 * GB),
        # Changes mid-period: 10 GB for 15 days, then 20 GB for 16 days.
        usage(org, "offline_storage_bytes", utc(2026, 1, 16), 20 * GB),
        # Another gauge starts on the 11th: 3.1 GB for 21 days.
        usage(org, "private_storage_bytes", utc(2026, 1, 11), 3_100_000_000),
        # After the period: ignored.
        usage(org, "offline_storage_bytes", utc(2026, 2, 1), 999 * GB),
    )
    expected = _gb((Decimal(10) * 15 + Decimal(20) * 16 + Decimal("3.1") * 21) / 31)
    storage = aggregate.billable_quantities(db, org.id, JAN, FEB)["storage_gb"]
    assert storage == expected
    assert storage == Decimal("17.261290323")


def test_storage_gauges_of_several_services_add_up(db: Session, clock: FrozenClock) -> None:
    org = make_org(db, clock)
    put(
        db,
        clock,
        usage(org, "offline_storage_bytes", JAN, 2 * GB, service_id="a"),
        usage(org, "offline_storage_bytes", JAN, 3 * GB, service_id="b"),
        usage(org, "storage_gb", JAN, "1.5", service_id="c"),
    )
    assert aggregate.billable_quantities(db, org.id, JAN, FEB)["storage_gb"] == Decimal("6.5")


def test_the_message_archive_counts_as_storage(db: Session, clock: FrozenClock) -> None:
    org = make_org(db, clock)
    put(
        db,
        clock,
        usage(org, "offline_storage_bytes", JAN, 1 * GB),
        usage(org, "archive_storage_bytes", JAN, 2 * GB),
        usage(org, "archive_storage_bytes", utc(2026, 1, 16), 4 * GB),  # 15 days at 2 GB
    )
    expected = _gb((Decimal(1) * 31 + Decimal(2) * 15 + Decimal(4) * 16) / 31)
    assert aggregate.billable_quantities(db, org.id, JAN, FEB)["storage_gb"] == expected


def test_usage_to_date_averages_storage_over_the_elapsed_time_only(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    clock_mid = FrozenClock(utc(2026, 1, 11))
    put(
        db,
        clock_mid,
        usage(org, "offline_storage_bytes", JAN, 10 * GB),
        usage(org, "offline_storage_bytes", utc(2026, 1, 6), 20 * GB),
        usage(org, "messages", utc(2026, 1, 5), 40),
        usage(org, "messages", utc(2026, 1, 11, 0, 3), 2),  # 3 minutes ahead: clock skew
    )
    to_date = aggregate.usage_to_date(db, org.id, JAN, utc(2026, 1, 11))
    assert to_date["storage_gb"] == 15  # 5 days at 10, 5 days at 20
    assert to_date["messages"] == 42
    assert aggregate.usage_to_date(db, org.id, JAN, JAN)["messages"] == 0


def test_usage_records_behind_a_billable_metric_can_be_listed_page_by_page(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    put(
        db,
        clock,
        usage(org, "bytes_in", utc(2026, 1, 2), 100),
        usage(org, "bytes_out", utc(2026, 1, 3), 200),
        usage(org, "traffic_gb", utc(2026, 1, 4), "1"),
        usage(org, "messages", utc(2026, 1, 5), 1),
    )
    page1 = aggregate.usage_records_for(db, org.id, "traffic_gb", JAN, FEB, limit=2, offset=0)
    page2 = aggregate.usage_records_for(db, org.id, "traffic_gb", JAN, FEB, limit=2, offset=2)
    assert [r.metric for r in page1 + page2] == ["bytes_in", "bytes_out", "traffic_gb"]
    with pytest.raises(InvalidInput):
        aggregate.usage_records_for(db, org.id, "pigeons", JAN, FEB)
    with pytest.raises(InvalidInput):
        aggregate.usage_records_for(db, org.id, "messages", JAN, FEB, limit=5000)


def test_an_empty_or_reversed_period_is_refused(db: Session, clock: FrozenClock) -> None:
    org = make_org(db, clock)
    with pytest.raises(InvalidInput):
        aggregate.billable_quantities(db, org.id, FEB, JAN)


def test_one_organizations_usage_never_shows_in_anothers(db: Session, clock: FrozenClock) -> None:
    a, b = make_org(db, clock, "a"), make_org(db, clock, "b")
    when: datetime = utc(2026, 1, 9)
    put(db, clock, usage(a, "messages", when, 5), usage(a, "active_users", when, 1, subject="x"))
    assert all(q == 0 for q in aggregate.billable_quantities(db, b.id, JAN, FEB).values())


def test_repeated_and_same_minute_gauge_reports_give_the_right_average(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    records = [
        usage(org, "offline_storage_bytes", JAN, 5 * GB),
        # Two flushes of one minute: the higher report is the level (7 GB).
        usage(org, "offline_storage_bytes", utc(2026, 1, 2), 5 * GB),
        usage(org, "offline_storage_bytes", utc(2026, 1, 2), 7 * GB),
        # Back to 5 GB, then the same level reported every day (no change).
        *[usage(org, "offline_storage_bytes", utc(2026, 1, day), 5 * GB) for day in range(3, 32)],
    ]
    put(db, clock, *records)
    expected = _gb((Decimal(5) * 1 + Decimal(7) * 1 + Decimal(5) * 29) / 31)
    assert aggregate.billable_quantities(db, org.id, JAN, FEB)["storage_gb"] == expected


def test_group_chat_messages_and_their_deliveries_are_summed_apart(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    put(
        db,
        clock,
        usage(org, "room_messages", utc(2026, 1, 10, 9), 3),
        usage(org, "room_deliveries", utc(2026, 1, 10, 9), 90),
        usage(org, "room_messages", utc(2026, 1, 20, 9), 2),
        usage(org, "room_deliveries", utc(2026, 1, 20, 9), 8),
        usage(org, "room_messages", FEB, 100),  # next period
    )
    quantities = aggregate.billable_quantities(db, org.id, JAN, FEB)
    assert quantities["room_messages"] == 5
    assert quantities["room_deliveries"] == 98
    assert quantities["messages"] == 0  # the engine counts them in "messages" itself
