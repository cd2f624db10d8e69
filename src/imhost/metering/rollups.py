"""Hourly rollups of usage: kept up to date on ingestion, read for whole hours of a period.

``usage_rollups`` holds, per organization, metric, UTC hour and service, the sum of the
records' quantities, the highest single record and the number of records. Every path that
stores usage records goes through :func:`imhost.metering.service._insert_rows`, which feeds
the records it actually inserted (duplicates skipped) into the rollups in the same
transaction, so records and rollups commit or roll back together:

- PostgreSQL: one statement. The records are inserted with ``ON CONFLICT DO NOTHING
  RETURNING`` and the returned rows, grouped by hour, are added to the rollups with
  ``ON CONFLICT DO UPDATE`` (row locks serialize concurrent writers; the groups are written in
  key order, so two writers cannot deadlock on them).
- SQLite: the batch is inserted with one ``executemany``; when every row was inserted (the
  usual case) or none was (a resent flush), the rollups are updated from the batch itself in
  Python (exact decimals) with one read and one write of the touched rows. When only some rows
  were duplicates, the touched hours are recomputed from the records. SQLite has one writer at
  a time, so the read-modify-write is safe.

Reading a period ``[start, end)``: the whole hours in it come from the rollups, the partial
hours at its edges from the records (see :func:`split`). A month of minute data is about 720
rollup rows per metric and service instead of 44,640 records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, delete, select
from sqlalchemy.orm import Session

from imhost.metering.models import UsageRecord, UsageRollup

HOUR = timedelta(hours=1)
_ZERO_OFFSET = timedelta(0)

Key = tuple[str, str, datetime, str]
"""organization_id, metric, hour_start (aware UTC), service_key."""


def hour_floor(when: datetime) -> datetime:
    """The start of the UTC hour holding ``when`` (aware)."""
    if when.utcoffset() != _ZERO_OFFSET:
        when = when.astimezone(UTC)
    return when.replace(minute=0, second=0, microsecond=0)


def hour_ceil(when: datetime) -> datetime:
    floor = hour_floor(when)
    return floor if floor == when else floor + HOUR


def split(start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
    """The whole hours ``[h1, h2)`` inside ``[start, end)``, or None when there are none.

    ``[start, h1)`` and ``[h2, end)`` are the partial edges, read from the records.
    """
    h1, h2 = hour_ceil(start), hour_floor(end)
    return (h1, h2) if h1 < h2 else None


class Deltas:
    """Rollup changes of a batch of inserted records, grouped by key."""

    __slots__ = ("_hours", "groups")

    def __init__(self) -> None:
        self.groups: dict[Key, list[Any]] = {}
        self._hours: dict[datetime, datetime] = {}

    def add(
        self, org: str, service_id: str | None, metric: str, bucket: datetime, qty: Decimal | int
    ) -> None:
        hour = self._hours.get(bucket)
        if hour is None:
            hour = self._hours[bucket] = hour_floor(bucket)
        key = (org, metric, hour, service_id or "")
        group = self.groups.get(key)
        if group is None:
            self.groups[key] = [qty, qty, 1]
        else:
            group[0] += qty
            if qty > group[1]:
                group[1] = qty
            group[2] += 1

    def __bool__(self) -> bool:
        return bool(self.groups)


def _text(value: Decimal | int) -> str:
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def _sqlite_hour(value: datetime) -> str:
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


_SQLITE_UPSERT = (
    "INSERT INTO usage_rollups (organization_id, metric, hour_start, service_key, quantity, "
    "peak, records) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (organization_id, metric, hour_start, service_key) DO UPDATE SET "
    "quantity = excluded.quantity, peak = excluded.peak, records = excluded.records"
)


def apply_sqlite(conn: Connection, deltas: Deltas) -> None:
    """Add the deltas to the stored rollups (SQLite: read, add exactly, write back)."""
    if not deltas:
        return
    groups = deltas.groups
    by_org: dict[str, set[str]] = {}
    hours: set[datetime] = set()
    for org, metric, hour, _ in groups:
        by_org.setdefault(org, set()).add(metric)
        hours.add(hour)
    stored: dict[Key, tuple[Decimal, Decimal, int]] = {}
    hour_list = sorted(hours)
    for org, metrics in by_org.items():
        for chunk in _chunks(hour_list, 500):
            for metric, hour, service_key, qty, peak, count in conn.execute(
                select(
                    UsageRollup.metric,
                    UsageRollup.hour_start,
                    UsageRollup.service_key,
                    UsageRollup.quantity,
                    UsageRollup.peak,
                    UsageRollup.records,
                ).where(
                    UsageRollup.organization_id == org,
                    UsageRollup.metric.in_(sorted(metrics)),
                    UsageRollup.hour_start.in_(chunk),
                )
            ):
                stored[(org, metric, hour, service_key)] = (qty, peak, int(count))
    values = []
    for key, (qty, peak, count) in groups.items():
        old = stored.get(key)
        if old is not None:
            qty = old[0] + qty
            peak = max(old[1], peak)
            count += old[2]
        org, metric, hour, service_key = key
        values.append(
            (org, metric, _sqlite_hour(hour), service_key, _text(qty), _text(peak), count)
        )
    conn.exec_driver_sql(_SQLITE_UPSERT, values)


def rebuild(session: Session, keys: Iterable[tuple[str, str, datetime]]) -> None:
    """Recompute the rollups of these (organization, metric, hour) from the records."""
    for org, metric, hour in sorted(set(keys)):
        session.execute(
            delete(UsageRollup).where(
                UsageRollup.organization_id == org,
                UsageRollup.metric == metric,
                UsageRollup.hour_start == hour,
            )
        )
        deltas = Deltas()
        for service_id, qty in session.execute(
            select(UsageRecord.service_id, UsageRecord.quantity).where(
                UsageRecord.organization_id == org,
                UsageRecord.metric == metric,
                UsageRecord.bucket_start >= hour,
                UsageRecord.bucket_start < hour + HOUR,
            )
        ):
            deltas.add(org, service_id, metric, hour, Decimal(qty))
        session.add_all(
            UsageRollup(
                organization_id=o,
                metric=mt,
                hour_start=h,
                service_key=sk,
                quantity=Decimal(q),
                peak=Decimal(p),
                records=n,
            )
            for (o, mt, h, sk), (q, p, n) in deltas.groups.items()
        )
    session.flush()


PG_MERGE_WITH_ROLLUPS = (
    "WITH ins AS ("
    " INSERT INTO usage_records (organization_id, service_id, metric, bucket_start, quantity,"
    " subject, idempotency_key, received_at, original_bucket_start)"
    " SELECT organization_id, service_id, metric, bucket_start, quantity, subject,"
    " idempotency_key, received_at, original_bucket_start FROM usage_records_stage"
    " ON CONFLICT (organization_id, metric, bucket_start, idempotency_key) DO NOTHING"
    " RETURNING organization_id, service_id, metric, bucket_start, quantity"
    "), roll AS ("
    " INSERT INTO usage_rollups (organization_id, metric, hour_start, service_key, quantity,"
    " peak, records)"
    " SELECT organization_id, metric, date_trunc('hour', bucket_start, 'UTC'),"
    " coalesce(service_id, ''), sum(quantity), max(quantity), count(*)"
    " FROM ins GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
    " ON CONFLICT (organization_id, metric, hour_start, service_key) DO UPDATE SET"
    " quantity = usage_rollups.quantity + excluded.quantity,"
    " peak = greatest(usage_rollups.peak, excluded.peak),"
    " records = usage_rollups.records + excluded.records"
    ") SELECT count(*) FROM ins"
)
"""Insert the staged records and add those inserted to the rollups; answers the count."""


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
