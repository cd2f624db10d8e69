"""The billing API: who may do what, and the customer's and staff's flows end to end."""

from __future__ import annotations

import contextlib
import zlib
from decimal import Decimal

from fastapi import FastAPI

from imhost.accounts.models import OrgRole, StaffRole
from imhost.billing import service
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.runtime import Runtime
from tests.factories import make_world
from tests.web.conftest import signed_in

from .factories import add_usage, make_plan, messages_per_unit


def _setup(app: FastAPI, clock: FrozenClock) -> tuple[object, str, str]:
    runtime: Runtime = app.state.runtime
    clock.set(utc(2026, 11, 1, 8))
    with transaction(runtime.session_factory) as s:
        world = make_world(s, clock)
        service.set_tax_rate(s, clock, "DE", "19")
        business = make_plan(s, clock, components=[messages_per_unit()])
        enterprise = make_plan(s, clock, name="Enterprise", base_fee="99.00")
        ids = (business.id, enterprise.id)
    return world, ids[0], ids[1]


def test_customer_subscribes_is_invoiced_and_downloads_the_pdf(
    app: FastAPI, clock: FrozenClock
) -> None:
    world, business, _ = _setup(app, clock)
    org_id = world.org.id  # type: ignore[attr-defined]
    owner = signed_in(app, world.members[OrgRole.OWNER])  # type: ignore[attr-defined]
    r = owner.post(
        f"/api/v1/orgs/{org_id}/billing/subscription", json={"plan_version_id": business}
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "active"

    staff = signed_in(app, world.staff[StaffRole.BILLING])  # type: ignore[attr-defined]
    r = staff.post("/api/v1/admin/billing/runs", json={})
    assert r.status_code == 200, r.text
    assert r.json()["invoices"] == 1

    r = owner.get(f"/api/v1/orgs/{org_id}/billing/invoices")
    assert r.status_code == 200
    [item] = r.json()["items"]
    assert item["number"] == "INV-2026-000001"
    assert Decimal(item["total"]) == Decimal("58.31")

    detail = owner.get(f"/api/v1/orgs/{org_id}/billing/invoices/{item['id']}").json()
    assert [line["kind"] for line in detail["lines"]] == ["base_fee", "tax"]
    assert detail["lines"][1]["calculation"] == "19 % of 49.00 = 9.31"

    pdf = owner.get(f"/api/v1/orgs/{org_id}/billing/invoices/{item['id']}/pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert b"INV-2026-000001" in _pdf_text(pdf.content)
    html = owner.get(f"/api/v1/orgs/{org_id}/billing/invoices/{item['id']}/html")
    assert "INV-2026-000001" in html.text and "9.31" in html.text

    r = staff.post(
        f"/api/v1/admin/billing/invoices/{item['id']}/payments",
        json={"amount": "60.00", "currency": "EUR", "reference": "INV-2026-000001"},
    )
    assert r.status_code == 201, r.text
    credit = owner.get(f"/api/v1/orgs/{org_id}/billing/credit").json()
    assert Decimal(credit["balances"]["EUR"]) == Decimal("1.69")
    paid = owner.get(f"/api/v1/orgs/{org_id}/billing/invoices/{item['id']}").json()
    assert paid["status"] == "paid"


def _pdf_text(data: bytes) -> bytes:
    """The PDF's bytes with its compressed streams inflated (fpdf2 deflates page content)."""
    out = [data]
    start = 0
    while True:
        i = data.find(b"stream\n", start)
        if i < 0:
            break
        j = data.find(b"endstream", i)
        with contextlib.suppress(zlib.error):
            out.append(zlib.decompress(data[i + 7 : j].rstrip(b"\r\n")))
        start = j + 9
    return b"".join(out)


def test_roles_follow_the_permission_matrix(app: FastAPI, clock: FrozenClock) -> None:
    world, business, enterprise = _setup(app, clock)
    org_id = world.org.id  # type: ignore[attr-defined]
    members = world.members  # type: ignore[attr-defined]
    owner = signed_in(app, members[OrgRole.OWNER])
    assert (
        owner.post(
            f"/api/v1/orgs/{org_id}/billing/subscription", json={"plan_version_id": business}
        ).status_code
        == 201
    )

    read_only = signed_in(app, members[OrgRole.READ_ONLY])
    assert read_only.get(f"/api/v1/orgs/{org_id}/billing/subscription").status_code == 200
    r = read_only.post(
        f"/api/v1/orgs/{org_id}/billing/subscription/change",
        json={"plan_version_id": enterprise},
    )
    assert r.status_code == 403

    technical = signed_in(app, members[OrgRole.TECHNICAL])
    assert technical.get(f"/api/v1/orgs/{org_id}/billing/invoices").status_code == 403

    billing = signed_in(app, members[OrgRole.BILLING])
    r = billing.post(
        f"/api/v1/orgs/{org_id}/billing/subscription/preview",
        json={"plan_version_id": enterprise},
    )
    assert r.status_code == 200, r.text

    outsider = signed_in(app, world.outsider)  # type: ignore[attr-defined]
    assert outsider.get(f"/api/v1/orgs/{org_id}/billing/subscription").status_code == 404
    assert outsider.post("/api/v1/admin/billing/runs", json={}).status_code == 403

    support = signed_in(app, world.staff[StaffRole.SUPPORT])  # type: ignore[attr-defined]
    assert support.post("/api/v1/admin/billing/runs", json={}).status_code == 403
    staff_ro = signed_in(app, world.staff[StaffRole.READ_ONLY])  # type: ignore[attr-defined]
    assert staff_ro.get("/api/v1/admin/billing/invoices").status_code == 200
    assert (
        staff_ro.put("/api/v1/admin/billing/tax-rates/FR", json={"percent": "20"}).status_code
        == 403
    )


def test_bad_input_is_refused_with_a_reason(app: FastAPI, clock: FrozenClock) -> None:
    world, business, _ = _setup(app, clock)
    org_id = world.org.id  # type: ignore[attr-defined]
    owner = signed_in(app, world.members[OrgRole.OWNER])  # type: ignore[attr-defined]
    r = owner.post(f"/api/v1/orgs/{org_id}/billing/subscription", json={"plan_version_id": "nope"})
    assert r.status_code == 404
    assert "plan version" in r.json()["detail"]
    owner.post(f"/api/v1/orgs/{org_id}/billing/subscription", json={"plan_version_id": business})

    staff = signed_in(app, world.staff[StaffRole.ADMIN])  # type: ignore[attr-defined]
    r = staff.post(
        f"/api/v1/admin/billing/orgs/{org_id}/charges",
        json={"description": "Migration", "amount": "-5", "currency": "EUR", "reason": "x"},
    )
    assert r.status_code == 422
    r = staff.post(
        f"/api/v1/admin/billing/orgs/{org_id}/charges",
        json={"description": "Migration", "amount": "5", "currency": "XXX", "reason": "x"},
    )
    assert r.status_code == 422 and "currency" in r.text
    staff.post("/api/v1/admin/billing/runs", json={})
    invoice_id = owner.get(f"/api/v1/orgs/{org_id}/billing/invoices").json()["items"][0]["id"]
    r = staff.post(
        f"/api/v1/admin/billing/invoices/{invoice_id}/payments",
        json={"amount": "10.00", "currency": "USD"},
    )
    assert r.status_code == 422 and "EUR" in r.json()["detail"]


def test_a_usage_line_links_to_the_usage_records_behind_it(
    app: FastAPI, clock: FrozenClock
) -> None:
    world, business, _ = _setup(app, clock)
    org_id = world.org.id  # type: ignore[attr-defined]
    runtime: Runtime = app.state.runtime
    owner = signed_in(app, world.members[OrgRole.OWNER])  # type: ignore[attr-defined]
    owner.post(f"/api/v1/orgs/{org_id}/billing/subscription", json={"plan_version_id": business})
    clock.set(utc(2026, 11, 20))
    with transaction(runtime.session_factory) as s:
        add_usage(s, clock, org_id, utc(2026, 11, 10, 12), 2500, key="m-1")
    clock.set(utc(2026, 12, 1, 1))
    staff = signed_in(app, world.staff[StaffRole.BILLING])  # type: ignore[attr-defined]
    assert staff.post("/api/v1/admin/billing/runs", json={}).json()["invoices"] == 2
    owner = signed_in(app, world.members[OrgRole.OWNER])  # type: ignore[attr-defined]
    items = owner.get(f"/api/v1/orgs/{org_id}/billing/invoices").json()["items"]
    latest = next(i for i in items if i["period_start"].startswith("2026-12-01"))
    detail = owner.get(f"/api/v1/orgs/{org_id}/billing/invoices/{latest['id']}").json()
    [usage] = [line for line in detail["lines"] if line["kind"] == "usage"]
    assert usage["calculation"] and usage["metric"] == "messages"
    records = owner.get(usage["usage_url"])
    assert records.status_code == 200, records.text
    assert [Decimal(str(r["quantity"])) for r in records.json()] == [Decimal(2500)]


def test_a_time_without_a_zone_is_refused_not_a_server_error(
    app: FastAPI, clock: FrozenClock
) -> None:
    world, business, _ = _setup(app, clock)
    org_id = world.org.id  # type: ignore[attr-defined]
    owner = signed_in(app, world.members[OrgRole.OWNER])  # type: ignore[attr-defined]
    owner.post(f"/api/v1/orgs/{org_id}/billing/subscription", json={"plan_version_id": business})
    staff = signed_in(app, world.staff[StaffRole.ADMIN])  # type: ignore[attr-defined]
    staff.post("/api/v1/admin/billing/runs", json={})
    invoice_id = owner.get(f"/api/v1/orgs/{org_id}/billing/invoices").json()["items"][0]["id"]
    r = staff.post(
        f"/api/v1/admin/billing/invoices/{invoice_id}/payments",
        json={"amount": "5.00", "currency": "EUR", "received_at": "2026-11-02T10:00:00"},
    )
    assert r.status_code == 422 and "time zone" in r.text
    r = staff.post(
        "/api/v1/admin/billing/coupons",
        json={
            "code": "X1",
            "kind": "percent",
            "percent_off": "10",
            "duration": "once",
            "redeem_by": "2027-01-01T00:00:00",
        },
    )
    assert r.status_code == 422 and "time zone" in r.text
