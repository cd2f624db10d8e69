"""The usage page in a real browser at a phone's and a desktop's size: the chart's axis shows
its numbers in full (no "3,300" for 2,013,300), nothing of the chart is cut or overflows, and
the forecast is the next invoice's. Screenshots are saved for a person to look at."""

from __future__ import annotations

import re
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

EMAIL, PASSWORD = "owner@busy-e2e.example.com", "cobalt heron meadow lantern"
SIZES = ((390, 844), (1280, 800))


def _busy_customer(site: Site) -> str:
    """A customer 12 days into a paid period with a day of 2,013,300 messages."""
    from imhost.accounts import service as accounts
    from imhost.billing import service as billing
    from imhost.billing.flows import run_billing
    from imhost.catalog import service as catalog
    from imhost.metering.ingestion import EngineUsage, ingest_engine_batch

    runtime = site.runtime
    now = SystemClock().now()
    past = FrozenClock(now - timedelta(days=12))
    with runtime.session_factory() as session:
        user = accounts.create_user(
            session, past, email=EMAIL, name="Bea Busy", email_verified=True
        )
        runtime.auth.set_password_directly(session, user, PASSWORD)
        org = accounts.create_organization(
            session, past, name="Busy e2e", owner=user, country="DE", slug="busy-e2e"
        )
        version = catalog.current_plan_version(session, "business", "EUR")
        sub = billing.start_subscription(session, past, org.id, version.id, with_trial=False)
        start = sub.current_period_start
        session.commit()
    run_billing(runtime.session_factory, past, past.now())  # the period's opening invoice
    records = []
    day, n = start, 0
    while day < now - timedelta(hours=1):
        n += 1
        quantity = 2_013_300 if n == 3 else 150_000 + 9_000 * n
        records.append(EngineUsage(org.id, "messages", day, quantity, f"busy:{n}"))
        day += timedelta(days=1)
    with runtime.session_factory() as session:
        ingest_engine_batch(session, records, clock=SystemClock())
        session.commit()
    return "busy-e2e"


def test_the_usage_chart_is_whole_and_readable_at_phone_and_desktop_size(
    site: Site, browser_page: Any, tmp_path: Path
) -> None:
    slug = _busy_customer(site)
    page = browser_page
    sign_in(page, site, EMAIL, PASSWORD)
    arrive(page, rf"/portal/orgs/{slug}/")
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{site.url}/portal/orgs/{slug}/billing")
        expect(page.get_by_role("heading", name="Next invoice", exact=True)).to_be_visible()
        chart = page.locator("svg.chart.wide, svg.chart.narrow").locator("visible=true")
        expect(chart).to_have_count(1)
        expect(chart).to_have_class(re.compile("narrow" if width < 600 else "wide"))
        box = chart.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        axis = chart.locator("text[text-anchor=end]")
        labels = [t.strip() for t in axis.all_text_contents()]
        assert "2,000,000" in labels and "2,500,000" in labels, labels
        assert all(re.fullmatch(r"\d{1,3}(,\d{3})*", t) for t in labels), labels
        for i in range(axis.count()):  # every axis label lies inside the chart, none cut
            text_box = axis.nth(i).bounding_box()
            assert text_box is not None and text_box["x"] >= box["x"] - 0.5, labels[i]
            assert text_box["width"] > 0
        font = page.evaluate(
            "el => el.getBoundingClientRect().height",
            axis.first.element_handle(),
        )
        assert font >= 9, f"axis text {font:.1f} px high at {width} px"  # readable
        # The page as a whole does not scroll sideways.
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        text = " ".join(page.locator("main").inner_text().split())
        assert "next invoice" in text and "tax included" in text
        assert not re.search(r"\b(traffic_gb|per_unit|peak_connections|storage_gb)\b", text)
        shot = tmp_path / f"usage-{width}x{height}.png"
        page.screenshot(path=str(shot), full_page=True)
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SHOTS / shot.name)
