"""Add-ons one at a time (billing.add_ons): what the plan offers, the prorated preview, the
change with its audit entry and event, and a retried change that charges nothing twice."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost import events
from imhost.accounts.audit import Actor
from imhost.accounts.models import AuditEvent
from imhost.billing import add_ons
from imhost.billing import service as billing
from imhost.billing.flows import run_billing
from imhost.billing.models import PendingCharge
from imhost.billing.subscriptions import add_ons_of
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.kit.errors import Conflict, InvalidInput, NotFound

from .factories import make_add_on, make_org, make_plan


def _setup(factory: sessionmaker[Session], clock: FrozenClock) -> dict[str, str]:
    with transaction(factory) as s:
        org = make_org(s, clock, org_id="o", country="US")
        plan = make_plan(s, clock, base_fee="30.00")
        seats = make_add_on(
            s,
            clock,
            name="10 more accounts",
            price="6.00",
            kind="extra_accounts",
            limit_deltas={"max_xmpp_accounts": 10},
        )
        support = make_add_on(s, clock, name="Premium support", price="15.00")
        yearly = make_add_on(s, clock, name="Yearly archive", price="90.00", interval="yearly")
        dollars = make_add_on(s, clock, name="Dollar support", price="15.00", currency="USD")
        billing.start_subscription(s, clock, org.id, plan.id)
        return {
            "seats": seats.id,
            "support": support.id,
            "yearly": yearly.id,
            "dollars": dollars.id,
        }


def test_the_plan_offers_add_ons_of_its_currency_and_interval_only(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    ids = _setup(session_factory, clock)
    with transaction(session_factory) as s:
        offered = {a.id: a for a in add_ons.offered_add_ons(s, "o")}
    assert set(offered) == {ids["seats"], ids["support"]}
    assert offered[ids["seats"]].stackable and offered[ids["seats"]].max_quantity == 1000
    assert not offered[ids["support"]].stackable and offered[ids["support"]].max_quantity == 1


def test_adding_mid_period_previews_then_charges_the_rest_of_the_period_once(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    ids = _setup(session_factory, clock)
    run_billing(session_factory, clock, clock.now())
    clock.set(utc(2026, 11, 16))  # 15 of 30 days left
    with transaction(session_factory) as s:
        preview = add_ons.preview_add_on(s, clock, "o", ids["seats"], 2)
        assert s.scalars(select(PendingCharge)).all() == []  # a preview changes nothing
    assert preview.now_total == Decimal("6.00")  # 2 × 6.00 × 15/30
    assert preview.recurring == Decimal("12.00") and preview.adds

    seen: list[events.SubscriptionChanged] = []
    bus = events.make_bus()
    bus.subscribe(events.SubscriptionChanged, lambda e, _s: seen.append(e))
    with_bus = sessionmaker(
        bind=session_factory.kw["bind"], expire_on_commit=False, info={"bus": bus}
    )
    with transaction(with_bus) as s:
        done = add_ons.set_add_on(s, clock, "o", ids["seats"], 2, actor=Actor(label="ann@acme"))
    assert done is not None and done.lines == preview.lines
    # The browser sends the same form again: nothing more is charged or recorded.
    with transaction(with_bus) as s:
        assert add_ons.set_add_on(s, clock, "o", ids["seats"], 2) is None
    with transaction(session_factory) as s:
        charges = s.scalars(select(PendingCharge)).all()
        assert [c.amount for c in charges] == [Decimal("6.00")]
        sub = billing.current_subscription(s, "o")
        assert sub is not None and add_ons_of(s, sub.id) == {ids["seats"]: 2}
        logged = s.scalars(
            select(AuditEvent).where(AuditEvent.action == "billing.add_on_changed")
        ).all()
        assert len(logged) == 1
        assert logged[0].details["from_quantity"] == 0 and logged[0].details["to_quantity"] == 2
        assert logged[0].actor_label == "ann@acme"
    assert [e.add_ons for e in seen] == [{ids["seats"]: 2}]


def test_removing_credits_the_unused_time_at_once(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    ids = _setup(session_factory, clock)
    with transaction(session_factory) as s:
        add_ons.set_add_on(s, clock, "o", ids["support"], 1)
    run_billing(session_factory, clock, clock.now())
    clock.set(utc(2026, 11, 16))
    with transaction(session_factory) as s:
        preview = add_ons.preview_add_on(s, clock, "o", ids["support"], 0)
        assert preview.now_total == Decimal("-7.50") and preview.recurring == 0
        add_ons.set_add_on(s, clock, "o", ids["support"], 0)
    with transaction(session_factory) as s:
        sub = billing.current_subscription(s, "o")
        assert sub is not None and add_ons_of(s, sub.id) == {}
        assert Decimal("-7.50") in [c.amount for c in s.scalars(select(PendingCharge))]


def test_quantities_and_add_ons_outside_the_offer_are_refused_plainly(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    ids = _setup(session_factory, clock)
    with transaction(session_factory) as s:
        with pytest.raises(InvalidInput, match="once"):
            add_ons.preview_add_on(s, clock, "o", ids["support"], 2)
        with pytest.raises(InvalidInput, match="0 to 1000"):
            add_ons.preview_add_on(s, clock, "o", ids["seats"], -1)
        for other in ("yearly", "dollars"):
            with pytest.raises(NotFound):
                add_ons.preview_add_on(s, clock, "o", ids[other], 1)
        with pytest.raises(Conflict):
            add_ons.preview_add_on(s, clock, "o", ids["seats"], 0)


def test_a_retired_add_on_can_be_removed_but_not_added_again(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    ids = _setup(session_factory, clock)
    with transaction(session_factory) as s:
        add_ons.set_add_on(s, clock, "o", ids["seats"], 1)
        from imhost.catalog.models import AddOn

        retired = s.get(AddOn, ids["seats"])
        assert retired is not None
        retired.is_active = False
    with transaction(session_factory) as s:
        offered = {a.id: a for a in add_ons.offered_add_ons(s, "o")}
        assert not offered[ids["seats"]].on_sale and offered[ids["seats"]].quantity == 1
        with pytest.raises(InvalidInput, match="no longer sold"):
            add_ons.preview_add_on(s, clock, "o", ids["seats"], 2)
        assert add_ons.set_add_on(s, clock, "o", ids["seats"], 0) is not None
    with transaction(session_factory) as s:
        assert ids["seats"] not in {a.id for a in add_ons.offered_add_ons(s, "o")}


def test_two_add_on_changes_at_the_same_instant_are_two_charges(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    ids = _setup(session_factory, clock)
    run_billing(session_factory, clock, clock.now())
    clock.set(utc(2026, 11, 16))
    with transaction(session_factory) as s:
        add_ons.set_add_on(s, clock, "o", ids["support"], 1)
        add_ons.set_add_on(s, clock, "o", ids["seats"], 1)
        add_ons.set_add_on(s, clock, "o", ids["seats"], 2)
    with transaction(session_factory) as s:
        amounts = sorted(c.amount for c in s.scalars(select(PendingCharge)))
    assert amounts == [Decimal("3.00"), Decimal("3.00"), Decimal("7.50")]
