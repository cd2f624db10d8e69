"""Password reset by e-mail (API and portal), and the limits on requests that send e-mail."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import AuditEvent, OrgRole, WebSession
from imhost.kit.clock import FrozenClock
from imhost.notify.models import OutboundEmail
from imhost.web import console, portal
from tests.factories import PASSWORD, World, make_world
from tests.web.conftest import signed_in

NEW_PASSWORD = "amber orchard violin 4 rivers"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        w = make_world(session, clock)
        session.commit()
        return w


def reset_mails(factory: sessionmaker[Session]) -> list[OutboundEmail]:
    with factory() as session:
        return list(
            session.scalars(
                select(OutboundEmail)
                .where(OutboundEmail.kind == "password-reset")
                .order_by(OutboundEmail.created_at)
            )
        )


def token_of(mail: OutboundEmail) -> str:
    return mail.text.split("/portal/reset-password/")[1].split()[0]


def login(app: FastAPI, email: str, password: str, address: str = "testclient") -> int:
    client = TestClient(app, client=(address, 50000))
    return client.post(
        "/api/v1/auth/login", json={"email": email, "password": password}
    ).status_code


def test_the_answer_is_the_same_for_an_unknown_address_and_only_an_account_gets_a_link(
    app: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    owner = world.members[OrgRole.OWNER]
    client = TestClient(app)
    known = client.post("/api/v1/auth/password-reset", json={"email": owner.email.upper()})
    unknown = client.post("/api/v1/auth/password-reset", json={"email": "nobody@a.example.com"})
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    mails = reset_mails(session_factory)
    assert [m.to for m in mails] == [[owner.email]]
    with session_factory() as session:
        stored = session.scalars(select(AuditEvent.action)).all()
    assert "password.reset_requested" in stored
    assert token_of(mails[0]) not in str(stored)


def test_a_reset_sets_the_password_ends_every_session_and_works_once(
    app: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    owner = world.members[OrgRole.OWNER]
    elsewhere = signed_in(app, owner)
    assert elsewhere.get("/api/v1/me").status_code == 200
    TestClient(app).post("/api/v1/auth/password-reset", json={"email": owner.email})
    token = token_of(reset_mails(session_factory)[0])
    client = TestClient(app)
    weak = client.post(
        "/api/v1/auth/password-reset/complete", json={"token": token, "new_password": "password"}
    )
    assert weak.status_code == 422 and weak.json()["problems"]
    done = client.post(
        "/api/v1/auth/password-reset/complete", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert done.status_code == 204, done.text
    assert elsewhere.get("/api/v1/me").status_code == 401  # signed out everywhere
    assert login(app, owner.email, PASSWORD) == 401
    assert login(app, owner.email, NEW_PASSWORD) == 200
    again = client.post(
        "/api/v1/auth/password-reset/complete",
        json={"token": token, "new_password": "another fine 9 passphrase"},
    )
    assert again.status_code == 404 and "used already" in again.json()["detail"]
    with session_factory() as session:
        assert (
            session.scalars(select(AuditEvent).where(AuditEvent.action == "password.reset"))
            .one()
            .target_id
            == owner.id
        )
        live = session.scalars(
            select(WebSession).where(WebSession.user_id == owner.id, WebSession.ended_at.is_(None))
        ).all()
        assert len(live) == 1  # the sign-in with the new password, nothing older


def test_an_expired_link_is_refused_with_a_clear_message(
    app: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    owner = world.members[OrgRole.OWNER]
    TestClient(app).post("/api/v1/auth/password-reset", json={"email": owner.email})
    token = token_of(reset_mails(session_factory)[0])
    clock.advance(61 * 60)
    r = TestClient(app).post(
        "/api/v1/auth/password-reset/complete", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert r.status_code == 404 and "expired" in r.json()["detail"]
    assert login(app, owner.email, PASSWORD) == 200


def test_a_reset_lets_the_owner_in_past_strangers_guesses(
    app: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    owner = world.members[OrgRole.OWNER]
    for n in range(12):
        login(app, owner.email, "guess", address=f"203.0.113.{n + 1}")
    assert login(app, owner.email, PASSWORD, address="198.51.100.3") == 429
    TestClient(app).post("/api/v1/auth/password-reset", json={"email": owner.email})
    token = token_of(reset_mails(session_factory)[0])
    TestClient(app).post(
        "/api/v1/auth/password-reset/complete", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert login(app, owner.email, NEW_PASSWORD, address="198.51.100.3") == 200


def test_reset_requests_are_limited_per_email_and_per_client_address(
    app: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    owner = world.members[OrgRole.OWNER]
    client = TestClient(app, client=("192.0.2.50", 50000))
    codes = [
        client.post("/api/v1/auth/password-reset", json={"email": owner.email}).status_code
        for _ in range(6)
    ]
    assert codes == [202] * 5 + [429]
    assert len(reset_mails(session_factory)) == 5
    refused = client.post("/api/v1/auth/password-reset", json={"email": owner.email})
    assert int(refused.headers["retry-after"]) > 0
    # an unknown address is counted the same way (the limit tells nothing either)
    ghost = [
        client.post("/api/v1/auth/password-reset", json={"email": "ghost@a.example.com"})
        for _ in range(6)
    ]
    assert [r.status_code for r in ghost] == [202] * 5 + [429]
    # one client address trying many e-mail addresses: 20 an hour
    spray = TestClient(app, client=("192.0.2.60", 50000))
    spread = [
        spray.post("/api/v1/auth/password-reset", json={"email": f"p{n}@a.example.com"})
        for n in range(21)
    ]
    assert [r.status_code for r in spread] == [202] * 20 + [429]


def test_sign_ups_are_limited_per_client_address(app: FastAPI) -> None:
    client = TestClient(app, client=("192.0.2.70", 50000))
    codes = [
        client.post(
            "/api/v1/signup",
            json={
                "email": f"new{n}@d.example.com",
                "password": "wide meadow copper lantern 7",
                "organization_name": f"Org {n}",
            },
        ).status_code
        for n in range(21)
    ]
    assert codes == [202] * 20 + [429]


# --- portal -------------------------------------------------------------------------------


@pytest.fixture
def browser(app: FastAPI) -> Iterator[TestClient]:
    portal.install(app)
    console.install(app)
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        yield client


def test_forgot_password_pages_from_sign_in_to_a_new_password(
    browser: TestClient, world: World, session_factory: sessionmaker[Session]
) -> None:
    owner = world.members[OrgRole.OWNER]
    sign_in = browser.get("/portal/sign-in")
    assert 'href="/portal/forgot-password"' in sign_in.text
    page = browser.get("/portal/forgot-password")
    sent = browser.post(
        "/portal/forgot-password",
        data={"csrf_token": CSRF.search(page.text).group(1), "email": owner.email},  # type: ignore[union-attr]
    )
    assert sent.status_code == 202 and "Check your e-mail" in sent.text
    link = f"/portal/reset-password/{token_of(reset_mails(session_factory)[0])}"
    form = browser.get(link)
    assert form.status_code == 200 and owner.email in form.text
    csrf = CSRF.search(form.text).group(1)  # type: ignore[union-attr]
    weak = browser.post(link, data={"csrf_token": csrf, "new_password": "password"})
    assert weak.status_code == 422 and 'id="e-new_password"' in weak.text
    done = browser.post(link, data={"csrf_token": csrf, "new_password": NEW_PASSWORD})
    assert done.status_code == 303 and done.headers["location"] == "/portal/sign-in"
    used = browser.get(link)
    assert used.status_code == 404 and "used already" in used.text
    assert 'href="/portal/forgot-password"' in used.text
