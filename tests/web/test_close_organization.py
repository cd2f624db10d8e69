"""The data export (GDPR Art. 15/20) and closing an organization, in the portal and the API."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from decimal import Decimal

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import tokens
from imhost.accounts.audit import Actor
from imhost.accounts.models import AuditEvent, Organization, OrgRole, StaffRole
from imhost.billing import service as billing
from imhost.billing.flows import run_billing
from imhost.billing.models import Invoice, PendingCharge, Subscription
from imhost.db.engine import transaction
from imhost.hosting import service as hosting
from imhost.hosting.models import HostedService, XmppAccount
from imhost.kit.clock import FrozenClock, utc
from imhost.notify.models import OutboundEmail
from imhost.runtime import Runtime
from imhost.web import portal
from tests.billing.factories import make_plan
from tests.factories import PASSWORD, World, make_world
from tests.web.conftest import signed_in

EXPECTED_FILES = {
    "README.txt",
    "organization.json",
    "members.csv",
    "services.json",
    "xmpp_accounts.csv",
    "invoices.json",
    "invoices.csv",
    "payments.csv",
    "credit_ledger.csv",
    "usage_by_month.csv",
    "audit_log.csv",
}


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
    return app


@pytest.fixture
def customer(pages: FastAPI, world: World, clock: FrozenClock) -> Invoice:
    """A subscribed customer: an open invoice, its service with two XMPP accounts, an API
    token and a pending invitation."""
    runtime: Runtime = pages.state.runtime
    with transaction(runtime.session_factory) as s:
        billing.start_subscription(s, clock, world.org.id, make_plan(s, clock).id)
    run_billing(runtime.session_factory, clock, clock.now())
    with transaction(runtime.session_factory) as s:
        (service,) = hosting.services_of(s, world.org.id)
        for name in ("ann", "bob"):
            hosting.create_account(
                s,
                clock,
                service,
                username=name,
                password=None,
                security=runtime.settings.security,
                iterations=4096,
            )
        tokens.create_token(
            s,
            clock,
            organization_id=world.org.id,
            name="ci",
            scopes=["hosting:read"],
            role=OrgRole.ADMIN.value,
            created_by=Actor.system(),
        )
        invoice = s.scalars(select(Invoice).where(Invoice.status == "open")).one()
        s.expunge(invoice)
    return invoice


def _csrf(client: TestClient, path: str) -> str:
    page = client.get(path)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert page.status_code == 200 and found is not None, page.text[:300]
    return found.group(1)


def _close(client: TestClient, world: World, name: str, password: str = PASSWORD) -> Response:
    path = f"/portal/orgs/{world.org.slug}/close"
    return client.post(
        path,
        data={"csrf_token": _csrf(client, path), "confirm_name": name, "password": password},
        follow_redirects=False,
    )


def _count(session_factory: sessionmaker[Session], action: str) -> int:
    with session_factory() as s:
        return s.scalar(select(func.count()).where(AuditEvent.action == action)) or 0


def test_the_export_holds_every_part_and_never_a_password_hash(
    pages: FastAPI, world: World, customer: Invoice, session_factory: sessionmaker[Session]
) -> None:
    owner = signed_in(pages, world.members[OrgRole.OWNER])
    got = owner.get(f"/portal/orgs/{world.org.slug}/export")
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/zip"
    assert "acme-chat-data-2026-11-01.zip" in got.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(got.content))
    names = set(archive.namelist())
    assert names >= EXPECTED_FILES
    assert f"invoices/{customer.number}.pdf" in names
    assert archive.read(f"invoices/{customer.number}.pdf").startswith(b"%PDF")
    accounts = list(csv.DictReader(io.StringIO(archive.read("xmpp_accounts.csv").decode())))
    domain = json.loads(archive.read("services.json"))[0]["domain"]
    assert [a["address"] for a in accounts] == [f"ann@{domain}", f"bob@{domain}"]
    members = list(csv.DictReader(io.StringIO(archive.read("members.csv").decode())))
    assert {m["email"] for m in members} == {u.email for u in world.members.values()}
    invoices = json.loads(archive.read("invoices.json"))
    assert invoices[0]["number"] == customer.number
    assert Decimal(invoices[0]["total"]) == customer.total and invoices[0]["lines"]
    with session_factory() as s:
        secrets = [
            k
            for a in s.scalars(select(XmppAccount))
            for k in (a.sha256_stored_key, a.sha256_server_key, a.sha1_stored_key)
        ]
    everything = b"".join(archive.read(n) for n in names if not n.endswith(".pdf"))
    assert b"stored_key" not in everything and b"salt" not in everything
    for key in secrets:
        assert key.hex().encode() not in everything
    audit_rows = archive.read("audit_log.csv").decode()
    assert "member.added" in audit_rows
    assert _count(session_factory, "org.data_exported") == 1


def test_only_the_owner_exports_or_closes(
    pages: FastAPI, world: World, customer: Invoice, session_factory: sessionmaker[Session]
) -> None:
    base = f"/portal/orgs/{world.org.slug}"
    admin = signed_in(pages, world.members[OrgRole.ADMIN])
    assert admin.get(f"{base}/export").status_code == 403
    assert admin.get(f"{base}/close").status_code == 403
    assert "Download the data export" not in admin.get(f"{base}/settings").text
    owner_settings = signed_in(pages, world.members[OrgRole.OWNER]).get(f"{base}/settings")
    assert f"{base}/export" in owner_settings.text and f"{base}/close" in owner_settings.text
    staff = signed_in(pages, world.staff[StaffRole.ADMIN])
    refused = staff.post(
        f"/api/v1/orgs/{world.org.id}/close",
        json={"confirm_name": world.org.name, "password": PASSWORD},
    )
    assert refused.status_code == 403
    with session_factory() as s:
        org = s.get(Organization, world.org.id)
        assert org is not None and org.status == "active"


def test_closing_needs_the_export_first_then_the_name_and_the_password(
    pages: FastAPI, world: World, customer: Invoice, session_factory: sessionmaker[Session]
) -> None:
    owner = signed_in(pages, world.members[OrgRole.OWNER])
    first = _close(owner, world, world.org.name)
    assert first.status_code == 409 and "Download the data export first" in first.text
    owner.get(f"/portal/orgs/{world.org.slug}/export")
    page = owner.get(f"/portal/orgs/{world.org.slug}/close")
    assert "2 XMPP accounts are deleted" in page.text and "downloaded" in page.text
    wrong_name = _close(owner, world, "Acme")
    assert wrong_name.status_code == 422 and 'id="e-confirm_name"' in wrong_name.text
    wrong_password = _close(owner, world, world.org.name, password="not the password")
    assert wrong_password.status_code == 401 and "That password is not right." in (
        wrong_password.text
    )
    with session_factory() as s:
        org = s.get(Organization, world.org.id)
        assert org is not None and org.status == "active"
        assert s.scalar(select(func.count()).select_from(XmppAccount)) == 2


def test_closing_stops_everything_keeps_the_invoices_tells_the_members_and_happens_once(
    pages: FastAPI,
    world: World,
    customer: Invoice,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    owner = signed_in(pages, world.members[OrgRole.OWNER])
    owner.get(f"/portal/orgs/{world.org.slug}/export")
    closed = _close(owner, world, f"  {world.org.name} ")
    assert closed.status_code == 303 and closed.headers["location"] == "/portal/orgs"
    with session_factory() as s:
        org = s.get(Organization, world.org.id)
        assert org is not None and org.status == "closed"
        assert s.scalar(select(func.count()).select_from(XmppAccount)) == 0
        (service,) = s.scalars(select(HostedService).where(HostedService.organization_id == org.id))
        assert service.status == "suspended"
        sub = s.scalars(select(Subscription)).one()
        assert sub.canceled_at == clock.now() and sub.current_period_end == clock.now()
        credit = s.scalars(select(PendingCharge).where(PendingCharge.source == "proration"))
        assert sum(c.amount for c in credit) < 0  # the unused period is credited
        assert all(t.revoked_at is not None for t in tokens.list_tokens(s, org.id))
        invoice = s.get(Invoice, customer.id)
        assert invoice is not None and invoice.status == "open"
        mail = s.scalars(select(OutboundEmail).where(OutboundEmail.kind == "org-closed")).one()
        assert set(mail.to) == {u.email for u in world.members.values()}
    # The invoices stay available to members who may see billing; the banner says it.
    billing_member = signed_in(pages, world.members[OrgRole.BILLING])
    page = billing_member.get(f"/portal/orgs/{world.org.slug}/billing/invoices/{customer.id}")
    assert page.status_code == 200 and "This organization is closed." in page.text
    # A closed organization takes no more changes (and outsiders still learn nothing).
    invite = owner.post(
        f"/api/v1/orgs/{world.org.id}/invitations",
        json={"email": "late@a.example.com", "role": "technical"},
    )
    assert invite.status_code == 409 and "closed" in invite.json()["detail"]
    outsider = signed_in(pages, world.outsider).post(
        f"/api/v1/orgs/{world.org.id}/invitations",
        json={"email": "late@a.example.com", "role": "technical"},
    )
    assert outsider.status_code == 404
    # Its home page says so first, and keeps the invoice to pay.
    home = owner.get(f"/portal/orgs/{world.org.slug}/")
    assert home.status_code == 200
    assert "This organization is closed. Its invoices stay available here." in home.text
    assert f"Invoice {customer.number}" in home.text and "The service" not in home.text
    # Signing in lands on the list of organizations.
    landing = owner.get("/portal/", follow_redirects=False)
    assert landing.headers["location"] == "/portal/orgs"
    # Once: the same request again changes nothing, nor does the API.
    again = owner.post(
        f"/portal/orgs/{world.org.slug}/close",
        data={
            "csrf_token": _csrf(owner, "/portal/orgs"),
            "confirm_name": world.org.name,
            "password": PASSWORD,
        },
        follow_redirects=False,
    )
    assert again.status_code == 303
    api = owner.post(
        f"/api/v1/orgs/{world.org.id}/close",
        json={"confirm_name": world.org.name, "password": PASSWORD},
    )
    assert api.status_code == 200 and api.json() == {"status": "closed", "closed_now": False}
    assert _count(session_factory, "org.closed") == 1
    with session_factory() as s:
        assert s.scalar(select(func.count()).where(OutboundEmail.kind == "org-closed")) == 1


def test_the_api_exports_and_closes_for_the_owner_signed_in_never_for_a_token(
    pages: FastAPI, world: World, customer: Invoice, session_factory: sessionmaker[Session]
) -> None:
    runtime: Runtime = pages.state.runtime
    with transaction(runtime.session_factory) as s:
        issued = tokens.create_token(
            s,
            runtime.clock,
            organization_id=world.org.id,
            name="owner token",
            scopes=["closure:read", "closure:write"],
            role=OrgRole.OWNER.value,
            created_by=Actor.system(),
        )
    bot = TestClient(pages, raise_server_exceptions=False)
    bot.headers["Authorization"] = f"Bearer {issued.plaintext}"
    exported = bot.get(f"/api/v1/orgs/{world.org.id}/export")
    assert exported.status_code == 200
    assert "organization.json" in zipfile.ZipFile(io.BytesIO(exported.content)).namelist()
    refused = bot.post(
        f"/api/v1/orgs/{world.org.id}/close",
        json={"confirm_name": world.org.name, "password": PASSWORD},
    )
    assert refused.status_code == 403 and "API token" in refused.json()["detail"]
    owner = signed_in(pages, world.members[OrgRole.OWNER])
    bad = owner.post(f"/api/v1/orgs/{world.org.id}/close", json={"confirm_name": "x"})
    assert bad.status_code == 422
    done = owner.post(
        f"/api/v1/orgs/{world.org.id}/close",
        json={"confirm_name": world.org.name, "password": PASSWORD},
    )
    assert done.status_code == 200 and done.json() == {"status": "closed", "closed_now": True}
