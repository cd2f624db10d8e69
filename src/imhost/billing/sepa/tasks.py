"""The scheduled SEPA job: announce a debit for each open invoice under an active mandate."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from imhost.billing.sepa.collections import queue_due_collections
from imhost.billing.sepa.mandates import ensure_mandate_methods
from imhost.billing.sepa.settings import creditor
from imhost.db.engine import transaction
from imhost.kit.clock import Clock


def scheduled_queue(session_factory: sessionmaker[Session], clock: Clock) -> int:
    """Queue what is due (nothing until staff have set up the creditor); how many were queued.

    Safe to run on several nodes at once: a collection is unique per invoice and attempt, and
    its idempotency key names both, so the second run finds the collection the first made.
    """
    with session_factory() as session:
        if not creditor(session).ready:
            return 0
    with transaction(session_factory, write=True) as session:
        ensure_mandate_methods(session, clock)
        return len(queue_due_collections(session, clock))
