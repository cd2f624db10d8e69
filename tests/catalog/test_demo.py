"""The catalog's demo data: default plans and add-ons, seeded once."""

from __future__ import annotations

from sqlalchemy.orm import Session

from imhost.catalog import demo, service
from imhost.kit.clock import FrozenClock
from imhost.runtime import Runtime
from tests.metering.factories import make_org


def test_demo_seed_creates_plans_and_add_ons_once(
    db: Session, clock: FrozenClock, runtime: Runtime
) -> None:
    org = make_org(db, clock)
    demo.seed(db, runtime, org, {}, None)
    demo.seed(db, runtime, org, {}, None)
    assert [v.plan.code for v in service.list_plans(db)] == ["starter", "business", "enterprise"]
    assert sorted(a.code for a in service.list_addons(db)) == [
        "extra-domain",
        "message-archive",
        "premium-support",
    ]
