"""Tables of the catalog: plans, their versions (one price book per currency), price
components on billable metrics, and add-ons.

A plan version is never edited once created: changing any price makes a new version and marks
the old one superseded. Subscriptions point at a version id (billing's ``plan_version_id``) and
keep it until they are migrated.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from imhost.catalog.pricing import PriceSpec, parse_tiers, tidy
from imhost.db.base import Base, CreatedMixin, IdMixin
from imhost.db.types import Amount, UtcDateTime


class AddOnKind(enum.StrEnum):
    PREMIUM_SUPPORT = "premium_support"
    EXTRA_DOMAIN = "extra_domain"
    MESSAGE_ARCHIVE = "message_archive"
    EXTRA_ACCOUNTS = "extra_accounts"
    EXTRA_STORAGE = "extra_storage"
    OTHER = "other"


LIMIT_FIELDS: tuple[str, ...] = (
    "max_xmpp_accounts",
    "max_connections",
    "max_connections_per_account",
    "message_rate_per_second",
    "message_burst",
    "storage_mb",
    "max_custom_domains",
    "max_offline_messages",
    "max_rooms",
    "max_room_occupants",
    "archive_days",
)
"""The limits a plan version sets; ``None`` means unlimited."""

LIMIT_LABELS: dict[str, str] = {
    "max_xmpp_accounts": "XMPP accounts",
    "max_connections": "Connections at once",
    "max_connections_per_account": "Connections per account",
    "message_rate_per_second": "Messages per second",
    "message_burst": "Message burst",
    "storage_mb": "Storage (MB)",
    "max_custom_domains": "Custom domains",
    "max_offline_messages": "Offline messages kept",
    "max_rooms": "Group chat rooms",
    "max_room_occupants": "People in one group chat",
    "archive_days": "Days of message history kept",
}
"""What customers read for each limit."""


@dataclass(frozen=True, slots=True)
class PlanLimits:
    """The limits the service enforces for a plan version (``None``: unlimited)."""

    max_xmpp_accounts: int | None = None
    max_connections: int | None = None
    max_connections_per_account: int | None = None
    message_rate_per_second: int | None = None
    message_burst: int | None = None
    storage_mb: int | None = None
    max_custom_domains: int | None = None
    max_offline_messages: int | None = None
    max_rooms: int | None = None
    max_room_occupants: int | None = None
    archive_days: int | None = None

    def plus(self, deltas: dict[str, int]) -> PlanLimits:
        """These limits raised by an add-on's deltas (an unlimited limit stays unlimited)."""
        values: dict[str, int | None] = {f: getattr(self, f) for f in LIMIT_FIELDS}
        for name, delta in deltas.items():
            current = values.get(name)
            if name in values and current is not None:
                values[name] = current + int(delta)
        return PlanLimits(**values)


class Plan(IdMixin, CreatedMixin, Base):
    """A product a customer can subscribe to (Starter, Business, ...)."""

    __tablename__ = "catalog_plans"

    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    archived_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class PlanVersion(IdMixin, CreatedMixin, Base):
    """The prices and limits of a plan in one currency and interval, frozen once created."""

    __tablename__ = "catalog_plan_versions"
    __table_args__ = (
        UniqueConstraint("plan_id", "version"),
        Index("ix_catalog_plan_versions_current", "plan_id", "currency", "billing_interval"),
    )

    plan_id: Mapped[str] = mapped_column(ForeignKey("catalog_plans.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    # A code of catalog.intervals: monthly, every-3-months, calendar-weekly, ...
    billing_interval: Mapped[str] = mapped_column(String(40), default="monthly")
    base_fee: Mapped[Decimal] = mapped_column(Amount())
    setup_fee: Mapped[Decimal] = mapped_column(Amount(), default=Decimal(0))
    trial_days: Mapped[int] = mapped_column(Integer, default=0)
    max_xmpp_accounts: Mapped[int | None] = mapped_column(Integer, default=None)
    max_connections: Mapped[int | None] = mapped_column(Integer, default=None)
    max_connections_per_account: Mapped[int | None] = mapped_column(Integer, default=None)
    message_rate_per_second: Mapped[int | None] = mapped_column(Integer, default=None)
    message_burst: Mapped[int | None] = mapped_column(Integer, default=None)
    storage_mb: Mapped[int | None] = mapped_column(Integer, default=None)
    max_custom_domains: Mapped[int | None] = mapped_column(Integer, default=None)
    max_offline_messages: Mapped[int | None] = mapped_column(Integer, default=None)
    max_rooms: Mapped[int | None] = mapped_column(Integer, default=None)
    max_room_occupants: Mapped[int | None] = mapped_column(Integer, default=None)
    archive_days: Mapped[int | None] = mapped_column(Integer, default=None)
    """Days a message stays in the accounts' archives (XEP-0313); None keeps it for ever."""
    change_note: Mapped[str] = mapped_column(String(500), default="")
    superseded_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)

    @property
    def limits(self) -> PlanLimits:
        return PlanLimits(**{f: getattr(self, f) for f in LIMIT_FIELDS})

    @property
    def is_current(self) -> bool:
        return self.superseded_at is None


class PriceComponent(IdMixin, Base):
    """A usage price on one billable metric, part of a plan version.

    ``currency`` repeats the version's currency so that :meth:`to_spec` needs no query.
    """

    __tablename__ = "catalog_price_components"
    __table_args__ = (UniqueConstraint("plan_version_id", "metric"),)

    plan_version_id: Mapped[str] = mapped_column(
        ForeignKey("catalog_plan_versions.id", ondelete="CASCADE"), index=True
    )
    metric: Mapped[str] = mapped_column(String(40))
    pricing_model: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    unit_price: Mapped[Decimal | None] = mapped_column(Amount(), default=None)
    tiers: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    package_size: Mapped[Decimal | None] = mapped_column(Amount(), default=None)
    included_quantity: Mapped[Decimal] = mapped_column(Amount(), default=Decimal(0))
    cap: Mapped[Decimal | None] = mapped_column(Amount(), default=None)
    minimum: Mapped[Decimal | None] = mapped_column(Amount(), default=None)
    position: Mapped[int] = mapped_column(Integer, default=0)

    def to_spec(self) -> PriceSpec:
        def opt(value: Decimal | None) -> Decimal | None:
            return None if value is None else tidy(value)

        # PostgreSQL gives numeric(38, 12) back padded with zeros; the calculation shown on
        # invoices reads "at 0.05", not "at 0.050000000000".
        return PriceSpec(
            model=self.pricing_model,
            metric=self.metric,
            currency=self.currency,
            unit_price=opt(self.unit_price),
            tiers=parse_tiers(self.tiers) if self.tiers else (),
            package_size=opt(self.package_size),
            included_quantity=tidy(self.included_quantity),
            cap=opt(self.cap),
            minimum=opt(self.minimum),
        )


class AddOn(IdMixin, CreatedMixin, Base):
    """An option sold on top of a plan, with its own price and limit deltas."""

    __tablename__ = "catalog_addons"
    __table_args__ = (UniqueConstraint("code", "currency"),)

    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    price: Mapped[Decimal] = mapped_column(Amount())
    # A code of catalog.intervals: monthly, every-3-months, calendar-weekly, ...
    billing_interval: Mapped[str] = mapped_column(String(40), default="monthly")
    limit_deltas: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
