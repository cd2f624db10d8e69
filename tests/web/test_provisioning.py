"""The main flow: sign up, pick a plan, and the hosted service exists at once."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from imhost.billing import subscriptions
from imhost.catalog.service import current_plan_version, seed_default_plans
from imhost.hosting import service as hosting
from imhost.kit.clock import FrozenClock
from imhost.runtime import Runtime
from tests.factories import make_org, make_user


def test_a_first_subscription_provisions_the_service_on_the_base_domain(
    runtime: Runtime, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    factory = runtime.session_factory
    with factory() as s:
        plans = seed_default_plans(s, clock)
        owner = make_user(s, clock, "zoe@zeta.example.com")
        org = make_org(s, clock, "Zeta Talk", owner)
        version = current_plan_version(s, plans[0].code)
        subscriptions.start_subscription(s, clock, org.id, version.id)
        s.commit()
        services = hosting.services_of(s, org.id)
        assert [sv.domain for sv in services] == [f"zeta-talk.{runtime.settings.base_domain}"]
        assert services[0].max_accounts == version.max_xmpp_accounts
        # A plan change later does not add a second service.
        subscriptions.change_plan(s, clock, org.id, current_plan_version(s, plans[1].code).id)
        s.commit()
        assert len(hosting.services_of(s, org.id)) == 1
