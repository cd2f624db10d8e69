"""Walk every API route as every kind of caller; the app must do exactly what the matrix says.

Callers: each customer role in organization A, the owner of organization B (an outsider),
each staff role, an anonymous client, and API tokens. A caller the matrix allows must not be
refused (no 401/403, and no "no such organization"); one it does not allow must be: 403 for a
member or staff member lacking the role, 404 for an outsider (another organization's data is
never even confirmed to exist), 401 for anonymous callers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import tokens
from imhost.accounts.audit import Actor
from imhost.accounts.models import OrgRole, StaffRole, User
from imhost.accounts.permissions import (
    ORG_MATRIX,
    STAFF_MATRIX,
    STAFF_ON_ORG_MATRIX,
    Access,
    Scope,
)
from imhost.kit.clock import FrozenClock
from imhost.web.matrix import api_routes, markdown_table, role_tables
from tests.factories import World, make_world
from tests.web.conftest import signed_in

ROOT = Path(__file__).resolve().parents[2]
FAKE_ID = "f" * 32


@dataclass(frozen=True)
class Caller:
    label: str
    kind: str  # member | outsider | staff | anonymous | token
    org_role: OrgRole | None = None
    staff_role: StaffRole | None = None


CALLERS = (
    [Caller(f"member:{r.value}", "member", org_role=r) for r in OrgRole]
    + [Caller("outsider", "outsider")]
    + [Caller(f"staff:{r.value}", "staff", staff_role=r) for r in StaffRole]
    + [Caller("anonymous", "anonymous")]
)


def _concrete(path: str, world: World) -> str:
    path = path.replace("{org_id}", world.org.id)
    return re.sub(r"\{[^}]+\}", FAKE_ID, path)


def _expected_allowed(req, caller: Caller) -> bool:  # type: ignore[no-untyped-def]
    key = (req.area, req.access)
    if req.scope is Scope.PUBLIC:
        return True
    if caller.kind == "anonymous":
        return False
    if req.scope is Scope.SELF:
        return True
    if req.scope is Scope.STAFF:
        return caller.staff_role in STAFF_MATRIX.get(key, frozenset())
    if caller.kind == "member":
        return caller.org_role in ORG_MATRIX.get(key, frozenset())
    if caller.kind == "staff":
        return caller.staff_role in STAFF_ON_ORG_MATRIX.get(key, frozenset())
    return False


def _refusal(req, caller: Caller) -> set[int]:  # type: ignore[no-untyped-def]
    if caller.kind == "anonymous":
        return {401}
    if req.scope is Scope.ORG and caller.kind == "outsider":
        return {404}
    return {403}


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        world = make_world(session, clock)
        session.commit()
        return world


def _client(app: FastAPI, world: World, caller: Caller) -> TestClient:
    user: User
    if caller.kind == "anonymous":
        return TestClient(app, raise_server_exceptions=False)
    if caller.kind == "member":
        assert caller.org_role is not None
        user = world.members[caller.org_role]
    elif caller.kind == "outsider":
        user = world.outsider
    else:
        assert caller.staff_role is not None
        user = world.staff[caller.staff_role]
    return signed_in(app, user)


def _call(client: TestClient, method: str, url: str):  # type: ignore[no-untyped-def]
    if method in ("GET", "DELETE", "HEAD"):
        return client.request(method, url)
    return client.request(method, url, json={})


def test_every_api_route_declares_who_may_call_it() -> None:
    undeclared = [f"{r.method} {r.path}" for r in api_routes() if r.requirement is None]
    assert not undeclared, f"routes without a permission requirement: {undeclared}"


def test_the_routes_walked_are_all_the_routes_the_app_serves(app: FastAPI) -> None:
    schema = app.openapi()
    served = {
        (method.upper(), path)
        for path, ops in schema["paths"].items()
        if path.startswith("/api/v1")
        for method in ops
    }
    walked = {(r.method, r.path) for r in api_routes() if r.method != "WS"}
    assert served == walked


def test_docs_security_matrix_matches_the_code() -> None:
    doc = (ROOT / "docs" / "security.md").read_text()
    assert markdown_table() in doc, (
        "docs/security.md is out of date: regenerate its route table with "
        "`python -m imhost.web.matrix`"
    )
    assert role_tables() in doc


@pytest.mark.parametrize("caller", CALLERS, ids=lambda c: c.label)
def test_each_caller_gets_exactly_what_the_matrix_allows(
    app: FastAPI, world: World, caller: Caller
) -> None:
    failures: list[str] = []
    for route in api_routes():
        if route.method == "WS" or route.requirement is None:
            continue
        req = route.requirement
        # A fresh session for every call: some routes (sign-out) end the caller's session.
        client = _client(app, world, caller)
        url = _concrete(route.path, world)
        response = _call(client, route.method, url)
        status = response.status_code
        body = response.text
        if status >= 500:
            failures.append(f"{route.method} {route.path}: {status} {body[:200]}")
            continue
        if _expected_allowed(req, caller):
            refused = status in (401, 403) or (status == 404 and "no such organization" in body)
            if refused and not (req.scope is Scope.SELF and status == 401 and "password" in body):
                failures.append(f"{route.method} {route.path}: refused with {status} {body[:160]}")
        elif status not in _refusal(req, caller):
            failures.append(
                f"{route.method} {route.path}: expected {sorted(_refusal(req, caller))}, "
                f"got {status} {body[:160]}"
            )
    assert not failures, "\n".join(failures)


def test_token_scopes_narrow_what_a_token_may_do(
    app: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    with session_factory() as session:
        issued = tokens.create_token(
            session,
            clock,
            organization_id=world.org.id,
            name="members reader",
            scopes=["members:read"],
            role=OrgRole.ADMIN.value,
            created_by=Actor.system(),
        )
        session.commit()
    client = TestClient(app, raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {issued.plaintext}"
    checked = 0
    for route in api_routes():
        req = route.requirement
        if req is None or req.scope is not Scope.ORG or route.method == "WS":
            continue
        response = _call(client, route.method, _concrete(route.path, world))
        in_scope = req.area == "members" and req.access is Access.READ
        if in_scope:
            assert response.status_code not in (401, 403), (route.path, response.text)
        else:
            assert response.status_code == 403, (route.method, route.path, response.text)
            assert "scope" in response.json()["detail"]
        checked += 1
    assert checked > 10
    # A token of organization A is an outsider to organization B.
    other = client.get(f"/api/v1/orgs/{world.other_org.id}/members")
    assert other.status_code == 404
