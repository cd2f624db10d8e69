"""Headers that protect what an answer carries: ``Cache-Control: no-store`` on every answer with
people's data or a one-time secret, and ``Retry-After`` on every 429 (API and pages)."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import OrgRole, StaffRole
from imhost.kit.clock import FrozenClock
from imhost.kit.errors import TooManyRequests
from imhost.web import console, portal
from imhost.web.problems import retry_after
from tests.factories import PASSWORD, World, make_world
from tests.web.conftest import signed_in

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        world = make_world(session, clock)
        session.commit()
        return world


@pytest.fixture
def pages(app: FastAPI) -> FastAPI:
    portal.install(app)
    console.install(app)
    return app


def _no_store(response: httpx.Response) -> bool:
    return "no-store" in response.headers.get("cache-control", "")


def test_a_new_api_token_is_never_kept_by_a_cache(app: FastAPI, world: World) -> None:
    owner = signed_in(app, world.members[OrgRole.OWNER])
    created = owner.post(
        f"/api/v1/orgs/{world.org.id}/tokens", json={"name": "ci", "scopes": ["hosting:read"]}
    )
    assert created.status_code == 201, created.text
    assert created.json()["token"].startswith("imh_")
    assert _no_store(created)
    staff = signed_in(app, world.staff[StaffRole.ADMIN])
    provider = staff.post("/api/v1/admin/tokens", json={"name": "ops", "scopes": ["audit:read"]})
    assert provider.status_code == 201, provider.text
    assert _no_store(provider)


def test_totp_secret_and_recovery_codes_are_never_kept_by_a_cache(
    app: FastAPI, world: World
) -> None:
    from imhost.accounts.mfa import totp_code

    client = signed_in(app, world.members[OrgRole.TECHNICAL])
    started = client.post("/api/v1/me/mfa/totp")
    assert started.status_code == 200, started.text
    assert started.json()["secret"] and _no_store(started)
    body = started.json()
    now = app.state.runtime.clock.now()
    confirmed = client.post(
        "/api/v1/me/mfa/totp/confirm",
        json={"factor_id": body["factor_id"], "code": totp_code(body["secret"], now)},
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["recovery_codes"] and _no_store(confirmed)
    again = client.post("/api/v1/me/mfa/recovery-codes")
    assert again.status_code == 200 and _no_store(again)


def test_every_authenticated_answer_and_error_is_no_store_but_static_files_may_be_cached(
    pages: FastAPI, world: World
) -> None:
    client = signed_in(pages, world.members[OrgRole.OWNER])
    assert _no_store(client.get("/api/v1/me"))
    assert _no_store(client.get(f"/api/v1/orgs/{world.org.id}/members"))
    assert _no_store(client.get(f"/api/v1/orgs/{world.other_org.id}/members"))  # a 404
    assert _no_store(client.get(f"/portal/orgs/{world.org.slug}/members"))
    login = TestClient(pages).post(
        "/api/v1/auth/login", json={"email": world.outsider.email, "password": PASSWORD}
    )
    assert login.status_code == 200 and _no_store(login)
    css = client.get("/static/site.css")
    assert css.status_code == 200 and not _no_store(css)


def _portal_sign_in(client: TestClient, email: str, password: str) -> httpx.Response:
    page = client.get("/portal/sign-in")
    match = CSRF.search(page.text)
    assert match is not None
    return client.post(
        "/portal/sign-in",
        data={"csrf_token": match.group(1), "email": email, "password": password},
    )


def test_the_portals_too_many_attempts_page_says_when_to_come_back(
    pages: FastAPI, world: World
) -> None:
    browser = TestClient(pages, raise_server_exceptions=False, follow_redirects=False)
    email = world.members[OrgRole.OWNER].email
    for _ in range(5):
        assert _portal_sign_in(browser, email, "wrong password here").status_code == 401
    locked = _portal_sign_in(browser, email, PASSWORD)
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0
    assert "text/html" in locked.headers["content-type"]


def test_the_apis_429_says_when_to_come_back(app: FastAPI, world: World) -> None:
    client = TestClient(app, raise_server_exceptions=False)
    email = world.members[OrgRole.OWNER].email
    for _ in range(5):
        client.post("/api/v1/auth/login", json={"email": email, "password": "wrong password"})
    locked = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert locked.status_code == 429
    assert locked.headers["content-type"].startswith("application/problem+json")
    assert int(locked.headers["Retry-After"]) > 0


def test_a_429_without_a_known_wait_still_names_one() -> None:
    assert retry_after(TooManyRequests("slow down")) == "60"
    assert retry_after(TooManyRequests("slow down", retry_after=0)) == "60"
    assert retry_after(TooManyRequests("slow down", retry_after=7)) == "7"
