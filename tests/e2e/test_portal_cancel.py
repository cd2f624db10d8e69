"""The confirmation of a cancel in a real browser at a phone's and a desktop's size: both
choices, the credit of cancelling now and its table fit the width; the page's screenshots are
saved for a person to look at."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from imhost.kit.clock import FrozenClock, SystemClock
from tests.e2e.conftest import SHOTS, Site
from tests.e2e.test_portal_and_console import arrive, sign_in

pytestmark = pytest.mark.e2e

EMAIL, PASSWORD = "owner@cancel-e2e.example.com", "cobalt heron meadow lantern"
SIZES = ((390, 844), (1280, 800))


def _paying_customer(site: Site) -> str:
    """A customer 12 days into a paid (invoiced) period of the business plan."""
    from imhost.accounts import service as accounts
    from imhost.billing import service as billing
    from imhost.billing.flows import run_billing
    from imhost.catalog import service as catalog

    runtime = site.runtime
    past = FrozenClock(SystemClock().now() - timedelta(days=12))
    with runtime.session_factory() as session:
        user = accounts.create_user(
            session, past, email=EMAIL, name="Carl Cancel", email_verified=True
        )
        runtime.auth.set_password_directly(session, user, PASSWORD)
        org = accounts.create_organization(
            session, past, name="Cancel e2e", owner=user, country="DE", slug="cancel-e2e"
        )
        version = catalog.current_plan_version(session, "business", "EUR")
        billing.start_subscription(session, past, org.id, version.id, with_trial=False)
        session.commit()
    run_billing(runtime.session_factory, past, past.now())  # the period's opening invoice
    return "cancel-e2e"


def test_the_cancel_confirmation_fits_a_phone_and_a_desktop(
    site: Site, browser_page: Any, tmp_path: Path
) -> None:
    slug = _paying_customer(site)
    page = browser_page
    sign_in(page, site, EMAIL, PASSWORD)
    arrive(page, rf"/portal/orgs/{slug}/")
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{site.url}/portal/orgs/{slug}/billing")
        page.get_by_role("link", name="Cancel subscription").click()
        expect(page.get_by_role("heading", name="Cancel the subscription")).to_be_visible()
        expect(page.get_by_label("Now")).to_be_visible()
        expect(page.get_by_text("At the end of the period (on")).to_be_visible()
        expect(page.get_by_text("Credit to your account")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        button = page.get_by_role("button", name="Cancel the subscription")
        box = button.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        shot = tmp_path / f"cancel-{width}x{height}.png"
        page.screenshot(path=str(shot), full_page=True)
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SHOTS / shot.name)
