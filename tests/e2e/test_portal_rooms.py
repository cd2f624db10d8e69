"""End-to-end in a real browser: a customer's owner sees the service's group chats and
destroys one, giving a reason, at desktop and phone width."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from imhost.accounts import service as accounts
from imhost.hosting import service as hosting
from imhost.hosting.models import XmppRoom
from tests.e2e.conftest import Site, shoot
from tests.e2e.test_portal_and_console import arrive, sign_in

pytestmark = pytest.mark.e2e


def test_an_owner_sees_the_group_chats_and_destroys_one_with_a_reason(
    site: Site, browser_page: Any
) -> None:
    with site.runtime.session_factory() as session:
        org = accounts.get_organization(session, "demo")
        [service] = hosting.services_of(session, org.id)
        for name, title in (("team", "The team"), ("random", "")):
            session.add(
                XmppRoom(
                    service_id=service.id,
                    name=name,
                    config={"muc#roomconfig_roomname": title},
                    affiliations={},
                    nicks={},
                    subject="",
                    subject_by="",
                    created_at=site.runtime.clock.now(),
                )
            )
        domain = service.domain
        session.commit()
    page = browser_page
    owner = "owner@demo.example.com"
    sign_in(page, site, owner, site.password_of(owner))
    arrive(page, r"/portal/orgs/demo/")
    page.get_by_role("link", name="Service", exact=True).click()
    expect(page.get_by_role("heading", name="Group chats")).to_be_visible()
    expect(page.get_by_role("cell", name=f"team@conference.{domain}")).to_be_visible()
    shoot(page, "service-rooms")
    row = page.get_by_role("row", name=re.compile(rf"^team@conference\.{re.escape(domain)}"))
    row.get_by_role("button", name="Destroy").click()
    expect(page.get_by_text(f"Destroy the group chat team@conference.{domain}?")).to_be_visible()
    shoot(page, "service-room-destroy")
    page.get_by_role("button", name="Destroy room").click()
    expect(page.locator("#e-reason")).to_be_visible()  # a reason is needed
    page.get_by_label(re.compile("Reason")).fill("We moved to the new project room")
    page.get_by_role("button", name="Destroy room").click()
    arrive(page, r"/portal/orgs/demo/service")
    expect(page.locator(".flash")).to_contain_text(f"team@conference.{domain} is destroyed")
    expect(page.get_by_role("cell", name=f"team@conference.{domain}")).to_have_count(0)
    expect(page.get_by_role("cell", name=f"random@conference.{domain}")).to_be_visible()
    shoot(page, "service-rooms-after")
