"""Demo data of metering for ``imhost serve --demo``: a month of plausible usage so far for
the demo customer, and a budget. Idempotent (records collapse on their idempotency keys)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from imhost.accounts.models import Organization
from imhost.metering import budgets, ingestion
from imhost.metering.ingestion import EngineUsage
from imhost.metering.schemas import BudgetIn
from imhost.metering.tasks import calendar_month

if TYPE_CHECKING:
    from imhost.runtime import Runtime


def seed(
    session: Session, runtime: Runtime, org: Organization, saved: dict[str, str], logins: Any
) -> None:
    clock = runtime.clock
    now = clock.now()
    start, _ = calendar_month(now)
    records: list[EngineUsage] = []
    day = start
    n = 0
    while day < now:
        n += 1
        stamp = day.strftime("%Y%m%d")
        records += [
            EngineUsage(org.id, "messages", day, 1500 + 37 * n, f"demo:{stamp}:m"),
            EngineUsage(org.id, "bytes_in", day, 40_000_000 + n * 1_000_000, f"demo:{stamp}:bi"),
            EngineUsage(org.id, "bytes_out", day, 90_000_000 + n * 2_000_000, f"demo:{stamp}:bo"),
            EngineUsage(org.id, "connections_peak", day, 5 + n % 7, f"demo:{stamp}:c"),
            EngineUsage(org.id, "offline_storage_bytes", day, n * 20_000_000, f"demo:{stamp}:o"),
        ]
        for user in ("alice", "bob")[: 1 + n % 2]:
            records.append(
                EngineUsage(
                    org.id,
                    "active_users",
                    day,
                    1,
                    f"demo:{stamp}:u:{user}",
                    subject=f"{user}@demo.localhost",
                )
            )
        day += timedelta(days=1)
    ingestion.ingest_engine_batch(session, records, clock=clock)
    if budgets.get_budget(session, org.id) is None:
        budgets.set_budget(
            session, clock, org.id, BudgetIn(amount=Decimal("100.00"), currency="EUR")
        )
