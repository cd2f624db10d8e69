"""Cancelling the subscription from the portal: the confirmation page with the credit billing
computes, each choice doing what it says, undoing a cancel at period end, who may do it; the
warning of a downgrade preview about each lower limit."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import audit
from imhost.accounts import service as accounts
from imhost.accounts.audit import Actor
from imhost.accounts.models import OrgRole
from imhost.billing import service as billing
from imhost.billing.flows import run_billing
from imhost.billing.models import SubscriptionStatus
from imhost.billing.periods import charge_for_part
from imhost.billing.plans import load_plan_terms
from imhost.billing.subscriptions import paid_period
from imhost.catalog import service as catalog
from imhost.hosting import service as hosting
from imhost.kit.clock import FrozenClock
from imhost.kit.money import format_amount
from imhost.runtime import Runtime
from imhost.web import console, portal
from tests.factories import World, make_world
from tests.web.test_pages import as_user


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        made = make_world(session, clock)
        session.commit()
        return made


@pytest.fixture
def pages(app: FastAPI) -> FastAPI:
    portal.install(app)
    console.install(app)
    return app


def _subscribe(session_factory: sessionmaker[Session], clock: FrozenClock, world: World) -> str:
    with session_factory() as session:
        plans = catalog.seed_default_plans(session, clock)
        version = catalog.plan_view(session, plans[1].code).versions[0].version.id
        billing.start_subscription(session, clock, world.org.id, version, with_trial=False)
        session.commit()
    return version


def _bill_first_period(
    session_factory: sessionmaker[Session], clock: FrozenClock, world: World
) -> None:
    """The billing run invoices the first period's base fee in advance."""
    run_billing(session_factory, clock, clock.now())
    with session_factory() as session:
        sub = billing.current_subscription(session, world.org.id)
        assert sub is not None and sub.period_base_billed


def _base(world: World) -> str:
    return f"/portal/orgs/{world.org.slug}/billing/cancel"


