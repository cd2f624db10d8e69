"""No dead ends: a browser gets the site's error pages (API clients keep problem+json), the API
docs page works from the package's own files under the site's CSP, the site has an icon, form
errors are summarized at the top in plain words, and lists with nothing in them say what to do.

Browser runs of the same (chromium, phone and desktop width) are in tests/e2e/test_dead_ends.py.
"""

from __future__ import annotations

import re
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import OrgRole
from imhost.kit.clock import FrozenClock
from imhost.metering.schemas import BudgetIn
from imhost.web.api_docs import SWAGGER_UI_VERSION
from imhost.web.error_pages import wants_page
from imhost.web.pages import STATIC_DIR, FormErrors, invalid_form, plain_message
from tests.factories import PASSWORD, World, make_world
from tests.web.conftest import signed_in

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
JSON = {"Accept": "application/json"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        world = make_world(session, clock)
        session.commit()
        return world


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app, raise_server_exceptions=False, follow_redirects=False)


def _is_page(r: httpx.Response) -> bool:
    return r.headers["content-type"].startswith("text/html") and "<h1" in r.text


def _is_problem(r: httpx.Response, status: int) -> bool:
    return (
        r.headers["content-type"].startswith("application/problem+json")
        and r.json()["status"] == status
    )


# --- error pages ------------------------------------------------------------------------------


def test_a_missing_page_is_a_page_for_a_browser_and_problem_json_for_a_program(
    client: TestClient,
) -> None:
    page = client.get("/portal/no-such-page", headers=HTML)
    assert page.status_code == 404 and _is_page(page)
    assert "Page not found" in page.text and 'href="/portal/"' in page.text
    assert '"detail"' not in page.text
    console = client.get("/console/no-such-page", headers=HTML)
    assert console.status_code == 404 and 'href="/console/"' in console.text
    # API clients keep the RFC 9457 answer: by their Accept header, or by the /api/ path.
    assert _is_problem(client.get("/portal/no-such-page", headers=JSON), 404)
    api = client.get("/api/v1/no-such-thing", headers=HTML)
    assert _is_problem(api, 404) and api.json()["type"].endswith("http-404")
    # A path outside the portal with no preference (curl's */*) keeps JSON too.
    assert _is_problem(client.get("/no-such-page"), 404)
    assert _is_page(client.get("/no-such-page", headers=HTML))


def test_an_error_page_still_shows_who_is_signed_in(app: FastAPI, world: World) -> None:
    owner = world.members[OrgRole.OWNER]
    client = signed_in(app, owner)
    page = client.get("/portal/no-such-page", headers=HTML)
    assert page.status_code == 404 and _is_page(page)
    assert (owner.name or owner.email) in page.text and "Sign out" in page.text
    token = CSRF.search(page.text)
    assert token is not None and token.group(1) == client.headers["X-CSRF-Token"]
    anonymous = TestClient(app, raise_server_exceptions=False).get("/portal/no-such-page")
    assert "Sign out" not in anonymous.text


def test_a_form_address_opened_by_hand_is_a_405_page(client: TestClient) -> None:
    page = client.get("/portal/sign-out", headers=HTML)
    assert page.status_code == 405 and _is_page(page)
    assert "cannot be opened directly" in page.text
    assert "POST" in page.headers["allow"]
    assert _is_problem(client.get("/portal/sign-out", headers=JSON), 405)


def test_a_refusal_is_a_page_for_a_browser(app: FastAPI, world: World) -> None:
    technical = signed_in(app, world.members[OrgRole.TECHNICAL])
    refused = technical.get(f"/portal/orgs/{world.org.slug}/billing/invoices", headers=HTML)
    assert refused.status_code == 403 and _is_page(refused) and "Not allowed" in refused.text
    assert 'href="/portal/"' in refused.text
    # /metrics refuses the public: a browser sees why on a page, a scraper as problem+json.
    outsider = TestClient(app, client=("203.0.113.9", 40000), raise_server_exceptions=False)
    metrics = outsider.get("/metrics", headers=HTML)
    assert metrics.status_code == 403 and _is_page(metrics)
    assert "IMHOST_METRICS__TOKEN" in metrics.text
    assert _is_problem(outsider.get("/metrics"), 403)


