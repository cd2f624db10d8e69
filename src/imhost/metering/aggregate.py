"""Billable quantities of periods, for one organization or a block of them at once.

A record belongs to a period when ``period_start <= bucket_start < period_end``. The
aggregations (docs/billing.md, "Usage, forecasts and budgets"):

- ``messages``: sum of ``messages`` records.
- ``traffic_gb``: (sum of ``bytes_in`` + sum of ``bytes_out``) / 10^9, plus ``traffic_gb``
  records as sent; fractional.
- ``peak_connections``: per minute bucket, each service's highest reported
  ``connections_peak`` (several flushes of one bucket collapse to their maximum), added over
  the services; then the highest bucket of the period.
- ``monthly_active_users``: distinct ``subject`` of ``active_users`` records in the period.
- ``storage_gb``: time-weighted average over the period of the sum of the gauges
  ``offline_storage_bytes`` + ``private_storage_bytes`` + ``archive_storage_bytes`` (bytes /
  10^9) and ``storage_gb``
  (GB). A sample holds until the next sample of the same service and gauge; the level at the
  period's start is the last sample before it (0 if none). Rounded to 10^-9 GB (one byte).

How it is read (:mod:`imhost.metering.rollups`): sums and peaks of the whole hours of a period
come from the hourly rollups, the partial hours at its edges from the records. When an
organization's peak records come from more than one service, the per-minute sum over
services is read from the records (a rollup's hourly maxima cannot be added exactly). The
storage average takes whole hours from the gauge rows' summaries (first sample, last level,
integral) and the partial hours from the samples. Distinct users are read from the records.

Every query takes a block of requests at once: the requests are rows of a scratch table
(:mod:`imhost.metering.scratch`) joined to the tables, so a billing run of 500
organizations costs a handful of queries, not thousands.
Quantities are summed exactly: in SQL on PostgreSQL (``numeric``) and, on SQLite, in SQL for
whole-unit metrics (cast to integer) and in Python for the fractional ones.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from imhost.db.types import UtcDateTime
from imhost.kit.clock import ensure_utc
from imhost.kit.errors import InvalidInput
from imhost.metering import metrics as m
from imhost.metering import repository, rollups, scratch
from imhost.metering.models import UsageRecord, UsageRollup

ZERO = Decimal(0)
GB_QUANTUM = Decimal("0.000000001")
FUTURE_TOLERANCE = timedelta(minutes=5)
BLOCK = 5000
"""Requests per query (a bound on the scratch table's rows)."""

_SUMMED = (
    m.MESSAGES,
    m.BYTES_IN,
    m.BYTES_OUT,
    m.TRAFFIC_GB,
    m.ROOM_MESSAGES,
    m.ROOM_DELIVERIES,
)
_PEAKS = (m.CONNECTIONS_PEAK, m.PEAK_CONNECTIONS)
_USERS = (m.ACTIVE_USERS, m.MONTHLY_ACTIVE_USERS)
_GAUGES = tuple(sorted(m.GAUGE_METRICS))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class GaugeIntegral:
    gb_seconds: Decimal
    """Integral of the stored GB over [start, as_of], in GB x seconds."""
    current_gb: Decimal
    """The level at ``as_of`` (the sum of every series' last value)."""


@dataclass(frozen=True, slots=True)
class Request:
    organization_id: str
    start: datetime
    end: datetime
    """Records with ``start <= bucket_start < end`` count."""
    as_of: datetime
    """Gauges are integrated over ``[start, as_of]``."""


def _utc(value: Any) -> datetime:
    """``coalesce``/``max`` lose the column type on SQLite; read the value back as aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return ensure_utc(value)


def _pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{name} must carry a time zone (UTC)", field=name)
    return value


def _ranges(session: Session, rows: Sequence[tuple[int, str, datetime, datetime]]) -> Any:
    """The (request index, organization, low, high) rows to join to a table.

    One row (a page view, a budget check) is a one-row subquery of bound values: exact for the
    planner and no round trips. Many rows (a billing block) go into a scratch table.
    """
    if len(rows) == 1:
        idx, org, lo, hi = rows[0]
        return select(
            literal(idx, Integer).label("idx"),
            literal(org, String).label("org"),
            literal(lo, UtcDateTime()).label("lo"),
            literal(hi, UtcDateTime()).label("hi"),
        ).subquery("ranges")
    return scratch.fill(session, scratch.RANGES, rows)


def _in_ranges(r: Any, table: Any) -> ColumnElement[bool]:
    """Join condition: ``table``'s rows of each range's organization timed in [lo, hi)."""
    when = table.hour_start if table is UsageRollup else table.bucket_start
    return and_(table.organization_id == r.c.org, when >= r.c.lo, when < r.c.hi)


def _whole(session: Session, qty: Any) -> ColumnElement[Any]:
    return qty if _pg(session) else cast(qty, Integer)


def _sum_rows(
    session: Session,
    table: Any,
    ranges: Sequence[tuple[int, str, datetime, datetime]],
    metrics: Sequence[str],
    out: dict[int, dict[str, Decimal]],
) -> None:
    """Add to ``out[idx][metric]`` the sums of ``table`` over each (idx, org, lo, hi)."""
    if not ranges:
        return
    pg = _pg(session)
    whole = [x for x in metrics if pg or x not in m.FRACTIONAL_METRICS]
    fractional = [x for x in metrics if x not in whole]
    for chunk in _chunks(ranges, BLOCK):
        r = _ranges(session, chunk)
        on = _in_ranges(r, table)
        exact = fractional
        if whole:
            sums = _integer_sums(session, r, table, on, whole)
            if sums is None:  # past SQLite's 64-bit integers: add them up in Python instead
                exact = [*whole, *fractional]
            else:
                for idx, metric, total in sums:
                    out[idx][metric] += Decimal(total or 0)
        if exact:
            query: Select[Any] = (
                select(r.c.idx, table.metric, table.quantity)
                .join_from(r, table, on)
                .where(table.metric.in_(exact))
            )
            for idx, metric, qty in session.execute(query):
                out[idx][metric] += Decimal(qty)


_SQLITE_SAFE_DIGITS = 18
"""Quantities of up to 18 digits, and their sums, fit SQLite's 64-bit integers."""


def _integer_sums(
    session: Session, r: Any, table: Any, on: ColumnElement[bool], metrics: Sequence[str]
) -> list[Any] | None:
    """Sums of whole-unit metrics in SQL; None on SQLite when a value or a sum would not fit
    a 64-bit integer (``CAST`` would clamp it, ``sum`` would fail): the caller adds exactly."""
    if _pg(session):
        return list(
            session.execute(
                select(r.c.idx, table.metric, func.sum(table.quantity))
                .join_from(r, table, on)
                .where(table.metric.in_(metrics))
                .group_by(r.c.idx, table.metric)
            )
        )
    query = (
        select(
            r.c.idx,
            table.metric,
            func.sum(cast(table.quantity, Integer)),
            func.max(func.length(table.quantity)),
        )
        .join_from(r, table, on)
        .where(table.metric.in_(metrics))
        .group_by(r.c.idx, table.metric)
    )
    try:
        rows = list(session.execute(query))
    except OperationalError:  # "integer overflow" of a sum
        return None
    if any((longest or 0) > _SQLITE_SAFE_DIGITS for *_, longest in rows):
        return None
    return [(idx, metric, total) for idx, metric, total, _ in rows]


def _split(requests: Sequence[Request]) -> tuple[list[Any], list[Any]]:
    """(whole-hour ranges for the rollups, edge ranges for the records) of every request."""
    hours: list[tuple[int, str, datetime, datetime]] = []
    edges: list[tuple[int, str, datetime, datetime]] = []
    for idx, q in enumerate(requests):
        whole = rollups.split(q.start, q.end)
        if whole is None:
            edges.append((idx, q.organization_id, q.start, q.end))
            continue
        h1, h2 = whole
        hours.append((idx, q.organization_id, h1, h2))
        if q.start < h1:
            edges.append((idx, q.organization_id, q.start, h1))
        if h2 < q.end:
            edges.append((idx, q.organization_id, h2, q.end))
    return hours, edges


def _sums(
    session: Session, requests: Sequence[Request], hours: list[Any], edges: list[Any]
) -> dict[int, dict[str, Decimal]]:
    out = {idx: dict.fromkeys(_SUMMED, ZERO) for idx in range(len(requests))}
    _sum_rows(session, UsageRollup, hours, _SUMMED, out)
    _sum_rows(session, UsageRecord, edges, _SUMMED, out)
    return out


def _peaks(
    session: Session, requests: Sequence[Request], hours: list[Any], edges: list[Any]
) -> dict[int, Decimal]:
    """The period's peak: from rollups and edges for one service, from the records otherwise."""
    best: dict[int, Decimal] = defaultdict(lambda: ZERO)
    services: dict[int, set[str]] = defaultdict(set)
    for table, ranges, service in (
        (UsageRollup, hours, UsageRollup.service_key),
        (UsageRecord, edges, func.coalesce(UsageRecord.service_id, "")),
    ):
        peak_column = UsageRollup.peak if table is UsageRollup else UsageRecord.quantity
        for chunk in _chunks(ranges, BLOCK):
            r = _ranges(session, chunk)
            query = (
                select(
                    r.c.idx,
                    func.max(_whole(session, peak_column)),
                    func.min(service),
                    func.max(service),
                )
                .join_from(r, table, _in_ranges(r, table))
                .where(table.metric.in_(_PEAKS))
                .group_by(r.c.idx)
            )
            for idx, peak, low, high in session.execute(query):
                best[idx] = max(best[idx], Decimal(peak or 0))
                services[idx].update((low, high))
    out: dict[int, Decimal] = {}
    several = [idx for idx, found in services.items() if len(found) > 1]
    for idx in range(len(requests)):
        out[idx] = best[idx]
    for idx in several:
        q = requests[idx]
        out[idx] = _peak_over_services(session, q.organization_id, q.start, q.end)
    return out


def _peak_over_services(
    session: Session, organization_id: str, start: datetime, end: datetime
) -> Decimal:
    """Highest per-minute sum over services of each service's highest report (records)."""
    per_service = (
        select(
            UsageRecord.service_id,
            UsageRecord.bucket_start,
            func.max(_whole(session, UsageRecord.quantity)).label("q"),
        )
        .where(
            UsageRecord.organization_id == organization_id,
            UsageRecord.metric.in_(_PEAKS),
            UsageRecord.bucket_start >= start,
            UsageRecord.bucket_start < end,
        )
        .group_by(UsageRecord.service_id, UsageRecord.bucket_start)
        .subquery()
    )
    per_bucket = (
        select(func.sum(per_service.c.q).label("s")).group_by(per_service.c.bucket_start).subquery()
    )
    value = session.execute(select(func.max(per_bucket.c.s))).scalar()
    return Decimal(value or 0)


def _users(session: Session, requests: Sequence[Request]) -> dict[int, Decimal]:
    out: dict[int, Decimal] = defaultdict(lambda: ZERO)
    ranges = [(i, q.organization_id, q.start, q.end) for i, q in enumerate(requests)]
    for chunk in _chunks(ranges, BLOCK):
        r = _ranges(session, chunk)
        query = (
            select(r.c.idx, func.count(func.distinct(UsageRecord.subject)))
            .join_from(r, UsageRecord, _in_ranges(r, UsageRecord))
            .where(UsageRecord.metric.in_(_USERS), UsageRecord.subject.is_not(None))
            .group_by(r.c.idx)
        )
        for idx, count in session.execute(query):
            out[idx] = Decimal(count or 0)
    return out


# --- storage gauges -------------------------------------------------------------------------
#
# Per series (service, gauge): the level at the start is the last sample before it (the raw
# samples of the start's own hour, else the last summarised hour before); then the raw samples
# of the partial first hour, the summaries of the whole hours, the raw samples of the partial
# last hour; the last level holds until ``as_of``. Integers throughout: milli-bytes and
# microseconds.

Series = tuple[str, str]
"""(service key, gauge metric)."""


def _gauge_orgs(session: Session, requests: Sequence[Request]) -> set[int]:
    """The requests whose organization has any gauge sample before ``as_of`` (rollups)."""
    found: set[int] = set()
    ranges = [(i, q.organization_id, _EPOCH, q.as_of) for i, q in enumerate(requests)]
    for chunk in _chunks(ranges, BLOCK):
        r = _ranges(session, chunk)
        query = (
            select(r.c.idx)
            .join_from(
                r,
                UsageRollup,
                and_(UsageRollup.organization_id == r.c.org, UsageRollup.hour_start < r.c.hi),
            )
            .where(UsageRollup.metric.in_(_GAUGES))
            .distinct()
        )
        found.update(idx for (idx,) in session.execute(query))
    return found


_PRE, _HEAD, _TAIL = 0, 1, 2


def _raw_gauge_samples(
    session: Session, ranges: list[tuple[int, str, datetime, datetime]]
) -> dict[int, dict[Series, list[tuple[int, int]]]]:
    """Raw samples per range index and series, as (microseconds, milli-bytes)."""
    out: dict[int, dict[Series, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    for chunk in _chunks(ranges, BLOCK):
        r = _ranges(session, chunk)
        query = (
            select(
                r.c.idx,
                UsageRecord.service_id,
                UsageRecord.metric,
                UsageRecord.bucket_start,
                UsageRecord.quantity,
            )
            .join_from(r, UsageRecord, _in_ranges(r, UsageRecord))
            .where(UsageRecord.metric.in_(_GAUGES))
        )
        for idx, service_id, metric, bucket, qty in session.execute(query):
            out[idx][(service_id or "", metric)].append(
                (rollups.micros(_utc(bucket)), rollups.milli_bytes(metric, Decimal(qty)))
            )
    return out


def _summaries(
    session: Session, ranges: list[tuple[int, str, datetime, datetime]]
) -> dict[int, dict[Series, list[tuple[int, int, int, int]]]]:
    """Summarised whole hours per request and series: (hour end, first, last level, integral)."""
    out: dict[int, dict[Series, list[tuple[int, int, int, int]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    hour_us = rollups.micros(_EPOCH + rollups.HOUR)
    for chunk in _chunks(ranges, BLOCK):
        r = _ranges(session, chunk)
        query = (
            select(
                r.c.idx,
                UsageRollup.service_key,
                UsageRollup.metric,
                UsageRollup.hour_start,
                UsageRollup.first_at,
                UsageRollup.last_level,
                UsageRollup.integral,
            )
            .join_from(r, UsageRollup, _in_ranges(r, UsageRollup))
            .where(UsageRollup.metric.in_(_GAUGES))
        )
        for idx, service_key, metric, hour, first_at, last_level, integral in session.execute(
            query
        ):
            out[idx][(service_key, metric)].append(
                (
                    rollups.micros(hour) + hour_us,
                    rollups.micros(first_at),
                    int(last_level),
                    int(integral),
                )
            )
    return out


def _levels_before_hours(
    session: Session, ranges: list[tuple[int, str, datetime, datetime]]
) -> dict[int, dict[Series, int]]:
    """Each series' level at the end of its last summarised hour before ``hi``."""
    out: dict[int, dict[Series, int]] = defaultdict(dict)
    for chunk in _chunks(ranges, BLOCK):
        r = _ranges(session, chunk)
        last = (
            select(
                r.c.idx,
                r.c.org,
                UsageRollup.service_key,
                UsageRollup.metric,
                func.max(UsageRollup.hour_start).label("hour"),
            )
            .join_from(
                r,
                UsageRollup,
                and_(UsageRollup.organization_id == r.c.org, UsageRollup.hour_start < r.c.hi),
            )
            .where(UsageRollup.metric.in_(_GAUGES))
            .group_by(r.c.idx, r.c.org, UsageRollup.service_key, UsageRollup.metric)
            .subquery()
        )
        query = select(
            last.c.idx, UsageRollup.service_key, UsageRollup.metric, UsageRollup.last_level
        ).join_from(
            last,
            UsageRollup,
            and_(
                UsageRollup.organization_id == last.c.org,
                UsageRollup.metric == last.c.metric,
                UsageRollup.service_key == last.c.service_key,
                UsageRollup.hour_start == last.c.hour,
            ),
        )
        for idx, service_key, metric, level in session.execute(query):
            out[idx][(service_key, metric)] = int(level or 0)
    return out


def _gauges(session: Session, requests: Sequence[Request]) -> dict[int, GaugeIntegral]:
    which = sorted(_gauge_orgs(session, requests))
    out = {idx: GaugeIntegral(ZERO, ZERO) for idx in range(len(requests))}
    if not which:
        return out
    raw: list[tuple[int, str, datetime, datetime]] = []
    hours: list[tuple[int, str, datetime, datetime]] = []
    before: list[tuple[int, str, datetime, datetime]] = []
    for i in which:
        q = requests[i]
        floor = rollups.hour_floor(q.start)
        before.append((i, q.organization_id, _EPOCH, floor))
        if floor < q.start:
            raw.append((i * 3 + _PRE, q.organization_id, floor, q.start))
        whole = rollups.split(q.start, q.as_of)
        if whole is None:
            raw.append((i * 3 + _HEAD, q.organization_id, q.start, q.as_of))
            continue
        h1, h2 = whole
        hours.append((i, q.organization_id, h1, h2))
        if q.start < h1:
            raw.append((i * 3 + _HEAD, q.organization_id, q.start, h1))
        if h2 < q.as_of:
            raw.append((i * 3 + _TAIL, q.organization_id, h2, q.as_of))
    samples = _raw_gauge_samples(session, raw)
    summaries = _summaries(session, hours)
    levels = _levels_before_hours(session, before)
    for i in which:
        q = requests[i]
        pre, head, tail = samples[i * 3 + _PRE], samples[i * 3 + _HEAD], samples[i * 3 + _TAIL]
        series_set = set(levels[i]) | set(pre) | set(head) | set(tail) | set(summaries[i])
        start_us, end_us = rollups.micros(q.start), rollups.micros(q.as_of)
        integral = 0
        current = 0
        for series in series_set:
            level = levels[i].get(series, 0)
            if pre.get(series):
                level = rollups.collapse(pre[series])[-1][1]
            t = start_us
            for at, value in rollups.collapse(head.get(series, [])):
                integral += level * (at - t)
                level, t = value, at
            for hour_end, first, last, inner in sorted(summaries[i].get(series, [])):
                integral += level * (first - t) + inner
                level, t = last, hour_end
            for at, value in rollups.collapse(tail.get(series, [])):
                integral += level * (at - t)
                level, t = value, at
            integral += level * (end_us - t)
            current += level
        # milli-byte x microsecond = 10^-3 x 10^-9 GB x 10^-6 s
        out[i] = GaugeIntegral(Decimal(integral).scaleb(-18), Decimal(current).scaleb(-12))
    return out


# --- the answers ----------------------------------------------------------------------------


def seconds(delta: timedelta) -> Decimal:
    return Decimal(delta // timedelta(microseconds=1)).scaleb(-6)


def gb(value: Decimal) -> Decimal:
    return value.quantize(GB_QUANTUM, rounding=ROUND_HALF_UP)


def normal(value: Decimal) -> Decimal:
    """Drop trailing zeros of a fraction (``1.500000000`` -> ``1.5``), keep integers plain."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


def aggregate(
    session: Session, requests: Sequence[Request]
) -> list[tuple[dict[str, Decimal], GaugeIntegral]]:
    """Billable quantities of each request, and its gauges' integral, in request order."""
    for q in requests:
        _aware(q.start, "period_start")
        _aware(q.end, "period_end")
        _aware(q.as_of, "as_of")
    if not requests:
        return []
    hours, edges = _split(requests)
    sums = _sums(session, requests, hours, edges)
    peaks = _peaks(session, requests, hours, edges)
    users = _users(session, requests)
    gauges = _gauges(session, requests)
    out: list[tuple[dict[str, Decimal], GaugeIntegral]] = []
    for idx, q in enumerate(requests):
        s = sums[idx]
        traffic = (s[m.BYTES_IN] + s[m.BYTES_OUT]).scaleb(-9) + s[m.TRAFFIC_GB]
        gauge = gauges[idx]
        elapsed = seconds(q.as_of - q.start)
        storage = gb(gauge.gb_seconds / elapsed) if elapsed > 0 else ZERO
        quantities = {
            m.MESSAGES: normal(s[m.MESSAGES]),
            m.TRAFFIC_GB: normal(traffic),
            m.PEAK_CONNECTIONS: normal(peaks[idx]),
            m.MONTHLY_ACTIVE_USERS: users[idx],
            m.STORAGE_GB: normal(storage),
            m.ROOM_MESSAGES: normal(s[m.ROOM_MESSAGES]),
            m.ROOM_DELIVERIES: normal(s[m.ROOM_DELIVERIES]),
        }
        out.append((quantities, gauge))
    return out


def billable_quantities(
    session: Session, organization_id: str, period_start: datetime, period_end: datetime
) -> dict[str, Decimal]:
    """Every billable metric's quantity for the period (0 without usage). Billing rates these."""
    return billable_quantities_many(session, [(organization_id, period_start, period_end)])[0]


def billable_quantities_many(
    session: Session, periods: Sequence[tuple[str, datetime, datetime]]
) -> list[dict[str, Decimal]]:
    """:func:`billable_quantities` for many (organization, period start, period end) at once.

    The answer has one dict per request, in the order given, computed in a few queries per
    block of 500 requests (the billing run asks for a block of organizations at a time).
    """
    requests = []
    for org, start, end in periods:
        _aware(start, "period_start")
        _aware(end, "period_end")
        if end <= start:
            raise InvalidInput("period_end must be after period_start", field="period_end")
        requests.append(Request(org, start, end, end))
    return [quantities for quantities, _ in aggregate(session, requests)]


def usage_to_date(
    session: Session, organization_id: str, period_start: datetime, now: datetime
) -> dict[str, Decimal]:
    """Billable quantities from ``period_start`` until ``now`` (storage averaged so far).

    Records stamped up to five minutes ahead of ``now`` (clock skew) are included.
    """
    _aware(now, "now")
    if now < period_start:
        return dict.fromkeys(m.BILLABLE_CODES, ZERO)
    request = Request(organization_id, period_start, now + FUTURE_TOLERANCE, now)
    quantities, _ = aggregate(session, [request])[0]
    return quantities


def sums_per_day(
    session: Session, organization_id: str, metric: str, start: datetime, end: datetime
) -> dict[date, Decimal]:
    """A summed metric's total per UTC day over ``[start, end)`` (days without usage absent).

    Whole hours come from the rollups, the partial hours at the edges from the records.
    """
    _aware(start, "start")
    _aware(end, "end")
    out: dict[date, Decimal] = defaultdict(lambda: ZERO)
    whole = rollups.split(start, end)
    edges = [(start, end)]
    if whole is not None:
        h1, h2 = whole
        edges = [(start, h1), (h2, end)]
        for hour, qty in session.execute(
            select(UsageRollup.hour_start, UsageRollup.quantity).where(
                UsageRollup.organization_id == organization_id,
                UsageRollup.metric == metric,
                UsageRollup.hour_start >= h1,
                UsageRollup.hour_start < h2,
            )
        ):
            out[_utc(hour).date()] += Decimal(qty)
    for lo, hi in edges:
        if lo >= hi:
            continue
        for bucket, qty in session.execute(
            select(UsageRecord.bucket_start, UsageRecord.quantity).where(
                UsageRecord.organization_id == organization_id,
                UsageRecord.metric == metric,
                UsageRecord.bucket_start >= lo,
                UsageRecord.bucket_start < hi,
            )
        ):
            out[_utc(bucket).date()] += Decimal(qty)
    return dict(out)


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
    return repository.usage_records(
        session, organization_id, metrics, period_start, period_end, limit, offset
    )


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
