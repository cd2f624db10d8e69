"""Tickets in chromium at phone (390 px) and desktop (1280 px) width: the public contact form
shows article suggestions as the subject is typed and sends a ticket; a customer opens a
ticket in the portal and follows its thread; staff see it in the console's queue and answer."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import expect

from imhost.support import shipped
from tests.e2e.conftest import SHOTS, Site
from tests.e2e.test_dead_ends import SIZES, snap, watch_console
from tests.e2e.test_portal_and_console import arrive, enrol_totp, sign_in

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("size", SIZES)
def test_guest_form_suggests_articles_then_sends(site: Site, browser_page: Any, size: str) -> None:
    with site.runtime.session_factory() as session:
        shipped.load_shipped(session, site.runtime.clock)
        session.commit()
    page = browser_page
    page.set_viewport_size(SIZES[size])
    problems = watch_console(page)
    page.goto(site.url + "/help/contact")
    expect(page.get_by_role("heading", level=1)).to_have_text("Contact support")
    page.get_by_label("Your name").fill("Gina Guest")
    page.get_by_label("Your e-mail address").fill("gina@guest.example")
    page.get_by_label("Subject").press_sequentially("recovery codes lost", delay=30)
    suggestions = page.locator("#ticket-suggestions li a")
    expect(suggestions.first).to_be_visible()
    page.get_by_label("Message").fill("I lost my phone and my codes.")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the page is {overflow}px wider than the screen"
    snap(page, SHOTS, f"tickets-contact-{size}")
    time.sleep(3.2)  # the time trap: a person takes a few seconds
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_text("Thank you: your ticket is IMH-")).to_be_visible()
    expect(page.get_by_text("I lost my phone and my codes.")).to_be_visible()
    snap(page, SHOTS, f"tickets-guest-thread-{size}")
    assert problems == []


def test_customer_ticket_then_staff_queue_at_both_widths(site: Site, browser_page: Any) -> None:
    page = browser_page
    email, password = site.acme_owner
    sign_in(page, site, email, password)
    page.goto(f"{site.url}/portal/orgs/{site.acme_slug}/support/tickets/new")
    page.get_by_label("Subject").fill("Messages arrive late")
    page.get_by_label("Message").fill("Since yesterday messages take a minute to arrive.")
    page.get_by_role("button", name="Send the ticket").click()
    expect(page.get_by_text("Thank you: ticket IMH-")).to_be_visible()
    public_id = page.url.rsplit("/", 1)[-1]
    for size in SIZES:
        page.set_viewport_size(SIZES[size])
        snap(page, SHOTS, f"tickets-portal-thread-{size}")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{size}: the page is {overflow}px wider than the screen"
    page.context.clear_cookies()

    admin = "admin@provider.example.com"
    sign_in(page, site, admin, site.password_of(admin))
    arrive(page, r"/portal/account/mfa")
    enrol_totp(page)
    page.goto(site.url + "/console/support/tickets")
    expect(page.get_by_role("link", name=public_id)).to_be_visible()
    for size in SIZES:
        page.set_viewport_size(SIZES[size])
        snap(page, SHOTS, f"tickets-console-queue-{size}")
    page.set_viewport_size(SIZES["desktop"])
    page.get_by_role("link", name=public_id).click()
    page.get_by_label("Message").fill("We restarted the relay; please try again.")
    page.get_by_role("button", name="Send to the customer").click()
    expect(page.get_by_text("Reply sent to the customer.")).to_be_visible()
    for size in SIZES:
        page.set_viewport_size(SIZES[size])
        snap(page, SHOTS, f"tickets-console-ticket-{size}")
