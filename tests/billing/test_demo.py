"""The demo data: VAT rates and the demo organization on Business, seeded once."""

from __future__ import annotations

from sqlalchemy import func, select

from imhost.billing import demo, service
from imhost.billing.models import Subscription
from imhost.catalog import demo as catalog_demo
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock
from imhost.runtime import Runtime

from .factories import make_org


def test_seeding_the_demo_twice_subscribes_the_organization_once(
    runtime: Runtime, clock: FrozenClock
) -> None:
    with transaction(runtime.session_factory) as s:
        org = make_org(s, clock, org_id="demo")
    for _ in range(2):
        with transaction(runtime.session_factory) as s:
            catalog_demo.seed(s, runtime, org, {}, None)
            demo.seed(s, runtime, org, {}, None)
    with runtime.session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Subscription)) == 1
        sub = service.current_subscription(s, "demo")
        assert sub is not None and sub.status in ("active", "trialing")
        assert {r.country for r in service.list_tax_rates(s)} >= {"DE", "FR"}
        assert service.get_profile(s).bank_details
