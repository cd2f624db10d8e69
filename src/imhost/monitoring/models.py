"""Monitoring tables: probe state, state changes, per-minute latency, incidents, maintenance.

Probe results are stored compactly: one row per check holds the current state and its
counters, a row is added only when a check changes state, and latency is kept as one summary
row per check and minute (with retention). Uptime is computed from the state changes.

A *subject* is what a status page shows: ``service:<hosted service id>`` or
``component:<name>`` (``xmpp-c2s``, ``websocket``, ``web``, ``api``, ``email``). A subject
has one or more checks (``xmpp-starttls``, ``xmpp-direct_tls``, ``srv`` ...); it is down while
any of its checks is down.
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

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

from imhost.db.base import Base, CreatedMixin, IdMixin
from imhost.db.types import Amount, UtcDateTime


class CheckState(enum.StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


class IncidentStatus(enum.StrEnum):
    INVESTIGATING = "investigating"
    IDENTIFIED = "identified"
    MONITORING = "monitoring"
    RESOLVED = "resolved"


class Recurrence(enum.StrEnum):
    NONE = "none"
    DAILY = "daily"
    WEEKLY = "weekly"


class ProbeCheck(IdMixin, Base):
    """The current state of one check of one subject, and the counters that damp changes."""

    __tablename__ = "probe_checks"
    __table_args__ = (UniqueConstraint("subject", "check_name"),)

    subject: Mapped[str] = mapped_column(String(120))
    check_name: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(8), default=CheckState.UNKNOWN.value)
    state_since: Mapped[datetime] = mapped_column(UtcDateTime())
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    consecutive_successes: Mapped[int] = mapped_column(Integer, default=0)
    last_run_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    last_seconds: Mapped[float | None] = mapped_column(default=None)
    last_detail: Mapped[str] = mapped_column(String(500), default="")
    last_warning: Mapped[str] = mapped_column(String(500), default="")


class ProbeStateChange(IdMixin, Base):
    """A check changed state at ``at`` (the only per-event row probes write)."""

    __tablename__ = "probe_state_changes"
    __table_args__ = (Index("ix_probe_state_changes_subject_at", "subject", "at"),)

    subject: Mapped[str] = mapped_column(String(120))
    check_name: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    state: Mapped[str] = mapped_column(String(8))
    detail: Mapped[str] = mapped_column(String(500), default="")


class ProbeLatencyMinute(Base):
    """Latency summary of one check over one minute."""

    __tablename__ = "probe_latency_minutes"

    subject: Mapped[str] = mapped_column(String(120), primary_key=True)
    check_name: Mapped[str] = mapped_column(String(40), primary_key=True)
    minute: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    samples: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    total_ms: Mapped[int] = mapped_column(Integer, default=0)
    max_ms: Mapped[int] = mapped_column(Integer, default=0)


class Incident(IdMixin, CreatedMixin, Base):
    """Something is (or was) wrong with one or more subjects."""

    __tablename__ = "incidents"
    __table_args__ = (Index("ix_incidents_status", "status"),)

    reference: Mapped[str] = mapped_column(String(16), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=IncidentStatus.INVESTIGATING.value)
    impact: Mapped[str] = mapped_column(String(16), default="major")
    automatic: Mapped[bool] = mapped_column(Boolean, default=True)
    held: Mapped[bool] = mapped_column(Boolean, default=False)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    recovered_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    reopened: Mapped[int] = mapped_column(Integer, default=0)


class IncidentSubject(Base):
    """A subject an incident affects."""

    __tablename__ = "incident_subjects"

    incident_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True
    )
    subject: Mapped[str] = mapped_column(String(120), primary_key=True, index=True)


class IncidentUpdate(IdMixin, Base):
    """A dated message on an incident (customers see them on the status page)."""

    __tablename__ = "incident_updates"

    incident_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    status: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(200), default="monitoring")


class AlertNotice(IdMixin, Base):
    """Something staff are to be told about an incident (``firing``, ``repeat`` or
    ``resolved``); ``sent_at`` is set when a grouped alert carried it."""

    __tablename__ = "monitoring_alert_notices"
    __table_args__ = (Index("ix_monitoring_alert_notices_sent_at", "sent_at"),)

    incident_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class MaintenanceWindow(IdMixin, CreatedMixin, Base):
    """Planned work: one-off or recurring, in a time zone; excluded from downtime.

    ``local_start`` is the wall-clock start of the first occurrence in ``timezone``;
    recurring windows repeat daily or weekly at that wall-clock time (so they follow daylight
    saving time) until ``until`` (UTC) if set. ``subjects`` lists the affected subjects.
    """

    __tablename__ = "maintenance_windows"

    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    subjects: Mapped[list[str]] = mapped_column(JSON, default=list)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    local_start: Mapped[str] = mapped_column(String(19))
    duration_minutes: Mapped[int] = mapped_column(Integer)
    recurrence: Mapped[str] = mapped_column(String(8), default=Recurrence.NONE.value)
    until: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)


class PlanSla(Base):
    """A plan's service level: the uptime promised per billing period, the credit schedule
    that applies below it, and how often the plan's services are probed.

    ``credits`` is a list of ``[below_percent, credit_percent]`` pairs (strings, exact
    decimals): the credit is the largest ``credit_percent`` whose ``below_percent`` the
    measured uptime is under, as a share of the period's base fee."""

    __tablename__ = "plan_slas"

    plan_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("catalog_plans.id", ondelete="CASCADE"), primary_key=True
    )
    target_percent: Mapped[Decimal] = mapped_column(Amount())
    credits: Mapped[list[list[str]]] = mapped_column(JSON, default=list)
    probe_interval_seconds: Mapped[int | None] = mapped_column(Integer, default=None)
