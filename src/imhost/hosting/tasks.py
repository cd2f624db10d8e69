"""Scheduled jobs of hosting: message archive retention."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.db.engine import transaction
from imhost.hosting.models import HostedService, XmppArchivedMessage
from imhost.kit.clock import Clock

log = logging.getLogger(__name__)

RETENTION_EVERY = timedelta(hours=1)
RETENTION_BATCH = 1000
"""Rows deleted per transaction: a short write that never holds the database for long."""


def expire_archives(
    factory: sessionmaker[Session], clock: Clock, *, batch: int = RETENTION_BATCH
) -> int:
    """Delete archived messages (XEP-0313) older than their service's plan keeps them
    (``archive_days``; None keeps them), oldest first, ``batch`` rows per transaction.
    Returns how many went. Running it again deletes nothing more (idempotent)."""
    now = clock.now()
    with transaction(factory) as session:
        services = session.execute(
            select(HostedService.id, HostedService.archive_days).where(
                HostedService.archive_days.is_not(None)
            )
        ).all()
    removed = 0
    row = XmppArchivedMessage
    for service_id, days in services:
        if days is None:
            continue
        cutoff = now - timedelta(days=days)
        while True:
            with transaction(factory, write=True) as session:
                ids = list(
                    session.scalars(
                        select(row.id)
                        .where(row.service_id == service_id, row.stamp < cutoff)
                        .order_by(row.stamp)
                        .limit(batch)
                    )
                )
                if ids:
                    session.execute(delete(row).where(row.id.in_(ids)))
            removed += len(ids)
            if len(ids) < batch:
                break
    if removed:
        log.info("message archive retention deleted %d messages", removed)
    return removed
