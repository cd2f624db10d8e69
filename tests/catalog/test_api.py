"""Catalog API specifications: public plans for anyone, changes for catalog staff only."""

from __future__ import annotations

from decimal import Decimal

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import OrgRole, StaffRole
from imhost.catalog import service
from imhost.kit.clock import FrozenClock
from tests.factories import World, make_world
from tests.web.conftest import signed_in

NEW_PLAN = {
    "code": "pro",
    "name": "Pro",
    "version": {
        "currency": "EUR",
        "base_fee": "29.00",
        "components": [
            {
                "metric": "messages",
                "pricing_model": "volume",
                "tiers": [
                    {"up_to": 1000, "unit_price": "0.01"},
                    {"up_to": None, "unit_price": "0.005"},
                ],
            }
        ],
    },
}


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        w = make_world(session, clock)
        service.seed_default_plans(session, clock)
        session.commit()
        return w


def test_anyone_can_read_the_public_plans_and_their_prices(
    app_client: TestClient, world: World
) -> None:
    response = app_client.get("/api/v1/plans")
    assert response.status_code == 200
    plans = response.json()
    assert [p["code"] for p in plans] == ["starter", "business", "enterprise"]
    starter = plans[0]["versions"][0]
    assert starter["currency"] == "EUR" and Decimal(starter["base_fee"]) == Decimal("9.00")
    assert {c["metric"] for c in starter["components"]} >= {"messages", "storage_gb"}
    one = app_client.get("/api/v1/plans/business")
    assert one.status_code == 200 and one.json()["name"] == "Business"
    assert app_client.get("/api/v1/plans/nope").status_code == 404
    assert app_client.get("/api/v1/plans", params={"currency": "USD"}).json()[0]["versions"] == []


def test_catalog_staff_create_a_plan_and_a_new_price_version(
    app: FastAPI,
    world: World,
    app_client: TestClient,
) -> None:
    billing_staff = signed_in(app, world.staff[StaffRole.BILLING])
    created = billing_staff.post("/api/v1/admin/plans", json=NEW_PLAN)
    assert created.status_code == 201, created.text
    assert created.json()["versions"][0]["version"] == 1
    version = billing_staff.post(
        "/api/v1/admin/plans/pro/versions", json={"base_fee": "35.00", "change_note": "rise"}
    )
    assert version.status_code == 201, version.text
    assert version.json()["version"] == 2
    assert version.json()["components"][0]["pricing_model"] == "volume"
    history = billing_staff.get("/api/v1/admin/plans/pro").json()
    assert [v["version"] for v in history["versions"]] == [1, 2]
    assert history["versions"][0]["superseded_at"] is not None
    public = app_client.get("/api/v1/plans/pro").json()
    assert [v["base_fee"] for v in public["versions"]] == ["35.00"]


def test_invalid_prices_are_refused_with_the_field_named(
    app: FastAPI,
    world: World,
) -> None:
    admin = signed_in(app, world.staff[StaffRole.ADMIN])
    bad = {**NEW_PLAN, "version": {**NEW_PLAN["version"]}}  # type: ignore[dict-item]
    bad["version"]["components"] = [  # type: ignore[index]
        {"metric": "pigeons", "pricing_model": "per_unit", "unit_price": "1"}
    ]
    response = admin.post("/api/v1/admin/plans", json=bad)
    assert response.status_code == 422
    assert response.json()["field"] == "components[0].metric"
    tiers_wrong = {
        "components": [
            {"metric": "messages", "pricing_model": "graduated", "tiers": [{"up_to": 5}]}
        ]
    }
    response = admin.post("/api/v1/admin/plans/starter/versions", json=tiers_wrong)
    assert response.status_code == 422
    assert response.json()["field"] == "components[0].tiers[0].up_to"


def test_only_catalog_staff_change_plans(
    app: FastAPI,
    world: World,
) -> None:
    support = signed_in(app, world.staff[StaffRole.SUPPORT])
    owner = signed_in(app, world.members[OrgRole.OWNER])
    assert support.post("/api/v1/admin/plans", json=NEW_PLAN).status_code == 403
    assert owner.post("/api/v1/admin/plans", json=NEW_PLAN).status_code == 403
    assert support.get("/api/v1/admin/plans").status_code == 200  # every staff role reads


def test_staff_manage_add_ons_and_retired_ones_leave_the_public_list(
    app: FastAPI,
    world: World,
    app_client: TestClient,
) -> None:
    admin = signed_in(app, world.staff[StaffRole.ADMIN])
    addon = {
        "code": "archive",
        "name": "Message archive",
        "kind": "message_archive",
        "currency": "EUR",
        "price": "5.00",
    }
    assert admin.post("/api/v1/admin/addons", json=addon).status_code == 201
    assert [a["code"] for a in app_client.get("/api/v1/addons").json()] == ["archive"]
    changed = admin.patch("/api/v1/admin/addons/archive/EUR", json={"price": "6.00"})
    assert changed.json()["price"] == "6.00"
    assert admin.delete("/api/v1/admin/addons/archive/EUR").json()["is_active"] is False
    assert app_client.get("/api/v1/addons").json() == []
    assert len(admin.get("/api/v1/admin/addons").json()) == 1


def test_a_plan_is_billed_every_n_months_or_weeks_and_says_so_in_plain_words(
    app: FastAPI,
    world: World,
    app_client: TestClient,
) -> None:
    staff = signed_in(app, world.staff[StaffRole.BILLING])
    quarterly = {**NEW_PLAN, "version": {**NEW_PLAN["version"], "billing_interval": "3 months"}}
    created = staff.post("/api/v1/admin/plans", json=quarterly)
    assert created.status_code == 201, created.text
    [version] = created.json()["versions"]
    assert version["billing_interval"] == "quarterly"
    assert version["interval"] == {
        "count": 3,
        "unit": "month",
        "alignment": "anniversary",
        "description": "every 3 months",
    }
    weekly = staff.post(
        "/api/v1/admin/plans/pro/versions",
        json={"billing_interval": "calendar-every-2-weeks", "base_fee": "7.00"},
    )
    assert weekly.status_code == 201, weekly.text
    assert weekly.json()["interval"]["description"] == "every 2 weeks, from Mondays"
    public = app_client.get("/api/v1/plans/pro").json()
    assert sorted(v["interval"]["description"] for v in public["versions"]) == [
        "every 2 weeks, from Mondays",
        "every 3 months",
    ]


@pytest.mark.parametrize(
    ("interval", "says"),
    [
        ("every-0-months", "1 to 36 months"),
        ("every-99-weeks", "1 to 52 weeks"),
        ("calendar-every-5-months", "different months every year"),
        ("fortnightly", "unknown billing interval"),
        ("x" * 300, "at most 40 characters"),
    ],
)
def test_a_nonsense_interval_is_refused_with_a_clear_message(
    app: FastAPI, world: World, interval: str, says: str
) -> None:
    staff = signed_in(app, world.staff[StaffRole.BILLING])
    bad = {**NEW_PLAN, "version": {**NEW_PLAN["version"], "billing_interval": interval}}
    response = staff.post("/api/v1/admin/plans", json=bad)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert says in response.text
