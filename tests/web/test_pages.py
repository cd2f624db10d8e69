"""The portal and console pages through FastAPI's TestClient: sign-in with the second factor,
sign-up with a plan, forms that keep what was typed and show each error next to its field,
CSRF, confirmation of destructive actions, pagination, the suspended banner, show-once secrets
and read-only impersonation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import audit, sessions
from imhost.accounts import service as accounts
from imhost.accounts.audit import Actor, AuditAction
from imhost.accounts.mfa import totp_code
from imhost.accounts.models import Membership, MfaFactor, OrgRole, StaffRole, User
from imhost.kit.clock import FrozenClock
from imhost.notify.models import OutboundEmail
from imhost.runtime import Runtime
from imhost.web import console, portal
from imhost.web.pages import FORM_COOKIE, safe_next
from tests.factories import PASSWORD, World, make_world

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


@pytest.fixture
def browser(pages: FastAPI) -> Iterator[TestClient]:
    with TestClient(pages, raise_server_exceptions=False, follow_redirects=False) as client:
        yield client


def as_user(app: FastAPI, user: User) -> tuple[TestClient, str]:
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
    client = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
    client.cookies.set(sessions.COOKIE_NAME, new.cookie_value)
    return client, new.session.csrf_token


def form_token(client: TestClient, url: str) -> str:
    page = client.get(url)
    assert page.status_code == 200, page.text[:300]
    match = CSRF.search(page.text)
    assert match is not None
    return match.group(1)


# --- signing in ---------------------------------------------------------------------------------


def test_a_page_sends_an_anonymous_visitor_to_sign_in_and_back(
    browser: TestClient, world: World
) -> None:
    response = browser.get(f"/portal/orgs/{world.org.slug}/members")
    assert response.status_code == 303
    assert (
        response.headers["location"]
        == f"/portal/sign-in?next=%2Fportal%2Forgs%2F{world.org.slug}%2Fmembers"
    )
    token = form_token(browser, response.headers["location"])
    signed = browser.post(
        "/portal/sign-in",
        data={
            "csrf_token": token,
            "email": "admin@a.example.com",
            "password": PASSWORD,
            "next": f"/portal/orgs/{world.org.slug}/members",
        },
    )
    assert signed.status_code == 303
    assert signed.headers["location"] == f"/portal/orgs/{world.org.slug}/members"
    assert browser.get(signed.headers["location"]).status_code == 200


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/\\evil", "javascript:alert(1)", ""]
)
def test_only_a_local_path_is_followed_after_signing_in(target: str) -> None:
    assert safe_next(target) == "/portal/"


def test_a_wrong_password_keeps_the_email_and_says_why_without_echoing_the_password(
    browser: TestClient, world: World
) -> None:
    token = form_token(browser, "/portal/sign-in")
    response = browser.post(
        "/portal/sign-in",
        data={"csrf_token": token, "email": "owner@a.example.com", "password": "not-it-at-all"},
    )
    assert response.status_code == 401
    assert 'value="owner@a.example.com"' in response.text
    assert "not right" in response.text
    assert "not-it-at-all" not in response.text


def test_the_sign_in_form_is_refused_without_its_csrf_token(
    browser: TestClient, world: World
) -> None:
    browser.get("/portal/sign-in")
    response = browser.post(
        "/portal/sign-in",
        data={"csrf_token": "forged", "email": "owner@a.example.com", "password": PASSWORD},
    )
    assert response.status_code == 403
    assert sessions.COOKIE_NAME not in response.cookies


def test_signing_in_with_a_second_factor_asks_for_the_code(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    owner = world.members[OrgRole.OWNER]
    client, csrf = as_user(pages, owner)
    page = client.post("/portal/account/mfa/start", data={"csrf_token": csrf})
    assert page.status_code == 200
    assert "<svg" in page.text
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
    factor_id = re.search(r'name="factor_id" value="([^"]+)"', page.text)
    assert secret and factor_id
    wrong = client.post(
        "/portal/account/mfa/confirm",
        data={"csrf_token": csrf, "factor_id": factor_id.group(1), "code": "000000"},
    )
    assert wrong.status_code == 422 and 'id="e-code"' in wrong.text
    done = client.post(
        "/portal/account/mfa/confirm",
        data={
            "csrf_token": csrf,
            "factor_id": factor_id.group(1),
            "code": totp_code(secret.group(1), clock.now()),
        },
    )
    codes = re.findall(r"<li>([0-9a-z-]{8,})</li>", done.text)
    assert done.status_code == 200 and len(codes) == 10
    assert codes[0] not in client.get("/portal/account/mfa").text  # shown once

    clock.advance(timedelta(minutes=1))
    browser = TestClient(pages, raise_server_exceptions=False, follow_redirects=False)
    token = form_token(browser, "/portal/sign-in")
    first = browser.post(
        "/portal/sign-in", data={"csrf_token": token, "email": owner.email, "password": PASSWORD}
    )
    assert first.status_code == 303 and first.headers["location"].startswith("/portal/sign-in/code")
    assert (
        browser.get(f"/portal/orgs/{world.org.slug}/")
        .headers["location"]
        .startswith("/portal/sign-in/code")
    )
    code_token = form_token(browser, "/portal/sign-in/code")
    bad = browser.post("/portal/sign-in/code", data={"csrf_token": code_token, "code": "123456"})
    assert bad.status_code == 401 and 'id="e-code"' in bad.text
    good = browser.post(
        "/portal/sign-in/code",
        data={"csrf_token": code_token, "code": totp_code(secret.group(1), clock.now())},
    )
    assert good.status_code == 303
    assert browser.get(f"/portal/orgs/{world.org.slug}/").status_code == 200


def test_staff_without_a_second_factor_are_sent_to_enrol(browser: TestClient, world: World) -> None:
    token = form_token(browser, "/portal/sign-in")
    response = browser.post(
        "/portal/sign-in",
        data={
            "csrf_token": token,
            "email": world.staff[StaffRole.ADMIN].email,
            "password": PASSWORD,
        },
    )
    assert response.headers["location"] == "/portal/account/mfa"
    assert browser.get("/console/").headers["location"] == "/portal/account/mfa"
    assert "required" in browser.get("/portal/account/mfa").text


# --- sign-up --------------------------------------------------------------------------------------


def test_sign_up_shows_each_password_problem_next_to_the_field_and_keeps_the_rest(
    browser: TestClient,
) -> None:
    token = form_token(browser, "/portal/sign-up")
    response = browser.post(
        "/portal/sign-up",
        data={
            "csrf_token": token,
            "email": "new@c.example.com",
            "password": "password",
            "name": "Nia",
            "organization_name": "Gamma",
        },
    )
    assert response.status_code == 422
    # Beside the field, each problem once, as a list (not the sentence and the list again).
    beside = re.search(r'<ul class="error" id="e-password">(.*?)</ul>', response.text, re.S)
    assert beside is not None and beside.group(1).count("<li>") >= 2
    for item in re.findall(r"<li>(.*?)</li>", beside.group(1)):
        assert response.text.count(item) == 2  # beside the field, and in the summary's line
    assert '<a href="#f-password">' in response.text  # the summary links to the field
    assert 'value="new@c.example.com"' in response.text and 'value="Gamma"' in response.text


def test_sign_up_with_a_plan_finishes_by_the_email_link_subscribed_and_signed_in(
    browser: TestClient, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    from imhost.billing import service as billing
    from imhost.catalog import service as catalog

    with session_factory() as session:
        catalog.seed_default_plans(session, clock)
        session.commit()
    page = browser.get("/portal/sign-up")
    versions = re.findall(r'name="plan" id="plan-([0-9a-f]+)"', page.text)
    assert len(versions) >= 2
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    response = browser.post(
        "/portal/sign-up",
        data={
            "csrf_token": token,
            "email": "nia@c.example.com",
            "password": "violet tractor kettle summit",
            "name": "Nia",
            "organization_name": "Gamma Chat",
            "country": "NL",
            "plan": versions[0],
        },
    )
    assert response.status_code == 202, response.text[:500]
    assert "Check your e-mail" in response.text
    with session_factory() as session:
        assert accounts.get_user_by_email(session, "nia@c.example.com") is None
        mail = session.scalars(select(OutboundEmail).where(OutboundEmail.kind == "sign-up")).one()
    link = "/portal/sign-up/" + mail.text.split("/portal/sign-up/")[1].split()[0]
    finish = browser.get(link)
    assert finish.status_code == 200 and "Create my account" in finish.text
    response = browser.post(link, data={"csrf_token": CSRF.search(finish.text).group(1)})  # type: ignore[union-attr]
    assert response.status_code == 303, response.text[:500]
    assert response.headers["location"] == "/portal/orgs/gamma-chat/"
    assert browser.get("/portal/orgs/gamma-chat/").status_code == 200
    again = browser.get(link)
    assert again.status_code == 404 and "does not work any more" in again.text
    with session_factory() as session:
        org = accounts.get_organization(session, "gamma-chat")
        sub = billing.current_subscription(session, org.id)
        assert sub is not None and sub.plan_version_id == versions[0]


def test_sign_up_refuses_a_plan_that_is_not_offered(
    browser: TestClient, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    from imhost.catalog import service as catalog

    with session_factory() as session:
        catalog.seed_default_plans(session, clock)
        session.commit()
    token = form_token(browser, "/portal/sign-up")
    response = browser.post(
        "/portal/sign-up",
        data={
            "csrf_token": token,
            "email": "x@c.example.com",
            "password": "violet tractor kettle summit",
            "organization_name": "X",
            "plan": "f" * 32,
        },
    )
    assert response.status_code == 422 and 'id="e-plan"' in response.text
    with session_factory() as session:
        assert accounts.get_user_by_email(session, "x@c.example.com") is None


# --- members, confirmation, CSRF ----------------------------------------------------------------


def test_an_invitation_with_a_bad_address_shows_the_error_next_to_the_field_and_keeps_the_role(
    pages: FastAPI, world: World
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    response = client.post(
        f"/portal/orgs/{world.org.slug}/invitations",
        data={"csrf_token": csrf, "email": "not an address", "role": "billing"},
    )
    assert response.status_code == 422
    assert 'id="e-email"' in response.text and 'value="not an address"' in response.text
    assert '<option value="billing" selected>' in response.text


def test_removing_a_member_asks_for_confirmation_first(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    with session_factory() as session:
        membership = accounts.get_membership(
            session, world.org.id, world.members[OrgRole.TECHNICAL].id
        )
        assert membership is not None
        member_id = membership.id
    url = f"/portal/orgs/{world.org.slug}/members/{member_id}/remove"
    asked = client.post(url, data={"csrf_token": csrf})
    assert asked.status_code == 200 and "Please confirm" in asked.text
    assert 'name="confirmed" value="yes"' in asked.text
    with session_factory() as session:
        assert session.get(Membership, member_id) is not None
    done = client.post(url, data={"csrf_token": csrf, "confirmed": "yes"})
    assert done.status_code == 303
    with session_factory() as session:
        assert session.get(Membership, member_id) is None


def test_a_form_posted_with_another_sessions_token_changes_nothing(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    client, _ = as_user(pages, world.members[OrgRole.OWNER])
    _other, other_csrf = as_user(pages, world.members[OrgRole.ADMIN])
    response = client.post(
        f"/portal/orgs/{world.org.slug}/invitations",
        data={"csrf_token": other_csrf, "email": "eve@x.example.com", "role": "owner"},
    )
    assert response.status_code == 403
    with session_factory() as session:
        assert not accounts.list_invitations(
            session, FrozenClock(world.org.created_at), world.org.id
        )


def test_a_read_only_member_sees_no_controls_and_cannot_post(pages: FastAPI, world: World) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.READ_ONLY])
    page = client.get(f"/portal/orgs/{world.org.slug}/members")
    assert page.status_code == 200 and "Invite someone" not in page.text
    refused = client.post(
        f"/portal/orgs/{world.org.slug}/invitations",
        data={"csrf_token": csrf, "email": "a@b.example.com", "role": "owner"},
    )
    assert refused.status_code == 403 and "cannot change members" in refused.text


def test_another_organizations_page_is_a_not_found_page(pages: FastAPI, world: World) -> None:
    client, _ = as_user(pages, world.outsider)
    response = client.get(f"/portal/orgs/{world.org.slug}/members")
    assert response.status_code == 404
    assert "Acme" not in response.text and "Page not found</h1>" in response.text


# --- tokens, pagination, banner, console -----------------------------------------------------


def test_an_api_token_is_shown_once(pages: FastAPI, world: World) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    created = client.post(
        f"/portal/orgs/{world.org.slug}/tokens",
        data={
            "csrf_token": csrf,
            "name": "ci",
            "role": "technical",
            "scopes": ["hosting:write", "members:read"],
        },
    )
    secret = re.search(r'id="new-token">([^<]+)<', created.text)
    assert created.status_code == 200 and secret is not None
    assert secret.group(1) not in client.get(f"/portal/orgs/{world.org.slug}/tokens").text


def test_a_token_without_scopes_keeps_the_name_and_says_so(pages: FastAPI, world: World) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    response = client.post(
        f"/portal/orgs/{world.org.slug}/tokens", data={"csrf_token": csrf, "name": "deploy bot"}
    )
    assert (
        response.status_code == 422
        and 'id="e-scopes"' in response.text
        and 'value="deploy bot"' in response.text
    )


def test_the_security_log_paginates(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    with session_factory() as session:
        for i in range(40):
            audit.record(
                session,
                clock,
                AuditAction.LOGIN_FAILED,
                actor=Actor(label=f"probe{i:02d}@x.example"),
                organization_id=world.org.id,
            )
        total = (
            session.scalar(
                select(func.count()).select_from(
                    audit.query_events(organization_id=world.org.id).subquery()
                )
            )
            or 0
        )
        session.commit()
    client, _ = as_user(pages, world.members[OrgRole.OWNER])
    first = client.get(f"/portal/orgs/{world.org.slug}/security/log")
    assert first.text.count("<tr>") - 1 == 25
    assert 'rel="next"' in first.text
    last_page = (total + 24) // 25
    last = client.get(f"/portal/orgs/{world.org.slug}/security/log?page={last_page}")
    assert last.text.count("<tr>") - 1 == total - 25 * (last_page - 1)
    assert 'rel="next"' not in last.text and 'rel="prev"' in last.text


def test_a_suspended_organization_says_so_with_the_reason_on_every_page(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    admin, csrf = as_user(pages, world.staff[StaffRole.ADMIN])
    url = f"/console/customers/{world.org.id}/status"
    asked = admin.post(
        url, data={"csrf_token": csrf, "action": "suspend", "confirmed": "yes", "reason": ""}
    )
    assert asked.status_code == 200 and 'id="e-reason"' in asked.text  # a reason is required
    done = admin.post(
        url,
        data={
            "csrf_token": csrf,
            "action": "suspend",
            "confirmed": "yes",
            "reason": "Invoice 2026-0042 is 30 days overdue",
        },
    )
    assert done.status_code == 303
    client, _ = as_user(pages, world.members[OrgRole.READ_ONLY])
    for page in ("/", "/members", "/service", "/billing"):
        text = client.get(f"/portal/orgs/{world.org.slug}{page}").text
        assert (
            "This organization is suspended" in text
            and "Invoice 2026-0042 is 30 days overdue" in text
        )
    other, _ = as_user(pages, world.outsider)
    assert "suspended" not in other.get(f"/portal/orgs/{world.other_org.slug}/").text


def test_impersonation_is_read_only_and_audited(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    support, csrf = as_user(pages, world.staff[StaffRole.SUPPORT])
    started = support.post(
        f"/console/customers/{world.org.id}/impersonate", data={"csrf_token": csrf}
    )
    assert started.headers["location"] == f"/portal/orgs/{world.org.slug}/"
    page = support.get(f"/portal/orgs/{world.org.slug}/members")
    assert page.status_code == 200 and "as staff, read-only" in page.text
    refused = support.post(
        f"/portal/orgs/{world.org.slug}/invitations",
        data={"csrf_token": csrf, "email": "a@b.example.com", "role": "admin"},
    )
    assert refused.status_code == 403
    assert support.get(f"/portal/orgs/{world.other_org.slug}/").status_code == 404
    with session_factory() as session:
        events, _ = audit.list_events(
            session, organization_id=world.org.id, action=AuditAction.IMPERSONATION_STARTED
        )
        assert [e.actor_label for e in events] == [world.staff[StaffRole.SUPPORT].email]


def test_console_customer_search_finds_by_name(pages: FastAPI, world: World) -> None:
    client, _ = as_user(pages, world.staff[StaffRole.READ_ONLY])
    response = client.get("/console/?q=beta")
    assert "Beta Talk" in response.text and "Acme Chat" not in response.text


def test_the_form_cookie_token_is_set_for_anonymous_forms(browser: TestClient) -> None:
    page = browser.get("/portal/sign-in")
    assert page.cookies.get(FORM_COOKIE)
    assert CSRF.search(page.text).group(1) == page.cookies.get(FORM_COOKIE)  # type: ignore[union-attr]


def test_totp_factor_rows_are_not_left_behind_by_a_restarted_enrolment(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.ADMIN])
    client.post("/portal/account/mfa/start", data={"csrf_token": csrf})
    client.post("/portal/account/mfa/start", data={"csrf_token": csrf})
    with session_factory() as session:
        rows = session.scalar(
            select(func.count())
            .select_from(MfaFactor)
            .where(MfaFactor.user_id == world.members[OrgRole.ADMIN].id)
        )
        assert rows == 1


def test_only_an_owner_can_require_two_factor_authentication(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    url = f"/portal/orgs/{world.org.slug}/settings"
    admin, csrf = as_user(pages, world.members[OrgRole.ADMIN])
    refused = admin.post(url, data={"csrf_token": csrf, "name": "Acme Chat", "require_mfa": "on"})
    assert refused.status_code == 403
    owner, owner_csrf = as_user(pages, world.members[OrgRole.OWNER])
    bad = owner.post(
        url, data={"csrf_token": owner_csrf, "name": "Acme Chat", "country": "Germany"}
    )
    assert bad.status_code == 422 and 'id="e-country"' in bad.text and 'value="Germany"' in bad.text
    done = owner.post(
        url,
        data={"csrf_token": owner_csrf, "name": "Acme Chat", "country": "DE", "require_mfa": "on"},
    )
    assert done.status_code == 303
    with session_factory() as session:
        assert accounts.get_organization(session, world.org.id).require_mfa


def test_the_links_in_security_emails_lead_to_the_organizations_pages(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    from imhost.accounts import reviews

    with session_factory() as session:
        org = accounts.get_organization(session, world.org.id)
        review = reviews.open_review(session, clock, pages.state.runtime.settings.security, org)
        assert review is not None
        review_id = review.id
        session.commit()
    owner, _ = as_user(pages, world.members[OrgRole.OWNER])
    assert (
        owner.get("/portal/security").headers["location"]
        == f"/portal/orgs/{world.org.slug}/security"
    )
    link = owner.get(f"/portal/security/reviews/{review_id}")
    assert link.headers["location"] == f"/portal/orgs/{world.org.slug}/security/reviews/{review_id}"
    assert owner.get(link.headers["location"]).status_code == 200
    outsider, _ = as_user(pages, world.outsider)
    assert outsider.get(f"/portal/security/reviews/{review_id}").status_code == 404


def test_the_console_lists_subscriptions_for_billing_staff_only(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    from imhost.billing import service as billing
    from imhost.catalog import service as catalog

    with session_factory() as session:
        plans = catalog.seed_default_plans(session, clock)
        view = catalog.plan_view(session, plans[0].code)
        billing.start_subscription(session, clock, world.org.id, view.versions[0].version.id)
        session.commit()
    reader, _ = as_user(pages, world.staff[StaffRole.READ_ONLY])
    page = reader.get("/console/subscriptions")
    assert page.status_code == 200
    assert "Acme Chat" in page.text and plans[0].name in page.text
    support, _ = as_user(pages, world.staff[StaffRole.SUPPORT])
    assert support.get("/console/subscriptions").status_code == 403


def test_a_billing_run_started_in_the_console_shows_its_progress_then_its_result(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    import time

    admin, csrf = as_user(pages, world.staff[StaffRole.BILLING])
    started = admin.post("/console/billing", data={"csrf_token": csrf})
    assert started.status_code == 303
    run_url = started.headers["location"]
    assert run_url.startswith("/console/billing/runs/")
    deadline = time.monotonic() + 10
    page = admin.get(run_url)
    while '<h2 id="res-h">Result</h2>' not in page.text and time.monotonic() < deadline:
        assert 'http-equiv="refresh"' in page.text  # the page follows the run
        time.sleep(0.05)
        page = admin.get(run_url)
    assert "Finished" in page.text and 'http-equiv="refresh"' not in page.text
    with session_factory() as session:
        runs, _ = audit.list_events(session, organization_id=None, action="billing.run")
        assert [e.actor_label for e in runs] == [world.staff[StaffRole.BILLING].email]


def test_a_plan_change_shows_its_proration_before_it_is_confirmed(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    from imhost.billing import service as billing
    from imhost.catalog import service as catalog

    with session_factory() as session:
        plans = catalog.seed_default_plans(session, clock)
        first = catalog.plan_view(session, plans[0].code).versions[0].version.id
        bigger = catalog.plan_view(session, plans[1].code).versions[0].version.id
        billing.start_subscription(session, clock, world.org.id, first, with_trial=False)
        session.commit()
    clock.advance(timedelta(days=10))
    client, csrf = as_user(pages, world.members[OrgRole.BILLING])
    base = f"/portal/orgs/{world.org.slug}/billing/plan"
    preview = client.post(base + "/preview", data={"csrf_token": csrf, "plan": bigger})
    assert preview.status_code == 200 and "Confirm the change" in preview.text
    assert "Total on your next invoice" in preview.text
    with session_factory() as session:
        sub = billing.current_subscription(session, world.org.id)
        assert sub is not None and sub.plan_version_id == first  # nothing changed yet
    done = client.post(base + "/change", data={"csrf_token": csrf, "plan": bigger})
    assert done.status_code == 303
    with session_factory() as session:
        sub = billing.current_subscription(session, world.org.id)
        assert sub is not None and sub.plan_version_id == bigger


def test_disabling_an_xmpp_account_asks_for_a_reason_first(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    from imhost.hosting import service as hosting

    runtime: Runtime = pages.state.runtime
    with session_factory() as session:
        org = accounts.get_organization(session, world.org.id)
        service = hosting.create_service(session, clock, org, base_domain="chat.example.net")
        hosting.create_account(
            session,
            clock,
            service,
            username="ann",
            password=None,
            name="Ann",
            security=runtime.settings.security,
            actor=Actor.system(),
        )
        service_id = service.id
        session.commit()
    client, csrf = as_user(pages, world.members[OrgRole.TECHNICAL])
    url = f"/portal/orgs/{world.org.slug}/service/{service_id}/accounts/ann/disable"
    asked = client.post(url, data={"csrf_token": csrf})
    assert asked.status_code == 200 and 'name="reason"' in asked.text
    no_reason = client.post(url, data={"csrf_token": csrf, "confirmed": "yes", "reason": " "})
    assert no_reason.status_code == 200 and 'id="e-reason"' in no_reason.text
    assert "data-error-summary" in no_reason.text and '<a href="#f-reason">' in no_reason.text
    done = client.post(url, data={"csrf_token": csrf, "confirmed": "yes", "reason": "left us"})
    assert done.status_code == 303
    with session_factory() as session:
        service = hosting.get_service(session, service_id)
        assert hosting.get_account(session, service, "ann").disabled
    listing = client.get(f"/portal/orgs/{world.org.slug}/service/{service_id}/accounts")
    assert "left us" in listing.text


def test_the_service_page_shows_storage_used_against_the_plans_limit(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    from imhost.catalog.models import PlanLimits
    from imhost.hosting import service as hosting
    from imhost.hosting.models import XmppPrivateXml

    runtime: Runtime = pages.state.runtime
    with session_factory() as session:
        org = accounts.get_organization(session, world.org.id)
        service = hosting.create_service(
            session, clock, org, base_domain="chat.example.net", limits=PlanLimits(storage_mb=5)
        )
        account, _ = hosting.create_account(
            session,
            clock,
            service,
            username="ann",
            password=None,
            name="Ann",
            security=runtime.settings.security,
            actor=Actor.system(),
        )
        xml = "<x>" + "y" * 1_200_000 + "</x>"
        session.add(
            XmppPrivateXml(
                account_id=account.id, service_id=service.id, key="k", xml=xml, size=len(xml)
            )
        )
        session.commit()
    client, _ = as_user(pages, world.members[OrgRole.READ_ONLY])
    text = client.get(f"/portal/orgs/{world.org.slug}/service").text
    # 1.2 MB stored shows as 2 MB (rounded up) of 5, with its meter.
    assert re.search(r'Storage \(MB\)</th><td class="num">2</td><td class="num">5</td>', text), text
    assert "40% of the limit used" in text


def test_an_invitation_link_lets_the_invited_person_join_after_signing_in(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    from tests.factories import make_user

    with session_factory() as session:
        org = accounts.get_organization(session, world.org.id)
        invitee = make_user(session, clock, "nora@n.example.com")
        _inv, token = accounts.invite(
            session,
            clock,
            org,
            email="nora@n.example.com",
            role=OrgRole.BILLING,
            actor=Actor.system(),
            actor_role=None,
        )
        session.commit()
    anonymous = TestClient(pages, raise_server_exceptions=False, follow_redirects=False)
    page = anonymous.get(f"/portal/invitations/{token}")
    assert page.status_code == 200 and "Acme Chat" in page.text and "Sign in to accept" in page.text
    wrong, wrong_csrf = as_user(pages, world.outsider)
    refused = wrong.post(f"/portal/invitations/{token}", data={"csrf_token": wrong_csrf})
    assert refused.status_code == 403 and "another e-mail address" in refused.text
    client, _ = as_user(pages, invitee)
    shown = client.get(f"/portal/invitations/{token}")
    csrf = CSRF.search(shown.text).group(1)  # type: ignore[union-attr]
    joined = client.post(f"/portal/invitations/{token}", data={"csrf_token": csrf})
    assert (
        joined.status_code == 303
        and joined.headers["location"] == f"/portal/orgs/{world.org.slug}/"
    )
    with session_factory() as session:
        membership = accounts.get_membership(session, world.org.id, invitee.id)
        assert membership is not None and membership.role == OrgRole.BILLING
    assert anonymous.get(f"/portal/invitations/{token}").status_code == 404  # used once


def test_the_verification_link_confirms_the_address_only_when_the_button_is_pressed(
    browser: TestClient, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    from imhost.accounts.verification import request_verification
    from tests.factories import make_user

    with session_factory() as session:
        user = make_user(session, clock, "vera@v.example.com")
        user.email_verified_at = None
        token = request_verification(session, clock, user)
        user_id = user.id
        session.commit()
    page = browser.get(f"/portal/verify-email/{token}")
    assert page.status_code == 200
    with session_factory() as session:
        assert session.get(User, user_id).email_verified_at is None  # type: ignore[union-attr]
    csrf = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    confirmed = browser.post(f"/portal/verify-email/{token}", data={"csrf_token": csrf})
    assert confirmed.status_code == 303
    with session_factory() as session:
        assert session.get(User, user_id).email_verified_at is not None  # type: ignore[union-attr]
    again = browser.post(f"/portal/verify-email/{token}", data={"csrf_token": csrf})
    assert again.status_code == 404 and "not valid any more" in again.text


def test_sign_up_compares_the_plans_in_a_chart_with_a_text_alternative(
    app_client: TestClient, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    from imhost.catalog.service import seed_default_plans

    with session_factory() as s:
        seed_default_plans(s, clock)
        s.commit()
    page = app_client.get("/portal/sign-up").text
    assert 'aria-labelledby="p-t p-d"' in page
    desc = page.split('<desc id="p-d">')[1].split("</desc>")[0]
    assert "Price (EUR, every month): Starter 9" in desc and "Enterprise" in desc
    assert "per 100" in page or "per 1" in page  # package prices say per how many units


def test_sign_up_shows_each_plans_interval_in_plain_words(
    app_client: TestClient, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    from imhost.catalog.schemas import PlanCreate
    from imhost.catalog.service import create_plan

    with session_factory() as s:
        create_plan(
            s,
            clock,
            PlanCreate.model_validate(
                {
                    "code": "team",
                    "name": "Team",
                    "version": {"base_fee": "27.00", "billing_interval": "calendar-quarterly"},
                }
            ),
        )
        s.commit()
    page = app_client.get("/portal/sign-up").text
    assert "every 3 months, from the calendar&#39;s quarters" in page
    assert "per year" not in page