def test_too_many_attempts_is_a_page_that_keeps_retry_after(app: FastAPI, world: World) -> None:
    browser = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
    email = world.members[OrgRole.OWNER].email

    def attempt(password: str) -> httpx.Response:
        form = browser.get("/portal/sign-in", headers=HTML)
        token = CSRF.search(form.text)
        assert token is not None
        return browser.post(
            "/portal/sign-in",
            data={"csrf_token": token.group(1), "email": email, "password": password},
            headers=HTML,
        )

    for _ in range(5):
        assert attempt("wrong password here").status_code == 401
    locked = attempt(PASSWORD)
    assert locked.status_code == 429 and locked.headers["content-type"].startswith("text/html")
    assert int(locked.headers["Retry-After"]) > 0
    api = browser.post(
        "/api/v1/auth/login", json={"email": email, "password": PASSWORD}, headers=HTML
    )
    assert _is_problem(api, 429) and int(api.headers["Retry-After"]) > 0


def test_an_unexpected_error_is_a_page_that_says_nothing_internal(app: FastAPI) -> None:
    def fails() -> None:
        raise RuntimeError("database password is hunter2")

    app.add_api_route("/portal/fails-for-the-test", fails)
    client = TestClient(app, raise_server_exceptions=False)
    page = client.get("/portal/fails-for-the-test", headers=HTML)
    assert page.status_code == 500 and _is_page(page)
    assert "hunter2" not in page.text and "RuntimeError" not in page.text
    assert "Traceback" not in page.text
    reference = re.search(r'class="reference">([0-9a-f]{12})<', page.text)
    assert reference is not None  # a reference to quote to support
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "no-store" in page.headers["cache-control"]
    problem = client.get("/portal/fails-for-the-test", headers=JSON)
    assert _is_problem(problem, 500) and "hunter2" not in problem.text
    assert re.fullmatch(r"[0-9a-f]{12}", problem.json()["reference"])


def test_an_invalid_address_is_a_page_in_plain_words(client: TestClient) -> None:
    too_long = client.get("/portal/orgs/" + "x" * 80 + "/billing", headers=HTML)
    assert too_long.status_code == 422 and _is_page(too_long)
    assert "String should" not in too_long.text and "at most 64 characters" in too_long.text
    assert _is_problem(client.get("/portal/orgs/" + "x" * 80 + "/billing", headers=JSON), 422)
    nul = client.get("/portal/%00", headers=HTML)
    assert nul.status_code == 400 and _is_page(nul) and "control character" in nul.text
    assert _is_problem(client.get("/api/v1/orgs/%00", headers=HTML), 400)


@pytest.mark.parametrize(
    ("accept", "path", "page"),
    [
        ("text/html,*/*;q=0.8", "/portal/x", True),
        ("application/json", "/portal/x", False),
        ("application/json, text/html;q=0.5", "/portal/x", False),
        ("text/html, application/json;q=0.5", "/healthz", True),
        ("*/*", "/portal/x", True),
        ("*/*", "/healthz", False),
        ("", "/console/", True),
        ("text/html", "/api/v1/me", False),
        ("text/html;q=0", "/portal/x", False),
        ("text/html;q=abc", "/portal/x", False),
    ],
)
def test_who_gets_a_page(accept: str, path: str, page: bool) -> None:
    from starlette.requests import Request

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": b"",
        "headers": [(b"accept", accept.encode())] if accept else [],
    }
    assert wants_page(Request(scope)) is page


# --- the API docs page and the icon --------------------------------------------------------------


def test_the_api_docs_page_uses_only_the_packages_own_files(client: TestClient) -> None:
    docs = client.get("/api/v1/docs")
    assert docs.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert sources and all(s.startswith("/") for s in sources), sources
    assert "<script>" not in docs.text  # no inline script: the CSP allows none
    csp = docs.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "http" not in csp
    for asset in re.findall(r'(?:src|href)="(/static/[^"?]+)', docs.text):
        served = client.get(asset)
        assert served.status_code == 200, asset
    bundle = client.get(f"/static/swagger-ui/swagger-ui-bundle.js?v={SWAGGER_UI_VERSION}")
    assert "SwaggerUIBundle" in bundle.text[:2000]
    vendored = STATIC_DIR / "swagger-ui"
    assert "Apache License" in (vendored / "LICENSE").read_text()
    assert SWAGGER_UI_VERSION in (vendored / "README.md").read_text()
    assert client.get("/api/v1/openapi.json").json()["info"]["title"] == "imhost API"


