"""Queries of metering, and the database-specific ways the usage tables are written fast.

The rules (:mod:`.ingestion`, :mod:`.closing`, :mod:`.forecast`, :mod:`.budgets`) read and
write through here. What is specific to one database lives here and nowhere else:

- the engine's bulk insert (:func:`insert_rows`): one ``executemany`` of pre-formatted values
  on SQLite, ``COPY`` (binary, straight into the table, or through a staging table and a
  merge) on PostgreSQL, the hourly rollups kept in step (:mod:`.rollups`);
- row locks on PostgreSQL that keep ingestion and the closing of a period apart
  (:func:`lock_organizations_for_closing`, :func:`organizations_for_ingest`).

The aggregation queries are :mod:`.aggregate`'s (with :mod:`.rollups` and :mod:`.scratch`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, insert, select
from sqlalchemy.orm import Session

from imhost.accounts.models import Organization
from imhost.kit.clock import ensure_utc
from imhost.metering import rollups, scratch
from imhost.metering.models import Budget, BudgetAlert, ClosedPeriod, UsageRecord

CHUNK = 500
"""Ids per ``IN (...)`` list."""


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def dialect(session: Session) -> str:
    return session.get_bind().dialect.name


# --- organizations and closed periods -------------------------------------------------------


def lock_organizations_for_closing(session: Session, organization_ids: Iterable[str]) -> None:
    """PostgreSQL: lock the organizations' rows ``FOR NO KEY UPDATE`` in id order (the
    closing side of :func:`organizations_for_ingest`'s share lock). SQLite: nothing to do,
    a writer there holds the only write lock and a stale reader cannot write."""
    if dialect(session) != "postgresql":
        return
    for chunk in chunks(sorted(set(organization_ids)), CHUNK):
        session.execute(
            select(Organization.id)
            .where(Organization.id.in_(chunk))
            .order_by(Organization.id)
            .with_for_update(key_share=True)
        )


def organizations_for_ingest(session: Session, organization_ids: Iterable[str]) -> set[str]:
    """The organizations that exist among these; on PostgreSQL share-locked (in id order).

    ``usage_records`` has no foreign key to ``organizations`` (checking one per row was most
    of PostgreSQL's cost on the engine's path): ingestion checks the organizations once per
    batch here instead, and the lock (the ingestion side of
    :func:`lock_organizations_for_closing`) also keeps a concurrent delete of the
    organization out until the batch commits. Organizations are closed, never deleted, by
    imhost itself.
    """
    found: set[str] = set()
    pg = dialect(session) == "postgresql"
    for chunk in chunks(sorted(set(organization_ids)), CHUNK):
        query = select(Organization.id).where(Organization.id.in_(chunk))
        if pg:
            query = query.order_by(Organization.id).with_for_update(read=True)
        found.update(session.scalars(query))
    return found


def find_closed_period(
    session: Session, organization_id: str, period_start: datetime
) -> ClosedPeriod | None:
    return session.scalars(
        select(ClosedPeriod).where(
            ClosedPeriod.organization_id == organization_id,
            ClosedPeriod.period_start == period_start,
        )
    ).one_or_none()


def insert_closed_periods(session: Session, rows: list[dict[str, Any]]) -> None:
    """One bulk INSERT in a savepoint; raises ``IntegrityError`` (rolled back to the
    savepoint) when one of them exists already."""
    with session.begin_nested():
        session.execute(insert(ClosedPeriod), rows)


def closed_periods(
    session: Session, organization_ids: Iterable[str]
) -> dict[str, list[tuple[datetime, datetime]]]:
    """Each organization's closed periods, (start, end) in order of start."""
    ids = list(set(organization_ids))
    out: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for chunk in chunks(ids, CHUNK):
        for org_id, start, end in session.execute(
            select(ClosedPeriod.organization_id, ClosedPeriod.period_start, ClosedPeriod.period_end)
            .where(ClosedPeriod.organization_id.in_(chunk))
            .order_by(ClosedPeriod.period_start)
        ):
            out[org_id].append((start, end))
    return out


