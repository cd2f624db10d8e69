"""Rules of metering: ingest usage, close periods, aggregate, forecast, budgets.

Services never commit; the caller owns the transaction.

Aggregation (docs/billing.md, "Usage, forecasts and budgets"): a record belongs to a period
when ``period_start <= bucket_start < period_end``.

- ``messages``: sum of ``messages`` (and of records sent as ``messages``).
- ``traffic_gb``: (sum of ``bytes_in`` + sum of ``bytes_out``) / 10^9, plus ``traffic_gb``
  records as sent; fractional.
- ``peak_connections``: per minute bucket, each service's highest reported
  ``connections_peak`` (several flushes of one bucket collapse to their maximum), added over
  the services; then the highest bucket of the period.
- ``monthly_active_users``: distinct ``subject`` of ``active_users`` records in the period.
- ``storage_gb``: time-weighted average over the period of the sum of the gauges
  ``offline_storage_bytes`` + ``private_storage_bytes`` (bytes / 10^9) and ``storage_gb``
  (GB). A sample holds until the next sample of the same service and gauge; the level at the
  period's start is the last sample before it (0 if none). Rounded to 10^-9 GB (one byte).

Quantities are summed exactly: in SQL on PostgreSQL (``numeric``) and, on SQLite, in SQL for
whole-unit metrics (cast to integer) and in Python for the fractional ones.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

import psycopg
from sqlalchemy import Connection, and_, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.models import Organization
from imhost.catalog.pricing import PriceSpec, RatedCharge, rate
from imhost.kit.clock import Clock, SystemClock
from imhost.kit.errors import Conflict, InvalidInput, NotFound
from imhost.kit.ids import new_id
from imhost.kit.money import check_currency, round_minor
from imhost.metering import metrics as m
from imhost.metering import rollups, scratch
from imhost.metering.aggregate import (
    GaugeIntegral,
    Request,
    aggregate,
    billable_quantities,
    billable_quantities_many,
    gb,
    normal,
    seconds,
    sums_per_day,
    usage_to_date,
)
from imhost.metering.models import (
    Budget,
    BudgetAlert,
    ClosedPeriod,
    LateUsagePolicy,
    MeteringSettings,
    UsageRecord,
)
from imhost.metering.schemas import BudgetIn, UsageIn

log = logging.getLogger(__name__)

FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_QUANTITY = Decimal("1e20")
GB_QUANTUM = Decimal("0.000000001")
ZERO = Decimal(0)
_CHUNK = 500


class UsageLike(Protocol):
    """What a usage record must carry (``UsageIn`` or the engine's own record type)."""

    @property
    def organization_id(self) -> str | None: ...
    @property
    def service_id(self) -> str | None: ...
    @property
    def metric(self) -> str: ...
    @property
    def bucket_start(self) -> datetime: ...
    @property
    def quantity(self) -> Decimal | int: ...
    @property
    def subject(self) -> str | None: ...
    @property
    def idempotency_key(self) -> str: ...


@dataclass(frozen=True, slots=True)
class EngineUsage:
    """A usage record from the built-in engine (via hosting), for the direct path."""

    organization_id: str
    metric: str
    bucket_start: datetime
    quantity: Decimal | int
    idempotency_key: str
    service_id: str | None = None
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    key: str
    reason: str


@dataclass(slots=True)
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    corrected: int = 0
    """Of the accepted, how many were late usage moved into the next open period."""


class UsageRejected(InvalidInput):
    """An atomic batch had refused records: nothing was written."""

    def __init__(self, result: IngestResult, total: int) -> None:
        n = len(result.rejected)
        super().__init__(
            f"{n} of {total} usage records refused; nothing was written",
            rejections=[
                {"index": r.index, "key": r.key, "reason": r.reason} for r in result.rejected
            ],
        )
        self.result = result


# --- settings and closed periods ----------------------------------------------------------


def get_late_usage_policy(session: Session) -> LateUsagePolicy:
    row = session.get(MeteringSettings, 1)
    return LateUsagePolicy(row.late_usage_policy) if row else LateUsagePolicy.REFUSE


def set_late_usage_policy(
    session: Session, clock: Clock, policy: LateUsagePolicy | str
) -> LateUsagePolicy:
    try:
        value = LateUsagePolicy(policy)
    except ValueError:
        raise InvalidInput(
            f"late_usage_policy is 'refuse' or 'next_invoice', not {policy!r}",
            field="late_usage_policy",
        ) from None
    row = session.get(MeteringSettings, 1)
    if row is None:
        row = MeteringSettings(id=1)
        session.add(row)
    row.late_usage_policy = value.value
    row.updated_at = clock.now()
    session.flush()
    return value


def close_period(
    session: Session,
    organization_id: str,
    period_start: datetime,
    period_end: datetime,
    clock: Clock,
) -> ClosedPeriod:
    """Mark a period invoiced: usage for it is refused (or moved, by the late policy).

    Idempotent: closing the same period again returns the existing row.
    """
    _aware(period_start, "period_start")
    _aware(period_end, "period_end")
    if period_end <= period_start:
        raise InvalidInput("period_end must be after period_start", field="period_end")
    existing = session.scalars(
        select(ClosedPeriod).where(
            ClosedPeriod.organization_id == organization_id,
            ClosedPeriod.period_start == period_start,
        )
    ).one_or_none()
    if existing is not None:
        if existing.period_end != period_end:
            raise Conflict(
                f"the period starting {period_start.isoformat()} is closed already, "
                f"ending {existing.period_end.isoformat()}",
                field="period_end",
            )
        return existing
    row = ClosedPeriod(
        organization_id=organization_id,
        period_start=period_start,
        period_end=period_end,
        closed_at=clock.now(),
    )
    session.add(row)
    session.flush()
    return row


def close_periods_many(
    session: Session, periods: Sequence[tuple[str, datetime, datetime]], clock: Clock
) -> None:
    """:func:`close_period` for many (organization, start, end) at once (the billing run).

    One bulk INSERT in a savepoint; if any of them is closed already (a rerun, another run),
    each is closed one by one with :func:`close_period`'s checks (idempotent, or a
    ``Conflict`` for a different end).
    """
    if not periods:
        return
    for _, start, end in periods:
        _aware(start, "period_start")
        _aware(end, "period_end")
        if end <= start:
            raise InvalidInput("period_end must be after period_start", field="period_end")
    now = clock.now()
    rows = [
        {
            "id": new_id(),
            "organization_id": org_id,
            "period_start": start,
            "period_end": end,
            "closed_at": now,
        }
        for org_id, start, end in periods
    ]
    try:
        with session.begin_nested():
            session.execute(insert(ClosedPeriod), rows)
    except IntegrityError:
        for org_id, start, end in periods:
            close_period(session, org_id, start, end, clock)


def closed_periods(
    session: Session, organization_ids: Iterable[str]
) -> dict[str, list[tuple[datetime, datetime]]]:
    ids = list(set(organization_ids))
    out: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for chunk in _chunks(ids, _CHUNK):
        for org_id, start, end in session.execute(
            select(ClosedPeriod.organization_id, ClosedPeriod.period_start, ClosedPeriod.period_end)
            .where(ClosedPeriod.organization_id.in_(chunk))
            .order_by(ClosedPeriod.period_start)
        ):
            out[org_id].append((start, end))
    return out


def lock_for_closing(session: Session, organization_ids: Iterable[str]) -> None:
    """Billing calls this before reading the quantities of periods it will close.

    Ingestion reads an organization's closed periods and then inserts; billing reads the
    quantities and then closes the period. On PostgreSQL those two could interleave so that
    a record is committed into a period after its quantities were read and the period
    closed: billed never. Billing locks the organizations' rows ``FOR NO KEY UPDATE`` (in id
    order) and ingestion ``FOR SHARE`` (:func:`_organizations_for_ingest`), which conflict:
    either the
    record commits first and is counted, or the closing does and the record follows the
    late-usage policy. SQLite needs nothing: a writer there holds the only write lock, and a
    stale reader cannot write.
    """
    if _dialect(session) != "postgresql":
        return
    for chunk in _chunks(sorted(set(organization_ids)), _CHUNK):
        session.execute(
            select(Organization.id)
            .where(Organization.id.in_(chunk))
            .order_by(Organization.id)
            .with_for_update(key_share=True)
        )


def _organizations_for_ingest(session: Session, organization_ids: Iterable[str]) -> set[str]:
    """The organizations that exist among these; on PostgreSQL share-locked (in id order).

    ``usage_records`` has no foreign key to ``organizations`` (checking one per row was most
    of PostgreSQL's cost on the engine's path): ingestion checks the organizations once per
    batch here instead, and the lock (the ingestion side of :func:`lock_for_closing`) also
    keeps a concurrent delete of the organization out until the batch commits.
    Organizations are closed, never deleted, by imhost itself.
    """
    found: set[str] = set()
    pg = _dialect(session) == "postgresql"
    for chunk in _chunks(sorted(set(organization_ids)), _CHUNK):
        query = select(Organization.id).where(Organization.id.in_(chunk))
        if pg:
            query = query.order_by(Organization.id).with_for_update(read=True)
        found.update(session.scalars(query))
    return found


def _closed_at(periods: list[tuple[datetime, datetime]], when: datetime) -> bool:
    return any(start <= when < end for start, end in periods)


def _next_open(periods: list[tuple[datetime, datetime]], when: datetime) -> datetime:
    """The first instant at or after ``when`` that lies in no closed period."""
    moved = True
    while moved:
        moved = False
        for start, end in periods:
            if start <= when < end:
                when = end
                moved = True
    return when


# --- ingestion ------------------------------------------------------------------------------


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{name} must carry a time zone (UTC)", field=name)
    return value


def _check_record(rec: UsageLike, now: datetime) -> tuple[Decimal | None, str | None]:
    """The record's quantity as an exact Decimal, or the reason it is refused."""
    if not rec.organization_id:
        return None, "organization_id is required"
    if rec.metric not in m.INGESTIBLE_METRICS:
        return None, (
            f"unknown metric {rec.metric!r}; known metrics: "
            + ", ".join(sorted(m.INGESTIBLE_METRICS))
        )
    raw = rec.quantity
    if isinstance(raw, (bool, float)):
        return None, "quantity must be an exact number (integer or decimal string)"
    try:
        qty = raw if isinstance(raw, Decimal) else Decimal(raw)
    except ArithmeticError:
        return None, f"quantity {raw!r} is not a number"
    if not qty.is_finite():
        return None, "quantity must be a finite number"
    if qty < 0:
        return None, f"quantity cannot be negative ({qty})"
    if qty >= MAX_QUANTITY:
        return None, "quantity is too large for one record"
    if rec.metric in m.FRACTIONAL_METRICS:
        exponent = qty.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -12 and qty != qty.quantize(Decimal("1e-12")):
            return None, "quantity has more than 12 decimal places"
    elif qty != qty.to_integral_value():
        return None, f"{rec.metric} counts whole units; quantity {qty} has a fraction"
    bucket = rec.bucket_start
    if bucket.tzinfo is None or bucket.utcoffset() is None:
        return None, "bucket_start must carry a time zone (UTC), e.g. 2026-01-15T12:00:00Z"
    if bucket > now + FUTURE_TOLERANCE:
        return None, (
            f"bucket_start {bucket.isoformat()} is in the future "
            f"(more than {int(FUTURE_TOLERANCE.total_seconds() // 60)} minutes ahead)"
        )
    if rec.metric in m.SUBJECT_METRICS and not rec.subject:
        return None, f"{rec.metric} counts distinct subjects; give the record's subject"
    if not rec.idempotency_key:
        return None, "idempotency_key is required"
    return qty, None


def ingest(
    session: Session,
    clock: Clock,
    records: Sequence[UsageLike],
    *,
    atomic: bool,
    organization_id: str | None = None,
) -> IngestResult:
    """Store a batch of usage records, each once.

    A record is identified by its organization, metric, bucket and idempotency key. One
    sent again with the same quantity, subject and service is a duplicate (counted once,
    fine); with a different one it is refused as a conflict. Unknown metric, negative,
    non-finite or fractional-where-whole quantities, naive or future timestamps, unknown
    organizations and buckets in closed periods are refused with a reason (late usage is
    moved to the next open period instead when the provider's ``late_usage_policy`` is
    ``next_invoice``; gauges are always refused there, since a moved level would be wrong).

    ``atomic=True``: any refusal raises :class:`UsageRejected` listing every refusal and
    nothing is written. ``atomic=False``: valid records are stored, refusals are returned.
    ``organization_id`` (a customer route) overrides and must match the records' own.
    """
    now = clock.now()
    result = IngestResult()
    policy = get_late_usage_policy(session)
    candidates: list[tuple[int, UsageLike, str, Decimal]] = []
    for index, rec in enumerate(records):
        org_id = rec.organization_id
        if organization_id is not None:
            if org_id not in (None, organization_id):
                result.rejected.append(
                    Rejection(index, rec.idempotency_key, "organization_id does not match the URL")
                )
                continue
            org_id = organization_id
        if not org_id:
            result.rejected.append(
                Rejection(index, rec.idempotency_key, "organization_id is required")
            )
            continue
        qty, reason = _check_record(_WithOrg(rec, org_id), now)
        if reason is not None or qty is None:
            result.rejected.append(Rejection(index, rec.idempotency_key, reason or "invalid"))
            continue
        candidates.append((index, rec, org_id, qty))

    org_ids = {org for _, _, org, _ in candidates}
    known_orgs = _organizations_for_ingest(session, org_ids)
    periods = closed_periods(session, org_ids)
    stored = _stored_contents(
        session,
        {
            (org, rec.metric, rec.bucket_start.astimezone(UTC), rec.idempotency_key)
            for _, rec, org, _ in candidates
        },
    )

    rows: list[_Row] = []
    seen: dict[_Identity, _Content] = {}
    for index, rec, org_id, qty in candidates:
        key = rec.idempotency_key
        if org_id not in known_orgs:
            result.rejected.append(Rejection(index, key, f"unknown organization {org_id!r}"))
            continue
        identity = (org_id, rec.metric, rec.bucket_start.astimezone(UTC), key)
        content = (rec.service_id, qty, rec.subject)
        previous = stored.get(identity) or seen.get(identity)
        if previous is not None:
            if previous == content:
                result.duplicates += 1
            else:
                result.rejected.append(
                    Rejection(
                        index,
                        key,
                        "conflict: a record with this idempotency_key, metric and bucket is "
                        "stored already with another quantity, subject or service",
                    )
                )
            continue
        bucket = rec.bucket_start
        original: datetime | None = None
        org_periods = periods.get(org_id, [])
        if org_periods and _closed_at(org_periods, bucket):
            if policy is LateUsagePolicy.REFUSE or rec.metric in m.GAUGE_METRICS:
                why = (
                    "a gauge sample cannot be moved to another period"
                    if policy is LateUsagePolicy.NEXT_INVOICE
                    else "the provider refuses late usage"
                )
                result.rejected.append(
                    Rejection(
                        index,
                        key,
                        f"bucket_start {bucket.isoformat()} falls in a period that has been "
                        f"invoiced (closed); {why}",
                    )
                )
                continue
            original = bucket
            bucket = _next_open(org_periods, bucket)
            result.corrected += 1
        seen[identity] = content
        rows.append(
            (org_id, rec.service_id, rec.metric, bucket, qty, rec.subject, key, now, original)
        )

    if result.rejected and atomic:
        result.corrected = 0
        result.rejected.sort(key=lambda r: r.index)
        raise UsageRejected(result, len(records))
    result.rejected.sort(key=lambda r: r.index)
    inserted = _insert_rows(session, rows)
    # A concurrent writer may have stored one of these keys between our check and our insert:
    # ON CONFLICT DO NOTHING keeps its row, and ours counts as a duplicate.
    result.duplicates += len(rows) - inserted
    result.accepted = inserted
    if inserted < len(rows):
        result.corrected = min(result.corrected, inserted)
    return result


@dataclass(frozen=True, slots=True)
class _WithOrg:
    """A record seen with the organization id the route gives it."""

    rec: UsageLike
    organization_id: str

    @property
    def service_id(self) -> str | None:
        return self.rec.service_id

    @property
    def metric(self) -> str:
        return self.rec.metric

    @property
    def bucket_start(self) -> datetime:
        return self.rec.bucket_start

    @property
    def quantity(self) -> Decimal | int:
        return self.rec.quantity

    @property
    def subject(self) -> str | None:
        return self.rec.subject

    @property
    def idempotency_key(self) -> str:
        return self.rec.idempotency_key


_Identity = tuple[str, str, datetime, str]
"""organization_id, metric, bucket_start (as sent), idempotency_key: what makes a record."""
_Content = tuple[str | None, Decimal, str | None]
"""service_id, quantity, subject: what must match for a resent record to be a duplicate."""


def _stored_contents(session: Session, wanted: set[_Identity]) -> dict[_Identity, _Content]:
    """What is stored for these record identities (corrections found by original bucket).

    The identities are a scratch table joined to the unique index (one index probe each);
    corrections are found through the partial index on (organization, key).
    """
    out: dict[_Identity, _Content] = {}
    for chunk in _chunks(sorted(wanted), 1000):
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
    from imhost.kit.clock import ensure_utc

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return ensure_utc(value)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


_Row = tuple[
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


def _insert_rows(session: Session, rows: list[_Row]) -> int:
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
    if _dialect(session) == "postgresql":
        inserted = _insert_rows_postgresql(conn, rows)
        if inserted:
            _refresh_gauges(session, rows)
        return inserted
    # An engine flush carries few distinct buckets (minutes) and one receipt time: format each
    # timestamp once.
    times: dict[datetime, str] = {}
    deltas = rollups.Deltas()
    to_rebuild: set[tuple[str, str, datetime]] = set()
    for chunk in _chunks(rows, 5_000):
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


def _insert_rows_postgresql(conn: Connection, rows: list[_Row]) -> int:
    """PostgreSQL: COPY straight into the table when no row is stored already (the usual
    case), else COPY into a staging table and merge with ON CONFLICT DO NOTHING.

    The direct COPY runs under a savepoint: a duplicate (a resent flush, or a concurrent
    writer's row) makes it fail as a whole, and the chunk is then merged instead, which
    skips the rows that exist. Either way the rollups get exactly the rows inserted.
    """
    driver = conn.connection.driver_connection
    assert driver is not None
    inserted = 0
    with driver.cursor() as cur:
        for chunk in _chunks(rows, 20_000):
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


def _refresh_gauges(session: Session, rows: list[_Row]) -> None:
    """Gauge samples change their hours' summaries: recompute those (few per flush)."""
    gauges = rollups.GAUGES
    keys = {(r[0], r[2], rollups.hour_floor(r[3])) for r in rows if r[2] in gauges}
    if keys:
        rollups.refresh_gauges(session, keys)


def _without_stored_corrections(session: Session, rows: list[_Row]) -> list[_Row]:
    """Drop corrections already stored: same organization, key, metric and original bucket.

    A correction's bucket is the next open period at the time it came; sent again after
    another period closed it would land elsewhere, so it is matched by its original bucket.
    """
    wanted = {(r[0], r[6]) for r in rows if r[8] is not None}
    stored: set[tuple[str, str, str, datetime]] = set()
    for chunk in _chunks(sorted(wanted), 500):
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


_MAX_INT_QUANTITY = 10**20
_SERVICE_ID_MAX = 64
_KEY_MAX = 200
_SUBJECT_MAX = 255


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def ingest_engine_batch(
    session: Session,
    records: Sequence[UsageLike],
    *,
    clock: Clock | None = None,
) -> IngestResult:
    """The direct path of the built-in engine: one bulk INSERT ... ON CONFLICT DO NOTHING.

    The engine is trusted to send well-formed records; still, every record gets the checks
    of :func:`ingest` that a bad value would need (unknown metric, negative or non-finite
    quantity, naive timestamp: listed in ``rejected``, never an exception that would make the
    engine retry the flush for ever), over-long keys and subjects are stored as their
    SHA-256, and closed periods follow the late-usage policy as in :func:`ingest`.
    Duplicates (a retried flush) collapse on the idempotency key. ``accepted`` counts rows
    actually inserted (``duplicates`` the rest); a record of an unknown organization is
    refused (one lookup per batch).
    """
    clock = clock or SystemClock()
    now = clock.now()
    result = IngestResult()
    org_ids = {r.organization_id for r in records if r.organization_id}
    known_orgs = _organizations_for_ingest(session, org_ids)
    periods = closed_periods(session, org_ids)
    policy: LateUsagePolicy | None = None
    rows: list[_Row] = []
    known = m.INGESTIBLE_METRICS
    for index, rec in enumerate(records):
        qty: Decimal | int = rec.quantity
        bucket = rec.bucket_start
        key = rec.idempotency_key
        subject = rec.subject
        if not (
            type(qty) is int
            and 0 <= qty < _MAX_INT_QUANTITY
            and rec.metric in known
            and bucket.tzinfo is not None
            and rec.organization_id
            and key
        ):
            # The uncommon case (a Decimal, or something wrong): the full checks.
            checked, reason = _check_record(rec, now)
            if checked is None or reason is not None:
                result.rejected.append(Rejection(index, key, reason or "malformed record"))
                continue
            qty = checked
        if rec.service_id is not None and len(rec.service_id) > _SERVICE_ID_MAX:
            result.rejected.append(Rejection(index, key, "service_id is too long"))
            continue
        # Over-long keys and subjects (a JID may be 3,071 bytes) are stored as their SHA-256:
        # still unique, still distinct, and never too long for the column.
        if len(key) > _KEY_MAX:
            key = _digest(key)
        if subject is not None and len(subject) > _SUBJECT_MAX:
            subject = _digest(subject)
        org_id = rec.organization_id
        assert org_id is not None  # checked above
        if org_id not in known_orgs:
            result.rejected.append(Rejection(index, key, f"unknown organization {org_id!r}"))
            continue
        original = None
        org_periods = periods.get(org_id)
        if org_periods and _closed_at(org_periods, bucket):
            if policy is None:
                policy = get_late_usage_policy(session)
            if policy is LateUsagePolicy.REFUSE or rec.metric in m.GAUGE_METRICS:
                result.rejected.append(
                    Rejection(index, key, "bucket in a closed (invoiced) period")
                )
                continue
            original, bucket = bucket, _next_open(org_periods, bucket)
            result.corrected += 1
        rows.append((org_id, rec.service_id, rec.metric, bucket, qty, subject, key, now, original))
    inserted = _insert_rows(session, rows)
    result.accepted = inserted
    result.duplicates = len(rows) - inserted
    return result


# --- aggregation (imhost.metering.aggregate) -----------------------------------------------


def usage_records_for(
    session: Session,
    organization_id: str,
    metric: str,
    period_start: datetime,
    period_end: datetime,
    limit: int = 100,
    offset: int = 0,
) -> list[UsageRecord]:
    """The records behind a billable metric's quantity (source metrics included), oldest first.

    ``metric`` may be a billable code (``traffic_gb`` lists ``bytes_in``, ``bytes_out`` and
    ``traffic_gb`` records) or a source metric.
    """
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit is 1 to 1000", field="limit")
    if offset < 0:
        raise InvalidInput("offset cannot be negative", field="offset")
    if metric in m.BILLABLE_METRICS:
        metrics = {metric, *m.BILLABLE_METRICS[metric].sources}
    elif metric in m.INGESTIBLE_METRICS:
        metrics = {metric}
    else:
        raise InvalidInput(f"unknown metric {metric!r}", field="metric")
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


# --- forecast -------------------------------------------------------------------------------

FORECAST_METHOD = (
    "Projection from usage so far: sums (messages, traffic_gb) are extrapolated linearly, "
    "usage to date divided by the elapsed fraction of the period; peak_connections is its "
    "highest value so far; monthly_active_users the distinct users so far; storage_gb the "
    "average so far with the current level held until the period's end. Each projected "
    "quantity is rated with the plan's prices; the base fee is added."
)


@dataclass(frozen=True, slots=True)
class ForecastLine:
    metric: str
    usage_to_date: Decimal
    projected_quantity: Decimal
    charge: RatedCharge


@dataclass(frozen=True, slots=True)
class Forecast:
    organization_id: str
    period_start: datetime
    period_end: datetime
    as_of: datetime
    elapsed_fraction: Decimal
    usage_to_date: dict[str, Decimal]
    projected_quantities: dict[str, Decimal]
    lines: list[ForecastLine]
    base_fee: Decimal
    total: Decimal
    currency: str
    method: str


def forecast(
    session: Session,
    clock: Clock,
    organization_id: str,
    period_start: datetime,
    period_end: datetime,
    price_specs: Sequence[PriceSpec],
    base_fee: Decimal,
    currency: str,
) -> Forecast:
    """The projected bill of the period from the usage so far (see ``FORECAST_METHOD``)."""
    try:
        check_currency(currency)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="currency") from None
    if period_end <= period_start:
        raise InvalidInput("period_end must be after period_start", field="period_end")
    for spec in price_specs:
        if spec.currency != currency:
            raise InvalidInput(
                f"the price of {spec.metric} is in {spec.currency}, not {currency}",
                field="currency",
            )
    now = min(max(clock.now(), period_start), period_end)
    total_seconds = seconds(period_end - period_start)
    elapsed_seconds = seconds(now - period_start)
    fraction = elapsed_seconds / total_seconds
    if now < period_start:
        to_date = dict.fromkeys(m.BILLABLE_CODES, ZERO)
        gauge = GaugeIntegral(ZERO, ZERO)
    else:
        request = Request(
            organization_id, period_start, min(now + FUTURE_TOLERANCE, period_end), now
        )
        to_date, gauge = aggregate(session, [request])[0]
    projected: dict[str, Decimal] = {}
    for code, metric in m.BILLABLE_METRICS.items():
        value = to_date[code]
        if metric.aggregation is m.Aggregation.SUM:
            projected[code] = normal(value / fraction) if fraction > 0 else value
        elif metric.aggregation is m.Aggregation.TIME_WEIGHTED_AVERAGE:
            remaining = total_seconds - elapsed_seconds
            projected[code] = normal(
                gb((gauge.gb_seconds + gauge.current_gb * remaining) / total_seconds)
            )
        else:
            projected[code] = value
    projected = {
        code: (
            v.quantize(Decimal("1"), rounding=ROUND_HALF_UP)
            if code not in m.FRACTIONAL_METRICS
            else normal(gb(v))
        )
        for code, v in projected.items()
    }
    lines = [
        ForecastLine(
            metric=spec.metric,
            usage_to_date=to_date.get(spec.metric, ZERO),
            projected_quantity=projected.get(spec.metric, ZERO),
            charge=rate(spec, projected.get(spec.metric, ZERO)),
        )
        for spec in price_specs
    ]
    fee = round_minor(base_fee, currency)
    total = fee + sum((line.charge.amount for line in lines), ZERO)
    return Forecast(
        organization_id=organization_id,
        period_start=period_start,
        period_end=period_end,
        as_of=now,
        elapsed_fraction=fraction,
        usage_to_date=to_date,
        projected_quantities=projected,
        lines=lines,
        base_fee=fee,
        total=total,
        currency=currency,
        method=FORECAST_METHOD,
    )


# --- budgets --------------------------------------------------------------------------------


def get_budget(session: Session, organization_id: str) -> Budget | None:
    return session.scalars(
        select(Budget).where(Budget.organization_id == organization_id)
    ).one_or_none()


def require_budget(session: Session, organization_id: str) -> Budget:
    budget = get_budget(session, organization_id)
    if budget is None:
        raise NotFound("this organization has no budget", field="budget")
    return budget


def set_budget(session: Session, clock: Clock, organization_id: str, data: BudgetIn) -> Budget:
    """Create or replace the organization's monthly budget."""
    try:
        check_currency(data.currency)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="currency") from None
    budget = get_budget(session, organization_id)
    if budget is None:
        budget = Budget(organization_id=organization_id, created_at=clock.now())
        session.add(budget)
    else:
        budget.updated_at = clock.now()
    budget.amount = data.amount
    budget.currency = data.currency
    budget.thresholds = list(data.thresholds)
    budget.hard_cap = data.hard_cap
    session.flush()
    return budget


def delete_budget(session: Session, organization_id: str, clock: Clock | None = None) -> None:
    """Remove the budget; a block its hard cap put on the service is lifted with it."""
    budget = require_budget(session, organization_id)
    if budget.capped_since is not None:
        events.publish(
            session,
            events.BudgetCapLifted(
                at=(clock or SystemClock()).now(),
                organization_id=organization_id,
                reason="the budget was removed",
            ),
        )
    session.delete(budget)
    session.flush()


def budget_alerts(session: Session, budget_id: str, limit: int = 100) -> list[BudgetAlert]:
    return list(
        session.scalars(
            select(BudgetAlert)
            .where(BudgetAlert.budget_id == budget_id)
            .order_by(BudgetAlert.period_start.desc(), BudgetAlert.threshold)
            .limit(limit)
        )
    )


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


__all__ = [
    "EngineUsage",
    "Forecast",
    "ForecastLine",
    "IngestResult",
    "Rejection",
    "UsageIn",
    "UsageRejected",
    "billable_quantities",
    "billable_quantities_many",
    "close_period",
    "close_periods_many",
    "forecast",
    "ingest",
    "ingest_engine_batch",
    "lock_for_closing",
    "sums_per_day",
    "usage_records_for",
    "usage_to_date",
]
