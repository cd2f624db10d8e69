"""The scheduled re-check of unverified custom domains.

DNS is asked outside any database transaction (a lookup may wait for its timeout); each
outcome is then written in its own short transaction, after checking that the domain is still
there, still has the token that was checked and is still due (so a domain removed, or checked
by "Check now", meanwhile is left alone, and a rerun records nothing twice).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from imhost.config import Settings
from imhost.db.engine import transaction
from imhost.domains import service
from imhost.domains.checks import RecordCheck
from imhost.domains.models import CustomDomain
from imhost.kit.clock import Clock

log = logging.getLogger(__name__)

CHECK_EVERY = timedelta(minutes=1)
"""How often the worker looks for domains whose re-check is due."""
BATCH = 200
PARALLEL_LOOKUPS = 8


@dataclass(frozen=True)
class _Due:
    id: str
    name: str
    token: str
    self_hosted: bool


def scheduled_checks(
    factory: sessionmaker[Session], clock: Clock, settings: Settings, *, batch: int = BATCH
) -> int:
    """Re-check every domain that is due; returns how many outcomes were recorded."""
    with transaction(factory) as session:
        due = [
            _Due(d.id, d.name, d.token, d.self_hosted)
            for d in service.due_domains(session, clock.now(), limit=batch)
        ]
    if not due:
        return 0

    def lookup(item: _Due) -> tuple[_Due, list[RecordCheck]]:
        return item, service.run_check(settings, item.name, item.token, item.self_hosted)

    recorded = 0
    with ThreadPoolExecutor(max_workers=min(PARALLEL_LOOKUPS, len(due))) as pool:
        outcomes = list(pool.map(lookup, due))
    for item, results in outcomes:
        with transaction(factory, write=True) as session:
            domain = session.get(CustomDomain, item.id)
            now = clock.now()
            if (
                domain is None
                or domain.token != item.token
                or domain.next_check_at is None
                or domain.next_check_at > now
            ):
                continue
            service.record_check(session, clock, settings, domain, results)
            recorded += 1
    log.info("custom domains re-checked: %d", recorded)
    return recorded
