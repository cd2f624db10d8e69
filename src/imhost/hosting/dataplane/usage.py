"""``UsageSink`` on metering: the engine's usage records written as they come (the engine
hands them over through :class:`~imhost.hosting.usage_journal.JournaledUsageSink`)."""

from __future__ import annotations

import logging
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from imhost.hosting.dataplane.runner import DbRunner
from imhost.kit.clock import Clock
from imhost.metering.ingestion import EngineUsage, ingest_engine_batch
from imhost.xmpp.ports import UsageRecord

log = logging.getLogger("imhost.hosting.ports")


class UsageOwners(Protocol):
    def usage_owner(self, domain: str) -> tuple[str, str] | None:
        """(organization id, service id) of a host, also of one removed while running."""
        ...


class DbUsageSink:
    """Writes a batch to metering in one transaction, on ``factory`` (the engine's own
    connection, ``hosting/engines/builtin.py``)."""

    def __init__(
        self,
        runner: DbRunner,
        owners: UsageOwners,
        clock: Clock,
        factory: sessionmaker[Session] | None = None,
    ) -> None:
        self.runner = runner
        self.owners = owners
        self.clock = clock
        self.factory = factory

    async def record(self, records: list[UsageRecord]) -> None:
        """Write a batch (idempotency keys unchanged). Records of a host that is unknown
        (never hosted here) are dropped with a warning: retrying them could never succeed. A
        database error raises, so the batch is kept and retried; duplicates collapse on
        their keys."""
        rows: list[EngineUsage] = []
        unknown: set[str] = set()
        for rec in records:
            owner = self.owners.usage_owner(rec.host)
            if owner is None:
                unknown.add(rec.host)
                continue
            rows.append(
                EngineUsage(
                    organization_id=owner[0],
                    service_id=owner[1],
                    metric=rec.metric,
                    bucket_start=rec.bucket_start,
                    quantity=rec.quantity,
                    idempotency_key=rec.idempotency_key,
                    subject=rec.subject,
                )
            )
        if unknown:
            log.warning("usage of unknown hosts dropped: %s", ", ".join(sorted(unknown)))
        if not rows:
            return
        result = await self.runner.run(
            lambda s: ingest_engine_batch(s, rows, clock=self.clock),
            write=True,
            factory=self.factory,
        )
        if result.rejected:
            log.warning(
                "metering refused %d usage records, e.g. %s",
                len(result.rejected),
                result.rejected[0].reason,
            )
