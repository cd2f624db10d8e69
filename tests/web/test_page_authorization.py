"""Walk every portal and console page (GET and POST) as every kind of visitor; the pages must
do exactly what the permission matrix says, as the API does.

Visitors: each customer role in organization A, the owner of organization B (an outsider),
each staff role, and an anonymous browser. A visitor the matrix allows is never refused (no
403, no redirect to sign in, no "no such organization"); one it does not allow is: a 403 page
for a member or staff member lacking the role, a 404 page for an outsider (another
organization's data is never even confirmed to exist), a redirect to the sign-in page (with a
local ``next``) for an anonymous visitor.
"""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import sessions
from imhost.accounts.models import User
from imhost.accounts.permissions import Scope
from imhost.kit.clock import FrozenClock
from imhost.runtime import Runtime
from imhost.web import console, portal
from imhost.web.pages import FORM_COOKIE, PageRoute, page_routes
from tests.factories import World, make_world
from tests.web.test_authorization_matrix import (
    CALLERS,
    Caller,
    _expected_allowed,
)

FAKE_ID = "f" * 32


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        world = make_world(session, clock)
        session.commit()
        return world


@pytest.fixture
def pages_app(app: FastAPI) -> FastAPI:
    portal.install(app)
    console.install(app)
    return app


def _routes() -> list[PageRoute]:
    return page_routes(portal.routers() + console.routers())


def _browser(app: FastAPI, world: World, caller: Caller) -> tuple[TestClient, str]:
    client = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
    if caller.kind == "anonymous":
        client.cookies.set(FORM_COOKIE, "form-token-for-the-walk")
        return client, "form-token-for-the-walk"
    user: User
    if caller.kind == "member":
        assert caller.org_role is not None
        user = world.members[caller.org_role]
    elif caller.kind == "outsider":
        user = world.outsider
    else:
        assert caller.staff_role is not None
        user = world.staff[caller.staff_role]
    runtime: Runtime = app.state.runtime
    with runtime.session_factory() as session:
        new = sessions.start_session(
            session,
            runtime.clock,
            runtime.settings.security,
            user_id=user.id,
            address="testclient",
            user_agent="pytest",
            mfa_verified=True,
        )
        session.commit()
    client.cookies.set(sessions.COOKIE_NAME, new.cookie_value)
    client.cookies.set(FORM_COOKIE, "form-token-for-the-walk")
    return client, new.session.csrf_token


def _concrete(path: str, world: World) -> str:
    return re.sub(r"\{[^}]+\}", FAKE_ID, path.replace("{org_id}", world.org.id))


def _refused(response: Response) -> bool:
    if response.status_code == 403:
        return True
    if response.status_code in (302, 303):
        return response.headers["location"].startswith("/portal/sign-in?next=")
    return response.status_code == 404 and "no such organization" in response.text


def test_every_page_declares_who_may_see_it() -> None:
    routes = _routes()
    assert len(routes) > 40
    undeclared = [f"{r.method} {r.path}" for r in routes if r.requirement is None]
    assert not undeclared, f"pages without a permission requirement: {undeclared}"


def test_every_page_is_served_by_the_app(pages_app: FastAPI, world: World) -> None:
    client = TestClient(pages_app, raise_server_exceptions=False, follow_redirects=False)
    for route in _routes():
        response = client.request(route.method, _concrete(route.path, world))
        # Served by a page (an HTML page or a redirect), not the framework's JSON 404/405.
        served = response.status_code == 303 or response.headers["content-type"].startswith(
            "text/html"
        )
        assert served, (route, response.status_code, response.text[:200])


@pytest.mark.parametrize("caller", CALLERS, ids=lambda c: c.label)
def test_each_visitor_gets_exactly_what_the_matrix_allows(
    pages_app: FastAPI, world: World, caller: Caller
) -> None:
    failures: list[str] = []
    for route in _routes():
        req = route.requirement
        assert req is not None
        # A fresh session for every call: some pages (sign-out) end the visitor's session.
        client, csrf = _browser(pages_app, world, caller)
        url = _concrete(route.path, world)
        if route.method == "POST":
            # Forms shown before signing in carry the form cookie's token, others the session's.
            token = "form-token-for-the-walk" if req.scope is Scope.PUBLIC else csrf
            response = client.post(url, data={"csrf_token": token})
        else:
            response = client.get(url)
        status = response.status_code
        if status >= 500:
            failures.append(f"{route.method} {route.path}: {status} {response.text[:200]}")
            continue
        if _expected_allowed(req, caller):
            if _refused(response):
                failures.append(
                    f"{route.method} {route.path}: refused with {status} "
                    + response.headers.get("location", "")
                )
            continue
        if caller.kind == "anonymous":
            ok = status == 303 and response.headers["location"].startswith(
                "/portal/sign-in?next=%2F"
            )
        elif req.scope is Scope.ORG and caller.kind == "outsider":
            ok = status == 404
        else:
            ok = status == 403
        if not ok:
            failures.append(f"{route.method} {route.path}: not refused as expected, got {status}")
    assert not failures, "\n".join(failures)


def test_a_post_without_the_session_csrf_token_is_refused_before_anything_happens(
    pages_app: FastAPI, world: World
) -> None:
    from imhost.accounts.models import OrgRole
    from tests.web.test_authorization_matrix import Caller as C

    client, _csrf = _browser(pages_app, world, C("owner", "member", org_role=OrgRole.OWNER))
    for route in _routes():
        if route.method != "POST" or route.requirement is None:
            continue
        if route.requirement.scope is Scope.PUBLIC:
            response = client.post(_concrete(route.path, world), data={"csrf_token": "wrong"})
        else:
            response = client.post(_concrete(route.path, world), data={})
        assert response.status_code == 403, (route.path, response.status_code)
        assert "CSRF" in response.text
