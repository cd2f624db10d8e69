"""The console's dashboard (MRR, new and churned customers, open and overdue invoices,
services and connections now) and, on a customer's page, the plan change and the one-off
charge: each confirmed before it happens, audited, and refused to staff roles that may not."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import audit
from imhost.accounts.models import Organization, StaffRole, User
from imhost.billing import dashboard
from imhost.billing import service as billing
from imhost.billing.flows import run_billing
from imhost.billing.models import Invoice, PendingCharge
from imhost.catalog import service as catalog
from imhost.catalog.schemas import PlanCreate
from imhost.hosting import service as hosting
from imhost.kit.clock import FrozenClock
from imhost.kit.money import format_money
from imhost.web import console, portal
from imhost.web.console.dashboard import connections_now
from tests.factories import World, make_org, make_user, make_world
from tests.web.test_pages import as_user

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Plans:
    monthly: str  # 30 EUR a month
    yearly: str  # 120 EUR a year
    bigger: str  # 60 EUR a month
    trial: str  # 20 EUR a month, 14 days free


def _plan(session: Session, clock: FrozenClock, code: str, fee: str, **version: object) -> str:
    plan = catalog.create_plan(
        session,
        clock,
        PlanCreate.model_validate(
            {"code": code, "name": code.title(), "version": {"base_fee": fee, **version}}
        ),
    )
    return catalog.plan_view(session, plan.code).versions[0].version.id


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        world = make_world(session, clock)
        session.commit()
        return world


@pytest.fixture
def plans(session_factory: sessionmaker[Session], clock: FrozenClock) -> Plans:
    with session_factory() as session:
        made = Plans(
            monthly=_plan(session, clock, "basic", "30"),
            yearly=_plan(session, clock, "annual", "120", billing_interval="yearly"),
            bigger=_plan(session, clock, "bigger", "60"),
            trial=_plan(session, clock, "trial", "20", trial_days=14),
        )
        session.commit()
        return made


@pytest.fixture
def pages(app: FastAPI) -> FastAPI:
    portal.install(app)
    console.install(app)
    return app


def as_staff(app: FastAPI, user: User) -> TestClient:
    """A signed-in staff member's client (``test_pages.as_user``, without its CSRF token)."""
    return as_user(app, user)[0]


def csrf_of(client: TestClient, url: str) -> str:
    page = client.get(url)
    assert page.status_code == 200, page.text[:300]
    match = CSRF.search(page.text)
    assert match is not None
    return match.group(1)


@pytest.fixture
def billing_staff(pages: FastAPI, world: World) -> Iterator[TestClient]:
    with as_staff(pages, world.staff[StaffRole.BILLING]) as client:
        yield client


# --- the dashboard ---------------------------------------------------------------------------


