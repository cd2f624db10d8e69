"""Ingestion specifications: each record once, bad records refused with their reason."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imhost.kit.clock import FrozenClock, utc
from imhost.metering import aggregate, closing, ingestion
from imhost.metering.ingestion import EngineUsage, UsageRejected
from imhost.metering.models import LateUsagePolicy, UsageRecord
from tests.metering.factories import make_org, usage

JAN = utc(2026, 1, 1)
FEB = utc(2026, 2, 1)


def count(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(UsageRecord)) or 0


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(utc(2026, 1, 15, 12))


def test_a_record_sent_twice_counts_once(db: Session, clock: FrozenClock) -> None:
    org = make_org(db, clock)
    rec = usage(org, "messages", utc(2026, 1, 15, 11, 0), 10, key="a")
    first = ingestion.ingest(db, clock, [rec], atomic=True)
    second = ingestion.ingest(db, clock, [rec], atomic=True)
    assert (first.accepted, first.duplicates) == (1, 0)
    assert (second.accepted, second.duplicates) == (0, 1)
    assert count(db) == 1
    assert aggregate.billable_quantities(db, org.id, JAN, FEB)["messages"] == 10


def test_a_repeated_key_within_one_batch_counts_once(db: Session, clock: FrozenClock) -> None:
    org = make_org(db, clock)
    rec = usage(org, "messages", utc(2026, 1, 15, 11), 10, key="a")
    result = ingestion.ingest(db, clock, [rec, rec], atomic=True)
    assert (result.accepted, result.duplicates, result.rejected) == (1, 1, [])


def test_the_same_key_with_other_content_is_refused_as_a_conflict(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    ingestion.ingest(
        db, clock, [usage(org, "messages", utc(2026, 1, 15, 11), 10, key="a")], atomic=True
    )
    changed = usage(org, "messages", utc(2026, 1, 15, 11), 11, key="a")
    result = ingestion.ingest(db, clock, [changed], atomic=False)
    assert result.accepted == 0
    assert [(r.index, r.key) for r in result.rejected] == [(0, "a")]
    assert "conflict" in result.rejected[0].reason
    assert aggregate.billable_quantities(db, org.id, JAN, FEB)["messages"] == 10


def test_keys_are_unique_per_organization_not_across(db: Session, clock: FrozenClock) -> None:
    a, b = make_org(db, clock, "a"), make_org(db, clock, "b")
    when = utc(2026, 1, 15, 11)
    result = ingestion.ingest(
        db,
        clock,
        [usage(a, "messages", when, 1, key="k"), usage(b, "messages", when, 2, key="k")],
        atomic=True,
    )
    assert result.accepted == 2


@pytest.mark.parametrize(
    ("metric", "quantity", "bucket", "subject", "reason"),
    [
        ("pigeons", "1", utc(2026, 1, 15, 11), None, "unknown metric 'pigeons'"),
        ("messages", "-1", utc(2026, 1, 15, 11), None, "cannot be negative"),
        ("messages", "NaN", utc(2026, 1, 15, 11), None, "finite"),
        ("messages", "Infinity", utc(2026, 1, 15, 11), None, "finite"),
        ("messages", "1.5", utc(2026, 1, 15, 11), None, "whole units"),
        ("messages", "1", utc(2026, 1, 15, 12, 6), None, "in the future"),
        ("active_users", "1", utc(2026, 1, 15, 11), None, "subject"),
        ("messages", "1e25", utc(2026, 1, 15, 11), None, "too large"),
    ],
)
def test_bad_records_are_refused_with_a_reason(
    db: Session,
    clock: FrozenClock,
    metric: str,
    quantity: str,
    bucket: object,
    subject: str | None,
    reason: str,
) -> None:
    org = make_org(db, clock)
    bad = usage(org, metric, bucket, Decimal(quantity), subject=subject)  # type: ignore[arg-type]
    result = ingestion.ingest(db, clock, [bad], atomic=False)
    assert result.accepted == 0
    assert len(result.rejected) == 1
    assert reason in result.rejected[0].reason
    assert count(db) == 0


def test_a_naive_timestamp_is_refused(db: Session, clock: FrozenClock) -> None:
    org = make_org(db, clock)
    naive = usage(org, "messages", utc(2026, 1, 15, 11).replace(tzinfo=None), 1)
    result = ingestion.ingest(db, clock, [naive], atomic=False)
    assert "time zone" in result.rejected[0].reason


def test_a_bucket_up_to_five_minutes_ahead_is_accepted_for_clock_skew(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    result = ingestion.ingest(
        db, clock, [usage(org, "messages", utc(2026, 1, 15, 12, 5), 1)], atomic=True
    )
    assert result.accepted == 1


def test_fractional_quantities_are_kept_exactly_where_the_metric_allows(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    rec = usage(org, "traffic_gb", utc(2026, 1, 15, 11), "0.123456789012")
    ingestion.ingest(db, clock, [rec], atomic=True)
    db.expire_all()
    stored = db.scalars(select(UsageRecord)).one()
    assert stored.quantity == Decimal("0.123456789012")


def test_an_unknown_organization_is_refused(db: Session, clock: FrozenClock) -> None:
    result = ingestion.ingest(
        db, clock, [usage("nope", "messages", utc(2026, 1, 15, 11), 1)], atomic=False
    )
    assert "unknown organization" in result.rejected[0].reason


def test_atomic_batches_write_nothing_and_list_every_refusal(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    when = utc(2026, 1, 15, 11)
    batch = [
        usage(org, "messages", when, 1),
        usage(org, "pigeons", when, 1),
        usage(org, "messages", when, 2),
        usage(org, "messages", when, -3),
    ]
    with pytest.raises(UsageRejected) as err:
        ingestion.ingest(db, clock, batch, atomic=True)
    assert [r.index for r in err.value.result.rejected] == [1, 3]
    assert err.value.status == 422
    assert [r["index"] for r in err.value.extra["rejections"]] == [1, 3]
    assert count(db) == 0


def test_non_atomic_batches_keep_the_valid_records(db: Session, clock: FrozenClock) -> None:
    org = make_org(db, clock)
    when = utc(2026, 1, 15, 11)
    batch = [
        usage(org, "messages", when, 1),
        usage(org, "pigeons", when, 1),
        usage(org, "messages", when, 2),
    ]
    result = ingestion.ingest(db, clock, batch, atomic=False)
    assert result.accepted == 2
    assert [r.index for r in result.rejected] == [1]
    assert aggregate.billable_quantities(db, org.id, JAN, FEB)["messages"] == 3


def test_a_customer_route_cannot_write_usage_for_another_organization(
    db: Session, clock: FrozenClock
) -> None:
    mine, theirs = make_org(db, clock, "mine"), make_org(db, clock, "theirs")
    rec = usage(theirs, "messages", utc(2026, 1, 15, 11), 5)
    result = ingestion.ingest(db, clock, [rec], atomic=False, organization_id=mine.id)
    assert "does not match" in result.rejected[0].reason
    assert count(db) == 0


# --- closed periods -----------------------------------------------------------------------


def test_usage_for_an_invoiced_period_is_refused_by_default(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    clock.set(utc(2026, 2, 3))
    closing.close_period(db, org.id, JAN, FEB, clock)
    late = usage(org, "messages", utc(2026, 1, 31, 23, 59), 7)
    result = ingestion.ingest(db, clock, [late], atomic=False)
    assert "invoiced (closed)" in result.rejected[0].reason
    assert count(db) == 0
    # The engine's direct path obeys the same rule.
    direct = ingestion.ingest_engine_batch(db, [late], clock=clock)
    assert direct.accepted == 0 and len(direct.rejected) == 1


def test_late_usage_goes_to_the_next_open_period_when_the_provider_allows(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    clock.set(utc(2026, 2, 3))
    closing.set_late_usage_policy(db, clock, LateUsagePolicy.NEXT_INVOICE)
    closing.close_period(db, org.id, JAN, FEB, clock)
    late_bucket = utc(2026, 1, 31, 23, 59)
    result = ingestion.ingest(db, clock, [usage(org, "messages", late_bucket, 7)], atomic=True)
    assert (result.accepted, result.corrected) == (1, 1)
    stored = db.scalars(select(UsageRecord)).one()
    assert stored.bucket_start == FEB
    assert stored.original_bucket_start == late_bucket
    assert aggregate.billable_quantities(db, org.id, JAN, FEB)["messages"] == 0
    assert aggregate.billable_quantities(db, org.id, FEB, utc(2026, 3, 1))["messages"] == 7


def test_a_late_correction_sent_again_is_still_a_duplicate(db: Session, clock: FrozenClock) -> None:
    org = make_org(db, clock)
    clock.set(utc(2026, 2, 3))
    closing.set_late_usage_policy(db, clock, "next_invoice")
    closing.close_period(db, org.id, JAN, FEB, clock)
    late = usage(org, "messages", utc(2026, 1, 31, 23, 59), 7, key="late")
    ingestion.ingest(db, clock, [late], atomic=True)
    again = ingestion.ingest(db, clock, [late], atomic=True)
    assert (again.accepted, again.duplicates) == (0, 1)


def test_a_late_gauge_sample_is_refused_even_when_late_usage_is_allowed(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    clock.set(utc(2026, 2, 3))
    closing.set_late_usage_policy(db, clock, "next_invoice")
    closing.close_period(db, org.id, JAN, FEB, clock)
    gauge = usage(org, "offline_storage_bytes", utc(2026, 1, 20), 10**9)
    result = ingestion.ingest(db, clock, [gauge], atomic=False)
    assert "gauge" in result.rejected[0].reason


def test_closing_a_period_is_idempotent_and_a_different_end_is_a_conflict(
    db: Session, clock: FrozenClock
) -> None:
    from imhost.kit.errors import Conflict, InvalidInput

    org = make_org(db, clock)
    first = closing.close_period(db, org.id, JAN, FEB, clock)
    assert closing.close_period(db, org.id, JAN, FEB, clock).id == first.id
    with pytest.raises(Conflict):
        closing.close_period(db, org.id, JAN, utc(2026, 2, 2), clock)
    with pytest.raises(InvalidInput):
        closing.set_late_usage_policy(db, clock, "whenever")


# --- the engine's direct path ---------------------------------------------------------------


def test_the_direct_path_stores_each_record_once(db: Session, clock: FrozenClock) -> None:
    org = make_org(db, clock)
    records = [
        EngineUsage(org.id, "messages", utc(2026, 1, 15, 11, i), 3, f"n1:{i}", service_id="svc")
        for i in range(50)
    ]
    first = ingestion.ingest_engine_batch(db, records, clock=clock)
    again = ingestion.ingest_engine_batch(db, records[:10], clock=clock)
    assert first.accepted == 50
    assert (again.accepted, again.duplicates) == (0, 10)
    assert aggregate.billable_quantities(db, org.id, JAN, FEB)["messages"] == 150


def test_the_direct_path_drops_malformed_records_with_a_reason(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    records = [
        EngineUsage(org.id, "pigeons", utc(2026, 1, 15, 11), 3, "x"),
        EngineUsage(org.id, "messages", utc(2026, 1, 15, 11), -3, "y"),
        EngineUsage(org.id, "messages", utc(2026, 1, 15, 11), 3, "z"),
    ]
    result = ingestion.ingest_engine_batch(db, records, clock=clock)
    assert result.accepted == 1
    assert [r.index for r in result.rejected] == [0, 1]


def test_the_direct_path_refuses_non_finite_and_fractional_counts_without_raising(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    when = utc(2026, 1, 15, 11)
    records = [
        EngineUsage(org.id, "messages", when, Decimal("NaN"), "nan"),
        EngineUsage(org.id, "messages", when, Decimal("Infinity"), "inf"),
        EngineUsage(org.id, "messages", when, Decimal("1.5"), "frac"),
        EngineUsage(org.id, "traffic_gb", when, Decimal("1.5"), "gb"),
    ]
    result = ingestion.ingest_engine_batch(db, records, clock=clock)
    assert [r.key for r in result.rejected] == ["nan", "inf", "frac"]
    assert result.accepted == 1


def test_the_direct_path_stores_over_long_keys_and_subjects_as_their_digest(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    when = utc(2026, 1, 15, 11)
    long_jid = "a" * 1000 + "@acme.example"
    records = [
        EngineUsage(org.id, "active_users", when, 1, "k" * 300, subject=long_jid),
        EngineUsage(org.id, "active_users", when, 1, "k" * 300, subject=long_jid),
        EngineUsage(org.id, "active_users", when, 1, "short", subject="b" * 1000),
    ]
    result = ingestion.ingest_engine_batch(db, records, clock=clock)
    assert (result.accepted, result.duplicates) == (2, 1)
    stored = db.scalars(select(UsageRecord.subject)).all()
    assert all(s is not None and s.startswith("sha256:") for s in stored)
    assert aggregate.billable_quantities(db, org.id, JAN, FEB)["monthly_active_users"] == 2


def test_the_engine_path_refuses_records_of_an_unknown_organization(
    db: Session, clock: FrozenClock
) -> None:
    """usage_records has no foreign key: the direct path checks organizations per batch."""
    org = make_org(db, clock)
    when = utc(2026, 1, 15, 11)
    result = ingestion.ingest_engine_batch(
        db,
        [
            EngineUsage(org.id, "messages", when, 3, "ok-1"),
            EngineUsage("no-such-org", "messages", when, 4, "ghost-1"),
        ],
        clock=clock,
    )
    assert result.accepted == 1
    assert [(r.index, r.key) for r in result.rejected] == [(1, "ghost-1")]
    assert "unknown organization" in result.rejected[0].reason
    assert count(db) == 1
