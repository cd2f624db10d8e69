"""What customers read in the portal has no internal codes: no metric codes, pricing-model
codes, units like "GB (10^9 bytes)", payment method codes, limit field names, or seconds in
proration. The pages are rendered for a realistic organization: the default plans, a month
of usage, invoices, a payment, a plan change in the middle of a period."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import OrgRole
from imhost.billing import service as billing
from imhost.billing.flows import run_billing
from imhost.billing.models import Invoice
from imhost.catalog import service as catalog
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.metering.ingestion import EngineUsage, ingest_engine_batch
from imhost.web import portal
from imhost.web.portal.auth import public_plans
from tests.factories import World, make_world
from tests.web.conftest import signed_in

CODES = re.compile(
    r"traffic_gb|storage_gb|peak_connections|monthly_active_users|per_unit|graduated:|"
    r"volume:|package:|flat_tier|bank_transfer|account_credit|10\^9|fractional|"
    r"max_xmpp_accounts|max_connections|storage_mb|message_rate|max_custom_domains|"
    r"time_weighted|trialing|\d s /|\d s of|\b\d{1,3}(,\d{3})+ s\b"
)


def visible_text(html: str) -> str:
    """The text a person sees: no tags, scripts, styles, attribute values or SVG titles
    (the charts' text alternatives are checked too: they are in <desc>)."""
    html = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", html)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    clock.set(utc(2026, 11, 1, 8))
    with transaction(session_factory) as s:
        world = make_world(s, clock)
        billing.set_tax_rate(s, clock, "DE", "19")
        catalog.seed_default_plans(s, clock)
        starter = catalog.current_plan_version(s, "starter")
        billing.start_subscription(s, clock, world.org.id, starter.id, with_trial=False)
    run_billing(session_factory, clock, clock.now())
    clock.set(utc(2026, 11, 25))
    day, records, n = utc(2026, 11, 1), [], 0
    while day < clock.now():
        n += 1
        records += [
            EngineUsage(world.org.id, "messages", day, 60_000 + n, f"w:{n}:m"),
            EngineUsage(world.org.id, "bytes_in", day, 188_826 + n, f"w:{n}:b"),
            EngineUsage(world.org.id, "connections_peak", day, 3, f"w:{n}:c"),
            EngineUsage(world.org.id, "offline_storage_bytes", day, 5_000_000, f"w:{n}:s"),
            EngineUsage(world.org.id, "active_users", day, 1, f"w:{n}:u", subject="a@x"),
        ]
        day = day.replace(day=day.day + 1)
    with transaction(session_factory) as s:
        ingest_engine_batch(s, records, clock=clock)
        business = catalog.current_plan_version(s, "business")
        billing.change_plan(s, clock, world.org.id, business.id, changed_by="owner")
    clock.set(utc(2026, 12, 1, 0, 30))
    run_billing(session_factory, clock, clock.now())
    with transaction(session_factory) as s:
        invoice = s.scalars(select(Invoice).where(Invoice.status == "open")).first()
        assert invoice is not None
        billing.record_payment(
            s, clock, invoice.id, amount=Decimal("5.00"), currency=invoice.currency
        )
    clock.set(utc(2026, 12, 9))
    return world


def test_no_internal_code_reaches_a_customer(
    app: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    portal.install(app)
    owner = signed_in(app, world.members[OrgRole.OWNER])
    base = f"/portal/orgs/{world.org.slug}"
    with session_factory() as s:
        invoices = list(s.scalars(select(Invoice.id)))
        other = catalog.current_plan_version(s, "enterprise")
    pages = [
        base + "/",
        base + "/billing",
        base + "/billing/plan",
        base + "/billing/invoices",
        *(f"{base}/billing/invoices/{i}" for i in invoices),
        "/portal/sign-up",
    ]
    seen: dict[str, str] = {}
    for path in pages:
        response = owner.get(path)
        assert response.status_code == 200, path
        seen[path] = visible_text(response.text)
    token = re.search(r'name="csrf_token" value="([^"]+)"', owner.get(base + "/billing/plan").text)
    assert token is not None
    preview = owner.post(
        base + "/billing/plan/preview", data={"plan": other.id, "csrf_token": token.group(1)}
    )
    assert preview.status_code == 200
    seen["plan preview"] = visible_text(preview.text)
    found = {path: CODES.findall(text) for path, text in seen.items() if CODES.search(text)}
    assert found == {}, {p: [m.group(0) for m in CODES.finditer(seen[p])] for p in found}
    # What is said instead, in plain words.
    usage = seen[base + "/billing"]
    assert "Traffic (GB)" in usage and "GB of traffic" in usage
    assert "Monthly active users" in usage
    assert any("(Bank transfer)" in text for path, text in seen.items() if "/invoices/" in path)
    assert re.search(r"× \d+ days? / 30 days", " ".join(seen.values()))  # the proration


def test_every_price_tier_of_a_plan_is_shown_before_choosing_it(
    app: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    portal.install(app)
    text = visible_text(signed_in(app, world.members[OrgRole.OWNER]).get("/portal/sign-up").text)
    with session_factory() as s:
        tiers = [c.tiers or [] for plan in public_plans(s) for c in plan.versions[0].components]
    assert any(tiers), "the default plans have tiered prices"
    for tier_list in tiers:
        for tier in tier_list:
            up_to = tier["up_to"]
            assert up_to is None or f"{int(up_to):,}" in text, tier
    assert "then tiered" not in text


CONSOLE_CODES = re.compile(
    CODES.pattern
    + r"|\bread_only\b|\binvoice-(?:paid|reminder)\b|\bcredit-note\b|\bbudget-alert\b"
    + r"|\breminder:-?\d|\blate_fee\b|\bpremium_support\b|\bbilling_interval\b"
    + r"|\b(?:org|billing|login|member|token|mfa|password|invitation|staff|webhook|xmpp"
    + r"|service|catalog|session|access_review)\.[a-z_]+\b"
)


def test_no_internal_code_reaches_staff_in_the_console(
    app: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    """Staff read plain words too: statuses, roles, payment methods, metrics and prices,
    e-mail kinds, dunning steps and audit events (the codes stay in links and filters)."""
    from imhost.accounts.models import StaffRole
    from imhost.notify.models import OutboundEmail
    from imhost.web import console

    console.install(app)
    with transaction(session_factory) as s:
        s.add(
            OutboundEmail(
                created_at=utc(2026, 12, 8),
                to=["billing@a.example.com"],
                subject="Your invoice is due",
                text="Please pay.",
                organization_id=world.org.id,
                kind="invoice-reminder",
                status="sent",
                transport="outbox",
            )
        )
        s.flush()
        emails = list(s.scalars(select(OutboundEmail.id)))
        invoices = list(s.scalars(select(Invoice.id)))
    staff = signed_in(app, world.staff[StaffRole.ADMIN])
    pages = [
        "/console/dashboard",
        f"/console/customers/{world.org.id}",
        "/console/billing",
        "/console/invoices",
        *(f"/console/invoices/{i}" for i in invoices),
        "/console/subscriptions",
        "/console/plans",
        "/console/plans/starter",
        "/console/plans/business",
        "/console/dunning",
        "/console/outbox",
        *(f"/console/outbox/{e}" for e in emails[:5]),
        "/console/audit",
        "/console/alerts",
    ]
    seen: dict[str, str] = {}
    for path in pages:
        response = staff.get(path)
        assert response.status_code == 200, path
        seen[path] = visible_text(response.text)
    found = {
        path: [m.group(0) for m in CONSOLE_CODES.finditer(text)]
        for path, text in seen.items()
        if CONSOLE_CODES.search(text)
    }
    assert found == {}, found
    assert emails and invoices  # the pages above had something to show
    everything = " ".join(seen.values())
    assert "Awaiting payment" in everything or "Paid" in everything
    assert "Billing: plan changed" in seen["/console/audit"]
    assert "Read-only" in seen[f"/console/customers/{world.org.id}"]
    assert "Messages" in seen["/console/plans/business"]


def test_console_words_for_codes() -> None:
    from imhost.web import words

    assert words.dunning_step("reminder:-3") == "Reminder 3 days before the due date"
    assert words.dunning_step("reminder:0") == "Reminder on the due date"
    assert words.dunning_step("reminder:1") == "Reminder 1 day after the due date"
    assert words.dunning_step("late_fee") == "Late fee"
    assert words.audit_action("billing.add_on_changed") == "Billing: add on changed"
    assert words.audit_action("xmpp.account_changed") == "XMPP: account changed"
    assert words.audit_action("logout") == "Logout"
    assert words.status_words("open") == "Awaiting payment"
    assert words.status_words("trialing") == "Free trial"
    assert words.role_words("read_only") == "Read-only"
    assert words.email_kind("invoice-reminder") == "Payment reminder"
    assert words.metric_choice("messages") == ("messages", "Messages")
