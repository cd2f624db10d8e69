"""Audit records are written by the function that does the action, so the API, the portal, the
console and the CLI audit alike (the portal's plan start was not audited when each web handler
wrote its own record)."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import service as accounts
from imhost.accounts import sessions
from imhost.accounts.audit import Actor
from imhost.accounts.models import AuditEvent, OrgRole, StaffRole
from imhost.billing import service as billing
from imhost.billing.flows import run_billing
from imhost.billing.models import Invoice
from imhost.catalog import service as catalog
from imhost.catalog.schemas import AddOnIn, AddOnUpdate, PlanCreate, PlanUpdate, PlanVersionChange
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.metering import budgets, closing, ingestion
from imhost.metering.schemas import BudgetIn
from imhost.notify.models import OutboundEmail
from imhost.runtime import Runtime
from imhost.web import console, portal
from tests.billing.factories import make_plan
from tests.factories import World, make_world
from tests.metering.factories import usage
from tests.web.conftest import signed_in

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
WEB = Path(__file__).parents[2] / "src" / "imhost" / "web"
TESTER = Actor(user_id=None, label="tester@provider.example.com", address="192.0.2.7")


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    clock.set(utc(2026, 11, 1, 8))
    with session_factory() as session:
        world = make_world(session, clock)
        session.commit()
        return world


@pytest.fixture
def pages(app: FastAPI) -> FastAPI:
    portal.install(app)
    console.install(app)
    return app


def _events(factory: sessionmaker[Session], action: str) -> list[AuditEvent]:
    with factory() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def _seed_plans(factory: sessionmaker[Session], clock: FrozenClock) -> tuple[str, str]:
    with factory() as s:
        plans = catalog.seed_default_plans(s, clock)
        first = catalog.plan_view(s, plans[0].code).versions[0].version.id
        bigger = catalog.plan_view(s, plans[1].code).versions[0].version.id
        s.commit()
    return first, bigger


def test_starting_a_plan_from_the_portal_is_audited(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    first, bigger = _seed_plans(session_factory, clock)
    member = world.members[OrgRole.BILLING]
    client = signed_in(pages, member)
    client.follow_redirects = False
    page = client.get(f"/portal/orgs/{world.org.slug}/billing/plan")
    match = CSRF.search(page.text)
    assert page.status_code == 200 and match is not None
    base = f"/portal/orgs/{world.org.slug}/billing/plan"
    started = client.post(base + "/change", data={"csrf_token": match.group(1), "plan": first})
    assert started.status_code == 303, started.text[:300]
    [event] = _events(session_factory, "billing.subscription_started")
    assert event.organization_id == world.org.id
    assert event.actor_user_id == member.id and event.actor_label == member.email
    assert event.details["plan_version_id"] == first
    clock.advance(timedelta(days=3))
    client = signed_in(pages, member)  # the first session has timed out meanwhile
    client.follow_redirects = False
    match = CSRF.search(client.get(f"/portal/orgs/{world.org.slug}/billing/plan").text)
    assert match is not None
    changed = client.post(base + "/change", data={"csrf_token": match.group(1), "plan": bigger})
    assert changed.status_code == 303 and changed.headers["location"].endswith("/billing")
    [change] = _events(session_factory, "billing.plan_changed")
    assert change.actor_user_id == member.id
    assert change.details["to_plan_version_id"] == bigger


def test_signing_up_with_a_plan_audits_the_plan_start_by_the_new_owner(
    pages: FastAPI, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    first, _ = _seed_plans(session_factory, clock)
    browser = TestClient(pages, raise_server_exceptions=False, follow_redirects=False)
    page = browser.get("/portal/sign-up")
    match = CSRF.search(page.text)
    assert match is not None
    signed_up = browser.post(
        "/portal/sign-up",
        data={
            "csrf_token": match.group(1),
            "email": "nia@c.example.com",
            "password": "violet tractor kettle summit",
            "name": "Nia",
            "organization_name": "Gamma Chat",
            "country": "NL",
            "plan": first,
        },
    )
    assert signed_up.status_code == 202, signed_up.text[:300]
    assert _events(session_factory, "billing.subscription_started") == []  # not before the link
    with session_factory() as s:
        mail = s.scalars(select(OutboundEmail).where(OutboundEmail.kind == "sign-up")).one()
    link = "/portal/sign-up/" + mail.text.split("/portal/sign-up/")[1].split()[0]
    page = browser.get(link)
    match = CSRF.search(page.text)
    assert page.status_code == 200 and match is not None
    finished = browser.post(link, data={"csrf_token": match.group(1)})
    assert finished.status_code == 303, finished.text[:300]
    [event] = _events(session_factory, "billing.subscription_started")
    assert event.actor_label == "nia@c.example.com" and event.actor_user_id is not None


def test_the_api_and_the_console_audit_through_the_same_functions(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    first, _ = _seed_plans(session_factory, clock)
    owner = signed_in(pages, world.members[OrgRole.OWNER])
    r = owner.post(
        f"/api/v1/orgs/{world.org.id}/billing/subscription",
        json={"plan_version_id": first, "with_trial": False},
    )
    assert r.status_code == 201, r.text
    [started] = _events(session_factory, "billing.subscription_started")
    assert started.actor_user_id == world.members[OrgRole.OWNER].id
    run_billing(session_factory, clock, clock.now())
    with session_factory() as s:
        invoice = s.scalars(select(Invoice)).one()
    staff = signed_in(pages, world.staff[StaffRole.BILLING])
    staff.follow_redirects = False
    page = staff.get(f"/console/invoices/{invoice.id}")
    match = CSRF.search(page.text)
    assert page.status_code == 200 and match is not None
    paid = staff.post(
        f"/console/invoices/{invoice.id}/payments",
        data={
            "csrf_token": match.group(1),
            "amount": str(invoice.amount_due),
            "currency": invoice.currency,
            "method": "bank_transfer",
        },
    )
    assert paid.status_code == 303, paid.text[:300]
    [payment] = _events(session_factory, "billing.payment_recorded")
    assert payment.actor_user_id == world.staff[StaffRole.BILLING].id
    assert payment.organization_id == world.org.id


def test_every_billing_action_writes_its_audit_record_whoever_calls_it(
    runtime: Runtime, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    """The functions the API, portal, console and CLI share each record who acted."""
    org_id = world.org.id
    with transaction(session_factory) as s:
        plan = make_plan(s, clock)
        other = make_plan(s, clock, name="Bigger", base_fee="99.00")
        billing.start_subscription(s, clock, org_id, plan.id, with_trial=False, actor=TESTER)
        billing.set_tax_rate(s, clock, "DE", "19", actor=TESTER)
        billing.update_profile(s, clock, actor=TESTER, payment_terms_days=14)
        coupon = billing.create_coupon(
            s,
            clock,
            code="WELCOME",
            kind="percent",
            duration="once",
            percent_off="10",
            actor=TESTER,
        )
        billing.update_coupon(s, clock, coupon.id, name="Welcome", actor=TESTER)
        billing.apply_coupon(s, clock, org_id, "WELCOME", actor=TESTER)
        spare = billing.create_coupon(
            s, clock, code="SPARE", kind="percent", duration="once", percent_off="5"
        )
        billing.delete_coupon(s, clock, spare.id, actor=TESTER)
        charge = billing.add_one_off_charge(
            s,
            clock,
            org_id,
            description="Setup",
            amount="10",
            currency="EUR",
            reason="migration",
            created_by="tester",
            actor=TESTER,
        )
        billing.remove_pending_charge(s, clock, charge.id, actor=TESTER)
        billing.delete_tax_rate(s, clock, "DE", actor=TESTER)
    clock.advance(timedelta(days=2))
    with transaction(session_factory) as s:
        billing.change_plan(s, clock, org_id, other.id, actor=TESTER)
    clock.set(utc(2026, 12, 1, 8))
    run_billing(session_factory, clock, clock.now(), actor=TESTER)
    with transaction(session_factory) as s:
        invoice = s.scalars(
            select(Invoice).where(Invoice.status == "open").order_by(Invoice.total.desc())
        ).first()
        assert invoice is not None
        billing.add_credit(s, clock, org_id, Decimal(5), "EUR", kind="goodwill", description="x")
        billing.pay_from_credit(s, clock, invoice.id, org_id, actor=TESTER)
        payment = billing.record_payment(
            s, clock, invoice.id, amount=invoice.amount_due, currency="EUR", actor=TESTER
        )
        billing.issue_credit_note(s, clock, invoice.id, reason="goodwill", actor=TESTER)
        billing.refund_credit(s, clock, payment.id, amount="1", reason="test", actor=TESTER)
        billing.pause_subscription(s, clock, org_id, actor=TESTER)
        billing.resume_subscription(s, clock, org_id, actor=TESTER)
        billing.cancel_subscription(s, clock, org_id, actor=TESTER)
    with session_factory() as s:
        done = set(
            s.scalars(select(AuditEvent.action).where(AuditEvent.actor_label == TESTER.label))
        )
    expected = {
        f"billing.{a}"
        for a in (
            "subscription_started",
            "tax_rate_set",
            "settings_changed",
            "coupon_created",
            "coupon_updated",
            "coupon_applied",
            "coupon_deleted",
            "charge_added",
            "charge_removed",
            "tax_rate_deleted",
            "plan_changed",
            "run",
            "paid_from_credit",
            "payment_recorded",
            "credit_note_issued",
            "refund_made",
            "subscription_paused",
            "subscription_resumed",
            "subscription_canceled",
        )
    }
    assert expected - done == set()


def test_finalize_and_void_from_the_console_function_are_audited_a_runs_invoices_only_by_the_run(
    runtime: Runtime, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    with transaction(session_factory) as s:
        billing.start_subscription(s, clock, world.org.id, make_plan(s, clock).id)
    run_billing(session_factory, clock, clock.now())
    assert _events(session_factory, "billing.invoice_finalized") == []
    [run] = _events(session_factory, "billing.run")  # a system run that invoiced is recorded
    assert run.actor_label == "system" and run.details["invoices"] == 1
    with transaction(session_factory) as s:
        invoice = s.scalars(select(Invoice)).one()
        billing.void_invoice(s, clock, invoice.id, "issued by mistake", actor=TESTER)
    [void] = _events(session_factory, "billing.invoice_voided")
    assert void.actor_label == TESTER.label and void.details["reason"] == "issued by mistake"


def test_catalog_changes_are_audited_by_the_catalog(
    runtime: Runtime, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    with transaction(session_factory) as s:
        catalog.create_plan(
            s,
            clock,
            PlanCreate.model_validate(
                {"code": "team", "name": "Team", "version": {"base_fee": "10"}}
            ),
            actor=TESTER,
        )
        catalog.update_plan(s, clock, "team", PlanUpdate(name="Team plan"), actor=TESTER)
        catalog.new_plan_version(
            s, clock, "team", PlanVersionChange(base_fee=Decimal(12)), actor=TESTER
        )
        catalog.create_addon(
            s,
            clock,
            AddOnIn.model_validate(
                {"code": "extra", "name": "Extra", "kind": "other", "price": "2"}
            ),
            actor=TESTER,
        )
        catalog.update_addon(s, clock, "extra", "EUR", AddOnUpdate(name="More"), actor=TESTER)
        catalog.deactivate_addon(s, clock, "extra", "EUR", actor=TESTER)
    with session_factory() as s:
        done = sorted(
            s.scalars(select(AuditEvent.action).where(AuditEvent.actor_label == TESTER.label))
        )
    assert done == sorted(
        [
            "catalog.plan_created",
            "catalog.plan_updated",
            "catalog.plan_version_created",
            "catalog.addon_created",
            "catalog.addon_updated",
            "catalog.addon_retired",
        ]
    )


def test_staff_creation_and_impersonation_are_audited_by_accounts(
    runtime: Runtime, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    with transaction(session_factory) as s:
        accounts.create_user(
            s, clock, email="ops@provider.example.com", staff_role=StaffRole.SUPPORT, actor=TESTER
        )
        accounts.create_user(s, clock, email="customer@c.example.com")  # not staff: no record
        web = sessions.start_session(
            s,
            clock,
            runtime.settings.security,
            user_id=world.staff[StaffRole.SUPPORT].id,
            address="192.0.2.7",
            user_agent="pytest",
            mfa_verified=True,
        ).session
        org = accounts.get_organization(s, world.org.id)
        sessions.start_impersonation(s, clock, web, org, actor=TESTER)
        assert web.impersonating_org_id == org.id
    [created] = [e for e in _events(session_factory, "staff.created") if e.actor_label != "system"]
    assert created.actor_label == TESTER.label and created.details["role"] == "support"
    assert created.target_label == "ops@provider.example.com"
    [seen] = _events(session_factory, "staff.impersonation_started")
    assert seen.organization_id == world.org.id  # the customer sees it in their own log


def _budget_form(client: TestClient, slug: str, **fields: str) -> int:
    page = client.get(f"/portal/orgs/{slug}/billing")
    match = CSRF.search(page.text)
    assert page.status_code == 200 and match is not None
    sent = client.post(
        f"/portal/orgs/{slug}/billing/budget", data={"csrf_token": match.group(1), **fields}
    )
    return sent.status_code


def test_budget_changes_from_the_portal_are_audited_with_the_person_as_actor(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    member = world.members[OrgRole.BILLING]
    client = signed_in(pages, member)
    client.follow_redirects = False
    assert _budget_form(client, world.org.slug, amount="100", thresholds="50, 80, 100") == 303
    [created] = _events(session_factory, "usage.budget_created")
    assert created.organization_id == world.org.id and created.target_type == "budget"
    assert created.actor_user_id == member.id and created.actor_label == member.email
    assert created.details == {
        "amount": "100.00",
        "currency": "EUR",
        "thresholds": [50, 80, 100],
        "hard_cap": False,
    }
    status = _budget_form(client, world.org.slug, amount="250", thresholds="90", hard_cap="on")
    assert status == 303
    [changed] = _events(session_factory, "usage.budget_changed")
    assert changed.actor_user_id == member.id and changed.target_id == created.target_id
    assert changed.details["amount"] == "250.00" and changed.details["hard_cap"] is True
    assert changed.details["thresholds"] == [90]
    assert _budget_form(client, world.org.slug, amount="lots", thresholds="90") == 422
    assert len(_events(session_factory, "usage.budget_changed")) == 1  # a refused form: none


def test_budget_changes_from_the_api_are_audited_with_the_person_as_actor(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    owner = world.members[OrgRole.OWNER]
    client = signed_in(pages, owner)
    base = f"/api/v1/orgs/{world.org.id}/budgets"
    created = client.post(base, json={"amount": "100", "currency": "EUR"})
    assert created.status_code == 201, created.text
    budget_id = created.json()["id"]
    changed = client.put(
        f"{base}/{budget_id}",
        json={"amount": "120.5", "currency": "EUR", "thresholds": [75], "hard_cap": True},
    )
    assert changed.status_code == 200, changed.text
    assert client.delete(f"{base}/{budget_id}").status_code == 204
    events = {
        action: _events(session_factory, f"usage.budget_{action}")
        for action in ("created", "changed", "deleted")
    }
    for action, [event] in events.items():
        assert event.actor_user_id == owner.id and event.actor_label == owner.email, action
        assert event.organization_id == world.org.id and event.target_id == budget_id, action
    assert events["created"][0].details["thresholds"] == [50, 80, 100]
    assert events["changed"][0].details["amount"] == "120.50"
    assert events["deleted"][0].details == events["changed"][0].details


def test_the_late_usage_policy_and_staff_ingestion_are_audited_by_metering(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    admin = world.staff[StaffRole.ADMIN]
    client = signed_in(pages, admin)
    policy = client.put(
        "/api/v1/admin/usage/late-policy", json={"late_usage_policy": "next_invoice"}
    )
    assert policy.status_code == 200, policy.text
    [event] = _events(session_factory, "usage.late_policy_changed")
    assert event.actor_user_id == admin.id
    assert event.details == {"previous": "refuse", "policy": "next_invoice"}
    hour = clock.now() - timedelta(hours=1)
    with transaction(session_factory) as s:
        closing.set_late_usage_policy(s, clock, "refuse", actor=TESTER)
        result = ingestion.ingest_by_staff(
            s,
            clock,
            [usage(world.org, "messages", hour, 5, service_id=None)],
            atomic=True,
            actor=TESTER,
        )
        assert result.accepted == 1
        ingestion.ingest(s, clock, [usage(world.org, "messages", hour, 6, key="own")], atomic=True)
    [back] = [e for e in _events(session_factory, "usage.late_policy_changed") if e.id != event.id]
    assert back.actor_label == TESTER.label and back.details["previous"] == "next_invoice"
    [ingested] = _events(session_factory, "usage.ingested_by_staff")  # not a customer's own
    assert ingested.actor_label == TESTER.label
    assert ingested.details == {"accepted": 1, "rejected": 0}


def test_budget_functions_audit_whoever_calls_them(
    runtime: Runtime, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    with transaction(session_factory) as s:
        budgets.set_budget(s, clock, world.org.id, BudgetIn(amount=Decimal(5), currency="EUR"))
        budgets.delete_budget(s, world.org.id, clock, actor=TESTER)
    [created] = _events(session_factory, "usage.budget_created")
    assert created.actor_label == "system"  # a caller that does not say who: the system
    [deleted] = _events(session_factory, "usage.budget_deleted")
    assert deleted.actor_label == TESTER.label and deleted.organization_id == world.org.id


WEB_AUDIT_WRITERS_LEFT: set[str] = set()


def test_web_handlers_write_no_audit_records() -> None:
    writers = {
        str(path.relative_to(WEB))
        for path in WEB.rglob("*.py")
        if re.search(r"audit(_log)?\.record\(", path.read_text())
    }
    assert writers <= WEB_AUDIT_WRITERS_LEFT, "record audit events in the domain function"
