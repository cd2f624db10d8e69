"""NUL and other control characters in what people type: a clear 4xx, nothing stored, in the API
(every schema's free text), in addresses (path and query) and in the portal's forms."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import ApiToken, Organization, OrgRole, StaffRole
from imhost.kit.clock import FrozenClock
from imhost.web import portal
from tests.factories import World, make_world
from tests.web.conftest import signed_in

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        world = make_world(session, clock)
        session.commit()
        return world


def _refused_field(response_json: dict[str, object], field: str) -> bool:
    errors = response_json.get("errors")
    assert isinstance(errors, list)
    return any(
        e["field"] == field and "control characters" in e["message"]
        for e in errors
        if isinstance(e, dict)
    )


def test_an_organization_name_with_nul_is_refused_and_not_stored(
    app: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    owner = signed_in(app, world.members[OrgRole.OWNER])
    for name in ("Acme\x00Chat", "Acme\x1b[2JChat", "Acme\nChat"):
        r = owner.patch(f"/api/v1/orgs/{world.org.id}", json={"name": name})
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert _refused_field(r.json(), "name")
    with session_factory() as s:
        org = s.get(Organization, world.org.id)
        assert org is not None and org.name == "Acme Chat"
    fine = owner.patch(f"/api/v1/orgs/{world.org.id}", json={"name": "Acme Chät 東京"})
    assert fine.status_code == 200 and fine.json()["name"] == "Acme Chät 東京"


def test_nul_in_a_token_name_a_user_name_and_a_plan_name_is_refused(
    app: FastAPI, world: World
) -> None:
    owner = signed_in(app, world.members[OrgRole.OWNER])
    token = owner.post(
        f"/api/v1/orgs/{world.org.id}/tokens", json={"name": "ci\x00", "scopes": ["hosting:read"]}
    )
    assert token.status_code == 422 and _refused_field(token.json(), "name")
    me = owner.patch("/api/v1/me", json={"name": "Olga\x00"})
    assert me.status_code == 422 and _refused_field(me.json(), "name")
    staff = signed_in(app, world.staff[StaffRole.ADMIN])
    plan = staff.post(
        "/api/v1/admin/plans",
        json={"code": "team", "name": "Team\x00", "description": "line one\nline two"},
    )
    assert plan.status_code == 422 and _refused_field(plan.json(), "name")
    assert not _refused_field(plan.json(), "description")  # line breaks are fine there
    coupon = staff.post(
        "/api/v1/admin/billing/coupons", json={"code": "X\x00", "name": "n", "percent_off": 5}
    )
    assert coupon.status_code == 422 and _refused_field(coupon.json(), "code")


def test_nul_in_an_address_is_a_400_not_a_database_error(app: FastAPI, world: World) -> None:
    """PostgreSQL refuses NUL in text: an id or a search with one must not reach it."""
    staff = signed_in(app, world.staff[StaffRole.ADMIN])
    in_path = staff.get("/api/v1/orgs/abc%00def/members")
    assert in_path.status_code == 400, in_path.text
    assert "control character" in in_path.json()["detail"]
    in_query = staff.get("/api/v1/admin/customers", params={"q": "acme\x00"})
    assert in_query.status_code == 400, in_query.text
    assert staff.get("/api/v1/admin/customers", params={"q": "acme"}).status_code == 200


def test_the_portal_refuses_control_characters_in_a_form_and_says_which_field(
    app: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    portal.install(app)
    owner = signed_in(app, world.members[OrgRole.OWNER])
    owner.follow_redirects = False
    page = owner.get(f"/portal/orgs/{world.org.slug}/settings")
    match = CSRF.search(page.text)
    assert page.status_code == 200 and match is not None
    saved = owner.post(
        f"/portal/orgs/{world.org.slug}/settings",
        data={"csrf_token": match.group(1), "name": "Evil\x00Corp", "country": "DE"},
    )
    assert saved.status_code == 422, saved.text[:300]
    assert "control characters" in saved.text
    created = owner.post(
        f"/portal/orgs/{world.org.slug}/tokens",
        data={"csrf_token": match.group(1), "name": "bot\x07", "scopes": ["hosting:read"]},
    )
    assert created.status_code == 422 and "control characters" in created.text
    with session_factory() as s:
        org = s.get(Organization, world.org.id)
        assert org is not None and org.name == "Acme Chat"
        assert s.query(ApiToken).count() == 0
