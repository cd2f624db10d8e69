"""Usage API specifications: batch ingestion, usage to date, forecast, records, budgets."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import tokens
from imhost.accounts.audit import Actor
from imhost.accounts.models import Organization, OrgRole, StaffRole
from imhost.hosting import service as hosting
from imhost.kit.clock import FrozenClock, utc
from imhost.metering import aggregate, closing
from imhost.metering.models import LateUsagePolicy
from imhost.metering.models import UsageRecord as MeteredUsage
from tests.factories import World, make_world
from tests.web.conftest import signed_in

JAN = utc(2026, 1, 1)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(utc(2026, 1, 11))


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        w = make_world(session, clock)
        session.commit()
        return w


@pytest.fixture
def engine_client(
    app: FastAPI,
    world: World,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> Iterator[TestClient]:
    """An external engine: an API token of organization A with ``usage:write``."""
    with session_factory() as session:
        issued = tokens.create_token(
            session,
            clock,
            organization_id=world.org.id,
            name="engine",
            scopes=["usage:write"],
            role=OrgRole.TECHNICAL.value,
            created_by=Actor.system(),
        )
        session.commit()
    client = TestClient(app, raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {issued.plaintext}"
    yield client


def record(
    key: str, metric: str = "messages", quantity: object = 5, **kw: object
) -> dict[str, object]:
    return {
        "metric": metric,
        "bucket_start": "2026-01-10T09:30:00Z",
        "quantity": quantity,
        "idempotency_key": key,
        **kw,
    }


def test_an_engine_sends_a_batch_and_a_retry_counts_once(
    engine_client: TestClient, world: World
) -> None:
    url = f"/api/v1/orgs/{world.org.id}/usage"
    batch = {"records": [record("a"), record("b", quantity="7")]}
    first = engine_client.post(url, json=batch)
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": 2, "duplicates": 0, "corrected": 0, "rejected": []}
    again = engine_client.post(url, json=batch)
    assert again.json()["duplicates"] == 2
    usage = engine_client.get(f"/api/v1/orgs/{world.org.id}/usage")
    # The token has usage:write, which implies read.
    assert usage.status_code == 200
    assert Decimal(usage.json()["quantities"]["messages"]) == 12
    assert usage.json()["units"]["traffic_gb"].startswith("GB")


def test_an_atomic_batch_with_a_bad_record_is_refused_whole_with_every_reason(
    engine_client: TestClient, world: World, session_factory: sessionmaker[Session]
) -> None:
    url = f"/api/v1/orgs/{world.org.id}/usage"
    batch = {"records": [record("a"), record("b", metric="pigeons"), record("c", quantity=-1)]}
    response = engine_client.post(url, json=batch)
    assert response.status_code == 422
    body = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert [r["index"] for r in body["rejections"]] == [1, 2]
    assert "pigeons" in body["rejections"][0]["reason"]
    with session_factory() as session:
        assert (
            aggregate.billable_quantities(session, world.org.id, JAN, utc(2026, 2, 1))["messages"]
            == 0
        )


def test_a_non_atomic_batch_keeps_the_good_records_and_lists_the_bad(
    engine_client: TestClient, world: World
) -> None:
    url = f"/api/v1/orgs/{world.org.id}/usage"
    batch = {"atomic": False, "records": [record("a"), record("b", metric="pigeons")]}
    response = engine_client.post(url, json=batch)
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert response.json()["rejected"][0]["key"] == "b"


def test_usage_for_another_tenants_service_is_refused_with_its_reason(
    engine_client: TestClient,
    world: World,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    with session_factory() as session:
        org = session.get(Organization, world.org.id)
        other = session.get(Organization, world.other_org.id)
        assert org is not None and other is not None
        mine = hosting.create_service(session, clock, org, base_domain="im.test", domain="a.test")
        theirs = hosting.create_service(
            session, clock, other, base_domain="im.test", domain="b.test"
        )
        session.commit()
        mine_id, theirs_id = mine.id, theirs.id
    url = f"/api/v1/orgs/{world.org.id}/usage"
    batch = {
        "records": [
            record("own", service_id=mine_id),
            record("foreign", service_id=theirs_id),
            record("made-up", service_id="no-such-service"),
            record("none"),
        ]
    }
    refused = engine_client.post(url, json=batch)
    assert refused.status_code == 422, refused.text
    reasons = {r["key"]: r["reason"] for r in refused.json()["rejections"]}
    assert set(reasons) == {"foreign", "made-up"}
    assert reasons["foreign"] == (
        f"service_id {theirs_id!r} is not a hosted service of organization {world.org.id!r}"
    )
    kept = engine_client.post(url, json={**batch, "atomic": False})
    assert kept.status_code == 200
    assert kept.json()["accepted"] == 2
    with session_factory() as session:
        stored = session.scalars(select(MeteredUsage.service_id)).all()
    assert sorted(stored, key=str) == sorted([mine_id, None], key=str)


def test_staff_ingestion_refuses_a_service_of_another_organization_than_the_records(
    app: FastAPI,
    world: World,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    with session_factory() as session:
        other = session.get(Organization, world.other_org.id)
        assert other is not None
        theirs = hosting.create_service(
            session, clock, other, base_domain="im.test", domain="b.test"
        )
        session.commit()
        theirs_id = theirs.id
    staff = signed_in(app, world.staff[StaffRole.ADMIN])
    batch = {
        "atomic": False,
        "records": [
            record("wrong", organization_id=world.org.id, service_id=theirs_id),
            record("right", organization_id=world.other_org.id, service_id=theirs_id),
        ],
    }
    response = staff.post("/api/v1/admin/usage", json=batch)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    assert [r["key"] for r in response.json()["rejected"]] == ["wrong"]


def test_a_batch_is_bounded_and_malformed_input_is_a_422(
    engine_client: TestClient, world: World
) -> None:
    url = f"/api/v1/orgs/{world.org.id}/usage"
    too_many = {"records": [record(f"k{i}") for i in range(10_001)]}
    assert engine_client.post(url, json=too_many).status_code == 422
    assert engine_client.post(url, json={"records": [{"metric": "messages"}]}).status_code == 422


def test_an_engine_token_cannot_send_usage_for_another_organization(
    engine_client: TestClient, world: World
) -> None:
    other = f"/api/v1/orgs/{world.other_org.id}/usage"
    assert engine_client.post(other, json={"records": [record("a")]}).status_code == 404
    mine = f"/api/v1/orgs/{world.org.id}/usage"
    foreign = record("a", organization_id=world.other_org.id)
    response = engine_client.post(mine, json={"records": [foreign], "atomic": False})
    assert "does not match" in response.json()["rejected"][0]["reason"]


def test_staff_ingest_across_organizations_and_set_the_late_policy(
    app: FastAPI,
    world: World,
    session_factory: sessionmaker[Session],
) -> None:
    admin = signed_in(app, world.staff[StaffRole.ADMIN])
    batch = {
        "records": [
            record("a", organization_id=world.org.id),
            record("a", organization_id=world.other_org.id, quantity=9),
        ]
    }
    response = admin.post("/api/v1/admin/usage", json=batch)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2
    policy = admin.put(
        "/api/v1/admin/usage/late-policy", json={"late_usage_policy": "next_invoice"}
    )
    assert policy.json() == {"late_usage_policy": "next_invoice"}
    with session_factory() as session:
        assert closing.get_late_usage_policy(session) is LateUsagePolicy.NEXT_INVOICE
    support = signed_in(app, world.staff[StaffRole.SUPPORT])
    assert support.post("/api/v1/admin/usage", json=batch).status_code == 403


def test_the_forecast_without_a_subscription_is_zero_and_says_how_it_is_made(
    engine_client: TestClient, world: World
) -> None:
    engine_client.post(f"/api/v1/orgs/{world.org.id}/usage", json={"records": [record("a")]})
    response = engine_client.get(f"/api/v1/orgs/{world.org.id}/usage/forecast")
    assert response.status_code == 200
    assert Decimal(response.json()["total"]) == 0
    assert "linear" in response.json()["method"]


def test_the_records_behind_a_metric_are_listed(engine_client: TestClient, world: World) -> None:
    batch = {"records": [record("a", "bytes_in", 100), record("b", "bytes_out", 50)]}
    engine_client.post(f"/api/v1/orgs/{world.org.id}/usage", json=batch)
    response = engine_client.get(
        f"/api/v1/orgs/{world.org.id}/usage/records",
        params={
            "metric": "traffic_gb",
            "period_start": "2026-01-01T00:00:00Z",
            "period_end": "2026-02-01T00:00:00Z",
        },
    )
    assert response.status_code == 200
    assert [r["metric"] for r in response.json()] == ["bytes_in", "bytes_out"]


def test_the_billing_role_manages_the_budget_and_a_technical_member_only_reads_it(
    app: FastAPI,
    world: World,
) -> None:
    billing = signed_in(app, world.members[OrgRole.BILLING])
    technical = signed_in(app, world.members[OrgRole.TECHNICAL])
    url = f"/api/v1/orgs/{world.org.id}/budgets"
    created = billing.post(url, json={"amount": "100", "currency": "EUR", "hard_cap": True})
    assert created.status_code == 201, created.text
    budget = created.json()
    assert budget["thresholds"] == [50, 80, 100]
    assert billing.post(url, json={"amount": "100", "currency": "EUR"}).status_code == 409
    assert technical.get(url).json()[0]["id"] == budget["id"]
    change = {"amount": "150", "currency": "EUR", "thresholds": [75]}
    assert technical.put(f"{url}/{budget['id']}", json=change).status_code == 403
    changed = billing.put(f"{url}/{budget['id']}", json=change)
    assert changed.json()["thresholds"] == [75] and changed.json()["amount"] == "150.00"
    assert billing.get(f"{url}/{budget['id']}/alerts").json() == []
    assert billing.delete(f"{url}/{budget['id']}").status_code == 204
    assert billing.get(url).json() == []
    bad = billing.post(url, json={"amount": "-5", "currency": "EUR"})
    assert bad.status_code == 422


def test_usage_and_forecast_follow_the_subscriptions_period_and_prices(
    app: FastAPI,
    world: World,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    from imhost.billing import subscriptions
    from imhost.billing.flows import run_billing
    from imhost.catalog import service as catalog

    with session_factory() as session:
        catalog.seed_default_plans(session, clock)
        version = catalog.current_plan_version(session, "starter")
        sub = subscriptions.start_subscription(
            session, clock, world.org.id, version.id, with_trial=False
        )
        period = (sub.current_period_start, sub.current_period_end)
        session.commit()
    run_billing(session_factory, clock, clock.now())  # the first period's base fee, in advance
    owner = signed_in(app, world.members[OrgRole.OWNER])
    engine_batch = {
        "records": [record("a", quantity=150_000, bucket_start=clock.now().isoformat())]
    }
    assert owner.post(f"/api/v1/orgs/{world.org.id}/usage", json=engine_batch).status_code == 200
    # At the very start of the period the usage stamped at that instant already counts.
    at_start = owner.get(f"/api/v1/orgs/{world.org.id}/usage").json()
    assert Decimal(at_start["quantities"]["messages"]) == 150_000
    clock.advance(timedelta(days=10))
    owner = signed_in(app, world.members[OrgRole.OWNER])  # the old session has timed out
    usage = owner.get(f"/api/v1/orgs/{world.org.id}/usage").json()
    assert usage["period_start"].startswith(period[0].date().isoformat())
    assert Decimal(usage["quantities"]["messages"]) == 150_000
    forecast = owner.get(f"/api/v1/orgs/{world.org.id}/usage/forecast").json()
    assert forecast["currency"] == "EUR" and Decimal(forecast["base_fee"]) == Decimal("9.00")
    lines = {line["metric"]: line for line in forecast["lines"]}
    assert set(lines) == {"messages", "traffic_gb", "monthly_active_users", "storage_gb"}
    assert Decimal(lines["messages"]["projected_quantity"]) >= 150_000
    # The next invoice: this period's usage, projected, and the next period's base fee.
    assert Decimal(forecast["total"]) == Decimal("9.00") + sum(
        Decimal(line["projected_amount"]) for line in forecast["lines"]
    )
    assert forecast["invoice_at"].startswith(period[1].date().isoformat())
    kinds = [line["kind"] for line in forecast["invoice_lines"]]
    assert kinds.count("usage") >= 1 and "base_fee" in kinds and kinds[-1] == "tax"
    # A budget must be in the currency the organization is billed in.
    wrong = owner.post(
        f"/api/v1/orgs/{world.org.id}/budgets", json={"amount": "50", "currency": "USD"}
    )
    assert wrong.status_code == 422 and wrong.json()["field"] == "currency"