def test_mrr_brings_each_active_base_fee_to_a_month_and_leaves_trials_out(
    pages: FastAPI,
    world: World,
    plans: Plans,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    with session_factory() as session:
        billing.start_subscription(session, clock, world.org.id, plans.monthly, with_trial=False)
        billing.start_subscription(
            session, clock, world.other_org.id, plans.yearly, with_trial=False
        )
        owner = make_user(session, clock, "owner@c.example.com")
        third = make_org(session, clock, "Gamma Chat", owner)
        billing.start_subscription(session, clock, third.id, plans.trial)  # trialing
        session.commit()
        # 30 a month + 120 a year (10 a month); the trial is not revenue yet.
        assert dashboard.monthly_recurring_revenue(session) == {"EUR": Decimal("40.00")}
    page = as_staff(pages, world.staff[StaffRole.READ_ONLY]).get("/console/dashboard")
    assert page.status_code == 200
    assert format_money(Decimal("40.00"), "EUR") in page.text
    assert "a yearly fee by 12" in page.text  # the page says how it is computed


def test_weekly_and_quarterly_fees_are_brought_to_a_month() -> None:
    assert dashboard.monthly_amount(Decimal(30), "quarterly") == Decimal(10)
    assert dashboard.monthly_amount(Decimal(12), "weekly") == Decimal(52)
    assert dashboard.monthly_amount(Decimal(24), "every-2-weeks") == Decimal(52)


def test_new_and_churned_customers_are_counted_in_the_month_they_happen(
    pages: FastAPI,
    world: World,
    plans: Plans,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    with session_factory() as session:  # January 2026
        billing.start_subscription(session, clock, world.org.id, plans.monthly, with_trial=False)
        session.commit()
    clock.advance(timedelta(days=32))  # February
    with session_factory() as session:
        billing.start_subscription(
            session, clock, world.other_org.id, plans.monthly, with_trial=False
        )
        billing.cancel_subscription(session, clock, world.org.id, at_period_end=False)
        session.commit()
        months = dashboard.customer_movement(session, clock, months=7)
    assert [m.label for m in months][-2:] == ["Jan 2026", "Feb 2026"]
    assert [(m.new, m.churned) for m in months] == [(0, 0)] * 5 + [(1, 0), (1, 1)]
    page = as_staff(pages, world.staff[StaffRole.BILLING]).get("/console/dashboard")
    assert page.status_code == 200
    # Two charts (each drawn for both widths) with their own accessible names, no id twice
    # on the page, and the same figures as a table.
    assert 'aria-labelledby="new-wide-t new-wide-d"' in page.text
    assert 'aria-labelledby="churn-narrow-t churn-narrow-d"' in page.text
    ids = re.findall(r' id="([^"]+)"', page.text)
    assert len(ids) == len(set(ids))
    assert "Feb 2026 (this month)" in page.text


def test_open_and_overdue_invoices_link_to_the_filtered_list(
    pages: FastAPI,
    world: World,
    plans: Plans,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    _subscribe(session_factory, clock, world.org.id, plans.monthly)
    run_billing(session_factory, clock, clock.now())
    with session_factory() as session:
        invoice = session.scalars(select(Invoice)).one()
        assert invoice.status == "open" and invoice.due_at is not None
        due, total = invoice.due_at, invoice.total
        open_, overdue = dashboard.open_invoices(session, clock)
    assert (open_.count, open_.amounts) == (1, {"EUR": total})
    assert overdue.count == 0
    clock.set(due + timedelta(days=1))
    staff = as_staff(pages, world.staff[StaffRole.BILLING])
    page = staff.get("/console/dashboard")
    assert page.status_code == 200
    assert '<a href="/console/invoices?status=overdue">1 invoice</a>' in page.text
    assert f"{format_money(total, 'EUR')} owed" in page.text
    listed = staff.get("/console/invoices?status=overdue")
    assert listed.status_code == 200 and f"/console/invoices/{invoice.id}" in listed.text
    with session_factory() as session:
        billing.record_payment(
            session,
            clock,
            invoice.id,
            amount=total,
            currency="EUR",
            method="bank_transfer",
            reference=None,
            received_at=None,
            recorded_by="test",
        )
        session.commit()
    listed = staff.get("/console/invoices?status=overdue")
    assert f"/console/invoices/{invoice.id}" not in listed.text
    assert (
        '<a href="/console/invoices?status=overdue">0 invoices</a>'
        in staff.get("/console/dashboard").text
    )


def test_services_and_connections_now(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    with session_factory() as session:
        org = session.get(Organization, world.org.id)
        assert org is not None
        hosting.create_service(session, clock, org, base_domain="im.example")
        session.commit()
        assert hosting.count_services_by_status(session) == {"active": 1}
    page = as_staff(pages, world.staff[StaffRole.ADMIN]).get("/console/dashboard")
    assert "<dt>Active hosted services</dt><dd>1</dd>" in page.text
    # This test's app runs no XMPP engine.
    assert "Not available in this process" in page.text


def test_connections_now_sums_the_engines_connection_gauge_over_hosts() -> None:
    class Engine:
        def metrics_snapshot(self) -> dict[str, dict[str, int]]:
            return {"a.example": {"connections": 3, "messages": 90}, "b.example": {"messages": 1}}

    assert connections_now(Engine()) == 3
    assert connections_now(None) is None


@pytest.mark.parametrize("role", [StaffRole.SUPPORT])
def test_staff_who_may_not_see_money_do_not_see_the_dashboard(
    pages: FastAPI, world: World, role: StaffRole
) -> None:
    client = as_staff(pages, world.staff[role])
    assert client.get("/console/dashboard").status_code == 403
    assert 'href="/console/dashboard"' not in client.get("/console/").text


def test_the_console_nav_links_the_dashboard_for_billing_staff(
    pages: FastAPI, world: World
) -> None:
    page = as_staff(pages, world.staff[StaffRole.BILLING]).get("/console/")
    assert 'href="/console/dashboard"' in page.text


# --- plan change -----------------------------------------------------------------------------


def test_a_plan_change_shows_its_proration_then_applies_it_and_is_audited(
    pages: FastAPI,
    world: World,
    plans: Plans,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    _subscribe(session_factory, clock, world.org.id, plans.monthly)
    run_billing(session_factory, clock, clock.now())  # the first period is billed in advance
    clock.advance(timedelta(days=10))
    billing_staff = as_staff(pages, world.staff[StaffRole.BILLING])
    url = f"/console/customers/{world.org.id}"
    csrf = csrf_of(billing_staff, url)
    preview = billing_staff.post(
        url + "/plan", data={"csrf_token": csrf, "plan_version_id": plans.bigger}
    )
    assert preview.status_code == 200, preview.text[:500]
    assert "Confirm the plan change" in preview.text
    assert "Unused time on Basic (credit)" in preview.text
    assert "Total on the next invoice" in preview.text
    with session_factory() as session:
        sub = billing.current_subscription(session, world.org.id)
        assert sub is not None and sub.plan_version_id == plans.monthly  # nothing changed yet
        expected = billing.preview_change(session, clock, world.org.id, plans.bigger).total
    assert expected > 0 and format_money(expected, "EUR") in preview.text
    done = billing_staff.post(
        url + "/plan",
        data={"csrf_token": csrf, "plan_version_id": plans.bigger, "confirmed": "yes"},
    )
    assert done.status_code == 303
    with session_factory() as session:
        sub = billing.current_subscription(session, world.org.id)
        assert sub is not None and sub.plan_version_id == plans.bigger
        prorations = [c.amount for c in billing.list_pending_charges(session, world.org.id)]
        assert sum(prorations, Decimal(0)) == expected
        [event] = audit.list_events(
            session, organization_id=world.org.id, action="billing.plan_changed"
        )[0]
        assert event.actor_label == world.staff[StaffRole.BILLING].email


def test_changing_to_the_current_plan_is_refused_beside_the_field(
    billing_staff: TestClient,
    world: World,
    plans: Plans,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    _subscribe(session_factory, clock, world.org.id, plans.monthly)
    url = f"/console/customers/{world.org.id}"
    csrf = csrf_of(billing_staff, url)
    same = billing_staff.post(
        url + "/plan", data={"csrf_token": csrf, "plan_version_id": plans.monthly}
    )
    assert 400 <= same.status_code < 500
    assert "error-summary" in same.text and 'id="e-plan_version_id"' in same.text
    assert "this is the current plan already" in same.text
    missing = billing_staff.post(url + "/plan", data={"csrf_token": csrf, "plan_version_id": ""})
    assert 400 <= missing.status_code < 500 and "Pick the plan to change to." in missing.text


# --- one-off charges ---------------------------------------------------------------------------


def _subscribe(
    session_factory: sessionmaker[Session], clock: FrozenClock, org_id: str, version: str
) -> None:
    with session_factory() as session:
        billing.start_subscription(session, clock, org_id, version, with_trial=False)
        session.commit()


def test_a_one_off_charge_is_confirmed_with_its_amount_and_a_reason_then_audited(
    billing_staff: TestClient,
    world: World,
    plans: Plans,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    _subscribe(session_factory, clock, world.org.id, plans.monthly)
    url = f"/console/customers/{world.org.id}"
    csrf = csrf_of(billing_staff, url)
    form = {
        "csrf_token": csrf,
        "description": "Migration of 40 accounts",
        "amount": "120.50",
    }
    ask = billing_staff.post(url + "/charges", data=form)
    assert ask.status_code == 200 and "Please confirm" in ask.text
    assert f"Charge Acme Chat {format_money(Decimal('120.50'), 'EUR')}?" in ask.text
    no_reason = billing_staff.post(url + "/charges", data={**form, "confirmed": "yes"})
    assert "Give a reason" in no_reason.text
    with session_factory() as session:
        assert billing.list_pending_charges(session, world.org.id) == []
    done = billing_staff.post(
        url + "/charges", data={**form, "confirmed": "yes", "reason": "agreed by phone"}
    )
    assert done.status_code == 303
    with session_factory() as session:
        [charge] = billing.list_pending_charges(session, world.org.id)
        assert (charge.amount, charge.currency) == (Decimal("120.50"), "EUR")
        assert charge.description == "Migration of 40 accounts"
        [event] = audit.list_events(
            session, organization_id=world.org.id, action="billing.charge_added"
        )[0]
        assert event.actor_label == world.staff[StaffRole.BILLING].email
    page = billing_staff.get(url)
    assert "Migration of 40 accounts" in page.text  # listed as waiting for the next invoice


@pytest.mark.parametrize(
    ("amount", "description", "field", "message"),
    [
        ("", "Setup", "amount", "Type the amount to charge"),
        ("abc", "Setup", "amount", "Type a number such as 25 or 25.50."),
        ("1e400", "Setup", "amount", "Type an amount below"),
        ("12.345", "Setup", "amount", "more decimals than EUR allows"),
        ("-5", "Setup", "amount", "Type an amount above zero"),
        ("10", "", "description", "Say what the charge is for"),
        ("10", "x" * 501, "description", "Describe the charge in 1 to 500 characters."),
    ],
)
def test_a_bad_charge_is_refused_beside_its_field_before_any_confirmation(
    billing_staff: TestClient,
    world: World,
    plans: Plans,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
    amount: str,
    description: str,
    field: str,
    message: str,
) -> None:
    _subscribe(session_factory, clock, world.org.id, plans.monthly)
    url = f"/console/customers/{world.org.id}"
    csrf = csrf_of(billing_staff, url)
    r = billing_staff.post(
        url + "/charges",
        data={"csrf_token": csrf, "amount": amount, "description": description},
    )
    assert 400 <= r.status_code < 500, r.text[:300]
    assert "Please confirm" not in r.text
    assert "error-summary" in r.text and f'id="e-{field}"' in r.text and message in r.text
    assert f'value="{amount}"' in r.text  # what was typed is kept
    with session_factory() as session:
        assert session.scalars(select(PendingCharge)).all() == []


@pytest.mark.parametrize("role", [StaffRole.SUPPORT, StaffRole.READ_ONLY])
def test_staff_who_may_not_change_billing_cannot_change_plans_or_charge(
    pages: FastAPI,
    world: World,
    plans: Plans,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
    role: StaffRole,
) -> None:
    _subscribe(session_factory, clock, world.org.id, plans.monthly)
    client = as_staff(pages, world.staff[role])
    url = f"/console/customers/{world.org.id}"
    page = client.get(url)
    csrf = CSRF.search(page.text)
    assert page.status_code == 200 and csrf is not None
    assert "Change the plan" not in page.text and "Add a one-off charge" not in page.text
    token = csrf.group(1)
    plan = client.post(
        url + "/plan",
        data={"csrf_token": token, "plan_version_id": plans.bigger, "confirmed": "yes"},
    )
    charge = client.post(
        url + "/charges",
        data={
            "csrf_token": token,
            "amount": "10",
            "description": "x",
            "confirmed": "yes",
            "reason": "r",
        },
    )
    assert plan.status_code == 403 and charge.status_code == 403
    with session_factory() as session:
        sub = billing.current_subscription(session, world.org.id)
        assert sub is not None and sub.plan_version_id == plans.monthly
        assert session.scalars(select(PendingCharge)).all() == []


def test_a_customer_without_a_subscription_cannot_be_charged(
    billing_staff: TestClient, world: World, session_factory: sessionmaker[Session]
) -> None:
    url = f"/console/customers/{world.org.id}"
    assert "there is no invoice to add a charge to" in billing_staff.get(url).text
    r = billing_staff.post(
        url + "/charges",
        data={"csrf_token": csrf_of(billing_staff, url), "amount": "10", "description": "x"},
    )
    assert r.status_code == 422 and "error-summary" in r.text
    assert "Acme Chat has no subscription" in r.text
    with session_factory() as session:
        assert session.scalars(select(PendingCharge)).all() == []