def test_the_confirmation_shows_the_credit_billing_computes_and_now_ends_it(
    pages: FastAPI,
    world: World,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    _subscribe(session_factory, clock, world)
    _bill_first_period(session_factory, clock, world)
    clock.advance(timedelta(days=10))
    with session_factory() as session:
        sub = billing.current_subscription(session, world.org.id)
        assert sub is not None
        fee = load_plan_terms(session, sub.plan_version_id).base_fee
        expected = charge_for_part(
            fee, sub.currency, clock.now(), sub.current_period_end, paid_period(sub)
        ).amount
        currency = sub.currency
    assert expected > 0
    client, csrf = as_user(pages, world.members[OrgRole.BILLING])
    page = client.get(_base(world))
    assert page.status_code == 200
    assert "At the end of the period (on" in page.text
    assert format_amount(expected, currency) in page.text
    assert "Credit to your account" in page.text
    done = client.post(_base(world), data={"csrf_token": csrf, "when": "now"})
    assert done.status_code == 303
    with session_factory() as session:
        sub = billing.current_subscription(session, world.org.id)
        assert sub is not None and sub.cancel_at_period_end
        assert sub.current_period_end.replace(tzinfo=None) == clock.now().replace(tzinfo=None)
        credits = [c for c in billing.list_pending_charges(session, world.org.id) if c.amount < 0]
        assert sum((c.amount for c in credits), Decimal(0)) == -expected
        events, _ = audit.list_events(
            session, organization_id=world.org.id, action="billing.subscription_canceled"
        )
        assert len(events) == 1
    again = client.get(_base(world))
    assert "Keep my subscription" not in again.text


def test_cancel_at_period_end_can_be_undone(
    pages: FastAPI,
    world: World,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    _subscribe(session_factory, clock, world)
    _bill_first_period(session_factory, clock, world)
    clock.advance(timedelta(days=3))
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    with session_factory() as session:
        sub = billing.current_subscription(session, world.org.id)
        assert sub is not None
        end_before = sub.current_period_end
    done = client.post(_base(world), data={"csrf_token": csrf, "when": "end"})
    assert done.status_code == 303
    with session_factory() as session:
        sub = billing.current_subscription(session, world.org.id)
        assert sub is not None and sub.cancel_at_period_end
        assert sub.status == SubscriptionStatus.ACTIVE.value
        assert sub.current_period_end == end_before
        assert [
            c for c in billing.list_pending_charges(session, world.org.id) if c.amount < 0
        ] == []
    page = client.get(_base(world))
    assert "Keep my subscription" in page.text
    kept = client.post(_base(world) + "/undo", data={"csrf_token": csrf})
    assert kept.status_code == 303
    with session_factory() as session:
        sub = billing.current_subscription(session, world.org.id)
        assert sub is not None and not sub.cancel_at_period_end
        events, _ = audit.list_events(
            session, organization_id=world.org.id, action="billing.subscription_cancel_undone"
        )
        assert len(events) == 1
        assert events[0].actor_user_id == world.members[OrgRole.OWNER].id


def test_a_trial_or_unbilled_period_ends_now_without_credit(
    pages: FastAPI,
    world: World,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    _subscribe(session_factory, clock, world)
    client, csrf = as_user(pages, world.members[OrgRole.BILLING])
    page = client.get(_base(world))
    assert "there is no credit" in page.text
    done = client.post(_base(world), data={"csrf_token": csrf, "when": "now"})
    assert done.status_code == 303
    with session_factory() as session:
        assert billing.current_subscription(session, world.org.id) is None


def test_a_missing_choice_is_a_form_error(
    pages: FastAPI,
    world: World,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    _subscribe(session_factory, clock, world)
    client, csrf = as_user(pages, world.members[OrgRole.BILLING])
    nothing_to_keep = client.post(_base(world) + "/undo", data={"csrf_token": csrf})
    assert nothing_to_keep.status_code == 409
    bad = client.post(_base(world), data={"csrf_token": csrf, "when": "tomorrow"})
    assert bad.status_code == 422
    assert "Choose when the subscription ends." in bad.text
    assert "error-summary" in bad.text
    with session_factory() as session:
        sub = billing.current_subscription(session, world.org.id)
        assert sub is not None and not sub.cancel_at_period_end


@pytest.mark.parametrize("role", [OrgRole.TECHNICAL, OrgRole.READ_ONLY])
def test_a_member_without_billing_permission_gets_403(
    pages: FastAPI,
    world: World,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
    role: OrgRole,
) -> None:
    _subscribe(session_factory, clock, world)
    client, csrf = as_user(pages, world.members[role])
    assert client.get(_base(world)).status_code == 403
    assert client.post(_base(world), data={"csrf_token": csrf, "when": "now"}).status_code == 403
    with session_factory() as session:
        sub = billing.current_subscription(session, world.org.id)
        assert sub is not None and not sub.cancel_at_period_end


def test_a_downgrade_preview_warns_of_each_lower_limit_and_an_upgrade_does_not(
    pages: FastAPI,
    world: World,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    runtime: Runtime = pages.state.runtime
    with session_factory() as session:
        plans = catalog.seed_default_plans(session, clock)
        small = catalog.plan_view(session, plans[0].code).versions[0].version.id
        big = catalog.plan_view(session, plans[1].code).versions[0].version.id
        billing.start_subscription(session, clock, world.org.id, big, with_trial=False)
        org = accounts.get_organization(session, world.org.id)
        service = hosting.create_service(session, clock, org, base_domain="chat.example.net")
        for name in ("ann", "bob"):
            hosting.create_account(
                session,
                clock,
                service,
                username=name,
                password=None,
                name=name,
                security=runtime.settings.security,
                actor=Actor.system(),
            )
        session.commit()
    client, csrf = as_user(pages, world.members[OrgRole.BILLING])
    url = f"/portal/orgs/{world.org.slug}/billing/plan/preview"
    down = client.post(url, data={"csrf_token": csrf, "plan": small})
    assert down.status_code == 200
    assert "The new plan has lower limits" in down.text
    assert "XMPP accounts: 25 on the new plan, 250 now; 2 in use now." in down.text
    assert "Storage (MB): 1024 on the new plan, 10240 now; 0 in use now." in down.text
    assert "Custom domains: 1 on the new plan, 5 now." in down.text
    with session_factory() as session:
        billing.change_plan(session, clock, world.org.id, small)
        session.commit()
    up = client.post(url, data={"csrf_token": csrf, "plan": big})
    assert up.status_code == 200 and "Confirm the change" in up.text
    assert "lower limits" not in up.text
