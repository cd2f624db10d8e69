"""Usage racing the closing of its period is either billed or follows the late-usage policy.

Ingestion reads the closed periods, then inserts; billing reads the quantities, then closes
the period. The two must not interleave so that a record lands, unbilled, in a period that
was closed after its quantities were read.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from imhost.db.engine import write_intent
from imhost.kit.clock import FrozenClock, utc
from imhost.metering import aggregate, closing, ingestion
from imhost.metering.ingestion import EngineUsage, IngestResult
from tests.metering.factories import make_org

JAN, FEB = utc(2026, 1, 1), utc(2026, 2, 1)


def record(org_id: str, key: str) -> EngineUsage:
    return EngineUsage(org_id, "messages", utc(2026, 1, 31, 23, 59), 5, key, service_id="s")


def billing_step(
    factory: sessionmaker[Session], clock: FrozenClock, org_id: str, out: list[Decimal]
) -> Session:
    """What the billing run does for one organization, left uncommitted."""
    session = factory()
    write_intent(session)
    closing.lock_for_closing(session, [org_id])
    out.append(aggregate.billable_quantities(session, org_id, JAN, FEB)["messages"])
    closing.close_period(session, org_id, JAN, FEB, clock)
    return session


def test_usage_committed_before_the_closing_is_billed(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 2, 1, 0, 5))
    with session_factory() as setup:
        org_id = make_org(setup, clock).id
        setup.commit()
    ingest = session_factory()
    ingestion.ingest_engine_batch(ingest, [record(org_id, "a")], clock=clock)  # not committed
    billed: list[Decimal] = []
    sessions: list[Session] = []
    bill = threading.Thread(
        target=lambda: sessions.append(billing_step(session_factory, clock, org_id, billed))
    )
    bill.start()
    time.sleep(0.3)
    assert billed == []  # billing waits for the ingestion in flight
    ingest.commit()
    ingest.close()
    bill.join(timeout=20)
    assert billed == [Decimal(5)]
    sessions[0].commit()
    sessions[0].close()


def test_usage_arriving_while_the_period_closes_follows_the_late_policy(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 2, 1, 0, 5))
    with session_factory() as setup:
        org_id = make_org(setup, clock).id
        setup.commit()
    billed: list[Decimal] = []
    billing = billing_step(session_factory, clock, org_id, billed)  # holds its locks
    results: list[IngestResult] = []

    def ingest_with_retries() -> None:
        # As the engine does: a transaction the database refuses is run again (SQLite refuses
        # a reader that would write while another connection holds the write lock).
        for _ in range(200):
            try:
                with session_factory() as session:
                    results.append(
                        ingestion.ingest_engine_batch(session, [record(org_id, "b")], clock=clock)
                    )
                    session.commit()
                    return
            except OperationalError:
                time.sleep(0.02)

    late = threading.Thread(target=ingest_with_retries)
    late.start()
    time.sleep(0.3)
    billing.commit()
    billing.close()
    late.join(timeout=40)
    assert billed == [Decimal(0)]
    assert results[-1].accepted == 0
    assert "closed" in results[-1].rejected[0].reason
    with session_factory() as check:
        assert aggregate.billable_quantities(check, org_id, JAN, FEB)["messages"] == 0