# --- usage records: reading -----------------------------------------------------------------


def usage_records(
    session: Session,
    organization_id: str,
    metrics: Iterable[str],
    period_start: datetime,
    period_end: datetime,
    limit: int,
    offset: int,
) -> list[UsageRecord]:
    """Records of these metrics with ``period_start <= bucket_start < period_end``, oldest
    first."""
    return list(
        session.scalars(
            select(UsageRecord)
            .where(
                UsageRecord.organization_id == organization_id,
                UsageRecord.metric.in_(sorted(metrics)),
                UsageRecord.bucket_start >= period_start,
                UsageRecord.bucket_start < period_end,
            )
            .order_by(UsageRecord.bucket_start, UsageRecord.id)
            .limit(limit)
            .offset(offset)
        )
    )


# --- budgets --------------------------------------------------------------------------------


def budget_of(session: Session, organization_id: str) -> Budget | None:
    return session.scalars(
        select(Budget).where(Budget.organization_id == organization_id)
    ).one_or_none()


def budget_alerts(session: Session, budget_id: str, limit: int) -> list[BudgetAlert]:
    return list(
        session.scalars(
            select(BudgetAlert)
            .where(BudgetAlert.budget_id == budget_id)
            .order_by(BudgetAlert.period_start.desc(), BudgetAlert.threshold)
            .limit(limit)
        )
    )


# --- usage records: idempotency and the bulk insert -----------------------------------------


Identity = tuple[str, str, datetime, str]
"""organization_id, metric, bucket_start (as sent), idempotency_key: what makes a record."""
Content = tuple[str | None, Decimal, str | None]
"""service_id, quantity, subject: what must match for a resent record to be a duplicate."""


def stored_contents(session: Session, wanted: set[Identity]) -> dict[Identity, Content]:
    """What is stored for these record identities (corrections found by original bucket).

    The identities are a scratch table joined to the unique index (one index probe each);
    corrections are found through the partial index on (organization, key).
    """
    out: dict[Identity, Content] = {}
    for chunk in chunks(sorted(wanted), 1000):
        w = scratch.fill(session, scratch.IDENTITIES, chunk)
        for org, metric, bucket, key, service_id, qty, subject in session.execute(
            select(
                UsageRecord.organization_id,
                UsageRecord.metric,
                UsageRecord.bucket_start,
                UsageRecord.idempotency_key,
                UsageRecord.service_id,
                UsageRecord.quantity,
                UsageRecord.subject,
            ).join_from(
                w,
                UsageRecord,
                and_(
                    UsageRecord.organization_id == w.c.org,
                    UsageRecord.metric == w.c.metric,
                    UsageRecord.bucket_start == w.c.bucket,
                    UsageRecord.idempotency_key == w.c.key,
                ),
            )
        ):
            out[(org, metric, bucket, key)] = (service_id, Decimal(qty), subject)
        for org, metric, original, key, service_id, qty, subject in session.execute(
            select(
                UsageRecord.organization_id,
                UsageRecord.metric,
                UsageRecord.original_bucket_start,
                UsageRecord.idempotency_key,
                UsageRecord.service_id,
                UsageRecord.quantity,
                UsageRecord.subject,
            )
            .join_from(
                w,
                UsageRecord,
                and_(
                    UsageRecord.organization_id == w.c.org,
                    UsageRecord.idempotency_key == w.c.key,
                    UsageRecord.metric == w.c.metric,
                ),
            )
            .where(UsageRecord.original_bucket_start.is_not(None))
        ):
            identity = (org, metric, _utc(original), key)
            if identity in wanted:
                out[identity] = (service_id, Decimal(qty), subject)
    return out


