"""Hourly rollups: kept exact on every ingestion path, and reads through them equal the records.

The reference is computed in Python from the stored records themselves, so whatever the
ingestion did (duplicates, partial duplicates, corrections, several services), the rollups
and the aggregated quantities must agree with it.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost.kit.clock import FrozenClock, utc
from imhost.metering import aggregate, closing, ingestion, rollups
from imhost.metering.ingestion import EngineUsage
from imhost.metering.models import LateUsagePolicy, UsageRecord, UsageRollup
from tests.metering.factories import make_org, usage

JAN = utc(2026, 1, 1)
FEB = utc(2026, 2, 1)
NOW = utc(2026, 1, 31, 23, 59)
SUMMED = ("messages", "bytes_in", "bytes_out")


def stored_rollups(
    db: Session,
) -> dict[tuple[str, str, datetime, str], tuple[Decimal, Decimal, int]]:
    return {
        (r.organization_id, r.metric, r.hour_start, r.service_key): (
            Decimal(r.quantity),
            Decimal(r.peak),
            r.records,
        )
        for r in db.scalars(select(UsageRollup))
    }


def expected_rollups(
    db: Session,
) -> dict[tuple[str, str, datetime, str], tuple[Decimal, Decimal, int]]:
    groups: dict[tuple[str, str, datetime, str], list[Decimal]] = defaultdict(list)
    for r in db.scalars(select(UsageRecord)):
        key = (r.organization_id, r.metric, rollups.hour_floor(r.bucket_start), r.service_id or "")
        groups[key].append(Decimal(r.quantity))
    return {k: (sum(v, Decimal(0)), max(v), len(v)) for k, v in groups.items()}


def reference(db: Session, org_id: str, start: datetime, end: datetime) -> dict[str, Decimal]:
    """Sums, the peak over services and distinct users, straight from the records."""
    sums: dict[str, Decimal] = defaultdict(Decimal)
    peaks: dict[tuple[datetime, str | None], Decimal] = {}
    users: set[str] = set()
    for r in db.scalars(
        select(UsageRecord).where(
            UsageRecord.organization_id == org_id,
            UsageRecord.bucket_start >= start,
            UsageRecord.bucket_start < end,
        )
    ):
        q = Decimal(r.quantity)
        if r.metric in SUMMED:
            sums[r.metric] += q
        elif r.metric == "connections_peak":
            key = (r.bucket_start, r.service_id)
            peaks[key] = max(peaks.get(key, q), q)
        elif r.metric == "active_users" and r.subject:
            users.add(r.subject)
    per_minute: dict[datetime, Decimal] = defaultdict(Decimal)
    for (bucket, _), q in peaks.items():
        per_minute[bucket] += q
    return {
        "messages": sums["messages"],
        "traffic_gb": ((sums["bytes_in"] + sums["bytes_out"]) / 10**9).normalize()
        if sums["bytes_in"] + sums["bytes_out"]
        else Decimal(0),
        "peak_connections": max(per_minute.values(), default=Decimal(0)),
        "monthly_active_users": Decimal(len(users)),
    }


def random_records(
    rng: random.Random, org_ids: list[str], n: int, services: tuple[str, ...]
) -> list[EngineUsage]:
    out = []
    for i in range(n):
        metric = rng.choice((*SUMMED, "connections_peak", "active_users"))
        bucket = JAN + timedelta(minutes=rng.randrange(0, 31 * 24 * 60))
        subject = f"u{rng.randrange(40)}@example.com" if metric == "active_users" else None
        out.append(
            EngineUsage(
                rng.choice(org_ids),
                metric,
                bucket,
                rng.randrange(0, 5000) if metric != "active_users" else 1,
                f"key-{i}",
                service_id=rng.choice(services),
                subject=subject,
            )
        )
    return out


def check_reads(db: Session, rng: random.Random, org_ids: list[str]) -> None:
    assert stored_rollups(db) == expected_rollups(db)
    requests = []
    for _ in range(12):
        start = JAN + timedelta(minutes=rng.randrange(0, 20 * 24 * 60), seconds=rng.randrange(60))
        end = start + timedelta(minutes=rng.randrange(1, 12 * 24 * 60))
        requests.append((rng.choice(org_ids), start, end))
    requests.append((org_ids[0], JAN, FEB))  # whole hours only
    requests.append((org_ids[0], utc(2026, 1, 3, 10, 15), utc(2026, 1, 3, 10, 45)))  # no hour
    answers = aggregate.billable_quantities_many(db, requests)
    for (org_id, start, end), answer in zip(requests, answers, strict=True):
        ref = reference(db, org_id, start, end)
        for metric, value in ref.items():
            assert answer[metric] == value, (metric, org_id, start, end)
        assert answer == aggregate.billable_quantities(db, org_id, start, end)


@pytest.mark.parametrize("services", [("svc-1",), ("svc-1", "svc-2", None)])
def test_the_engine_path_keeps_rollups_exact_through_duplicates(
    db: Session, clock: FrozenClock, services: tuple[str, ...]
) -> None:
    clock = FrozenClock(NOW)
    rng = random.Random(7)
    orgs = [make_org(db, clock, f"org{i}").id for i in range(3)]
    records = random_records(rng, orgs, 3000, services)
    ingestion.ingest_engine_batch(db, records[:1000], clock=clock)
    # A resent flush (all duplicates), then one that is half old, half new.
    again = ingestion.ingest_engine_batch(db, records[:1000], clock=clock)
    assert (again.accepted, again.duplicates) == (0, 1000)
    mixed = ingestion.ingest_engine_batch(db, records[500:2000], clock=clock)
    assert (mixed.accepted, mixed.duplicates) == (1000, 500)
    ingestion.ingest_engine_batch(db, records[2000:], clock=clock)
    db.flush()
    check_reads(db, rng, orgs)


def test_the_api_path_keeps_rollups_exact(db: Session, clock: FrozenClock) -> None:
    clock = FrozenClock(NOW)
    rng = random.Random(11)
    orgs = [make_org(db, clock, f"org{i}").id for i in range(2)]
    raw = random_records(rng, orgs, 800, ("svc-1",))
    records = [
        usage(
            r.organization_id,
            r.metric,
            r.bucket_start,
            r.quantity,
            key=r.idempotency_key,
            subject=r.subject,
            service_id=r.service_id,
        )
        for r in raw
    ]
    ingestion.ingest(db, clock, records[:500], atomic=True)
    result = ingestion.ingest(db, clock, records[300:], atomic=True)
    assert (result.accepted, result.duplicates) == (300, 200)
    db.flush()
    check_reads(db, rng, orgs)


def test_a_key_reused_for_another_bucket_is_another_record(db: Session, clock: FrozenClock) -> None:
    clock = FrozenClock(NOW)
    org = make_org(db, clock)
    first = usage(org, "messages", utc(2026, 1, 10, 9), 5, key="flush-1")
    later = usage(org, "messages", utc(2026, 1, 11, 9), 7, key="flush-1")
    result = ingestion.ingest(db, clock, [first, later, first], atomic=True)
    assert (result.accepted, result.duplicates) == (2, 1)
    assert aggregate.billable_quantities(db, org.id, JAN, FEB)["messages"] == 12


def test_a_correction_sent_again_after_another_close_counts_once(
    db: Session, clock: FrozenClock
) -> None:
    clock = FrozenClock(utc(2026, 3, 10))
    org = make_org(db, clock)
    closing.set_late_usage_policy(db, clock, LateUsagePolicy.NEXT_INVOICE)
    closing.close_period(db, org.id, JAN, FEB, clock)
    late = usage(org, "messages", utc(2026, 1, 20), 4, key="late-1")
    first = ingestion.ingest(db, clock, [late], atomic=True)
    assert (first.accepted, first.corrected) == (1, 1)
    closing.close_period(db, org.id, FEB, utc(2026, 3, 1), clock)
    again = ingestion.ingest(db, clock, [late], atomic=True)
    assert (again.accepted, again.duplicates) == (0, 1)
    engine_again = ingestion.ingest_engine_batch(
        db,
        [EngineUsage(org.id, "messages", utc(2026, 1, 20), 4, "late-1", service_id="svc-1")],
        clock=clock,
    )
    assert engine_again.accepted == 0
    db.flush()
    assert stored_rollups(db) == expected_rollups(db)
    assert aggregate.billable_quantities(db, org.id, FEB, utc(2026, 3, 1))["messages"] == 4


def test_a_usage_to_date_read_uses_the_rollups_for_whole_hours(
    db: Session, clock: FrozenClock
) -> None:
    """A record's quantity changed behind the rollup's back shows that whole hours come from it."""
    clock = FrozenClock(NOW)
    org = make_org(db, clock)
    ingestion.ingest(
        db,
        clock,
        [
            usage(org, "messages", utc(2026, 1, 5, 10, 0), 10),
            usage(org, "messages", utc(2026, 1, 5, 12, 30), 1),
        ],
        atomic=True,
    )
    db.flush()
    assert aggregate.usage_to_date(db, org.id, JAN, NOW)["messages"] == 11
    for rollup in db.scalars(select(UsageRollup).where(UsageRollup.metric == "messages")):
        rollup.quantity = Decimal(rollup.quantity) * 100
    db.flush()
    # The hour of 10:00 lies whole inside the period; 12:30 too.
    assert aggregate.usage_to_date(db, org.id, JAN, NOW)["messages"] == 1100
    # A period starting at 12:10 reads 12:10-13:00 from the records: 1, not 100.
    assert aggregate.usage_to_date(db, org.id, utc(2026, 1, 5, 12, 10), NOW)["messages"] == 1


# --- storage gauges -------------------------------------------------------------------------


def gauge_oracle(db: Session, org_id: str, start: datetime, as_of: datetime) -> Decimal:
    """Integral of the stored GB over [start, as_of] in GB x s, straight from the records."""
    per_series: dict[tuple[str | None, str], dict[datetime, Decimal]] = defaultdict(dict)
    for r in db.scalars(
        select(UsageRecord).where(
            UsageRecord.organization_id == org_id,
            UsageRecord.metric.in_(("offline_storage_bytes", "private_storage_bytes")),
        )
    ):
        gb = Decimal(r.quantity) / 10**9
        series = per_series[(r.service_id, r.metric)]
        series[r.bucket_start] = max(series.get(r.bucket_start, gb), gb)
    total = Decimal(0)
    for samples in per_series.values():
        before = [t for t in samples if t < start]
        level = samples[max(before)] if before else Decimal(0)
        t = start
        for at in sorted(x for x in samples if start <= x < as_of):
            total += level * Decimal((at - t) // timedelta(microseconds=1)) / 10**6
            level, t = samples[at], at
        total += level * Decimal((as_of - t) // timedelta(microseconds=1)) / 10**6
    return total


def test_storage_averages_through_hour_summaries_equal_the_samples(
    db: Session, clock: FrozenClock
) -> None:
    from imhost.metering.aggregate import Request, aggregate

    clock = FrozenClock(NOW)
    rng = random.Random(3)
    orgs = [make_org(db, clock, f"org{i}").id for i in range(2)]
    records = []
    for i in range(1500):
        metric = rng.choice(("offline_storage_bytes", "private_storage_bytes"))
        bucket = JAN + timedelta(
            minutes=rng.randrange(0, 20 * 24 * 60), seconds=rng.choice((0, 0, 0, 17))
        )
        records.append(
            EngineUsage(
                rng.choice(orgs),
                metric,
                bucket,
                rng.randrange(0, 10**10),
                f"g-{i}",
                service_id=rng.choice(("svc-1", "svc-2", None)),
            )
        )
    # Out of order, with duplicates and half-resent batches, through both paths.
    ingestion.ingest_engine_batch(db, records[:700], clock=clock)
    ingestion.ingest_engine_batch(db, records[350:1100], clock=clock)
    ingestion.ingest(
        db,
        clock,
        [
            usage(
                r.organization_id,
                r.metric,
                r.bucket_start,
                r.quantity,
                key=r.idempotency_key,
                service_id=r.service_id,
            )
            for r in records[1000:]
        ],
        atomic=True,
    )
    db.flush()
    requests = [
        Request(org, start, start, as_of)
        for org in orgs
        for start, as_of in [
            (JAN, utc(2026, 1, 21)),
            (utc(2026, 1, 3, 7, 23, 5), utc(2026, 1, 17, 2, 40)),
            (utc(2026, 1, 9, 4, 10), utc(2026, 1, 9, 4, 50)),  # inside one hour
            (utc(2026, 1, 25), utc(2026, 1, 30)),  # after every sample: the level holds
        ]
    ]
    results = aggregate(db, requests)
    for q, (_, gauge) in zip(requests, results, strict=True):
        assert gauge.gb_seconds == gauge_oracle(db, q.organization_id, q.start, q.as_of), q


def test_sums_per_day_equal_the_records(db: Session, clock: FrozenClock) -> None:
    clock = FrozenClock(NOW)
    rng = random.Random(5)
    orgs = [make_org(db, clock, "org").id]
    ingestion.ingest_engine_batch(db, random_records(rng, orgs, 2000, ("svc-1", None)), clock=clock)
    db.flush()
    start, end = utc(2026, 1, 4, 13, 27), utc(2026, 1, 19, 8, 5)
    expected: dict[object, Decimal] = defaultdict(Decimal)
    for r in db.scalars(
        select(UsageRecord).where(
            UsageRecord.metric == "messages",
            UsageRecord.bucket_start >= start,
            UsageRecord.bucket_start < end,
        )
    ):
        expected[r.bucket_start.date()] += Decimal(r.quantity)
    assert expected
    assert aggregate.sums_per_day(db, orgs[0], "messages", start, end) == dict(expected)


def test_sums_past_64_bit_integers_stay_exact(db: Session, clock: FrozenClock) -> None:
    """SQLite sums whole units as 64-bit integers: bigger values are added up exactly anyway
    (they used to be clamped, or the read failed with "integer overflow")."""
    clock = FrozenClock(NOW)
    org = make_org(db, clock)
    huge = Decimal("9" * 19)  # one record past 2^63
    records = [
        usage(org, "bytes_in", utc(2026, 1, 2, hour, 30), huge, key=f"b{hour}") for hour in range(3)
    ]
    records += [
        usage(org, "messages", utc(2026, 1, 3, hour), 4 * 10**18, key=f"m{hour}")
        for hour in range(3)
    ]
    ingestion.ingest(db, clock, records, atomic=True)
    db.flush()
    got = aggregate.usage_to_date(db, org.id, JAN, NOW)
    assert got["messages"] == 12 * 10**18  # each fits, the sum does not
    assert got["traffic_gb"] == (3 * huge / 10**9).normalize()
