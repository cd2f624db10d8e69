"""The portal home at a glance, switching between organizations, and invitees joining
without making an organization of their own."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import service as accounts
from imhost.accounts.audit import Actor
from imhost.accounts.models import Membership, Organization, OrgRole, User
from imhost.billing import service as billing
from imhost.billing.flows import run_billing
from imhost.billing.models import Invoice
from imhost.db.engine import transaction
from imhost.hosting import service as hosting
from imhost.kit.clock import FrozenClock, utc
from imhost.notify.models import OutboundEmail
from imhost.runtime import Runtime
from imhost.web import portal
from tests.billing.factories import add_usage, make_plan, messages_per_unit
from tests.factories import PASSWORD, World, add_member, make_user, make_world
from tests.web.conftest import signed_in
from tests.web.test_pages import as_user


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    clock.set(utc(2026, 11, 1, 8))
    with session_factory() as session:
        world = make_world(session, clock)
        session.commit()
        return world


@pytest.fixture
def pages(app: FastAPI) -> FastAPI:
    portal.install(app)
    return app


def _open_invoice(runtime: Runtime, clock: FrozenClock, world: World) -> Invoice:
    """A subscription whose first invoice is open (the billing run makes it)."""
    with transaction(runtime.session_factory) as s:
        billing.start_subscription(s, clock, world.org.id, make_plan(s, clock).id)
    run_billing(runtime.session_factory, clock, clock.now())
    with runtime.session_factory() as s:
        invoice = s.scalars(select(Invoice).where(Invoice.status == "open")).one()
        s.expunge(invoice)
        return invoice


# --- the home page at a glance -------------------------------------------------------------


def test_the_owner_sees_an_overdue_invoice_with_its_amount_due_date_and_pay_now(
    pages: FastAPI, world: World, clock: FrozenClock
) -> None:
    runtime: Runtime = pages.state.runtime
    invoice = _open_invoice(runtime, clock, world)
    assert invoice.due_at is not None
    clock.set(invoice.due_at + timedelta(days=3, hours=1))
    page = signed_in(pages, world.members[OrgRole.OWNER]).get(f"/portal/orgs/{world.org.slug}/")
    assert page.status_code == 200
    text = page.text
    assert f"Invoice {invoice.number}" in text
    assert "overdue" in text
    assert invoice.due_at.strftime("%Y-%m-%d") in text
    assert "€49.00" in text or "49.00" in text
    link = f"/portal/orgs/{world.org.slug}/billing/invoices/{invoice.id}"
    # Pay now is the real route: a POST form with the CSRF token, like the invoice page's.
    form = re.search(rf'<form method="post" action="{link}/pay"[^>]*>(.*?)</form>', text, re.S)
    assert form is not None
    assert 'name="csrf_token" value="' in form.group(1) and "Pay now" in form.group(1)
    assert "What to do next" in text and "overdue by 3 days" in text
    assert "Balance due" in text


def test_pay_now_on_the_home_page_pays_the_invoice(
    pages: FastAPI, world: World, clock: FrozenClock
) -> None:
    """The button pays: here from account credit, settled at once."""
    from decimal import Decimal

    from imhost.billing.credits import add_credit

    runtime: Runtime = pages.state.runtime
    invoice = _open_invoice(runtime, clock, world)
    with transaction(runtime.session_factory) as s:
        add_credit(
            s,
            clock,
            world.org.id,
            Decimal("100"),
            invoice.currency,
            kind="goodwill",
            description="Goodwill",
        )
    client, csrf = as_user(pages, world.members[OrgRole.BILLING])
    home = client.get(f"/portal/orgs/{world.org.slug}/")
    action = f"/portal/orgs/{world.org.slug}/billing/invoices/{invoice.id}/pay"
    assert f'action="{action}"' in home.text
    paid = client.post(action, data={"csrf_token": csrf}, follow_redirects=True)
    assert paid.status_code == 200
    assert f"Invoice {invoice.number} is paid from your account credit." in paid.text
    with runtime.session_factory() as s:
        again = s.get(Invoice, invoice.id)
        assert again is not None and again.status == "paid"
    after = client.get(f"/portal/orgs/{world.org.slug}/")
    assert action not in after.text and "Nothing to pay" in after.text
    # Without the CSRF token the form is refused and nothing is paid twice.
    assert client.post(action, data={}).status_code in (400, 403)


def test_pay_now_is_offered_only_to_roles_that_may_pay(
    pages: FastAPI, world: World, clock: FrozenClock
) -> None:
    runtime: Runtime = pages.state.runtime
    invoice = _open_invoice(runtime, clock, world)
    action = f"/portal/orgs/{world.org.slug}/billing/invoices/{invoice.id}/pay"
    for role in (OrgRole.OWNER, OrgRole.BILLING):
        page = signed_in(pages, world.members[role]).get(f"/portal/orgs/{world.org.slug}/")
        assert f'action="{action}"' in page.text, role
    for role in (OrgRole.READ_ONLY, OrgRole.TECHNICAL):
        page = signed_in(pages, world.members[role]).get(f"/portal/orgs/{world.org.slug}/")
        assert action not in page.text, role
        assert "Pay now" not in page.text, role


def test_a_technical_member_sees_no_money_on_the_home_page(
    pages: FastAPI, world: World, clock: FrozenClock
) -> None:
    runtime: Runtime = pages.state.runtime
    invoice = _open_invoice(runtime, clock, world)
    page = signed_in(pages, world.members[OrgRole.TECHNICAL]).get(f"/portal/orgs/{world.org.slug}/")
    assert page.status_code == 200
    assert str(invoice.number) not in page.text
    assert "Balance due" not in page.text and "Account credit" not in page.text
    assert "Next invoice" not in page.text and "Pay now" not in page.text
    assert "XMPP service" in page.text


def test_the_home_page_shows_usage_against_the_limits_and_a_suspended_service_and_why(
    pages: FastAPI, world: World, clock: FrozenClock
) -> None:
    runtime: Runtime = pages.state.runtime
    _open_invoice(runtime, clock, world)  # the first subscription provisions the service
    with transaction(runtime.session_factory) as s:
        (service,) = hosting.services_of(s, world.org.id)
        service.max_accounts = 2
        for name in ("ann", "bob"):
            hosting.create_account(
                s,
                clock,
                service,
                username=name,
                password=None,
                security=runtime.settings.security,
                iterations=4096,
            )
        hosting.suspend_service(
            s, clock, service, "Paused for maintenance of the disks.", actor=Actor.system()
        )
    page = signed_in(pages, world.members[OrgRole.READ_ONLY]).get(f"/portal/orgs/{world.org.slug}/")
    assert page.status_code == 200
    assert "2 of 2" in page.text
    assert 'aria-label="100% of the limit used"' in page.text
    assert "Paused for maintenance of the disks." in page.text
    assert "suspended" in page.text


# --- switching organizations ------------------------------------------------------------------


def _member_of_two(
    session_factory: sessionmaker[Session], clock: FrozenClock, world: World
) -> User:
    with session_factory() as s:
        other = s.get(Organization, world.other_org.id)
        user = s.get(User, world.members[OrgRole.BILLING].id)
        assert other is not None and user is not None
        add_member(s, clock, other, user, OrgRole.TECHNICAL)
        s.commit()
        s.expunge(user)
        return user


def test_a_member_of_several_organizations_sees_the_switcher_on_every_page(
    pages: FastAPI, world: World, clock: FrozenClock, session_factory: sessionmaker[Session]
) -> None:
    user = _member_of_two(session_factory, clock, world)
    client = signed_in(pages, user)
    for path in (f"/portal/orgs/{world.org.slug}/members", "/portal/account", "/portal/orgs"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert 'class="org-switch"' in page.text, path
        assert f"/portal/orgs/{world.other_org.slug}/switch" in page.text, path
    # One organization: no switcher.
    single = signed_in(pages, world.members[OrgRole.ADMIN]).get(f"/portal/orgs/{world.org.slug}/")
    assert 'class="org-switch"' not in single.text


def test_switching_keeps_the_section_where_the_role_there_may_open_it(
    pages: FastAPI, world: World, clock: FrozenClock, session_factory: sessionmaker[Session]
) -> None:
    user = _member_of_two(session_factory, clock, world)
    client = signed_in(pages, user)
    client.follow_redirects = False
    page = client.get(f"/portal/orgs/{world.org.slug}/members")
    assert f'/portal/orgs/{world.other_org.slug}/switch?section=members"' in page.text
    hop = client.get(f"/portal/orgs/{world.other_org.slug}/switch?section=members")
    assert hop.status_code == 303
    assert hop.headers["location"] == f"/portal/orgs/{world.other_org.slug}/members"
    # Billing in A, technical in B: B's security pages are closed to it, so its overview.
    hop = client.get(f"/portal/orgs/{world.other_org.slug}/switch?section=security")
    assert hop.headers["location"] == f"/portal/orgs/{world.other_org.slug}/"
    # And back: billing is open to the billing role in A.
    hop = client.get(f"/portal/orgs/{world.org.slug}/switch?section=billing")
    assert hop.headers["location"] == f"/portal/orgs/{world.org.slug}/billing"
    # An unknown section is the overview; an organization one is not in is not found.
    hop = client.get(f"/portal/orgs/{world.org.slug}/switch?section=../../console")
    assert hop.headers["location"] == f"/portal/orgs/{world.org.slug}/"
    stranger = signed_in(pages, world.outsider)
    assert stranger.get(f"/portal/orgs/{world.org.slug}/switch").status_code == 404


def test_the_organizations_page_lists_each_with_the_role(
    pages: FastAPI, world: World, clock: FrozenClock, session_factory: sessionmaker[Session]
) -> None:
    user = _member_of_two(session_factory, clock, world)
    page = signed_in(pages, user).get("/portal/orgs")
    assert page.status_code == 200
    assert world.org.name in page.text and world.other_org.name in page.text
    assert "billing" in page.text and "technical" in page.text


# --- invitations for people without an account --------------------------------------------------


def _invite(runtime: Runtime, clock: FrozenClock, world: World, email: str) -> str:
    with transaction(runtime.session_factory) as s:
        org = accounts.get_organization(s, world.org.id)
        owner = world.members[OrgRole.OWNER]
        _, token = accounts.invite(
            s,
            clock,
            org,
            email=email,
            role=OrgRole.TECHNICAL,
            actor=Actor(user_id=owner.id, label=owner.email),
            actor_role=OrgRole.OWNER,
        )
        return token


def _form_token(client: TestClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def test_an_invitee_without_an_account_makes_only_their_user_and_lands_in_the_org(
    pages: FastAPI, world: World, clock: FrozenClock, session_factory: sessionmaker[Session]
) -> None:
    runtime: Runtime = pages.state.runtime
    token = _invite(runtime, clock, world, "newcomer@c.example.com")
    client = TestClient(pages, raise_server_exceptions=False)
    path = f"/portal/invitations/{token}"
    page = client.get(path)
    assert "Create your account" in page.text and "Sign in to accept" in page.text
    orgs_before = len(accounts.list_organizations(session_factory())[0])
    csrf = _form_token(client, path)
    done = client.post(
        f"{path}/join",
        data={
            "csrf_token": csrf,
            "name": "Nora Newcomer",
            "password": PASSWORD,
            "repeat_password": PASSWORD,
        },
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/portal/orgs/{world.org.slug}/"
    home = client.get(done.headers["location"])
    assert home.status_code == 200 and "You joined Acme Chat" in home.text
    with session_factory() as s:
        user = s.scalars(select(User).where(User.email == "newcomer@c.example.com")).one()
        assert user.email_verified_at is not None and user.name == "Nora Newcomer"
        roles = [(org.id, role) for org, role in accounts.organizations_of(s, user.id)]
        assert roles == [(world.org.id, "technical")]
        assert len(accounts.list_organizations(s)[0]) == orgs_before
        # No sign-up e-mail, no verification e-mail: the invitation proved the address.
        kinds = set(s.scalars(select(OutboundEmail.kind)))
        assert "sign-up" not in kinds and "verify-email" not in kinds
    # The link is used up.
    again = client.post(
        f"{path}/join",
        data={"csrf_token": csrf, "name": "X", "password": PASSWORD, "repeat_password": PASSWORD},
    )
    assert again.status_code == 404


def test_joining_refuses_a_weak_password_or_a_typo_with_the_field_named(
    pages: FastAPI, world: World, clock: FrozenClock, session_factory: sessionmaker[Session]
) -> None:
    runtime: Runtime = pages.state.runtime
    token = _invite(runtime, clock, world, "newcomer@c.example.com")
    client = TestClient(pages, raise_server_exceptions=False)
    path = f"/portal/invitations/{token}"
    csrf = _form_token(client, path)
    weak = client.post(
        f"{path}/join",
        data={"csrf_token": csrf, "name": "N", "password": "short", "repeat_password": "short"},
    )
    assert weak.status_code == 422
    assert 'id="e-password"' in weak.text and "There is a problem" in weak.text
    typo = client.post(
        f"{path}/join",
        data={"csrf_token": csrf, "name": "N", "password": PASSWORD, "repeat_password": "other"},
    )
    assert typo.status_code == 422 and "The two passwords differ." in typo.text
    with session_factory() as s:
        assert s.scalars(select(User).where(User.email == "newcomer@c.example.com")).first() is None


def test_an_invitee_with_an_account_accepts_by_signing_in(
    pages: FastAPI, world: World, clock: FrozenClock, session_factory: sessionmaker[Session]
) -> None:
    runtime: Runtime = pages.state.runtime
    with session_factory() as s:
        make_user(s, clock, "existing@c.example.com")
        s.commit()
    token = _invite(runtime, clock, world, "existing@c.example.com")
    client = TestClient(pages, raise_server_exceptions=False)
    path = f"/portal/invitations/{token}"
    csrf = _form_token(client, path)
    refused = client.post(
        f"{path}/join",
        data={"csrf_token": csrf, "name": "E", "password": PASSWORD, "repeat_password": PASSWORD},
    )
    assert refused.status_code == 409 and "sign in to accept" in refused.text
    sign_in = client.post(
        "/portal/sign-in",
        data={
            "csrf_token": _form_token(client, "/portal/sign-in"),
            "email": "existing@c.example.com",
            "password": PASSWORD,
            "next": path,
        },
        follow_redirects=False,
    )
    assert sign_in.status_code == 303 and sign_in.headers["location"] == path
    csrf = _form_token(client, path)
    joined = client.post(path, data={"csrf_token": csrf}, follow_redirects=False)
    assert joined.status_code == 303
    assert joined.headers["location"] == f"/portal/orgs/{world.org.slug}/"
    with session_factory() as s:
        user = s.scalars(select(User).where(User.email == "existing@c.example.com")).one()
        assert accounts.get_membership(s, world.org.id, user.id) is not None
        assert s.scalars(select(Membership).where(Membership.user_id == user.id)).all()


def test_the_home_page_shows_the_usage_the_plan_includes_to_every_role(
    pages: FastAPI, world: World, clock: FrozenClock
) -> None:
    runtime: Runtime = pages.state.runtime
    with transaction(runtime.session_factory) as s:
        plan = make_plan(s, clock, components=[messages_per_unit(included="1000")])
        billing.start_subscription(s, clock, world.org.id, plan.id)
    clock.advance(timedelta(hours=2))
    with transaction(runtime.session_factory) as s:
        add_usage(s, clock, world.org.id, clock.now() - timedelta(hours=1), 950)
    page = signed_in(pages, world.members[OrgRole.TECHNICAL]).get(f"/portal/orgs/{world.org.slug}/")
    assert page.status_code == 200
    assert "Included in your plan this period" in page.text
    assert "950 of 1,000" in page.text
    assert 'aria-label="95% of the included messages used"' in page.text
