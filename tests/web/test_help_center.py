"""The help center on the web: public pages without sign-in, the console editor, the API."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import AuditEvent, StaffRole
from imhost.kit.clock import FrozenClock
from imhost.support import service, shipped
from imhost.support.models import HelpVote
from imhost.support.schemas import ArticleIn
from tests.factories import World, make_world
from tests.web.conftest import signed_in
from tests.web.test_pages import as_user

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        world = make_world(session, clock)
        shipped.load_shipped(session, clock)
        service.create_article(
            session,
            clock,
            ArticleIn(
                slug="staff-runbook",
                category="signing-in",
                title="Runbook for lockouts",
                body="Internal steps.",
                status="published",
                visibility="internal",
            ),
        )
        service.create_article(
            session,
            clock,
            ArticleIn(slug="upcoming", category="billing", title="Upcoming change", body="Soon."),
        )
        session.commit()
        return world


@pytest.fixture
def browser(app: FastAPI) -> TestClient:
    return TestClient(app, raise_server_exceptions=False, follow_redirects=False)


def test_help_home_lists_categories_and_articles_without_sign_in(
    world: World, browser: TestClient
) -> None:
    page = browser.get("/help")
    assert page.status_code == 200
    for words in ("Getting started", "Billing", "Connect an XMPP client", 'action="/help/search"'):
        assert words in page.text
    assert "Runbook" not in page.text and "Upcoming change" not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_search_page_ranks_and_highlights(world: World, browser: TestClient) -> None:
    page = browser.get("/help/search", params={"q": "recovery codes"})
    assert page.status_code == 200
    results = page.text[page.text.index('class="help-results"') :]
    first = re.search(r'href="/help/articles/([a-z0-9-]+)"', results)
    assert first is not None and first.group(1) == "mfa-and-recovery-codes"
    assert "<mark>" in results[: results.index("</li>")]
    hostile = browser.get("/help/search", params={"q": '"<script>alert(1)</script> AND (NEAR'})
    assert hostile.status_code == 200 and "<script>alert" not in hostile.text
    assert browser.get("/help/search", params={"q": "x" * 5000}).status_code == 422


def test_category_and_article_pages(world: World, browser: TestClient) -> None:
    category = browser.get("/help/billing")
    assert category.status_code == 200 and "Budgets and caps" in category.text
    article = browser.get("/help/articles/firewalls-and-ports")
    assert article.status_code == 200
    assert "Last updated" in article.text and "<table>" in article.text
    assert "Was this helpful?" in article.text
    for missing in ("/help/articles/staff-runbook", "/help/articles/upcoming", "/help/nope"):
        answer = browser.get(missing)
        assert answer.status_code == 404 and "text/html" in answer.headers["content-type"]


def test_a_vote_is_counted_once_per_visitor(world: World, browser: TestClient, db: Session) -> None:
    url = "/help/articles/login-problems"
    token = CSRF.search(browser.get(url).text)
    assert token is not None
    for answer in ("yes", "no"):
        sent = browser.post(f"{url}/vote", data={"csrf_token": token.group(1), "helpful": answer})
        assert sent.status_code == 303 and sent.headers["location"].endswith("?voted=1#vote")
    votes = list(db.scalars(select(HelpVote)))
    assert len(votes) == 1 and votes[0].helpful is False
    refused = browser.post(f"{url}/vote", data={"helpful": "yes"})
    assert refused.status_code == 403
    wrong = browser.post(f"{url}/vote", data={"csrf_token": token.group(1), "helpful": "maybe"})
    assert wrong.status_code == 422


def test_opening_a_suggestion_is_counted(world: World, browser: TestClient, db: Session) -> None:
    suggested = browser.get("/api/v1/help/suggestions", params={"text": "I forgot my password"})
    assert suggested.status_code == 200
    slugs = [r["slug"] for r in suggested.json()["results"]]
    assert "login-problems" in slugs
    browser.get("/help/articles/login-problems", params={"from": "suggestion", "ctx": "t1"})
    browser.get("/help/articles/login-problems", params={"from": "suggestion", "ctx": "t1"})
    browser.post("/api/v1/help/articles/login-problems/suggestion-opened", json={"context": "t2"})
    assert service.suggestions_opened(db) == 2


def test_public_api_reads_and_searches(world: World, browser: TestClient) -> None:
    cats = browser.get("/api/v1/help/categories").json()
    assert [c["slug"] for c in cats][:2] == ["getting-started", "signing-in"]
    found = browser.get("/api/v1/help/search", params={"q": "5223"}).json()
    assert found["total"] >= 2 and all("<mark>" in r["highlight"] for r in found["results"])
    assert browser.get("/api/v1/help/articles/staff-runbook").status_code == 404
    renewal = browser.get("/api/v1/help/articles/domain-renewal").json()
    assert renewal["body_html"].startswith("<h2>")


def test_staff_write_an_article_with_preview_publish_and_audit(
    world: World, app: FastAPI, db: Session
) -> None:
    client, _ = as_user(app, world.staff[StaffRole.SUPPORT])
    new = client.get("/console/help/new")
    assert new.status_code == 200
    token = CSRF.search(new.text)
    assert token is not None
    form = {
        "csrf_token": token.group(1),
        "title": "Push notifications",
        "slug": "push-notifications",
        "summary": "Why a phone may not ring.",
        "category": "getting-started",
        "status": "draft",
        "visibility": "public",
        "position": "5",
        "body": "## Android\n\nAllow <b>background</b> data.\n",
    }
    preview = client.post("/console/help/new", data={**form, "action": "preview"})
    assert preview.status_code == 200 and "<h2>Android</h2>" in preview.text
    assert "&lt;b&gt;background&lt;/b&gt;" in preview.text
    created = client.post("/console/help/new", data={**form, "action": "save"})
    assert created.status_code == 303
    editor = created.headers["location"]
    assert client.get("/help/articles/push-notifications").status_code == 404  # a draft
    client.post(f"{editor}/publish", data={"csrf_token": token.group(1)})
    assert client.get("/help/articles/push-notifications").status_code == 200
    page = client.get(editor)
    assert "Revisions" in page.text and "published" in page.text
    bad = client.post(editor, data={**form, "slug": "Not A Slug", "action": "save"})
    assert bad.status_code == 422 and "error-summary" in bad.text
    actions = set(db.scalars(select(AuditEvent.action).where(AuditEvent.action.like("help.%"))))
    assert {"help.article_created", "help.article_published"} <= actions


def test_read_only_staff_see_counts_but_cannot_edit(world: World, app: FastAPI) -> None:
    client, _ = as_user(app, world.staff[StaffRole.READ_ONLY])
    listing = client.get("/console/help")
    assert listing.status_code == 200 and "Helpful" in listing.text
    assert "New article" not in listing.text
    assert client.get("/console/help/new").status_code == 403
    assert 'href="/console/help"' in listing.text  # in the console's menu
    billing, _ = as_user(app, world.staff[StaffRole.BILLING])
    assert billing.get("/console/help").status_code == 403
    assert 'href="/console/help"' not in billing.get("/console/plans").text


def test_staff_api_lists_every_article_with_counts(world: World, app: FastAPI) -> None:
    client = signed_in(app, world.staff[StaffRole.ADMIN])
    rows = client.get("/api/v1/admin/help/articles", params={"limit": 200}).json()
    slugs = {r["slug"] for r in rows}
    assert {"staff-runbook", "upcoming", "connect-a-client"} <= slugs
    assert {"views", "helpful_yes", "helpful_no", "suggestions_opened"} <= set(rows[0])
    runbook = next(r for r in rows if r["slug"] == "staff-runbook")
    body = {
        "slug": "staff-runbook",
        "category": "signing-in",
        "title": "Runbook for lockouts",
        "body": "Internal steps, revised.",
        "status": "published",
        "visibility": "internal",
    }
    changed = client.put(f"/api/v1/admin/help/articles/{runbook['id']}", json=body)
    assert changed.status_code == 200 and "revised" in changed.json()["body"]
    hostile = client.put(
        f"/api/v1/admin/help/articles/{runbook['id']}", json={**body, "slug": "../x"}
    )
    assert hostile.status_code == 422


def test_portal_pages_link_to_help(world: World, app: FastAPI) -> None:
    client, _ = as_user(app, world.members[next(iter(world.members))])
    page = client.get("/portal/account")
    assert 'href="/help"' in page.text
