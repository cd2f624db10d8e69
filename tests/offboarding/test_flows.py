"""Closing an organization, at the level of the flow: each kind of subscription ends, and the
rules hold without the web around them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import service as accounts
from imhost.accounts.audit import Actor
from imhost.accounts.models import AuditEvent, OrgRole
from imhost.billing import service as billing
from imhost.billing.models import Subscription
from imhost.kit.clock import FrozenClock, utc
from imhost.kit.errors import Conflict, InvalidInput
from imhost.offboarding.export import build_export
from imhost.offboarding.flows import EXPORT_WINDOW, close_organization, preview_close
from tests.billing.factories import make_plan
from tests.factories import World, make_world


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    clock.set(utc(2026, 11, 1, 8))
    with session_factory() as session:
        world = make_world(session, clock)
        session.commit()
        return world


def _owner(world: World) -> Actor:
    owner = world.members[OrgRole.OWNER]
    return Actor(user_id=owner.id, label=owner.email)


def test_a_free_trial_simply_ends(
    session_factory: sessionmaker[Session], clock: FrozenClock, world: World
) -> None:
    with session_factory() as s:
        billing.start_subscription(s, clock, world.org.id, make_plan(s, clock, trial_days=14).id)
        org = accounts.get_organization(s, world.org.id)
        assert preview_close(s, clock, org).plan_name == "Business"
        build_export(s, clock, org, actor=_owner(world))
        assert close_organization(s, clock, org, confirm_name=org.name, actor=_owner(world))
        sub = s.scalars(select(Subscription)).one()
        assert sub.status == "canceled" and sub.ended_at == clock.now()
        assert billing.current_subscription(s, org.id) is None


def test_an_organization_without_a_subscription_closes(
    session_factory: sessionmaker[Session], clock: FrozenClock, world: World
) -> None:
    with session_factory() as s:
        org = accounts.get_organization(s, world.org.id)
        build_export(s, clock, org, actor=_owner(world))
        assert close_organization(s, clock, org, confirm_name=org.name, actor=_owner(world))
        assert not close_organization(s, clock, org, confirm_name="", actor=_owner(world))
        closed = s.scalars(select(AuditEvent).where(AuditEvent.action == "org.closed")).one()
        assert closed.actor_label == world.members[OrgRole.OWNER].email


def test_an_export_older_than_a_day_does_not_count_and_the_name_must_match(
    session_factory: sessionmaker[Session], clock: FrozenClock, world: World
) -> None:
    with session_factory() as s:
        org = accounts.get_organization(s, world.org.id)
        build_export(s, clock, org, actor=_owner(world))
        with pytest.raises(InvalidInput):
            close_organization(s, clock, org, confirm_name="acme chat", actor=_owner(world))
        clock.advance(EXPORT_WINDOW + timedelta(seconds=1))
        with pytest.raises(Conflict):
            close_organization(s, clock, org, confirm_name=org.name, actor=_owner(world))
        assert org.status == "active"


def test_a_closed_organization_cannot_subscribe_again_or_change_its_plan(
    session_factory: sessionmaker[Session], clock: FrozenClock, world: World
) -> None:
    with session_factory() as s:
        plan = make_plan(s, clock, trial_days=0)
        billing.start_subscription(s, clock, world.org.id, plan.id)
        org = accounts.get_organization(s, world.org.id)
        build_export(s, clock, org, actor=_owner(world))
        assert close_organization(s, clock, org, confirm_name=org.name, actor=_owner(world))
        with pytest.raises(Conflict, match="closed"):
            billing.start_subscription(s, clock, org.id, plan.id)
        with pytest.raises(Conflict, match="closed"):
            billing.change_plan(s, clock, org.id, plan.id)
        assert billing.current_subscription(s, org.id) is None
