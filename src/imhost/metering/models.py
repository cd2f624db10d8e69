"""Tables of metering: usage records, closed periods, the late-usage setting, budgets."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from imhost.db.base import Base, CreatedMixin, IdMixin
from imhost.db.types import Amount, UtcDateTime

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid); PostgreSQL gets a bigint.
_BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


class LateUsagePolicy(enum.StrEnum):
    REFUSE = "refuse"
    """Usage for a period that is already invoiced is refused with a reason."""
    NEXT_INVOICE = "next_invoice"
    """It is recorded in the next open period as a correction (original bucket kept)."""


DEFAULT_THRESHOLDS: tuple[int, ...] = (50, 80, 100)


class UsageRecord(Base):
    """One quantity of one metric for one organization in one time bucket.

    A record is identified by its organization, metric, bucket and ``idempotency_key``: a
    record sent twice is stored once. That one unique index is also the index every read by
    period uses (organization, metric, bucket range), so an insert updates one B-tree besides
    the table. ``original_bucket_start`` is set on a correction: late usage for an invoiced
    (closed) period moved into the next open period (``late_usage_policy = next_invoice``);
    corrections are found again by their key through a small partial index, so a correction
    sent twice is stored once even when the period it moved to has changed since.
    """

    __tablename__ = "usage_records"
    __table_args__ = (
        UniqueConstraint(
            "organization_id",
            "metric",
            "bucket_start",
            "idempotency_key",
            name="uq_usage_records_org_metric_bucket_key",
        ),
        Index(
            "ix_usage_records_corrections",
            "organization_id",
            "idempotency_key",
            sqlite_where=text("original_bucket_start IS NOT NULL"),
            postgresql_where=text("original_bucket_start IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(32))
    """No foreign key: checking one for every record was most of PostgreSQL's work on the
    engine's path. Ingestion checks (and on PostgreSQL share-locks) the organizations once
    per batch; organizations are closed, never deleted."""
    service_id: Mapped[str | None] = mapped_column(String(64), default=None)
    metric: Mapped[str] = mapped_column(String(40))
    bucket_start: Mapped[datetime] = mapped_column(UtcDateTime())
    quantity: Mapped[Decimal] = mapped_column(Amount())
    subject: Mapped[str | None] = mapped_column(String(255), default=None)
    idempotency_key: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    original_bucket_start: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class UsageRollup(Base):
    """Usage of one organization, metric and service in one UTC hour, kept on ingestion.

    ``quantity`` is the sum of the hour's records, ``peak`` the highest single record,
    ``records`` their number. ``service_key`` is the record's ``service_id`` or ``""``.
    Gauge rows also summarise the hour's samples for the storage average.
    Reads of a period take whole hours from here and only the partial hours at its edges
    from the records (see :mod:`imhost.metering.rollups`).
    """

    __tablename__ = "usage_rollups"

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    metric: Mapped[str] = mapped_column(String(40), primary_key=True)
    hour_start: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    service_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    quantity: Mapped[Decimal] = mapped_column(Amount())
    peak: Mapped[Decimal] = mapped_column(Amount())
    records: Mapped[int] = mapped_column(BigInteger)
    # Gauges (storage) only, for time-weighted averages: the hour's first sample time, the
    # level of its last sample and the integral from the first sample to the hour's end, in
    # milli-bytes and milli-bytes x microseconds (exact integers; the integral as text, it
    # can exceed 38 digits' worth of numeric with 12 decimals).
    first_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    last_level: Mapped[Decimal | None] = mapped_column(Amount(), default=None)
    integral: Mapped[str | None] = mapped_column(String(80), default=None)


class ClosedPeriod(IdMixin, Base):
    """A period billing has invoiced for an organization: no more usage goes into it."""

    __tablename__ = "usage_closed_periods"
    __table_args__ = (UniqueConstraint("organization_id", "period_start"),)

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    period_start: Mapped[datetime] = mapped_column(UtcDateTime())
    period_end: Mapped[datetime] = mapped_column(UtcDateTime())
    closed_at: Mapped[datetime] = mapped_column(UtcDateTime())


class MeteringSettings(Base):
    """Provider-wide metering settings: a single row (id 1)."""

    __tablename__ = "metering_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    late_usage_policy: Mapped[str] = mapped_column(String(16), default=LateUsagePolicy.REFUSE.value)
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class Budget(IdMixin, CreatedMixin, Base):
    """A customer's monthly spending budget, with alert thresholds in percent."""

    __tablename__ = "usage_budgets"

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), unique=True
    )
    amount: Mapped[Decimal] = mapped_column(Amount())
    currency: Mapped[str] = mapped_column(String(3))
    thresholds: Mapped[list[int]] = mapped_column(JSON, default=lambda: list(DEFAULT_THRESHOLDS))
    hard_cap: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    capped_since: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    """When the hard cap stopped billable usage; None while it does not (the block is lifted
    by the budget check once the spend is under the cap again)."""


class BudgetAlert(IdMixin, Base):
    """A threshold crossed in a period; its uniqueness makes each alert go out once."""

    __tablename__ = "usage_budget_alerts"
    __table_args__ = (UniqueConstraint("budget_id", "period_start", "threshold"),)

    budget_id: Mapped[str] = mapped_column(ForeignKey("usage_budgets.id", ondelete="CASCADE"))
    organization_id: Mapped[str] = mapped_column(String(32), index=True)
    period_start: Mapped[datetime] = mapped_column(UtcDateTime())
    threshold: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal] = mapped_column(Amount())
    budget_amount: Mapped[Decimal] = mapped_column(Amount())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
