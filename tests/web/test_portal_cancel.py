"""Cancelling the subscription from the portal: the confirmation page with the credit billing
computes, each choice doing what it says, undoing a cancel at period end, who may do it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import audit
from imhost.accounts.models import OrgRole
from imhost.billing import service as billing
from imhost.billing.flows import run_billing
from imhost.billing.models import SubscriptionStatus
from imhost.billing.periods import charge_for_part
from imhost.billing.plans import load_plan_terms
from imhost.billing.subscriptions import paid_period
from imhost.catalog import service as catalog
from imhost.kit.clock import FrozenClock
from imhost.kit.money import format_amount
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
