"""Changing one's e-mail address: the link goes to the new address, a notice with a way to
stop it to the old one, and nothing changes until the link is opened (once, in time)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import AuditEvent, OrgRole, SecurityAlert, User, WebSession
from imhost.kit.clock import FrozenClock, utc
from imhost.notify.models import OutboundEmail
from imhost.web import portal
from tests.factories import PASSWORD, World, make_user, make_world
from tests.web.conftest import signed_in

LINK = re.compile(r"https?://[^\s]+(/portal/account/email/[^\s]+)")


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


def _csrf(client: TestClient, path: str) -> str:
    page = client.get(path)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert page.status_code == 200 and found is not None, page.text[:500]
    return found.group(1)


def _ask(client: TestClient, new_email: str, password: str = PASSWORD) -> Response:
    return client.post(
        "/portal/account/email",
        data={
            "csrf_token": _csrf(client, "/portal/account/email"),
            "new_email": new_email,
            "password": password,
        },
        follow_redirects=False,
    )


def _mail(session_factory: sessionmaker[Session], kind: str) -> OutboundEmail:
    with session_factory() as s:
        return s.scalars(
            select(OutboundEmail)
            .where(OutboundEmail.kind == kind)
            .order_by(OutboundEmail.created_at.desc())
        ).first() or pytest.fail(f"no {kind} e-mail")


def _link(mail: OutboundEmail) -> str:
    found = LINK.search(mail.text)
    assert found is not None, mail.text
    return found.group(1)


def _email_of(session_factory: sessionmaker[Session], user_id: str) -> str:
    with session_factory() as s:
        user = s.get(User, user_id)
        assert user is not None
        return user.email


def test_the_change_applies_only_when_the_link_to_the_new_address_is_opened(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    owner = world.members[OrgRole.OWNER]
    client = signed_in(pages, owner)
    asked = _ask(client, "Olga.New@Example.org")
    assert asked.status_code == 303
    confirm = _mail(session_factory, "email-change")
    notice = _mail(session_factory, "email-change-notice")
    assert confirm.to == ["olga.new@example.org"]
    assert notice.to == [owner.email]
    assert "/portal/account/email/cancel/" in notice.text
    assert _email_of(session_factory, owner.id) == owner.email  # nothing changed yet
    # A mail scanner opening the link changes nothing either.
    anonymous = TestClient(pages, raise_server_exceptions=False)
    path = _link(confirm)
    page = anonymous.get(path)
    assert page.status_code == 200 and "olga.new@example.org" in page.text
    assert _email_of(session_factory, owner.id) == owner.email
    done = anonymous.post(path, data={"csrf_token": _csrf(anonymous, path)}, follow_redirects=False)
    assert done.status_code == 303
    assert _email_of(session_factory, owner.id) == "olga.new@example.org"
    # Sessions stay; the old address no longer signs in, the new one does.
    assert client.get("/portal/account").status_code == 200
    with session_factory() as s:
        assert s.scalars(select(WebSession).where(WebSession.ended_at.is_not(None))).first() is None
        actions = set(s.scalars(select(AuditEvent.action).where(AuditEvent.target_id == owner.id)))
        assert {"email.change_requested", "email.changed"} <= actions
        user = s.get(User, owner.id)
        assert user is not None and user.email_verified_at is not None
    # Single use.
    again = anonymous.post(path, data={"csrf_token": _csrf(anonymous, "/portal/sign-in")})
    assert again.status_code == 404
    assert anonymous.get(path).status_code == 404


def test_the_link_expires(
    pages: FastAPI, world: World, clock: FrozenClock, session_factory: sessionmaker[Session]
) -> None:
    owner = world.members[OrgRole.OWNER]
    _ask(signed_in(pages, owner), "later@example.org")
    path = _link(_mail(session_factory, "email-change"))
    clock.advance(timedelta(hours=25))
    anonymous = TestClient(pages, raise_server_exceptions=False)
    assert anonymous.get(path).status_code == 404
    assert _email_of(session_factory, owner.id) == owner.email


def test_the_old_address_can_stop_the_change(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    owner = world.members[OrgRole.OWNER]
    _ask(signed_in(pages, owner), "thief@example.org")
    confirm_path = _link(_mail(session_factory, "email-change"))
    cancel_path = _link(_mail(session_factory, "email-change-notice"))
    anonymous = TestClient(pages, raise_server_exceptions=False)
    stopped = anonymous.post(
        cancel_path, data={"csrf_token": _csrf(anonymous, cancel_path)}, follow_redirects=False
    )
    assert stopped.status_code == 303
    assert anonymous.get(confirm_path).status_code == 404
    assert _email_of(session_factory, owner.id) == owner.email
    with session_factory() as s:
        assert s.scalars(
            select(AuditEvent).where(AuditEvent.action == "email.change_cancelled")
        ).one()
        alert = s.scalars(select(SecurityAlert)).one()
        assert alert.rule == "email-change-reported" and alert.user_id == owner.id
        mail = s.scalars(select(OutboundEmail).where(OutboundEmail.kind == "security-alert")).one()
        assert mail.to == [owner.email]


def test_a_wrong_password_a_taken_address_or_a_bad_one_is_refused_on_the_form(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    owner = world.members[OrgRole.OWNER]
    client = signed_in(pages, owner)
    wrong = _ask(client, "fine@example.org", password="not my password at all")
    assert wrong.status_code == 401
    assert "That password is not right." in wrong.text
    taken = _ask(client, world.members[OrgRole.ADMIN].email)
    assert taken.status_code == 409
    assert "Another account uses this e-mail address already." in taken.text
    bad = _ask(client, "not an address")
    assert bad.status_code == 422
    assert "There is a problem" in bad.text
    with session_factory() as s:
        assert s.scalars(select(OutboundEmail)).first() is None


def test_an_address_taken_between_the_request_and_the_link_is_refused(
    pages: FastAPI, world: World, clock: FrozenClock, session_factory: sessionmaker[Session]
) -> None:
    owner = world.members[OrgRole.OWNER]
    _ask(signed_in(pages, owner), "race@example.org")
    path = _link(_mail(session_factory, "email-change"))
    with session_factory() as s:
        make_user(s, clock, "race@example.org")
        s.commit()
    anonymous = TestClient(pages, raise_server_exceptions=False)
    refused = anonymous.post(path, data={"csrf_token": _csrf(anonymous, path)})
    assert refused.status_code == 409
    assert _email_of(session_factory, owner.id) == owner.email
