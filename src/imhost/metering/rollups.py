"""Hourly rollups of usage: kept up to date on ingestion, read for whole hours of a period.

``usage_rollups`` holds, per organization, metric, UTC hour and service, the sum of the
records' quantities, the highest single record and the number of records. Every path that
stores usage records goes through :func:`imhost.metering.repository.insert_rows`, which feeds
the records it actually inserted (duplicates skipped) into the rollups in the same
transaction, so records and rollups commit or roll back together:

- PostgreSQL: a chunk COPYed straight into the table (no row existed) is added to the
  rollups from the batch (:func:`apply_postgresql`); a chunk that had to be merged is inserted
  with ``ON CONFLICT DO NOTHING RETURNING`` and the returned rows, grouped by hour, are added
  in the same statement (:data:`PG_MERGE_WITH_ROLLUPS`). Either way ``ON CONFLICT DO UPDATE``
  with exact ``numeric`` additions; row locks serialize concurrent writers, and the groups
  are written in key order, so two writers cannot deadlock on them.
- SQLite: the batch is inserted with one ``executemany``; when every row was inserted (the
  usual case) or none was (a resent flush), the rollups are updated from the batch itself in
  Python (exact decimals) with one read and one write of the touched rows. When only some rows
  were duplicates, the touched hours are recomputed from the records. SQLite has one writer at
  a time, so the read-modify-write is safe.

Gauge rows (storage) also summarise their hour for time-weighted averages: the first sample's
time, the last sample's level and the integral of the level from the first sample to the
hour's end (several samples of one minute collapse to the highest). They are recomputed from
the hour's records whenever a gauge record for that hour is stored (:func:`refresh_gauges`),
so a late or out-of-order sample is exact too.

Reading a period ``[start, end)``: the whole hours in it come from the rollups, the partial
hours at its edges from the records (see :func:`split`). A month of minute data is about 720
rollup rows per metric and service instead of 44,640 records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.orm import Session

from imhost.metering import metrics as m
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

    def add_rows(self, rows: Iterable[Sequence[Any]]) -> None:
        """:meth:`add` for usage rows (organization, service, metric, bucket, quantity, ...),
        inlined: it runs for every record of an engine flush."""
        hours, groups = self._hours, self.groups
        for row in rows:
            bucket = row[3]
            hour = hours.get(bucket)
            if hour is None:
                hour = hours[bucket] = hour_floor(bucket)
            qty = row[4]
            key = (row[0], row[2], hour, row[1] or "")
            group = groups.get(key)
            if group is None:
                groups[key] = [qty, qty, 1]
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


_SQLITE_READ = (
    "SELECT organization_id, metric, hour_start, service_key, quantity, peak, records "
    "FROM usage_rollups WHERE organization_id IN ({orgs}) AND metric IN ({metrics}) "
    "AND hour_start IN ({hours})"
)


def apply_sqlite(conn: Connection, deltas: Deltas) -> None:
    """Add the deltas to the stored rollups (SQLite: read, add exactly, write back).

    One read of the touched rows (IN lists on organization, metric and hour; rows that only
    cross-match are ignored) and one ``executemany`` upsert, both as plain SQL: this runs on
    every engine flush.
    """
    if not deltas:
        return
    hour_text = {hour: _sqlite_hour(hour) for hour in {key[2] for key in deltas.groups}}
    groups = {(o, mt, hour_text[h], sk): v for (o, mt, h, sk), v in deltas.groups.items()}
    orgs = sorted({key[0] for key in groups})
    metrics = sorted({key[1] for key in groups})
    hours = sorted(hour_text.values())
    stored: dict[tuple[str, str, str, str], tuple[str, str, int]] = {}
    for org_chunk in _chunks(orgs, 200):
        for hour_chunk in _chunks(hours, 200):
            params = (*org_chunk, *metrics, *hour_chunk)
            # Only "?" placeholders are formatted into the statement.
            query = _SQLITE_READ.format(
                orgs=_marks(org_chunk), metrics=_marks(metrics), hours=_marks(hour_chunk)
            )
            for org, metric, hour, service_key, qty, peak, count in conn.exec_driver_sql(
                query, params
            ):
                stored[(org, metric, hour, service_key)] = (qty, peak, count)
    values = []
    for key, (qty, peak, count) in groups.items():
        old = stored.get(key)
        if old is not None:
            qty = Decimal(old[0]) + qty
            old_peak = Decimal(old[1])
            if old_peak > peak:
                peak = old_peak
            count += int(old[2])
        values.append((*key, _text(qty), _text(peak), count))
    conn.exec_driver_sql(_SQLITE_UPSERT, values)


def _marks(items: Sequence[Any]) -> str:
    return ", ".join("?" * len(items))


_PG_UPSERT = (
    "INSERT INTO usage_rollups (organization_id, metric, hour_start, service_key, quantity, "
    "peak, records) VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (organization_id, metric, hour_start, service_key) DO UPDATE SET "
    "quantity = usage_rollups.quantity + excluded.quantity, "
    "peak = greatest(usage_rollups.peak, excluded.peak), "
    "records = usage_rollups.records + excluded.records"
)


def apply_postgresql(cursor: Any, deltas: Deltas) -> None:
    """Add the deltas to the rollups (PostgreSQL: exact ``numeric`` arithmetic in SQL).

    Written in key order, so concurrent writers lock the rows in the same order.
    """
    if deltas:
        cursor.executemany(
            _PG_UPSERT,
            [(*key, qty, peak, count) for key, (qty, peak, count) in sorted(deltas.groups.items())],
        )


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


GAUGES = frozenset(m.GAUGE_METRICS)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def micros(when: datetime) -> int:
    """Microseconds since the epoch (exact integer time)."""
    return (when - EPOCH) // _US


def milli_bytes(metric: str, qty: Decimal | int) -> int:
    """A gauge level in milli-bytes: exact for bytes and for ``storage_gb`` (12 decimals)."""
    if metric == m.STORAGE_GB:
        return int(Decimal(qty).scaleb(12))
    return int(qty) * 1000


def collapse(samples: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """(time, level) samples sorted by time, several at one time collapsed to the highest."""
    highest: dict[int, int] = {}
    for at, level in samples:
        if level > highest.get(at, -1):
            highest[at] = level
    return sorted(highest.items())


def summarize(samples: list[tuple[int, int]], hour_end_us: int) -> tuple[int, int, int]:
    """(first time, last level, integral from the first sample to ``hour_end_us``)."""
    ordered = collapse(samples)
    integral = 0
    for (at, level), (next_at, _) in pairwise(ordered):
        integral += level * (next_at - at)
    last_at, last_level = ordered[-1]
    integral += last_level * (hour_end_us - last_at)
    return ordered[0][0], last_level, integral


_SET_SUMMARY = (
    update(UsageRollup)
    .where(
        UsageRollup.organization_id == bindparam("o"),
        UsageRollup.metric == bindparam("mt"),
        UsageRollup.hour_start == bindparam("h"),
        UsageRollup.service_key == bindparam("sk"),
    )
    .values(
        first_at=bindparam("first_at"),
        last_level=bindparam("last_level"),
        integral=bindparam("integral"),
    )
)


def refresh_gauges(session: Session, keys: Iterable[tuple[str, str, datetime]]) -> None:
    """Recompute the gauge summaries of these (organization, gauge metric, hour)."""
    params = []
    for org, metric, hour in sorted(set(keys)):
        samples: dict[str, list[tuple[int, int]]] = {}
        for service_id, bucket, qty in session.execute(
            select(UsageRecord.service_id, UsageRecord.bucket_start, UsageRecord.quantity).where(
                UsageRecord.organization_id == org,
                UsageRecord.metric == metric,
                UsageRecord.bucket_start >= hour,
                UsageRecord.bucket_start < hour + HOUR,
            )
        ):
            samples.setdefault(service_id or "", []).append(
                (micros(bucket), milli_bytes(metric, Decimal(qty)))
            )
        end_us = micros(hour + HOUR)
        for service_key, series in samples.items():
            first, last, integral = summarize(series, end_us)
            params.append(
                {
                    "o": org,
                    "mt": metric,
                    "h": hour,
                    "sk": service_key,
                    "first_at": EPOCH + first * _US,
                    "last_level": Decimal(last),
                    "integral": str(integral),
                }
            )
    if params:
        session.connection().execute(_SET_SUMMARY, params)


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
