"""Hosting reacts to the organization's and the subscription's events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from imhost import events
from imhost.config import Settings, load_settings
from imhost.hosting import changes
from imhost.hosting import service as hosting
from imhost.hosting.subscribers import register_runtime
from imhost.kit.clock import FrozenClock

from .factories import make_org, make_plan_version, make_service


@dataclass
class FakeRuntime:
    """The parts of the runtime ``register_runtime`` uses."""

    bus: events.EventBus
    clock: FrozenClock
    session_factory: sessionmaker[Session]
    settings: Settings


@pytest.fixture
def runtime(session_factory: sessionmaker[Session], clock: FrozenClock) -> FakeRuntime:
    bus = events.make_bus()
    session_factory.kw.setdefault("info", {})["bus"] = bus
    rt = FakeRuntime(bus, clock, session_factory, load_settings(secret_key="s" * 40))
    register_runtime(rt)  # type: ignore[arg-type]
    return rt


def test_a_suspended_organization_has_every_service_suspended_with_its_reason(
    runtime: FakeRuntime,
) -> None:
    factory, clock = runtime.session_factory, runtime.clock
    seen: list[changes.Change] = []
    changes.install_hub(factory).subscribe(seen.extend)
    with factory() as session:
        org = make_org(session, clock)
        one = make_service(session, clock, org)
        two = make_service(session, clock, org, domain="two.example")
        bystander = make_service(session, clock)
        session.commit()
        seen.clear()
        events.publish(
            session,
            events.OrganizationSuspended(
                at=clock.now(), organization_id=org.id, reason="Unpaid invoice INV-42"
            ),
        )
        assert seen == []  # not before the publisher commits
        session.commit()
        for service in (one, two):
            host = hosting.virtual_host(service)
            assert not host.active and host.status_reason == "Unpaid invoice INV-42"
        assert hosting.virtual_host(bystander).active
    domains = {c.host.domain for c in seen if isinstance(c, changes.HostChanged)}
    assert domains == {one.domain, two.domain}


def test_reactivation_brings_back_what_the_organization_suspension_stopped(
    runtime: FakeRuntime,
) -> None:
    factory, clock = runtime.session_factory, runtime.clock
    with factory() as session:
        org = make_org(session, clock)
        followed = make_service(session, clock, org)
        by_staff = make_service(session, clock, org, domain="staff.example")
        hosting.suspend_service(session, clock, by_staff, "abuse report #12")
        events.publish(
            session,
            events.OrganizationSuspended(at=clock.now(), organization_id=org.id, reason="unpaid"),
        )
        events.publish(
            session, events.OrganizationReactivated(at=clock.now(), organization_id=org.id)
        )
        session.commit()
        assert hosting.virtual_host(followed).active
        assert not hosting.virtual_host(by_staff).active


def test_a_plan_change_copies_the_current_version_limits(runtime: FakeRuntime) -> None:
    factory, clock = runtime.session_factory, runtime.clock
    with factory() as session:
        org = make_org(session, clock)
        service = make_service(session, clock, org)
        old = make_plan_version(session, clock, max_xmpp_accounts=5)
        old.superseded_at = clock.now()
        clock.advance(timedelta(days=1))
        make_plan_version(
            session,
            clock,
            version=2,
            plan_id=old.plan_id,
            max_xmpp_accounts=50,
            max_connections=100,
            message_rate_per_second=20,
        )
        events.publish(
            session,
            events.SubscriptionChanged(at=clock.now(), organization_id=org.id, plan_id=old.plan_id),
        )
        session.commit()
        limits = hosting.virtual_host(service).limits
        assert (limits.max_accounts, limits.max_connections, limits.message_rate) == (50, 100, 20)


def test_an_ended_subscription_leaves_limits_alone(runtime: FakeRuntime) -> None:
    factory, clock = runtime.session_factory, runtime.clock
    with factory() as session:
        service = make_service(session, clock)
        hosting.set_limits(session, clock, service, {"max_accounts": 7})
        events.publish(
            session,
            events.SubscriptionChanged(
                at=clock.now(), organization_id=service.organization_id, plan_id=None
            ),
        )
        assert hosting.virtual_host(service).limits.max_accounts == 7


def test_a_budget_cap_stops_the_service_with_a_text_the_user_sees(runtime: FakeRuntime) -> None:
    factory, clock = runtime.session_factory, runtime.clock
    with factory() as session:
        service = make_service(session, clock)
        events.publish(
            session,
            events.BudgetCapReached(
                at=clock.now(),
                organization_id=service.organization_id,
                metric="messages",
                reason="",
            ),
        )
        host = hosting.virtual_host(service)
        assert not host.active
        assert "budget cap (messages)" in host.status_reason
        hosting.reactivate_service(session, clock, service)
        assert hosting.virtual_host(service).active


def test_a_lifted_budget_cap_brings_the_service_back_but_not_a_staff_suspension(
    runtime: FakeRuntime,
) -> None:
    factory, clock = runtime.session_factory, runtime.clock
    with factory() as session:
        blocked = make_service(session, clock)
        org_id = blocked.organization_id
        cap = events.BudgetCapReached(
            at=clock.now(), organization_id=org_id, metric="*", reason="budget reached"
        )
        events.publish(session, cap)
        assert not hosting.virtual_host(blocked).active
        events.publish(
            session,
            events.BudgetCapLifted(at=clock.now(), organization_id=org_id, reason="new period"),
        )
        assert hosting.virtual_host(blocked).active
        # A service staff suspended stays suspended when a budget block is lifted.
        events.publish(session, cap)
        hosting.suspend_service(session, clock, blocked, "abuse report")
        events.publish(
            session,
            events.BudgetCapLifted(at=clock.now(), organization_id=org_id, reason="new period"),
        )
        host = hosting.virtual_host(blocked)
        assert not host.active
        assert "abuse report" in host.status_reason


def test_a_plan_change_adds_the_add_ons_limit_deltas(runtime: FakeRuntime) -> None:
    from decimal import Decimal

    from imhost.catalog.models import AddOn

    factory, clock = runtime.session_factory, runtime.clock
    with factory() as session:
        org = make_org(session, clock)
        service = make_service(session, clock, org)
        version = make_plan_version(session, clock, max_xmpp_accounts=50)
        seats = AddOn(
            created_at=clock.now(),
            code="extra-seats",
            name="10 more accounts",
            kind="extra_accounts",
            currency="EUR",
            price=Decimal("5.00"),
            limit_deltas={"max_xmpp_accounts": 10},
        )
        session.add(seats)
        session.flush()
        events.publish(
            session,
            events.SubscriptionChanged(
                at=clock.now(),
                organization_id=org.id,
                plan_id=version.plan_id,
                plan_version_id=version.id,
                add_ons={seats.id: 2},
            ),
        )
        session.commit()
        assert hosting.virtual_host(service).limits.max_accounts == 70
