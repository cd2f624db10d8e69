"""Usage in: checks, idempotency, late usage, and the engine's direct path.

Two ways in. :func:`ingest` is the path of the API and the CLI (:func:`ingest_by_staff` when
the provider sends usage across organizations, which is audited): every record is checked and
gets a reason when refused, a record sent again is a duplicate (same content) or a conflict
(other content), and a batch is atomic on request. :func:`ingest_engine_batch` is the path
of the built-in engine (trusted, fast): the checks a bad value needs, then one bulk insert
where duplicates collapse on their idempotency keys. Both store through
:func:`imhost.metering.repository.insert_rows`. Services never commit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from sqlalchemy.orm import Session

from imhost.accounts.audit import Actor
from imhost.kit.clock import Clock, SystemClock
from imhost.kit.errors import InvalidInput
from imhost.metering import audit, closing, repository
from imhost.metering import metrics as m
from imhost.metering.models import LateUsagePolicy

FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_QUANTITY = Decimal("1e20")

ServiceOwners = Callable[[Session, Collection[str]], Mapping[str, str]]
"""Given hosted service ids, the organization of each one that exists (hosting answers)."""


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


# --- the checks of one record ------------------------------------------------------------


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
    services: ServiceOwners | None = None,
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
    ``services`` tells which organization each hosted service belongs to (metering stands
    below hosting; the API and the CLI pass :func:`imhost.hosting.service.service_owners`):
    a record whose ``service_id`` is not a service of the record's organization (another
    tenant's, or none at all) is refused.
    """
    now = clock.now()
    result = IngestResult()
    policy = closing.get_late_usage_policy(session)
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
    known_orgs = repository.organizations_for_ingest(session, org_ids)
    owners: Mapping[str, str] = {}
    if services is not None:
        wanted = {rec.service_id for _, rec, _, _ in candidates if rec.service_id is not None}
        owners = services(session, wanted) if wanted else {}
    periods = closing.closed_periods(session, org_ids)
    stored = repository.stored_contents(
        session,
        {
            (org, rec.metric, rec.bucket_start.astimezone(UTC), rec.idempotency_key)
            for _, rec, org, _ in candidates
        },
    )

    rows: list[repository.Row] = []
    seen: dict[repository.Identity, repository.Content] = {}
    for index, rec, org_id, qty in candidates:
        key = rec.idempotency_key
        if org_id not in known_orgs:
            result.rejected.append(Rejection(index, key, f"unknown organization {org_id!r}"))
            continue
        service_id = rec.service_id
        if services is not None and service_id is not None and owners.get(service_id) != org_id:
            result.rejected.append(
                Rejection(
                    index,
                    key,
                    f"service_id {service_id!r} is not a hosted service of organization {org_id!r}",
                )
            )
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
        if org_periods and closing.is_closed(org_periods, bucket):
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
            bucket = closing.next_open(org_periods, bucket)
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
    inserted = repository.insert_rows(session, rows)
    # A concurrent writer may have stored one of these keys between our check and our insert:
    # ON CONFLICT DO NOTHING keeps its row, and ours counts as a duplicate.
    result.duplicates += len(rows) - inserted
    result.accepted = inserted
    if inserted < len(rows):
        result.corrected = min(result.corrected, inserted)
    return result


def ingest_by_staff(
    session: Session,
    clock: Clock,
    records: Sequence[UsageLike],
    *,
    atomic: bool,
    services: ServiceOwners | None = None,
    actor: Actor | None = None,
) -> IngestResult:
    """:func:`ingest` by the provider, across organizations (each record names its own).

    A batch that stored something is audited as ``usage.ingested_by_staff`` (by ``actor``,
    with the counts); a customer's own ingestion and the engine's direct path are not.
    """
    result = ingest(session, clock, records, atomic=atomic, services=services)
    if result.accepted:
        audit.record(
            session,
            clock,
            actor,
            "ingested_by_staff",
            accepted=result.accepted,
            rejected=len(result.rejected),
        )
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


# --- the engine's direct path ----------------------------------------------------------------

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
    known_orgs = repository.organizations_for_ingest(session, org_ids)
    periods = closing.closed_periods(session, org_ids)
    policy: LateUsagePolicy | None = None
    rows: list[repository.Row] = []
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
        if org_periods and closing.is_closed(org_periods, bucket):
            if policy is None:
                policy = closing.get_late_usage_policy(session)
            if policy is LateUsagePolicy.REFUSE or rec.metric in m.GAUGE_METRICS:
                result.rejected.append(
                    Rejection(index, key, "bucket in a closed (invoiced) period")
                )
                continue
            original, bucket = bucket, closing.next_open(org_periods, bucket)
            result.corrected += 1
        rows.append((org_id, rec.service_id, rec.metric, bucket, qty, subject, key, now, original))
    inserted = repository.insert_rows(session, rows)
    result.accepted = inserted
    result.duplicates = len(rows) - inserted
    return result
