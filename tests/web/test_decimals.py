"""Decimals in API responses are the same JSON on every database (issue 9: "7.000000000000" and
"0E-12" on PostgreSQL, "7.00" on SQLite): amounts with the currency's minor unit, quantities
without trailing zeros or exponent, and no response schema with a bare Decimal."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated, Any, get_args, get_origin

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel

from imhost.accounts.models import OrgRole, StaffRole
from imhost.billing import service as billing
from imhost.db.engine import transaction
from imhost.kit import decimals
from imhost.kit.clock import FrozenClock, utc
from imhost.runtime import Runtime
from tests.billing.factories import add_usage, make_plan, messages_per_unit
from tests.factories import make_world
from tests.web.conftest import signed_in


@pytest.mark.parametrize(
    ("stored", "currency", "shown"),
    [
        ("7.000000000000", "EUR", "7.00"),
        ("7.00", "EUR", "7.00"),
        ("7", "EUR", "7.00"),
        ("0E-12", "EUR", "0.00"),
        ("-0.000000000000", "EUR", "0.00"),
        ("1000.000000000000", "JPY", "1000"),
        ("1.5", "KWD", "1.500"),
        ("0.000100000000", "EUR", "0.0001"),  # a unit price keeps its digits
        ("1E+3", "EUR", "1000.00"),
    ],
)
def test_an_amount_is_shown_with_its_currencys_minor_unit(
    stored: str, currency: str, shown: str
) -> None:
    assert decimals.text(decimals.with_minor_unit(Decimal(stored), currency)) == shown


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("7.000000000000", "7"),
        ("0E-12", "0"),
        ("3.500000000000", "3.5"),
        ("1E-7", "0.0000001"),
        ("1E+3", "1000"),
        ("0.000000001000", "0.000000001"),
    ],
)
def test_a_quantity_has_no_trailing_zeros_and_no_exponent(stored: str, shown: str) -> None:
    assert decimals.text(decimals.plain(Decimal(stored))) == shown


# --- every response schema --------------------------------------------------------------------


def _models(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in get_args(annotation):
        yield from _models(arg)


def _bare_decimal(annotation: Any, metadata: tuple[Any, ...] = ()) -> bool:
    """Whether a Decimal appears in the annotation without the decimals module's JSON form."""
    if annotation is Decimal:
        return decimals.DECIMAL_JSON not in metadata
    if get_origin(annotation) is Annotated:
        inner, *extra = get_args(annotation)
        return _bare_decimal(inner, (*metadata, *extra))
    return any(_bare_decimal(arg) for arg in get_args(annotation))


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # an included router
        if included is not None:
            yield from _api_routes(included.routes)


def _response_models(app: FastAPI) -> dict[type[BaseModel], set[type[BaseModel]]]:
    """Every model in a response, with the models it appears in (its parents)."""
    parents: dict[type[BaseModel], set[type[BaseModel]]] = {}
    todo: list[tuple[type[BaseModel], type[BaseModel] | None]] = [
        (model, None)
        for route in _api_routes(app.routes)
        if route.response_model is not None
        for model in _models(route.response_model)
    ]
    while todo:
        model, parent = todo.pop()
        known = model in parents
        parents.setdefault(model, set())
        if parent is not None:
            parents[model].add(parent)
        if not known:
            for info in model.model_fields.values():
                todo.extend((child, model) for child in _models(info.annotation))
    return parents


def test_no_response_schema_has_a_bare_decimal(app: FastAPI) -> None:
    parents = _response_models(app)
    assert len(parents) > 50
    bare = [
        f"{model.__name__}.{name}"
        for model in parents
        for name, info in model.model_fields.items()
        if _bare_decimal(info.annotation, tuple(info.metadata))
    ]
    assert bare == [], "use imhost.kit.decimals.Amount or Quantity"


def test_every_amount_in_a_response_knows_its_currency(app: FastAPI) -> None:
    parents = _response_models(app)

    def has_currency(model: type[BaseModel]) -> bool:
        if issubclass(model, decimals.CurrencyAmounts) and "currency" in model.model_fields:
            return True
        return bool(parents[model]) and all(has_currency(p) for p in parents[model])

    without = [
        model.__name__
        for model in parents
        if decimals.amount_fields(model) and not has_currency(model)
    ]
    # Billing settings hold amounts for invoices in any currency: shown plain.
    assert without == ["BillingSettingsOut"]


