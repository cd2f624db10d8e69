"""End-to-end in chromium: staff read the console's dashboard (phone and desktop width), then
change a customer's plan and add a one-off charge, each confirmed first."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import SHOTS, Site
from tests.e2e.test_portal_and_console import arrive, enrol_totp, sign_in

pytestmark = pytest.mark.e2e


def _shot(page: Any, name: str, width: int, height: int) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": width, "height": height})
    page.screenshot(path=str(SHOTS / f"{name}-{width}x{height}.png"), full_page=True)
    # Nothing is wider than the window (no sideways scrolling on a phone).
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_staff_read_the_dashboard_then_change_a_plan_and_add_a_charge(
    site: Site, browser_page: Any
) -> None:
    page = browser_page
    admin = "admin@provider.example.com"
    sign_in(page, site, admin, site.password_of(admin))
    arrive(page, r"/portal/account/mfa")
    enrol_totp(page)
    page.goto(site.url + "/console/")
    page.get_by_role("link", name="Dashboard").click()
    arrive(page, r"/console/dashboard")
    expect(page.get_by_role("heading", name="Monthly recurring revenue")).to_be_visible()
    expect(page.get_by_role("img", name="New customers per month")).to_be_visible()
    expect(page.get_by_role("img", name="Churned customers per month")).to_be_visible()
    expect(page.get_by_text("Not available in this process")).to_be_visible()
    for width, height in ((1280, 800), (390, 844)):
        _shot(page, "console-dashboard", width, height)
        expect(page.get_by_role("img", name="New customers per month")).to_be_visible()
    page.set_viewport_size({"width": 1280, "height": 800})
    page.get_by_role("link", name=re.compile(r"^\d+ invoices?$")).first.click()
    arrive(page, r"/console/invoices\?status=open")

    page.goto(site.url + "/console/")
    page.get_by_role("link", name="Acme e2e").click()
    options = page.get_by_label("New plan").locator("option")
    current = page.get_by_label("New plan").input_value()
    other = next(
        v
        for v in (options.nth(i).get_attribute("value") for i in range(options.count()))
        if v != current
    )
    page.get_by_label("New plan").select_option(other)
    page.get_by_role("button", name="Preview the change").click()
    expect(page.get_by_role("heading", name="Confirm the plan change")).to_be_visible()
    _shot(page, "console-plan-change", 390, 844)
    page.get_by_role("button", name="Change the plan").click()
    expect(page.locator(".flash")).to_contain_text("is now on")

    page.get_by_label("What it is for (shown on the invoice)").fill("Data migration")
    page.get_by_label("Amount, before tax").fill("12.345")
    page.get_by_role("button", name="Continue").click()
    expect(page.locator(".error-summary")).to_be_focused()
    expect(page.locator("#e-amount")).to_contain_text("more decimals")
    page.get_by_label("Amount, before tax").fill("49.50")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Please confirm")).to_be_visible()
    expect(page.get_by_text(re.compile(r"Charge Acme e2e .*49\.50"))).to_be_visible()
    page.get_by_label("Reason").fill("Agreed on the phone")
    page.get_by_role("button", name="Add the charge").click()
    expect(page.locator(".flash")).to_contain_text("added to Acme e2e's next invoice")
    expect(page.get_by_text("Data migration:")).to_be_visible()
    _shot(page, "console-customer-billing", 1280, 800)