def test_the_site_has_an_icon(client: TestClient) -> None:
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.content.startswith(b"<svg")
    page = client.get("/portal/sign-in")
    assert '<link rel="icon" href="/static/favicon.svg"' in page.text
    assert client.get("/static/favicon.svg").status_code == 200


# --- forms ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "name", "expected"),
    [
        (
            {"type": "less_than", "ctx": {"lt": Decimal("1E+12")}},
            "amount",
            "below 1,000,000,000,000",
        ),
        ({"type": "greater_than", "ctx": {"gt": Decimal("0")}}, "amount", "above 0."),
        ({"type": "missing"}, "billing_email", "Fill in the billing email."),
        ({"type": "string_too_long", "ctx": {"max_length": 64}}, "code", "at most 64 characters"),
        ({"type": "int_parsing"}, "trial_days", "whole number"),
        ({"type": "too_long", "ctx": {"max_length": 10}}, "thresholds", "Give at most 10."),
        ({"type": "value_error", "msg": "Value error, give a reason"}, "x", "Give a reason"),
        ({"type": "something_new", "msg": "Input should be nice"}, "name", "Check the name."),
    ],
)
def test_validation_errors_read_as_plain_words(
    error: dict[str, object], name: str, expected: str
) -> None:
    message = plain_message(error, name)
    assert expected in message
    assert "Input should" not in message and "E+" not in message


def test_a_schemas_refusal_names_every_field_in_plain_words() -> None:
    with pytest.raises(ValidationError) as caught:
        BudgetIn(amount=Decimal("1e15"), currency="EUR", thresholds=[0])
    errors = FormErrors.of(invalid_form(caught.value, {"amount", "thresholds"}))
    assert errors.fields == {
        "amount": "Enter a number below 1,000,000,000,000.",
        "thresholds": "Thresholds are percentages from 1 to 1000.",
    }


def test_a_form_with_errors_has_a_summary_linking_to_each_field(app: FastAPI, world: World) -> None:
    owner = signed_in(app, world.members[OrgRole.OWNER])
    billing = f"/portal/orgs/{world.org.slug}/billing"
    token = CSRF.search(owner.get(billing).text)
    assert token is not None
    sent = owner.post(
        billing + "/budget",
        data={"csrf_token": token.group(1), "amount": "1000000000000000", "thresholds": "0"},
    )
    assert sent.status_code == 422
    summary = re.search(r"<div class=\"error-summary\"(.*?)</div>", sent.text, re.S)
    assert summary is not None
    assert 'role="alert"' in summary.group(1) and 'tabindex="-1"' in summary.group(1)
    links = re.findall(r'<a href="#(f-[a-z_]+)">([^<]+)</a>', summary.group(1))
    assert [href for href, _ in links] == ["f-amount", "f-thresholds"]
    for href, message in links:
        name = href.removeprefix("f-")
        assert f'id="{href}"' in sent.text
        assert re.search(rf'id="{href}"[^>]*aria-describedby="[^"]*e-{name}', sent.text)
        assert sent.text.count(message) == 2  # in the summary and beside the field, no more
    assert "Input should" not in sent.text and "1E+12" not in sent.text


# --- empty lists -------------------------------------------------------------------------------


def test_empty_lists_say_what_they_hold_and_what_to_do(app: FastAPI, world: World) -> None:
    owner = signed_in(app, world.members[OrgRole.OWNER])
    base = f"/portal/orgs/{world.org.slug}"
    expectations = {
        base + "/security/alerts": "No security alerts",
        base + "/tokens": 'href="#f-name"',
        base + "/billing/invoices": "No invoices yet",
        "/portal/account/alerts": "No security alerts about you",
    }
    for path, words in expectations.items():
        page = owner.get(path)
        assert page.status_code == 200, path
        assert words in page.text, path