# --- the same data, the same JSON, on SQLite and on PostgreSQL --------------------------------


def test_the_same_data_gives_the_same_json_on_every_database(
    app: FastAPI, clock: FrozenClock
) -> None:
    runtime: Runtime = app.state.runtime
    clock.set(utc(2026, 11, 1, 8))
    with transaction(runtime.session_factory) as s:
        world = make_world(s, clock)
        billing.set_tax_rate(s, clock, "DE", "19")
        plan = make_plan(s, clock, base_fee="7", components=[messages_per_unit("0.0001")])
        plan_id, org_id = plan.id, world.org.id
    owner = signed_in(app, world.members[OrgRole.OWNER])
    assert owner.post(
        f"/api/v1/orgs/{org_id}/billing/subscription", json={"plan_version_id": plan_id}
    ).is_success
    clock.set(utc(2026, 11, 15))
    with transaction(runtime.session_factory) as s:
        add_usage(s, clock, org_id, utc(2026, 11, 3), 10_000)
    owner = signed_in(app, world.members[OrgRole.OWNER])  # sessions end after 12 hours
    usage = owner.get(f"/api/v1/orgs/{org_id}/usage")
    assert usage.status_code == 200, usage.text
    usage = usage.json()
    assert usage["quantities"] == {
        "messages": "10000",
        "traffic_gb": "0",
        "peak_connections": "0",
        "monthly_active_users": "0",
        "storage_gb": "0",
        "room_messages": "0",
        "room_deliveries": "0",
    }
    forecast = owner.get(f"/api/v1/orgs/{org_id}/usage/forecast").json()
    assert forecast["currency"] == "EUR"
    assert forecast["base_fee"] == "7.00"
    [line] = forecast["lines"]
    assert (line["usage_to_date"], line["projected_amount"]) == ("10000", "2.14")
    records = owner.get(
        f"/api/v1/orgs/{org_id}/usage/records",
        params={
            "metric": "messages",
            "period_start": "2026-11-01T00:00:00Z",
            "period_end": "2026-12-01T00:00:00Z",
        },
    ).json()
    assert [r["quantity"] for r in records] == ["10000"]
    budget = owner.post(
        f"/api/v1/orgs/{org_id}/budgets", json={"amount": "20", "currency": "EUR"}
    ).json()
    assert budget["amount"] == "20.00"

    [version] = owner.get("/api/v1/plans").json()[0]["versions"]
    assert (version["base_fee"], version["setup_fee"]) == ("7.00", "0.00")
    [component] = version["components"]
    assert (component["unit_price"], component["included_quantity"]) == ("0.0001", "0")

    clock.set(utc(2026, 12, 1, 1))
    owner = signed_in(app, world.members[OrgRole.OWNER])
    staff = signed_in(app, world.staff[StaffRole.BILLING])
    # November's base fee (7.00 + 19 % tax) and December's with November's usage
    assert staff.post("/api/v1/admin/billing/runs", json={}).json()["totals"] == {"EUR": "17.85"}
    items = owner.get(f"/api/v1/orgs/{org_id}/billing/invoices").json()["items"]
    assert sorted(i["total"] for i in items) == ["8.33", "9.52"]
    [item] = [i for i in items if i["total"] == "9.52"]
    detail = owner.get(f"/api/v1/orgs/{org_id}/billing/invoices/{item['id']}").json()
    assert {k: detail[k] for k in ("subtotal", "tax_total", "total", "amount_paid")} == {
        "subtotal": "8.00",
        "tax_total": "1.52",
        "total": "9.52",
        "amount_paid": "0.00",
    }
    assert sorted((line["kind"], line["quantity"], line["amount"]) for line in detail["lines"]) == [
        ("base_fee", "1", "7.00"),
        ("tax", None, "1.52"),
        ("usage", "10000", "1.00"),
    ]
