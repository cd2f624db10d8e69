"""Members, invitations, tokens, audit log and access reviews, through the API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import audit as audit_log
from imhost.accounts.models import ApiToken, OrgRole, SecurityAlert, WebSession
from imhost.kit.clock import FrozenClock
from imhost.notify.models import OutboundEmail
from tests.factories import World, make_user, make_world
from tests.web.conftest import signed_in


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        w = make_world(session, clock)
        session.commit()
        return w


def _member_id(client: TestClient, org_id: str, email: str) -> str:
    members = client.get(f"/api/v1/orgs/{org_id}/members").json()
    return next(m["id"] for m in members if m["email"] == email)


def test_signup_continues_by_email_and_answers_the_same_for_an_existing_address(
    app: FastAPI, session_factory: sessionmaker[Session]
) -> None:
    client = TestClient(app)
    weak = client.post(
        "/api/v1/signup",
        json={"email": "new@c.example.com", "password": "password", "organization_name": "C"},
    )
    assert weak.status_code == 422
    assert "password" in weak.json()["detail"].lower() or weak.json()["problems"]
    form = {
        "email": "New@C.example.com",
        "password": "wide meadow copper lantern 7",
        "organization_name": "Charlie Chat",
        "country": "NL",
    }
    r = client.post("/api/v1/signup", json=form)
    assert r.status_code == 202, r.text
    assert "set-cookie" not in r.headers  # nobody is signed in before the link is opened
    with session_factory() as s:
        mail = s.scalars(select(OutboundEmail).where(OutboundEmail.kind == "sign-up")).one()
    token = mail.text.split("/portal/sign-up/")[1].split()[0]
    done = client.post("/api/v1/signup/complete", json={"token": token})
    assert done.status_code == 201, done.text
    client.headers["X-CSRF-Token"] = done.json()["csrf_token"]
    me = client.get("/api/v1/me").json()
    assert me["organizations"][0]["role"] == "owner"
    assert me["user"]["email_verified_at"] is not None  # the link proved the address
    again = TestClient(app).post("/api/v1/signup", json={**form, "organization_name": "D"})
    assert (again.status_code, again.json()) == (r.status_code, r.json())  # tells nothing
    with session_factory() as s:
        kinds = [m.kind for m in s.scalars(select(OutboundEmail).order_by(OutboundEmail.id))]
        existing = s.scalars(
            select(OutboundEmail).where(OutboundEmail.kind == "sign-up-existing")
        ).one()
    assert kinds.count("sign-up") == 1
    assert "already have an account" in existing.text and "/portal/forgot-password" in existing.text
    used = client.post("/api/v1/signup/complete", json={"token": token})
    assert used.status_code == 404 and "does not work any more" in used.json()["detail"]


def test_invitation_by_email_link_adds_a_member(
    app: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    owner = signed_in(app, world.members[OrgRole.OWNER])
    r = owner.post(
        f"/api/v1/orgs/{world.org.id}/invitations",
        json={"email": "carol@x.example.com", "role": "technical"},
    )
    assert r.status_code == 201, r.text
    with session_factory() as s:
        mail = s.scalars(select(OutboundEmail).where(OutboundEmail.kind == "invitation")).one()
        carol = make_user(s, clock, "carol@x.example.com")
        mallory = make_user(s, clock, "mallory@x.example.com")
        s.commit()
    token = mail.text.split("/invitations/")[1].split()[0]
    assert (
        signed_in(app, mallory)
        .post("/api/v1/invitations/accept", json={"token": token})
        .status_code
        == 403
    )
    ok = signed_in(app, carol).post("/api/v1/invitations/accept", json={"token": token})
    assert ok.status_code == 200, ok.text
    roles = {
        m["email"]: m["role"] for m in owner.get(f"/api/v1/orgs/{world.org.id}/members").json()
    }
    assert roles["carol@x.example.com"] == "technical"
    assert (
        signed_in(app, carol).post("/api/v1/invitations/accept", json={"token": token}).status_code
        == 404
    )


def test_removing_a_member_ends_sessions_and_revokes_their_tokens(
    app: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    tech = world.members[OrgRole.ADMIN]
    tech_client = signed_in(app, tech)
    created = tech_client.post(
        f"/api/v1/orgs/{world.org.id}/tokens", json={"name": "ci", "scopes": ["hosting:read"]}
    )
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    owner = signed_in(app, world.members[OrgRole.OWNER])
    member_id = _member_id(owner, world.org.id, tech.email)
    assert owner.delete(f"/api/v1/orgs/{world.org.id}/members/{member_id}").status_code == 204
    assert tech_client.get("/api/v1/me").status_code == 401
    bearer = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    assert bearer.get(f"/api/v1/orgs/{world.org.id}/members").status_code == 401
    with session_factory() as s:
        assert s.scalars(select(ApiToken)).one().revoked_at is not None
        assert not s.scalars(
            select(WebSession).where(WebSession.user_id == tech.id, WebSession.ended_at.is_(None))
        ).all()


def test_an_organization_keeps_at_least_one_owner_and_admins_cannot_make_owners(
    app: FastAPI, world: World
) -> None:
    owner = signed_in(app, world.members[OrgRole.OWNER])
    admin = signed_in(app, world.members[OrgRole.ADMIN])
    owner_id = _member_id(owner, world.org.id, world.members[OrgRole.OWNER].email)
    assert owner.delete(f"/api/v1/orgs/{world.org.id}/members/{owner_id}").status_code == 409
    tech_id = _member_id(owner, world.org.id, world.members[OrgRole.TECHNICAL].email)
    assert (
        admin.patch(
            f"/api/v1/orgs/{world.org.id}/members/{tech_id}", json={"role": "owner"}
        ).status_code
        == 403
    )
    assert (
        owner.patch(
            f"/api/v1/orgs/{world.org.id}/members/{tech_id}", json={"role": "owner"}
        ).status_code
        == 200
    )


def test_new_owner_raises_an_alert_for_the_owners(
    app: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    owner = signed_in(app, world.members[OrgRole.OWNER])
    tech_id = _member_id(owner, world.org.id, world.members[OrgRole.TECHNICAL].email)
    owner.patch(f"/api/v1/orgs/{world.org.id}/members/{tech_id}", json={"role": "owner"})
    alerts = owner.get(f"/api/v1/orgs/{world.org.id}/security/alerts").json()["items"]
    assert [a["rule"] for a in alerts] == ["new-owner"]
    with session_factory() as s:
        mail = s.scalars(select(OutboundEmail).where(OutboundEmail.kind == "security-alert")).one()
    assert world.members[OrgRole.OWNER].email in mail.to


def test_tokens_are_shown_once_stored_hashed_and_never_above_their_creator(
    app: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    admin = signed_in(app, world.members[OrgRole.ADMIN])
    too_high = admin.post(
        f"/api/v1/orgs/{world.org.id}/tokens", json={"name": "x", "scopes": ["*"], "role": "owner"}
    )
    assert too_high.status_code == 403
    bad_scope = admin.post(
        f"/api/v1/orgs/{world.org.id}/tokens", json={"name": "x", "scopes": ["root:write"]}
    )
    assert bad_scope.status_code == 422 and "scope" in bad_scope.json()["detail"]
    past = admin.post(
        f"/api/v1/orgs/{world.org.id}/tokens",
        json={"name": "x", "scopes": ["members:read"], "expires_at": "2000-01-01T00:00:00Z"},
    )
    assert past.status_code == 422
    r = admin.post(
        f"/api/v1/orgs/{world.org.id}/tokens",
        json={
            "name": "deploy",
            "scopes": ["members:read"],
            "expires_at": (clock.now() + timedelta(days=1)).isoformat(),
        },
    )
    assert r.status_code == 201
    plaintext = r.json()["token"]
    listed = admin.get(f"/api/v1/orgs/{world.org.id}/tokens").json()
    assert all("token" not in t for t in listed)
    with session_factory() as s:
        row = s.scalars(select(ApiToken)).one()
        assert plaintext not in (row.token_hash, row.prefix) and len(row.token_hash) == 64
    bearer = TestClient(app, headers={"Authorization": f"Bearer {plaintext}"})
    assert bearer.get(f"/api/v1/orgs/{world.org.id}/members").status_code == 200
    assert bearer.get("/api/v1/me").status_code == 403  # a token is not a person
    after = admin.get(f"/api/v1/orgs/{world.org.id}/tokens").json()[0]
    assert after["last_used_at"] is not None and after["last_used_address"] == "testclient"
    clock.advance(timedelta(days=2))
    assert bearer.get(f"/api/v1/orgs/{world.org.id}/members").status_code == 401  # expired
    token_id = after["id"]
    admin = signed_in(app, world.members[OrgRole.ADMIN])  # the old session timed out meanwhile
    assert admin.delete(f"/api/v1/orgs/{world.org.id}/tokens/{token_id}").status_code == 204


def test_token_used_from_a_new_address_raises_an_alert(
    world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    from imhost.accounts import tokens
    from imhost.accounts.audit import Actor

    with session_factory() as s:
        issued = tokens.create_token(
            s,
            clock,
            organization_id=world.org.id,
            name="ci",
            scopes=["*"],
            role="admin",
            created_by=Actor.system(),
        )
        assert tokens.authenticate_token(s, clock, issued.plaintext, "192.0.2.1") is not None
        assert tokens.authenticate_token(s, clock, issued.plaintext, "192.0.2.1") is not None
        assert tokens.authenticate_token(s, clock, issued.plaintext, "198.51.100.7") is not None
        rules = [a.rule for a in s.scalars(select(SecurityAlert))]
        assert tokens.authenticate_token(s, clock, issued.plaintext + "x", "192.0.2.1") is None
    assert rules == ["token-new-address"]


def test_audit_log_is_readable_by_owners_and_admins_and_filterable(
    app: FastAPI, world: World
) -> None:
    owner = signed_in(app, world.members[OrgRole.OWNER])
    page = owner.get(
        f"/api/v1/orgs/{world.org.id}/audit", params={"action": "member.added", "limit": 2}
    )
    body = page.json()
    assert page.status_code == 200 and body["total"] == 5 and len(body["items"]) == 2
    assert all(i["organization_id"] == world.org.id for i in body["items"])
    other = signed_in(app, world.outsider).get(f"/api/v1/orgs/{world.other_org.id}/audit").json()
    assert all(i["organization_id"] == world.other_org.id for i in other["items"])
    assert (
        signed_in(app, world.members[OrgRole.BILLING])
        .get(f"/api/v1/orgs/{world.org.id}/audit")
        .status_code
        == 403
    )


def test_audit_log_offers_no_way_to_change_history() -> None:
    public = [n for n in dir(audit_log) if not n.startswith("_")]
    assert not [
        n
        for n in public
        if any(w in n.lower() for w in ("delete", "update", "edit", "purge", "remove"))
    ]


def test_quarterly_access_review_flags_stale_tokens_and_records_decisions(
    app: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    owner = signed_in(app, world.members[OrgRole.OWNER])
    stale = owner.post(
        f"/api/v1/orgs/{world.org.id}/tokens", json={"name": "old", "scopes": ["members:read"]}
    ).json()
    clock.advance(timedelta(days=91))
    owner = signed_in(app, world.members[OrgRole.OWNER])
    fresh = owner.post(
        f"/api/v1/orgs/{world.org.id}/tokens", json={"name": "new", "scopes": ["members:read"]}
    ).json()
    owner = signed_in(app, world.members[OrgRole.OWNER])
    opened = owner.post(f"/api/v1/orgs/{world.org.id}/access-reviews")
    assert opened.status_code == 201, opened.text
    assert (
        owner.post(f"/api/v1/orgs/{world.org.id}/access-reviews").status_code == 422
    )  # once a period
    review = owner.get(f"/api/v1/orgs/{world.org.id}/access-reviews/{opened.json()['id']}").json()
    by_label = {i["subject_label"]: i for i in review["items"]}
    assert by_label["old"]["flagged_stale"] is True and by_label["new"]["flagged_stale"] is False
    assert len([i for i in review["items"] if i["subject_type"] == "member"]) == 5
    incomplete = owner.post(f"/api/v1/orgs/{world.org.id}/access-reviews/{review['id']}/complete")
    assert incomplete.status_code == 409
    for item in review["items"]:
        decision = "revoke" if item["subject_label"] == "old" else "keep"
        r = owner.post(
            f"/api/v1/orgs/{world.org.id}/access-reviews/{review['id']}/items/{item['id']}",
            json={"decision": decision},
        )
        assert r.status_code == 200, r.text
    assert (
        owner.post(
            f"/api/v1/orgs/{world.org.id}/access-reviews/{review['id']}/complete"
        ).status_code
        == 200
    )
    tokens_now = {
        t["name"]: t["revoked_at"] for t in owner.get(f"/api/v1/orgs/{world.org.id}/tokens").json()
    }
    assert tokens_now["old"] is not None and tokens_now["new"] is None
    audit = owner.get(
        f"/api/v1/orgs/{world.org.id}/audit", params={"action": "access_review.decision"}
    ).json()
    assert audit["total"] == len(review["items"])
    assert stale["id"] != fresh["id"]


def test_stale_tokens_expire_at_review_when_the_policy_says_so(
    app: FastAPI, world: World, clock: FrozenClock
) -> None:
    owner = signed_in(app, world.members[OrgRole.OWNER])
    owner.patch(f"/api/v1/orgs/{world.org.id}", json={"expire_stale_tokens": True})
    owner.post(
        f"/api/v1/orgs/{world.org.id}/tokens", json={"name": "old", "scopes": ["members:read"]}
    )
    clock.advance(timedelta(days=120))
    owner = signed_in(app, world.members[OrgRole.OWNER])
    assert owner.post(f"/api/v1/orgs/{world.org.id}/access-reviews").status_code == 201
    assert owner.get(f"/api/v1/orgs/{world.org.id}/tokens").json()[0]["revoked_at"] is not None


def test_staff_suspend_a_customer_with_a_reason(app: FastAPI, world: World) -> None:
    from imhost.accounts.models import StaffRole

    support = signed_in(app, world.staff[StaffRole.SUPPORT])
    assert (
        support.post(
            f"/api/v1/admin/customers/{world.org.id}/status",
            json={"suspended": True, "reason": "x"},
        ).status_code
        == 403
    )
    billing = signed_in(app, world.staff[StaffRole.BILLING])
    no_reason = billing.post(
        f"/api/v1/admin/customers/{world.org.id}/status", json={"suspended": True}
    )
    assert no_reason.status_code == 422
    r = billing.post(
        f"/api/v1/admin/customers/{world.org.id}/status",
        json={"suspended": True, "reason": "unpaid invoice INV-1"},
    )
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    owner = signed_in(app, world.members[OrgRole.OWNER])
    assert (
        owner.get(f"/api/v1/orgs/{world.org.id}").json()["status_reason"] == "unpaid invoice INV-1"
    )


def test_read_only_impersonation_is_audited_and_cannot_write(app: FastAPI, world: World) -> None:
    from imhost.accounts.models import StaffRole

    support = signed_in(app, world.staff[StaffRole.ADMIN])
    assert support.post(f"/api/v1/admin/customers/{world.org.id}/impersonate").status_code == 204
    assert support.get(f"/api/v1/orgs/{world.org.id}/members").status_code == 200
    assert support.patch(f"/api/v1/orgs/{world.org.id}", json={"name": "x"}).status_code == 403
    assert support.get(f"/api/v1/orgs/{world.other_org.id}/members").status_code == 404
    audit = support.get(
        "/api/v1/admin/audit", params={"action": "staff.impersonation_started"}
    ).json()
    assert audit["total"] == 1


def test_an_invitee_without_an_account_registers_through_the_link(
    app: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    owner = signed_in(app, world.members[OrgRole.OWNER])
    owner.post(
        f"/api/v1/orgs/{world.org.id}/invitations",
        json={"email": "dan@x.example.com", "role": "billing"},
    )
    with session_factory() as s:
        mail = s.scalars(select(OutboundEmail).where(OutboundEmail.kind == "invitation")).one()
    token = mail.text.split("/invitations/")[1].split()[0]
    client = TestClient(app)
    weak = client.post("/api/v1/invitations/register", json={"token": token, "password": "dan"})
    assert weak.status_code == 422
    r = client.post(
        "/api/v1/invitations/register",
        json={"token": token, "name": "Dan", "password": "quiet harbor pencil 88"},
    )
    assert r.status_code == 201, r.text
    client.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    me = client.get("/api/v1/me").json()
    assert me["user"]["email"] == "dan@x.example.com" and me["user"]["email_verified_at"]
    assert me["organizations"][0]["role"] == "billing"
    again = TestClient(app).post(
        "/api/v1/invitations/register", json={"token": token, "password": "quiet harbor pencil 88"}
    )
    assert again.status_code == 404
