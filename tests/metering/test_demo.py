"""Metering's demo data: usage so far this month and a budget, seeded once."""

from __future__ import annotations

from sqlalchemy.orm import Session

from imhost.kit.clock import FrozenClock, utc
from imhost.metering import aggregate, budgets, demo
from imhost.runtime import Runtime
from tests.metering.factories import make_org


def test_demo_seed_gives_the_demo_customer_usage_and_a_budget_once(
    db: Session, clock: FrozenClock, runtime: Runtime
) -> None:
    org = make_org(db, clock)  # the suite clock: 15 January 2026, noon
    demo.seed(db, runtime, org, {}, None)
    first = aggregate.usage_to_date(db, org.id, utc(2026, 1, 1), clock.now())
    demo.seed(db, runtime, org, {}, None)
    again = aggregate.usage_to_date(db, org.id, utc(2026, 1, 1), clock.now())
    assert first == again
    assert first["messages"] > 0 and first["monthly_active_users"] == 2
    assert first["storage_gb"] > 0 and first["traffic_gb"] > 0
    budget = budgets.get_budget(db, org.id)
    assert budget is not None and budget.currency == "EUR"
