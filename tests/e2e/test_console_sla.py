"""End-to-end in chromium: staff set the SLA calendar and a tier's targets (phone and desktop
width), a mistake shown next to its field first."""

from __future__ import annotations

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
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_staff_set_the_sla_calendar_and_targets(site: Site, browser_page: Any) -> None:
    page = browser_page
    admin = "admin@provider.example.com"
    sign_in(page, site, admin, site.password_of(admin))
    arrive(page, r"/portal/account/mfa")
    enrol_totp(page)
    page.goto(site.url + "/console/")
    page.get_by_role("link", name="SLA", exact=True).click()
    arrive(page, r"/console/sla")
    expect(page.get_by_role("heading", name="Business calendar")).to_be_visible()
    page.get_by_label("Time zone").fill("Europe/Berlin")
    page.get_by_label("Monday").fill("9 to 5")
    page.get_by_label("Holidays").fill("2026-12-25\n2026-12-26")
    page.get_by_role("button", name="Save calendar").click()
    expect(page.locator(".error-summary").first).to_be_visible()
    expect(page.locator("#e-monday")).to_contain_text("09:00-17:00")
    _shot(page, "console-sla-error", 390, 844)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.get_by_label("Monday").fill("09:00-12:00, 13:00-17:00")
    page.get_by_role("button", name="Save calendar").click()
    expect(page.locator(".flash")).to_contain_text("Business calendar saved.")
    expect(page.get_by_label("Monday")).to_have_value("09:00-12:00, 13:00-17:00")
    page.locator("#f-top-first_response").fill("0.5")
    page.get_by_role("button", name="Save top").click()
    expect(page.locator(".flash")).to_contain_text("Targets of the top tier saved.")
    expect(page.locator("#f-top-first_response")).to_have_value("0.5")
    for width, height in ((1280, 800), (390, 844)):
        _shot(page, "console-sla", width, height)
