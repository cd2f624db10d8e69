"""The help center in a real browser at phone (390 px) and desktop (1280 px) width: the home
page, a search with highlighted results, an article and its "Was this helpful?" vote, all
without signing in and without a CSP or script error."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from imhost.support import shipped
from tests.e2e.conftest import SHOTS, Site
from tests.e2e.test_dead_ends import SIZES, snap, watch_console

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("size", SIZES)
def test_help_search_and_article_without_signing_in(
    site: Site, browser_page: Any, size: str
) -> None:
    with site.runtime.session_factory() as session:
        shipped.load_shipped(session, site.runtime.clock)
        session.commit()
    page = browser_page
    page.set_viewport_size(SIZES[size])
    problems = watch_console(page)

    page.goto(site.url + "/help")
    expect(page.get_by_role("heading", level=1)).to_have_text("Help center")
    expect(page.get_by_role("heading", name="Getting started")).to_be_visible()
    snap(page, SHOTS, f"help-home-{size}")

    page.get_by_label("Search the help center").fill("recovery codes")
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(site.url + "/help/search?q=recovery+codes")
    first = page.locator(".help-results li").first
    expect(first.get_by_role("link")).to_have_text("Two-factor authentication and recovery codes")
    expect(first.locator("mark").first).to_be_visible()
    snap(page, SHOTS, f"help-search-{size}")

    first.get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Two-factor authentication and recovery codes"
    )
    expect(page.get_by_text("Last updated")).to_be_visible()
    # Nothing is wider than the screen (tables scroll inside the article).
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the page is {overflow}px wider than the screen"
    snap(page, SHOTS, f"help-article-{size}")

    page.get_by_role("button", name="Yes").click()
    expect(page.get_by_role("heading", name="Thank you for your answer.")).to_be_visible()
    snap(page, SHOTS, f"help-voted-{size}")

    assert problems == []
    missing = page.goto(site.url + "/help/articles/no-such-article")
    assert missing is not None and missing.status == 404
    assert missing.headers["content-type"].startswith("text/html")
