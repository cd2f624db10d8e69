"""The public status pages in a real browser at a phone's and a desktop's size: the overall
state, every component with its 90 daily bars inside the page (no sideways scrolling), the
open incident with its updates. Screenshots are saved for a person to look at."""

from __future__ import annotations

import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from imhost.accounts.audit import Actor
from imhost.db.engine import transaction
from imhost.hosting import service as hosting
from imhost.kit.clock import FrozenClock, SystemClock
from imhost.monitoring import rules
from imhost.monitoring import service as monitoring
from imhost.monitoring.probes import ProbeResult, Step
from imhost.monitoring.runner import service_subject
from tests.e2e.conftest import SHOTS, Site
from tests.hosting.factories import make_org

pytestmark = pytest.mark.e2e

SIZES = ((390, 844), (1280, 800))
POLICY = rules.Policy(down_after=1, up_after=1)
DOMAIN = "chat.status-e2e.example"


def _result(ok: bool) -> ProbeResult:
    return ProbeResult("x", [Step("connect", ok, 0.002, "" if ok else "the port is closed")])


def _seed(site: Site) -> None:
    now = SystemClock().now()
    clock = FrozenClock(now - timedelta(days=60))
    with transaction(site.runtime.session_factory, write=True) as s:
        org = make_org(s, clock)
        svc = hosting.create_service(s, clock, org, base_domain="im.test", domain=DOMAIN)
        subject = service_subject(svc.id)
        for c in ("xmpp-c2s", "websocket", "web", "api", "email"):
            monitoring.record_result(
                s, clock, f"component:{c}", "tcp", _result(True), policy=POLICY
            )
        monitoring.record_result(s, clock, subject, "xmpp-starttls", _result(True), policy=POLICY)
        for days_ago, minutes in ((41, 90), (20, 25), (3, 600)):
            clock.set(now - timedelta(days=days_ago))
            monitoring.record_result(
                s, clock, "component:web", "tcp", _result(False), policy=POLICY
            )
            monitoring.record_result(
                s, clock, subject, "xmpp-starttls", _result(False), policy=POLICY
            )
            clock.advance(timedelta(minutes=minutes))
            monitoring.record_result(s, clock, "component:web", "tcp", _result(True), policy=POLICY)
            monitoring.record_result(
                s, clock, subject, "xmpp-starttls", _result(True), policy=POLICY
            )
            clock.advance(timedelta(minutes=10))
            monitoring.settle_incidents(s, clock)
        clock.set(now - timedelta(minutes=20))
        monitoring.record_result(s, clock, "component:api", "tcp", _result(False), policy=POLICY)
        [incident] = monitoring.open_incidents(s)
        monitoring.post_update(
            s,
            clock,
            incident,
            status="identified",
            body="A load balancer lost its configuration; we are restoring it.",
            actor=Actor(label="ops"),
        )
        start = (now + timedelta(days=2)).replace(hour=2, minute=0, second=0, microsecond=0)
        monitoring.create_maintenance(
            s,
            clock,
            title="Database upgrade",
            subjects=["component:web", "component:api"],
            timezone="Europe/Berlin",
            local_start=datetime(start.year, start.month, start.day, 3),
            duration_minutes=45,
            description="The portal may be slow for a few minutes.",
            actor=Actor(label="ops"),
        )


def test_status_pages_at_phone_and_desktop_size(
    site: Site, browser_page: Any, tmp_path: Path
) -> None:
    _seed(site)
    page = browser_page
    for path, name in (("/status", "provider"), (f"/status/{DOMAIN}", "domain")):
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            page.goto(f"{site.url}{path}")
            expect(page.get_by_role("heading", level=1)).to_be_visible()
            overall = page.locator(".status-overall")
            expect(overall).to_be_visible()
            bars = page.locator(".bars").first
            box = bars.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
            assert page.locator(".bars").first.locator(".bar").count() == 90
            last_bar = page.locator(".bars").first.locator(".bar").last.bounding_box()
            assert last_bar is not None and last_bar["width"] >= 1.5  # each day visible
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            text = " ".join(page.locator("main").inner_text().split())
            if name == "provider":
                expect(overall).to_have_text("Some systems are not working")
                assert "API is not working" in text
                assert "A load balancer lost its configuration" in text
                assert "Database upgrade" in text
            else:
                expect(overall).to_have_text("All systems operational")
                assert "Past incidents" in text and f"{DOMAIN} is not working" in text
            shot = tmp_path / f"status-{name}-{width}x{height}.png"
            page.screenshot(path=str(shot), full_page=True)
            SHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, SHOTS / shot.name)


def test_staff_post_an_update_from_the_console_and_customers_see_it(
    site: Site, browser_page: Any
) -> None:
    from tests.e2e.test_portal_and_console import arrive, enrol_totp, sign_in

    _seed(site)
    page = browser_page
    admin = "admin@provider.example.com"
    sign_in(page, site, admin, site.password_of(admin))
    arrive(page, r"/portal/account/mfa")
    enrol_totp(page)
    page.goto(site.url + "/console/")
    page.get_by_role("link", name="Monitoring", exact=True).click()
    arrive(page, r"/console/monitoring")
    expect(page.get_by_role("heading", name="Open incidents")).to_be_visible()
    page.get_by_role("link", name=re.compile("API is not working")).click()
    page.get_by_label("Status").select_option("monitoring")
    page.get_by_label("Message to customers").fill(
        "The configuration is restored; we are watching."
    )
    page.get_by_role("button", name="Post update").click()
    expect(page.get_by_text("Update posted.")).to_be_visible()
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"console-incident-{width}x{height}.png"), full_page=True)
    page.goto(site.url + "/console/monitoring")
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.screenshot(
            path=str(SHOTS / f"console-monitoring-{width}x{height}.png"), full_page=True
        )
    page.goto(site.url + "/status")
    expect(page.get_by_text("The configuration is restored; we are watching.")).to_be_visible()
