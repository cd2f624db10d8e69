"""Deleting an XMPP account, add-ons and webhooks in a real browser at a phone's and a
desktop's width: each flow from its page through its confirmation, nothing wider than the
screen, and screenshots saved for a person to look at."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from imhost.kit.clock import FrozenClock, SystemClock
from tests.e2e.conftest import SHOTS, Site
from tests.e2e.test_portal_and_console import arrive, sign_in

pytestmark = pytest.mark.e2e

EMAIL, PASSWORD = "owner@manage-e2e.example.com", "copper willow harbour lantern"
SLUG = "manage-e2e"
WIDTHS = (390, 1280)


def _customer(site: Site) -> str:
    """A customer 12 days into a paid period of the business plan, with a hosted service and
    two XMPP accounts per width."""
    from imhost.accounts import service as accounts
    from imhost.accounts.audit import Actor
    from imhost.billing import service as billing
    from imhost.billing.flows import run_billing
    from imhost.catalog import service as catalog
    from imhost.hosting import service as hosting

    runtime = site.runtime
    past = FrozenClock(SystemClock().now() - timedelta(days=12))
    with runtime.session_factory() as session:
        user = accounts.create_user(
            session, past, email=EMAIL, name="Mia Manage", email_verified=True
        )
        runtime.auth.set_password_directly(session, user, PASSWORD)
        org = accounts.create_organization(
            session, past, name="Manage e2e", owner=user, country="DE", slug=SLUG
        )
        version = catalog.current_plan_version(session, "business", "EUR")
        billing.start_subscription(session, past, org.id, version.id, with_trial=False)
        service = hosting.create_service(session, past, org, base_domain="chat.example.net")
        for width in WIDTHS:
            for name in (f"leaver{width}", f"stayer{width}"):
                hosting.create_account(
                    session,
                    past,
                    service,
                    username=name,
                    password=None,
                    name=name.capitalize(),
                    security=runtime.settings.security,
                    actor=Actor.system(),
                )
        service_id = service.id
        session.commit()
    run_billing(runtime.session_factory, past, past.now())  # the period's opening invoice
    return service_id


def _fits(page: Any, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width, width


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def signed_in_page(site: Site, browser_page: Any) -> tuple[Any, str]:
    service_id = _customer(site)
    sign_in(browser_page, site, EMAIL, PASSWORD)
    arrive(browser_page, rf"/portal/orgs/{SLUG}/")
    return browser_page, service_id


def test_deleting_an_xmpp_account(site: Site, signed_in_page: tuple[Any, str]) -> None:
    page, service_id = signed_in_page
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 844})
        page.goto(f"{site.url}/portal/orgs/{SLUG}/service/{service_id}/accounts")
        address = f"leaver{width}@"
        row = page.get_by_role("row").filter(has_text=address)
        row.get_by_role("button", name="Delete").click()
        expect(page.get_by_role("heading", name="Please confirm")).to_be_visible()
        expect(page.locator("main")).to_contain_text("contact list")
        expect(page.locator("main")).to_contain_text("becomes free")
        _fits(page, width)
        _shot(page, f"account-delete-confirm-{width}")
        page.get_by_role("button", name="Delete account").click()
        expect(page.locator(".flash")).to_contain_text("is deleted")
        expect(page.get_by_role("row").filter(has_text=address)).to_have_count(0)
        expect(page.get_by_role("row").filter(has_text=f"stayer{width}@")).to_have_count(1)
        _fits(page, width)
        _shot(page, f"account-deleted-{width}")


def test_adding_and_removing_an_add_on(site: Site, signed_in_page: tuple[Any, str]) -> None:
    page, _ = signed_in_page
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 844})
        page.goto(f"{site.url}/portal/orgs/{SLUG}/billing")
        page.get_by_role("link", name="Add-ons").click()
        expect(page.get_by_role("heading", name="Add-ons", level=1)).to_be_visible()
        expect(page.locator("main")).to_contain_text("1 more custom domain.")
        _fits(page, width)
        _shot(page, f"add-ons-{width}")

        card = page.locator(".card").filter(has_text="Extra custom domain")
        card.get_by_label("How many in all").fill("2")
        card.get_by_role("button", name=re.compile("Add|Change quantity")).click()
        expect(page.get_by_role("heading", name="Confirm the add-on change")).to_be_visible()
        expect(page.locator("main")).to_contain_text("Charged now for the rest of this period")
        expect(page.locator("main")).to_contain_text("every month")
        _fits(page, width)
        _shot(page, f"add-on-preview-{width}")
        page.get_by_role("button", name="Confirm").click()
        expect(page.locator(".flash")).to_contain_text("You now have 2 × Extra custom domain")

        page.get_by_role("button", name="Remove Extra custom domain").click()
        expect(page.locator("main")).to_contain_text("Credited now for the unused rest")
        _shot(page, f"add-on-remove-{width}")
        page.get_by_role("button", name="Remove it").click()
        expect(page.locator(".flash")).to_contain_text("Extra custom domain is removed")
        expect(page.locator("main")).to_contain_text("No add-ons yet.")


def test_a_webhook_endpoint_from_start_to_end(site: Site, signed_in_page: tuple[Any, str]) -> None:
    page, _ = signed_in_page
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 844})
        page.goto(f"{site.url}/portal/orgs/{SLUG}/settings")
        page.get_by_role("link", name="Webhooks").click()
        expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()

        page.get_by_label("Address (https://…)").fill("javascript:alert(document.cookie)")
        page.get_by_role("button", name="Add endpoint").click()
        summary = page.locator("[data-error-summary]")
        expect(summary).to_contain_text("Enter a full https:// address")
        _fits(page, width)
        _shot(page, f"webhook-refused-{width}")

        url = f"https://93.184.215.14/imhost-events/{width}"
        page.get_by_label("Address (https://…)").fill(url)
        page.get_by_label("An invoice is paid").check()
        page.get_by_label("A payment is received").check()
        page.get_by_role("button", name="Add endpoint").click()
        expect(page.locator("#new-secret")).to_contain_text("whsec_")
        _fits(page, width)
        _shot(page, f"webhook-created-{width}")

        page.get_by_role("button", name="Send a test event").click()
        expect(page.locator(".flash")).to_contain_text("A test event is on its way")
        row = page.get_by_role("row").filter(has_text="Test event")
        expect(row).to_contain_text("waiting to be sent")
        _fits(page, width)
        _shot(page, f"webhook-deliveries-{width}")

        page.get_by_role("button", name="New signing secret").click()
        page.get_by_role("button", name="Make a new secret").click()
        expect(page.locator("#new-secret")).to_contain_text("whsec_")

        page.get_by_role("button", name="Disable").click()
        expect(page.locator(".flash")).to_contain_text("disabled")
        page.get_by_role("button", name="Delete").click()
        page.get_by_role("button", name="Delete endpoint").click()
        expect(page.locator(".flash")).to_contain_text("is deleted")
        expect(page.get_by_role("row").filter(has_text=url)).to_have_count(0)
