"""Scheduled monitoring jobs (the worker runs them): settle incidents, latency retention."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from imhost.config import Settings
from imhost.db.engine import transaction
from imhost.kit.clock import Clock

from . import service as monitoring

SETTLE_EVERY = timedelta(minutes=1)
RETENTION_EVERY = timedelta(hours=6)
ALERTS_EVERY = timedelta(seconds=15)


def settle(factory: sessionmaker[Session], clock: Clock) -> int:
    """Resolve the incidents whose services stayed up long enough (and are not held)."""
    with transaction(factory, write=True) as session:
        return len(monitoring.settle_incidents(session, clock))


def retention(factory: sessionmaker[Session], clock: Clock, settings: Settings) -> int:
    """Drop per-minute latency summaries past their retention."""
    keep = timedelta(days=settings.monitoring.latency_retention_days)
    with transaction(factory, write=True) as session:
        return monitoring.purge_latency(session, clock, keep)
