"""Add-ons in the portal: the offer in plain words, a preview before any change, the change
itself (audited, limits raised), a retried form that charges nothing twice, removal with its
credit, plain refusals of bad input, and who may change them."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import service as accounts
from imhost.accounts.models import AuditEvent, OrgRole
from imhost.billing import service as billing
from imhost.billing.flows import run_billing
from imhost.billing.models import PendingCharge
from imhost.hosting import service as hosting
from imhost.kit.clock import FrozenClock
from imhost.web import portal
from tests.billing.factories import make_add_on, make_plan
from tests.factories import World, make_world
from tests.web.test_pages import as_user


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        world = make_world(session, clock)
        session.commit()
        return world


@pytest.fixture
def pages(app: FastAPI) -> FastAPI:
    portal.install(app)
    return app


@pytest.fixture
def offer(
    world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> dict[str, str]:
    with session_factory() as session:
        plan = make_plan(session, clock, name="Team", base_fee="30.00")
        plan.max_xmpp_accounts = 5
        seats = make_add_on(
            session,
            clock,
            name="Ten more accounts",
            price="6.00",
            kind="extra_accounts",
            limit_deltas={"max_xmpp_accounts": 10},
        )
        support = make_add_on(session, clock, name="Priority support", price="15.00")
        billing.start_subscription(session, clock, world.org.id, plan.id, with_trial=False)
        org = accounts.get_organization(session, world.org.id)
        hosting.create_service(session, clock, org, base_domain="chat.example")
        session.commit()
        ids = {"seats": seats.id, "support": support.id}
    run_billing(session_factory, clock, clock.now())
    clock.advance(timedelta(days=10))
    return ids


def test_the_page_lists_the_offer_in_plain_words(
    pages: FastAPI, world: World, offer: dict[str, str]
) -> None:
    client, _ = as_user(pages, world.members[OrgRole.BILLING])
    page = client.get(f"/portal/orgs/{world.org.slug}/billing/add-ons")
    assert page.status_code == 200
    assert "Ten more accounts" in page.text and "Priority support" in page.text
    assert "every month" in page.text and "10 more XMPP accounts" in page.text
    assert "max_xmpp_accounts" not in page.text and "premium_support" not in page.text
    assert "No add-ons yet." in page.text


def test_adding_previews_then_applies_once_and_raises_the_limit(
    pages: FastAPI,
    world: World,
    offer: dict[str, str],
    session_factory: sessionmaker[Session],
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.BILLING])
    base = f"/portal/orgs/{world.org.slug}/billing/add-ons"
    form = {"csrf_token": csrf, "add_on": offer["seats"], "quantity": "2"}
    preview = client.post(base + "/preview", data=form)
    assert preview.status_code == 200, preview.text
    assert "Add 2 × Ten more accounts?" in preview.text
    assert "Charged now for the rest of this period" in preview.text
    assert "20 more XMPP accounts" in preview.text
    assert "€12.00 every month</strong>" in preview.text
    with session_factory() as session:
        assert session.scalars(select(PendingCharge)).all() == []  # nothing yet

    done = client.post(base + "/change", data=form)
    assert done.status_code == 303
    assert "2 × Ten more accounts" in client.get(base).text
    again = client.post(base + "/change", data=form)  # the browser sends it again
    assert again.status_code == 303
    assert "Nothing changed" in client.get(base).text

    with session_factory() as session:
        charges = session.scalars(select(PendingCharge)).all()
        assert len(charges) == 1 and charges[0].amount > Decimal(0)
        logged = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "billing.add_on_changed")
        ).all()
        assert len(logged) == 1 and logged[0].actor_user_id == world.members[OrgRole.BILLING].id
        [service] = hosting.services_of(session, world.org.id)
        plan_accounts = service.max_accounts
    # The hosted service follows the subscription: 20 more accounts than the plan's 5.
    assert plan_accounts == 25


def test_removing_shows_the_credit_then_removes(
    pages: FastAPI,
    world: World,
    offer: dict[str, str],
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    base = f"/portal/orgs/{world.org.slug}/billing/add-ons"
    add = {"csrf_token": csrf, "add_on": offer["support"], "quantity": "1"}
    assert client.post(base + "/change", data=add).status_code == 303
    clock.advance(timedelta(minutes=1))
    remove = {"csrf_token": csrf, "add_on": offer["support"], "quantity": "0"}
    preview = client.post(base + "/preview", data=remove)
    assert "Remove Priority support?" in preview.text
    assert "no longer billed" in preview.text
    assert "Credited now for the unused rest of this period" in preview.text
    assert client.post(base + "/change", data=remove).status_code == 303
    assert "Priority support is removed." in client.get(base).text
    with session_factory() as session:
        sub = billing.current_subscription(session, world.org.id)
        assert sub is not None
        from imhost.billing.subscriptions import add_ons_of

        assert add_ons_of(session, sub.id) == {}


@pytest.mark.parametrize(
    ("quantity", "message"),
    [("two", "Enter a whole number"), ("-1", "Enter a whole number"), ("5000", "0 to 1000")],
)
def test_bad_quantities_are_refused_with_a_plain_message(
    pages: FastAPI, world: World, offer: dict[str, str], quantity: str, message: str
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.BILLING])
    base = f"/portal/orgs/{world.org.slug}/billing/add-ons"
    form = {"csrf_token": csrf, "add_on": offer["seats"], "quantity": quantity}
    refused = client.post(base + "/preview", data=form)
    assert refused.status_code in (400, 422) and message in refused.text
    assert "data-error-summary" in refused.text
    # The summary's link leads to the quantity field of that add-on.
    assert '<a href="#f-quantity">' in refused.text and 'id="f-quantity"' in refused.text


def test_an_unknown_add_on_is_a_plain_refusal(
    pages: FastAPI, world: World, offer: dict[str, str]
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.BILLING])
    base = f"/portal/orgs/{world.org.slug}/billing/add-ons"
    form = {"csrf_token": csrf, "add_on": "x" * 64, "quantity": "1"}
    refused = client.post(base + "/change", data=form)
    assert refused.status_code == 404 and "not offered with your plan" in refused.text
    assert "data-error-summary" in refused.text and 'href="#f-' not in refused.text


@pytest.mark.parametrize("role", [OrgRole.TECHNICAL, OrgRole.READ_ONLY])
def test_who_may_not_manage_billing_cannot_change_add_ons(
    pages: FastAPI, world: World, offer: dict[str, str], role: OrgRole
) -> None:
    client, csrf = as_user(pages, world.members[role])
    base = f"/portal/orgs/{world.org.slug}/billing/add-ons"
    form = {"csrf_token": csrf, "add_on": offer["seats"], "quantity": "1"}
    assert client.post(base + "/change", data=form).status_code == 403


def test_limit_changes_are_counted_in_words() -> None:
    from imhost.web.portal.add_ons import limit_words

    assert limit_words({"max_custom_domains": 1}) == ["1 more custom domain"]
    assert limit_words({"max_xmpp_accounts": 10}, 3) == ["30 more XMPP accounts"]
    assert limit_words({"storage_mb": 500}, -2) == ["1,000 fewer MB of storage"]
    assert limit_words({"max_xmpp_accounts": 10}, 0) == []