def _utc(value: Any) -> datetime:
    """``coalesce`` loses the column type on SQLite; read the value back as aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return ensure_utc(value)


Row = tuple[
    str, str | None, str, datetime, Decimal | int, str | None, str, datetime, datetime | None
]
"""A usage row in column order: organization_id, service_id, metric, bucket_start, quantity,
subject, idempotency_key, received_at, original_bucket_start."""

_SQLITE_INSERT = (
    "INSERT INTO usage_records (organization_id, service_id, metric, bucket_start, quantity, "
    "subject, idempotency_key, received_at, original_bucket_start) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (organization_id, metric, bucket_start, idempotency_key) DO NOTHING"
)
_PG_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS usage_records_stage ("
    "organization_id varchar(32), service_id varchar(64), metric varchar(40), "
    "bucket_start timestamptz, quantity numeric(38, 12), subject varchar(255), "
    "idempotency_key varchar(200), received_at timestamptz, original_bucket_start timestamptz"
    ") ON COMMIT DELETE ROWS"
)
_PG_COPY_DIRECT = (
    "COPY usage_records (organization_id, service_id, metric, bucket_start, quantity, "
    "subject, idempotency_key, received_at, original_bucket_start) FROM STDIN (FORMAT BINARY)"
)
_PG_COPY_TYPES = [
    "varchar",
    "varchar",
    "varchar",
    "timestamptz",
    "numeric",
    "varchar",
    "varchar",
    "timestamptz",
    "timestamptz",
]
_PG_COPY = (
    "COPY usage_records_stage (organization_id, service_id, metric, bucket_start, quantity, "
    "subject, idempotency_key, received_at, original_bucket_start) FROM STDIN"
)


def _sqlite_time(value: datetime) -> str:
    """The text SQLAlchemy's SQLite DateTime stores (naive UTC, microseconds always shown),
    so that the fast path and the ORM write and compare the very same strings."""
    if value.utcoffset() != _NO_OFFSET:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


_NO_OFFSET = timedelta(0)


def _quantity_text(value: Decimal | int) -> str:
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def insert_rows(session: Session, rows: list[Row]) -> int:
    """Bulk INSERT ... ON CONFLICT DO NOTHING, rollups kept; returns the rows inserted.

    A row is a duplicate when its (organization, metric, bucket, key) is stored already, or,
    for a correction, when a correction with the same (organization, key, original bucket) is.
    The direct path of the engine goes through here, so it skips the ORM's per-value type
    processing: SQLite gets one ``executemany`` of pre-formatted values (the formats
    ``UtcDateTime`` and ``Amount`` store); PostgreSQL a ``COPY`` into a temporary staging
    table and one statement that inserts and updates the hourly rollups
    (:mod:`imhost.metering.rollups`). Rows a conflict skipped are not counted.
    """
    if not rows:
        return 0
    if any(row[8] is not None for row in rows):
        rows = _without_stored_corrections(session, rows)
        if not rows:
            return 0
    conn = session.connection()
    inserted = 0
    if dialect(session) == "postgresql":
        inserted = _insert_postgresql(conn, rows)
        if inserted:
            _refresh_gauges(session, rows)
        return inserted
    # An engine flush carries few distinct buckets (minutes) and one receipt time: format each
    # timestamp once.
    times: dict[datetime, str] = {}
    deltas = rollups.Deltas()
    to_rebuild: set[tuple[str, str, datetime]] = set()
    for chunk in chunks(rows, 5_000):
        values: list[tuple[Any, ...]] = []
        append = values.append
        for org, service_id, metric, bucket, qty, subject, key, received, original in chunk:
            bucket_text = times.get(bucket)
            if bucket_text is None:
                bucket_text = times[bucket] = _sqlite_time(bucket)
            received_text = times.get(received)
            if received_text is None:
                received_text = times[received] = _sqlite_time(received)
            append(
                (
                    org,
                    service_id,
                    metric,
                    bucket_text,
                    qty if type(qty) is int else _quantity_text(qty),
                    subject,
                    key,
                    received_text,
                    None if original is None else _sqlite_time(original),
                )
            )
        count = max(conn.exec_driver_sql(_SQLITE_INSERT, values).rowcount, 0)
        inserted += count
        if count == len(chunk):
            deltas.add_rows(chunk)
        elif count:
            # Some rows were duplicates and sqlite3 does not say which: recompute the hours.
            to_rebuild.update(
                (org, metric, rollups.hour_floor(bucket)) for org, _, metric, bucket, *_ in chunk
            )
    if to_rebuild:
        for key in [k for k in deltas.groups if k[:3] in to_rebuild]:
            del deltas.groups[key]
    rollups.apply_sqlite(conn, deltas)
    if to_rebuild:
        rollups.rebuild(session, to_rebuild)
    if inserted:
        _refresh_gauges(session, rows)
    return inserted


def _insert_postgresql(conn: Connection, rows: list[Row]) -> int:
    """PostgreSQL: COPY straight into the table when no row is stored already (the usual
    case), else COPY into a staging table and merge with ON CONFLICT DO NOTHING.

    The direct COPY runs under a savepoint: a duplicate (a resent flush, or a concurrent
    writer's row) makes it fail as a whole, and the chunk is then merged instead, which
    skips the rows that exist. Either way the rollups get exactly the rows inserted.
    """
    import psycopg  # loaded by the PostgreSQL dialect already; a SQLite process never needs it

    driver = conn.connection.driver_connection
    assert driver is not None
    inserted = 0
    with driver.cursor() as cur:
        for chunk in chunks(rows, 20_000):
            cur.execute("SAVEPOINT usage_copy")
            try:
                with cur.copy(_PG_COPY_DIRECT) as copy:
                    copy.set_types(_PG_COPY_TYPES)
                    for row in chunk:
                        copy.write_row(row)
            except psycopg.errors.UniqueViolation:
                cur.execute("ROLLBACK TO SAVEPOINT usage_copy")
            else:
                cur.execute("RELEASE SAVEPOINT usage_copy")
                deltas = rollups.Deltas()
                deltas.add_rows(chunk)
                rollups.apply_postgresql(cur, deltas)
                inserted += len(chunk)
                continue
            cur.execute(_PG_STAGE)
            with cur.copy(_PG_COPY) as copy:
                for row in chunk:
                    copy.write_row(row)
            cur.execute(rollups.PG_MERGE_WITH_ROLLUPS)
            found = cur.fetchone()
            inserted += int(found[0]) if found else 0
            cur.execute("TRUNCATE usage_records_stage")
    return inserted


def _refresh_gauges(session: Session, rows: list[Row]) -> None:
    """Gauge samples change their hours' summaries: recompute those (few per flush)."""
    gauges = rollups.GAUGES
    keys = {(r[0], r[2], rollups.hour_floor(r[3])) for r in rows if r[2] in gauges}
    if keys:
        rollups.refresh_gauges(session, keys)


def _without_stored_corrections(session: Session, rows: list[Row]) -> list[Row]:
    """Drop corrections already stored: same organization, key, metric and original bucket.

    A correction's bucket is the next open period at the time it came; sent again after
    another period closed it would land elsewhere, so it is matched by its original bucket.
    """
    wanted = {(r[0], r[6]) for r in rows if r[8] is not None}
    stored: set[tuple[str, str, str, datetime]] = set()
    for chunk in chunks(sorted(wanted), 500):
        for org, key, metric, original in session.execute(
            select(
                UsageRecord.organization_id,
                UsageRecord.idempotency_key,
                UsageRecord.metric,
                UsageRecord.original_bucket_start,
            ).where(
                UsageRecord.original_bucket_start.is_not(None),
                UsageRecord.organization_id.in_(sorted({o for o, _ in chunk})),
                UsageRecord.idempotency_key.in_(sorted({k for _, k in chunk})),
            )
        ):
            stored.add((org, key, metric, _utc(original)))
    return [
        r for r in rows if r[8] is None or (r[0], r[6], r[2], r[8].astimezone(UTC)) not in stored
    ]
