"""Signing in, lockout, MFA, sessions and password changes, through the API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.mfa import totp_code
from imhost.accounts.models import AuditEvent, OrgRole, SecurityAlert, StaffRole, WebSession
from imhost.kit.clock import FrozenClock
from imhost.notify.models import OutboundEmail
from tests.factories import PASSWORD, add_member, make_org, make_user
from tests.web.conftest import signed_in


@pytest.fixture
def owner(session_factory: sessionmaker[Session], clock: FrozenClock):  # type: ignore[no-untyped-def]
    with session_factory() as s:
        user = make_user(s, clock, "olga@acme.example.com", name="Olga")
        org = make_org(s, clock, "Acme", user)
        s.commit()
        return user, org


def login(client: TestClient, email: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    if r.status_code == 200:
        client.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return r


def actions(session_factory: sessionmaker[Session]) -> list[str]:
    with session_factory() as s:
        return [
            e.action for e in s.scalars(select(AuditEvent).order_by(AuditEvent.at, AuditEvent.id))
        ]


def test_login_sets_a_secure_httponly_samesite_cookie(app: FastAPI, owner) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(app)
    r = login(client, "olga@acme.example.com")
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert client.get("/api/v1/me").json()["user"]["email"] == "olga@acme.example.com"


def test_wrong_password_and_unknown_account_get_the_same_answer(app: FastAPI, owner) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(app)
    wrong = login(client, "olga@acme.example.com", "not the password at all")
    unknown = login(client, "nobody@acme.example.com", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]


def test_lockout_grows_with_failures_and_tells_nothing_about_existence(
    app: FastAPI,
    owner,
    clock: FrozenClock,
    session_factory: sessionmaker[Session],  # type: ignore[no-untyped-def]
) -> None:
    client = TestClient(app)
    for _ in range(5):
        assert login(client, "olga@acme.example.com", "wrong password here").status_code == 401
    locked = login(client, "olga@acme.example.com")  # even the right password is refused now
    assert locked.status_code == 429
    assert "Too many failed attempts" in locked.json()["detail"]
    assert int(locked.headers["Retry-After"]) > 0
    for _ in range(6):
        login(client, "ghost@acme.example.com", "wrong password here")
    ghost = login(client, "ghost@acme.example.com", "wrong password here")
    assert ghost.status_code == 429
    assert ghost.json()["detail"].split(".")[0] == locked.json()["detail"].split(".")[0]
    clock.advance(timedelta(seconds=int(locked.headers["Retry-After"]) + 1))
    assert login(client, "olga@acme.example.com").status_code == 200
    assert "login.locked_out" in actions(session_factory)


def test_progressive_delay_is_applied_before_lockout(
    app: FastAPI, owner, sleeps: list[float]
) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(app)
    for _ in range(4):
        login(client, "olga@acme.example.com", "wrong password here")
    assert any(s > 0 for s in sleeps), sleeps


def test_totp_enrolment_then_sign_in_with_a_code(
    app: FastAPI,
    owner,
    clock: FrozenClock,
    session_factory: sessionmaker[Session],  # type: ignore[no-untyped-def]
) -> None:
    client = TestClient(app)
    assert login(client, "olga@acme.example.com").status_code == 200
    start = client.post("/api/v1/me/mfa/totp")
    assert start.status_code == 200, start.text
    body = start.json()
    assert body["otpauth_uri"].startswith("otpauth://totp/")
    assert body["qr_svg"].lstrip().startswith("<")
    bad = client.post(
        "/api/v1/me/mfa/totp/confirm", json={"factor_id": body["factor_id"], "code": "000000"}
    )
    assert bad.status_code == 422
    code = totp_code(body["secret"], clock.now())
    done = client.post(
        "/api/v1/me/mfa/totp/confirm", json={"factor_id": body["factor_id"], "code": code}
    )
    assert done.status_code == 200, done.text
    recovery = done.json()["recovery_codes"]
    assert len(recovery) == 10 and len(set(recovery)) == 10

    fresh = TestClient(app)
    r = login(fresh, "olga@acme.example.com")
    assert r.json()["mfa_pending"] is True
    assert fresh.get(f"/api/v1/orgs/{owner[1].id}").status_code == 401  # nothing before the code
    clock.advance(30)
    ok = fresh.post("/api/v1/auth/mfa", json={"code": totp_code(body["secret"], clock.now())})
    assert ok.status_code == 200, ok.text
    assert fresh.get(f"/api/v1/orgs/{owner[1].id}").status_code == 200
    # The same code cannot be replayed, a recovery code works once.
    again = TestClient(app)
    login(again, "olga@acme.example.com")
    assert (
        again.post(
            "/api/v1/auth/mfa", json={"code": totp_code(body["secret"], clock.now())}
        ).status_code
        == 401
    )
    assert again.post("/api/v1/auth/mfa", json={"code": recovery[0]}).status_code == 200
    third = TestClient(app)
    login(third, "olga@acme.example.com")
    assert third.post("/api/v1/auth/mfa", json={"code": recovery[0]}).status_code == 401
    assert {"mfa.enrolled", "mfa.recovery_code_used", "mfa.failed"} <= set(actions(session_factory))


def test_wrong_totp_codes_lock_the_second_step_too(app: FastAPI, owner, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(app)
    login(client, "olga@acme.example.com")
    body = client.post("/api/v1/me/mfa/totp").json()
    client.post(
        "/api/v1/me/mfa/totp/confirm",
        json={"factor_id": body["factor_id"], "code": totp_code(body["secret"], clock.now())},
    )
    attacker = TestClient(app)
    login(attacker, "olga@acme.example.com")
    codes = [
        attacker.post("/api/v1/auth/mfa", json={"code": f"{n:06d}"}).status_code
        for n in range(1, 8)
    ]
    assert codes[:5] == [401] * 5
    assert 429 in codes[5:]


def test_staff_must_enrol_mfa_before_using_the_console(
    app: FastAPI, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    with session_factory() as s:
        make_user(s, clock, "ada@provider.example.com", staff_role=StaffRole.ADMIN)
        s.commit()
    client = TestClient(app)
    r = login(client, "ada@provider.example.com")
    assert r.json()["mfa_enrolment_required"] is True
    refused = client.get("/api/v1/admin/customers")
    assert refused.status_code == 401 and refused.json()["mfa_required"] is True
    body = client.post("/api/v1/me/mfa/totp").json()
    client.post(
        "/api/v1/me/mfa/totp/confirm",
        json={"factor_id": body["factor_id"], "code": totp_code(body["secret"], clock.now())},
    )
    assert client.get("/api/v1/admin/customers").status_code == 200
    # Staff cannot turn MFA off.
    client.post("/api/v1/me/reauthenticate", json={"password": PASSWORD})
    assert client.delete("/api/v1/me/mfa").status_code == 409


def test_owner_can_require_mfa_for_every_member(
    app: FastAPI,
    owner,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,  # type: ignore[no-untyped-def]
) -> None:
    user, org = owner
    with session_factory() as s:
        member = make_user(s, clock, "tess@acme.example.com")
        add_member(s, clock, s.merge(org), member, OrgRole.TECHNICAL)
        s.commit()
    owner_client = signed_in(app, user)
    r = owner_client.patch(f"/api/v1/orgs/{org.id}", json={"require_mfa": True})
    assert r.status_code == 200 and r.json()["require_mfa"] is True
    tess = TestClient(app)
    assert login(tess, "tess@acme.example.com").json()["mfa_enrolment_required"] is True
    assert tess.get(f"/api/v1/orgs/{org.id}/members").status_code == 401
    admin_patch = signed_in(app, member).patch(
        f"/api/v1/orgs/{org.id}", json={"require_mfa": False}
    )
    assert admin_patch.status_code in (401, 403)


def test_password_change_ends_every_session(
    app: FastAPI,
    owner,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,  # type: ignore[no-untyped-def]
) -> None:
    user, _org = owner
    other_device = signed_in(app, user)
    client = signed_in(app, user)
    weak = client.post(
        "/api/v1/me/password", json={"current_password": PASSWORD, "new_password": "password123"}
    )
    assert weak.status_code == 422
    assert weak.json()["problems"]
    r = client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": "a brand new, long passphrase 9"},
    )
    assert r.status_code == 204, r.text
    assert other_device.get("/api/v1/me").status_code == 401
    client.headers["X-CSRF-Token"] = r.headers["X-CSRF-Token"]
    assert client.get("/api/v1/me").status_code == 200  # the changer got a fresh session
    with session_factory() as s:
        live = s.scalars(
            select(WebSession).where(WebSession.user_id == user.id, WebSession.ended_at.is_(None))
        ).all()
    assert len(live) == 1
    assert (
        login(
            TestClient(app), "olga@acme.example.com", "a brand new, long passphrase 9"
        ).status_code
        == 200
    )


def test_sessions_time_out_when_idle_and_can_be_ended_from_the_list(
    app: FastAPI, owner, clock: FrozenClock
) -> None:  # type: ignore[no-untyped-def]
    user, _ = owner
    laptop = signed_in(app, user)
    phone = signed_in(app, user)
    listed = laptop.get("/api/v1/me/sessions").json()
    assert len(listed) == 2
    phone_id = next(s["id"] for s in listed if not s["current"])
    assert laptop.delete(f"/api/v1/me/sessions/{phone_id}").status_code == 204
    assert phone.get("/api/v1/me").status_code == 401
    clock.advance(timedelta(minutes=31))
    assert laptop.get("/api/v1/me").status_code == 401


def test_unsafe_requests_need_the_csrf_header(app: FastAPI, owner) -> None:  # type: ignore[no-untyped-def]
    user, org = owner
    client = signed_in(app, user)
    del client.headers["X-CSRF-Token"]
    r = client.patch(f"/api/v1/orgs/{org.id}", json={"name": "Hacked"})
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]


def test_new_address_login_raises_an_alert_and_mails_the_user(
    app: FastAPI,
    owner,
    session_factory: sessionmaker[Session],  # type: ignore[no-untyped-def]
) -> None:
    first = TestClient(app, headers={"User-Agent": "Mozilla/5.0 (X11; Linux) Firefox/130"})
    assert login(first, "olga@acme.example.com").status_code == 200
    second = TestClient(app, headers={"User-Agent": "Mozilla/5.0 (iPhone) Safari/17"})
    assert login(second, "olga@acme.example.com").status_code == 200
    with session_factory() as s:
        alerts = s.scalars(select(SecurityAlert)).all()
        mails = s.scalars(select(OutboundEmail).where(OutboundEmail.kind == "security-alert")).all()
    assert [a.rule for a in alerts] == ["new-login-location"]
    assert mails and mails[0].to == ["olga@acme.example.com"]


def test_burst_of_failed_logins_raises_one_alert(
    app: FastAPI,
    owner,
    clock: FrozenClock,
    session_factory: sessionmaker[Session],  # type: ignore[no-untyped-def]
) -> None:
    for _ in range(12):
        login(TestClient(app), "olga@acme.example.com", "wrong password here")
        clock.advance(30)
    with session_factory() as s:
        rules = [a.rule for a in s.scalars(select(SecurityAlert))]
    assert rules.count("failed-login-burst") == 1


def test_turning_mfa_off_needs_a_fresh_password_and_alerts(
    app: FastAPI,
    owner,
    clock: FrozenClock,
    session_factory: sessionmaker[Session],  # type: ignore[no-untyped-def]
) -> None:
    client = TestClient(app)
    login(client, "olga@acme.example.com")
    body = client.post("/api/v1/me/mfa/totp").json()
    client.post(
        "/api/v1/me/mfa/totp/confirm",
        json={"factor_id": body["factor_id"], "code": totp_code(body["secret"], clock.now())},
    )
    clock.advance(timedelta(minutes=11))
    stale = client.delete("/api/v1/me/mfa")
    assert stale.status_code == 401 and stale.json()["reauthentication_required"] is True
    assert (
        client.post("/api/v1/me/reauthenticate", json={"password": "wrong wrong wrong"}).status_code
        == 401
    )
    assert client.post("/api/v1/me/reauthenticate", json={"password": PASSWORD}).status_code == 204
    assert client.delete("/api/v1/me/mfa").status_code == 204
    assert client.get("/api/v1/me").json()["mfa_enabled"] is False
    with session_factory() as s:
        rules = [a.rule for a in s.scalars(select(SecurityAlert))]
    assert "mfa-disabled" in rules
