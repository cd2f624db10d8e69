"""Billing details (portal and API), the seller details form (console), and the invoice page
with what makes an invoice a legal document."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import audit
from imhost.accounts.models import Organization, OrgRole, StaffRole
from imhost.billing import service as billing
from imhost.billing.flows import run_billing
from imhost.billing.models import Invoice
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock
from imhost.web import console, portal
from tests.billing.factories import make_plan
from tests.factories import World, make_world
from tests.web.test_pages import as_user


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        made = make_world(session, clock)
        session.commit()
        return made


@pytest.fixture
def pages(app: FastAPI) -> FastAPI:
    portal.install(app)
    console.install(app)
    return app


DETAILS = {
    "name": "Acme Chat GmbH",
    "street_1": "Torstraße 5",
    "street_2": "",
    "street_3": "",
    "postcode": "10119",
    "city": "Berlin",
    "country": "FR",
    "tax_id": "FR 40 303 265 045",
    "invoice_email": "Invoices@Acme.example",
}


def _url(of: World) -> str:
    return f"/portal/orgs/{of.org.slug}/billing/details"


def test_a_wrong_vat_id_is_refused_in_plain_words_and_nothing_is_saved(
    pages: FastAPI,
    world: World,
    session_factory: sessionmaker[Session],
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.BILLING])
    bad = client.post(
        _url(world), data={**DETAILS, "tax_id": "FR 41 303 265 045", "csrf_token": csrf}
    )
    assert bad.status_code == 422
    assert 'id="e-tax_id"' in bad.text and "error-summary" in bad.text
    assert "not a valid EU VAT ID" in bad.text and 'value="FR 41 303 265 045"' in bad.text
    assert "stdnum" not in bad.text and "InvalidChecksum" not in bad.text
    other_country = client.post(_url(world), data={**DETAILS, "country": "BE", "csrf_token": csrf})
    assert other_country.status_code == 422
    assert "That VAT ID is from FR, but the billing country is BE" in other_country.text
    with session_factory() as s:
        assert billing.get_customer_details(s, world.org.id) is None


def test_billing_details_are_saved_audited_and_shown_again(
    pages: FastAPI,
    world: World,
    session_factory: sessionmaker[Session],
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.BILLING])
    saved = client.post(_url(world), data={**DETAILS, "csrf_token": csrf})
    assert saved.status_code == 303
    page = client.get(_url(world))
    assert 'value="FR40303265045"' in page.text and 'value="Torstraße 5"' in page.text
    with session_factory() as s:
        details = billing.get_customer_details(s, world.org.id)
        assert details is not None and details.invoice_email == "invoices@acme.example"
        events, _ = audit.list_events(
            s, organization_id=world.org.id, action="billing.customer_details_changed"
        )
    assert len(events) == 1 and events[0].actor_label == "billing@a.example.com"
    assert "tax_id" in events[0].details["changed"]
    read_only, read_csrf = as_user(pages, world.members[OrgRole.READ_ONLY])
    shown = read_only.get(_url(world))
    assert (
        shown.status_code == 200
        and "Torstraße 5" in shown.text
        and "<form" not in shown.text.split("Billing details</h1>")[1]
    )
    refused = read_only.post(_url(world), data={**DETAILS, "csrf_token": read_csrf})
    assert refused.status_code == 403


def test_the_api_sets_and_reads_billing_details_with_plain_errors(
    pages: FastAPI,
    world: World,
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    url = f"/api/v1/orgs/{world.org.id}/billing/details"
    body = {
        "name": "Acme",
        "address": "Torstraße 5",
        "postcode": "10119",
        "city": "Berlin",
        "country": "DE",
    }
    bad = client.put(url, json={**body, "tax_id": "DE136695975"}, headers={"X-CSRF-Token": csrf})
    assert bad.status_code == 422 and "not a valid EU VAT ID" in bad.text
    four_lines = client.put(
        url, json={**body, "address": "a\nb\nc\nd"}, headers={"X-CSRF-Token": csrf}
    )
    assert four_lines.status_code == 422 and "at most 3 lines" in four_lines.text
    done = client.put(
        url, json={**body, "tax_id": "de 136 695 976"}, headers={"X-CSRF-Token": csrf}
    )
    assert done.status_code == 200 and done.json()["tax_id"] == "DE136695976"
    assert client.get(url).json()["address"] == "Torstraße 5"


def test_the_invoice_page_shows_the_legal_parts_and_offers_the_e_invoice(
    pages: FastAPI,
    world: World,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    with transaction(session_factory) as s:
        billing.update_profile(
            s,
            clock,
            legal_name="imhost GmbH",
            address="Hauptstraße 1",
            postcode="10115",
            city="Berlin",
            provider_tax_id="DE136695976",
        )
        billing.set_tax_rate(s, clock, "DE", "19")
        billing.set_tax_rate(s, clock, "FR", "20")
        billing.update_customer_details(
            s,
            clock,
            s.get_one(Organization, world.org.id),
            name="Acme Chat GmbH",
            address="Rue 1",
            postcode="75001",
            city="Paris",
            country="FR",
            tax_id="FR40303265045",
            invoice_email="",
        )
        billing.start_subscription(s, clock, world.org.id, make_plan(s, clock).id)
    run_billing(session_factory, clock, clock.now())
    with session_factory() as s:
        invoice = s.scalars(select(Invoice).where(Invoice.organization_id == world.org.id)).one()
    client, _csrf = as_user(pages, world.members[OrgRole.READ_ONLY])
    page = client.get(f"/portal/orgs/{world.org.slug}/billing/invoices/{invoice.id}")
    assert page.status_code == 200
    for part in (
        "imhost GmbH",
        "Hauptstraße 1",
        "10115 Berlin",
        "VAT ID: DE136695976",
        "Acme Chat GmbH",
        "75001 Paris",
        "VAT ID: FR40303265045",
        "Issue date",
        "Due date",
        "Service period",
        "0 %, reverse charge",
        "Article 196",
        "Download e-invoice (XML)",
    ):
        assert part in page.text, part
    xml = client.get(f"/portal/orgs/{world.org.slug}/billing/invoices/{invoice.id}/e-invoice")
    assert xml.status_code == 200 and xml.headers["content-type"].startswith("application/xml")
    assert b"<ram:CategoryCode>AE</ram:CategoryCode>" in xml.content
    api = client.get(f"/api/v1/orgs/{world.org.id}/billing/invoices/{invoice.id}/e-invoice")
    assert api.status_code == 200 and api.content == xml.content


def test_staff_set_the_seller_details_in_the_console(
    pages: FastAPI,
    world: World,
    session_factory: sessionmaker[Session],
) -> None:
    client, csrf = as_user(pages, world.staff[StaffRole.BILLING])
    first = client.get("/console/billing/settings")
    assert "fill in the street address, city, postcode, VAT ID" in first.text
    form = {
        "legal_name": "imhost GmbH",
        "street_1": "Hauptstraße 1",
        "postcode": "10115",
        "city": "Berlin",
        "home_country": "DE",
        "provider_tax_id": "DE 136 695 977",
        "registration_number": "HRB 1",
        "contact_email": "billing@imhost.example",
        "csrf_token": csrf,
    }
    bad = client.post("/console/billing/settings", data=form)
    assert bad.status_code == 422 and 'id="e-provider_tax_id"' in bad.text
    assert "not a valid EU VAT ID" in bad.text
    done = client.post(
        "/console/billing/settings", data={**form, "provider_tax_id": "DE 136 695 976"}
    )
    assert done.status_code == 303
    with session_factory() as s:
        profile = billing.get_profile(s)
        events, _ = audit.list_events(s, organization_id=None, action="billing.settings_changed")
    assert (profile.provider_tax_id, profile.city, profile.registration_number) == (
        "DE136695976",
        "Berlin",
        "HRB 1",
    )
    assert events and "provider_tax_id" in events[0].details["changed"]
    read_only, _ = as_user(pages, world.staff[StaffRole.READ_ONLY])
    shown = read_only.get("/console/billing/settings")
    assert shown.status_code == 200 and "HRB 1" in shown.text
    assert 'action="/console/billing/settings"' not in shown.text
    assert "seller-missing" not in shown.text
