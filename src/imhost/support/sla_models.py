"""Tables of the SLA timers: the business calendar, the policies per support tier, and the
alerts already sent (so each warning and each breach alert goes out once)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imhost.db.base import Base, IdMixin
from imhost.db.types import UtcDateTime


class SlaCalendarRow(Base):
    """The one business calendar staff set (``id`` is always ``"default"``)."""

    __tablename__ = "support_sla_calendar"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    timezone: Mapped[str] = mapped_column(String(64))
    weekly: Mapped[dict[str, Any]] = mapped_column(JSON)  # weekday name -> "09:00-17:00, ..."
    holidays: Mapped[list[str]] = mapped_column(JSON)  # ISO dates
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class SlaPolicyRow(Base):
    """The targets of one support tier, in business minutes (warning: real minutes)."""

    __tablename__ = "support_sla_policies"

    tier: Mapped[str] = mapped_column(String(32), primary_key=True)
    first_response_minutes: Mapped[int] = mapped_column(Integer)
    resolution_minutes: Mapped[int] = mapped_column(Integer)
    warn_before_minutes: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class SlaAlert(IdMixin, Base):
    """A warning or breach alert sent for one target of one ticket at one due time. The
    unique constraint makes the alert job idempotent: a due time that moves (a pause) may
    warn again, the same due time never twice."""

    __tablename__ = "support_sla_alerts"
    __table_args__ = (
        UniqueConstraint("ticket_id", "target", "kind", "due_at", name="uq_support_sla_alerts"),
    )

    ticket_id: Mapped[str] = mapped_column(String(32), index=True)
    target: Mapped[str] = mapped_column(String(16))  # first_response | resolution
    kind: Mapped[str] = mapped_column(String(16))  # warning | breached
    due_at: Mapped[datetime] = mapped_column(UtcDateTime())
    sent_at: Mapped[datetime] = mapped_column(UtcDateTime())
