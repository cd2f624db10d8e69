"""No dead ends in a real browser, at phone (390x844) and desktop (1280x800) width: error pages
instead of JSON, the API docs page listing the operations, and a form's error summary that
takes the focus and leads to the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import Site
from tests.e2e.test_portal_and_console import sign_in

pytestmark = pytest.mark.e2e

SIZES = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 800}}


def snap(page: Any, shots: Path, name: str) -> Path:
    shots.mkdir(parents=True, exist_ok=True)
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def watch_console(page: Any) -> list[str]:
    """Errors the page logs (a CSP refusal, a script error, a failed load)."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems


@pytest.mark.parametrize("size", SIZES)
def test_a_browser_gets_styled_error_pages_never_json(
    site: Site, browser_page: Any, tmp_path: Path, size: str
) -> None:
    page = browser_page
    page.set_viewport_size(SIZES[size])
    problems = watch_console(page)

    missing = page.goto(site.url + "/portal/no-such-page")
    assert missing is not None and missing.status == 404
    assert missing.headers["content-type"].startswith("text/html")
    expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
    expect(page.get_by_role("link", name="Go to your portal")).to_be_visible()
    assert not page.locator("body").inner_text().lstrip().startswith("{")
    # The site's stylesheet applies: the page is the site's, not the browser's default.
    font = page.evaluate("getComputedStyle(document.body).fontFamily")
    assert "system-ui" in font
    snap(page, tmp_path, f"404-{size}")

    # A form's address opened by hand (sign-out only takes a POST): 405 as a page.
    wrong_method = page.goto(site.url + "/portal/sign-out")
    assert wrong_method is not None and wrong_method.status == 405
    expect(page.get_by_role("heading", level=1)).to_have_text("This page cannot be opened that way")
    snap(page, tmp_path, f"405-{size}")

    # The console's missing pages lead back to the console.
    page.goto(site.url + "/console/no-such-page")
    expect(page.get_by_role("link", name="Go to the console")).to_be_visible()

    page.get_by_role("link", name="Go to the console").click()
    expect(page).to_have_url(re.compile(r"/portal/sign-in"))  # not signed in: sign in first

    # The API keeps problem+json, in a browser too.
    api = page.goto(site.url + "/api/v1/no-such-thing")
    assert api is not None and api.status == 404
    assert api.headers["content-type"].startswith("application/problem+json")

    icon = page.goto(site.url + "/favicon.ico")
    assert icon is not None and icon.status == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    # Only the deliberate 404/405 loads are logged, nothing else (no CSP refusal).
    assert all("status of 40" in p for p in problems), problems


@pytest.mark.parametrize("size", SIZES)
def test_the_api_docs_page_lists_the_operations(
    site: Site, browser_page: Any, tmp_path: Path, size: str
) -> None:
    page = browser_page
    page.set_viewport_size(SIZES[size])
    problems = watch_console(page)
    refused: list[str] = []
    page.on("requestfailed", lambda r: refused.append(r.url))
    page.on("request", lambda r: None if r.url.startswith(site.url) else refused.append(r.url))

    answer = page.goto(site.url + "/api/v1/docs")
    assert answer is not None and answer.status == 200
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("imhost API")
    operations = page.locator(".opblock")
    expect(operations.first).to_be_visible()
    # Swagger UI renders the operations in batches: wait for the list, not its first paint.
    expect(operations.nth(20)).to_be_attached(timeout=30_000)
    expect(
        page.locator(".opblock-summary-path", has_text="/api/v1/auth/login").first
    ).to_be_visible()
    snap(page, tmp_path, f"api-docs-{size}")

    # Opening one operation shows its details (the UI works, not only its first paint).
    login = page.locator(".opblock", has=page.locator("[data-path='/api/v1/auth/login']")).first
    login.locator(".opblock-summary").click()
    expect(login.locator(".opblock-body")).to_be_visible()

    assert refused == [], "the docs page loaded something from another site, or failed to"
    assert problems == [], problems


@pytest.mark.parametrize("size", SIZES)
def test_a_form_with_errors_shows_a_summary_that_takes_the_focus(
    site: Site, browser_page: Any, tmp_path: Path, size: str
) -> None:
    page = browser_page
    page.set_viewport_size(SIZES[size])
    problems = watch_console(page)
    email, password = site.acme_owner
    sign_in(page, site, email, password)
    page.goto(f"{site.url}/portal/orgs/{site.acme_slug}/billing")
    page.get_by_label(re.compile(r"^Monthly budget")).fill("1000000000000000")
    page.get_by_label(re.compile(r"^Alert at")).fill("50, 80, 100")
    page.get_by_role("button", name="Save budget").click()

    summary = page.locator("[data-error-summary]")
    expect(summary).to_be_visible()
    expect(summary).to_have_attribute("role", "alert")
    expect(summary).to_be_focused()
    link = summary.get_by_role("link")
    expect(link).to_have_count(1)
    text = link.inner_text()
    assert "1,000,000,000,000" in text and "Input should" not in text and "E+" not in text
    # Beside the field, once, and tied to it.
    amount = page.get_by_label(re.compile(r"^Monthly budget"))
    expect(amount).to_have_attribute("aria-invalid", "true")
    assert "e-amount" in (amount.get_attribute("aria-describedby") or "")
    expect(page.locator("#e-amount")).to_contain_text(text)
    assert page.locator("main").inner_text().count(text) == 2  # the summary and the field
    snap(page, tmp_path, f"form-errors-{size}")

    link.click()
    expect(amount).to_be_focused()
    assert all("status of 422" in p for p in problems), problems  # only the refused form


@pytest.mark.parametrize("size", SIZES)
def test_the_security_alert_email_leads_to_its_alert(
    site: Site, browser_page: Any, tmp_path: Path, size: str
) -> None:
    from sqlalchemy import select

    from imhost.accounts import audit, threats
    from imhost.accounts import service as accounts
    from imhost.notify.models import OutboundEmail

    page = browser_page
    page.set_viewport_size(SIZES[size])
    email, password = site.acme_owner
    with site.runtime.session_factory() as s:
        user = accounts.get_user_by_email(s, email)
        assert user is not None
        for _ in range(threats.BURST_THRESHOLD):
            audit.record(
                s,
                site.runtime.clock,
                "login.failed",
                target_type="user",
                target_id=user.id,
                target_label=email,
                address="198.51.100.7",
            )
        s.commit()
        sent = s.scalars(select(OutboundEmail).where(OutboundEmail.kind == "security-alert"))
        mails = [m.text for m in sent if email in m.to]
    assert len(mails) == 1
    link = re.search(r"https?://\S+/portal/security/alerts/[0-9a-f]+", mails[0])
    assert link is not None
    sign_in(page, site, email, password, next_path="/" + link.group(0).split("/", 3)[3])
    expect(page.get_by_role("heading", level=1)).to_have_text("Security alert")
    expect(page.locator("main")).to_contain_text("failed sign-in attempts")
    expect(page.locator("main")).not_to_contain_text("No security alerts")
    snap(page, tmp_path, f"alert-{size}")
    page.get_by_role("button", name="Mark as seen").click()
    expect(page.locator("main")).to_contain_text("seen")
