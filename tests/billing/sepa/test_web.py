"""SEPA through the portal, the console and the API: the mandate form (plain errors, masked
IBAN), staff settings, export download (same bytes twice), statement upload (result page,
plain refusal of a file that is not a statement) and the API's problem answers."""

from __future__ import annotations

import re
from datetime import date

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import OrgRole, StaffRole
from imhost.billing.sepa.collections import queue_collection
from imhost.billing.sepa.mandates import active_mandate
from imhost.billing.sepa.models import SepaCollection, SepaMandate
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.web import console, portal
from tests.factories import World, make_world
from tests.web.conftest import signed_in
from tests.web.test_pages import as_user

from .helpers import (
    CREDITOR_ID,
    DEBTOR_IBAN,
    Tx,
    assert_schema_valid,
    camt053,
    open_invoice,
    set_up_creditor,
)


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    clock.set(utc(2026, 2, 2, 9))
    with session_factory() as session:
        made = make_world(session, clock)
        set_up_creditor(session, clock)
        session.commit()
        return made


@pytest.fixture
def pages(app: FastAPI) -> FastAPI:
    portal.install(app)
    console.install(app)
    return app


def _dd(world: World) -> str:
    return f"/portal/orgs/{world.org.slug}/billing/direct-debit"


def test_the_mandate_form_shows_the_mandate_and_refuses_a_bad_iban_plainly(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.BILLING])
    page = client.get(_dd(world))
    assert page.status_code == 200
    assert CREDITOR_ID in page.text and "SEPA Direct Debit Mandate" in page.text
    bad = client.post(
        _dd(world),
        data={
            "csrf_token": csrf,
            "account_holder": "Acme Chat",
            "iban": "DE89 3704 0044 0532 0130 01",
            "accept": "yes",
        },
    )
    assert bad.status_code == 422
    assert "There is a problem" in bad.text
    assert "its check digits do not match" in bad.text
    assert 'href="#f-iban"' in bad.text
    assert "DE89 3704 0044 0532 0130 01" in bad.text  # what was typed stays in the form
    assert "There is a problem" in bad.text  # one problem: the box was ticked
    both = client.post(
        _dd(world),
        data={"csrf_token": csrf, "account_holder": "", "iban": "DE89", "bic": "X"},
    )
    assert both.status_code == 422 and "There are problems" in both.text
    for words in ("Fill in the account holder", "not a valid IBAN", "not a BIC", "Tick the box"):
        assert words in both.text
    with session_factory() as s:
        assert active_mandate(s, world.org.id) is None
    unticked = client.post(
        _dd(world),
        data={"csrf_token": csrf, "account_holder": "Acme Chat", "iban": DEBTOR_IBAN},
    )
    assert unticked.status_code == 422 and "Tick the box to accept" in unticked.text


def test_a_mandate_given_in_the_portal_is_recorded_and_shown_masked(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    done = client.post(
        _dd(world),
        data={
            "csrf_token": csrf,
            "account_holder": "Acme Chat GmbH",
            "iban": "de75 5121 0800 1245 1261 99",
            "bic": "DEUTDEFF500",
            "accept": "yes",
        },
    )
    assert done.status_code == 303
    with session_factory() as s:
        mandate = s.scalars(select(SepaMandate)).one()
        assert mandate.iban == "DE75512108001245126199"
        assert mandate.signed_by == world.members[OrgRole.OWNER].email
        assert mandate.signed_from == "testclient"
    page = client.get(_dd(world))
    assert "DE75 **** 6199" in page.text
    assert "DE75512108001245126199" not in page.text and "5121 0800" not in page.text
    assert mandate.reference in page.text
    # withdrawing asks first, then does it
    url = f"{_dd(world)}/{mandate.id}/revoke"
    ask = client.post(url, data={"csrf_token": csrf})
    assert ask.status_code == 200 and "Withdraw the direct debit mandate" in ask.text
    assert client.post(url, data={"csrf_token": csrf, "confirmed": "yes"}).status_code == 303
    with session_factory() as s:
        assert active_mandate(s, world.org.id) is None


def test_a_read_only_member_sees_the_page_but_not_the_form(pages: FastAPI, world: World) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.READ_ONLY])
    page = client.get(_dd(world))
    assert page.status_code == 200 and "Accept the mandate" not in page.text
    refused = client.post(
        _dd(world),
        data={"csrf_token": csrf, "account_holder": "x", "iban": DEBTOR_IBAN, "accept": "yes"},
    )
    assert refused.status_code == 403


def test_the_api_gives_a_problem_for_a_bad_iban_and_masks_the_iban(
    app: FastAPI, world: World
) -> None:
    client = signed_in(app, world.members[OrgRole.OWNER])
    base = f"/api/v1/orgs/{world.org.id}/billing/sepa"
    bad = client.post(
        base + "/mandates",
        json={"account_holder": "Acme", "iban": "DE00123", "accept": True},
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert "not a valid IBAN" in bad.json()["detail"]
    good = client.post(
        base + "/mandates",
        json={"account_holder": "Acme", "iban": DEBTOR_IBAN, "accept": True},
    )
    assert good.status_code == 201, good.text
    assert good.json()["iban"] == "DE89 **** 3000"
    assert DEBTOR_IBAN not in good.text
    listed = client.get(base + "/mandates").json()
    assert [m["reference"] for m in listed] == [good.json()["reference"]]


def _collection_waiting(world: World, factory: sessionmaker[Session], clock: FrozenClock) -> str:
    with transaction(factory) as s:
        from imhost.billing.sepa.mandates import sign_mandate

        mandate = sign_mandate(
            s,
            clock,
            world.org.id,
            account_holder="Acme",
            iban=DEBTOR_IBAN,
            accepted=True,
            signed_by="owner",
            signed_from="192.0.2.1",
        )
        invoice = open_invoice(s, clock, world.org.id, "49.00")
        return queue_collection(s, clock, invoice, mandate, idempotency_key="w").end_to_end_id


def test_staff_export_and_download_the_same_file_twice(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    e2e = _collection_waiting(world, session_factory, clock)
    client, csrf = as_user(pages, world.staff[StaffRole.BILLING])
    page = client.get("/console/sepa")
    assert page.status_code == 200 and e2e in page.text
    bad = client.post("/console/sepa/export", data={"csrf_token": csrf, "up_to": "soon"})
    assert bad.status_code == 422 and "Type a date such as" in bad.text
    done = client.post("/console/sepa/export", data={"csrf_token": csrf, "up_to": "2026-03-01"})
    assert done.status_code == 303
    page = client.get("/console/sepa")
    link = re.search(r'href="(/console/sepa/batches/[0-9a-f]+/file)"', page.text)
    assert link is not None
    first = client.get(link.group(1))
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("application/xml")
    assert_schema_valid("pain.008.001.02", first.content)
    assert client.get(link.group(1)).content == first.content
    again = client.post("/console/sepa/export", data={"csrf_token": csrf, "up_to": "2026-03-01"})
    assert again.status_code == 303
    assert "No debit is waiting" in client.get("/console/sepa").text
    with session_factory() as s:
        assert s.scalars(select(SepaCollection)).one().status == "exported"


def test_staff_upload_a_statement_and_see_the_result(
    pages: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    e2e = _collection_waiting(world, session_factory, clock)
    client, csrf = as_user(pages, world.staff[StaffRole.ADMIN])
    client.post("/console/sepa/export", data={"csrf_token": csrf, "up_to": "2026-03-01"})
    data = camt053(
        [
            Tx("49.00", "DBIT", e2e, reference="R1", return_reason="MD06"),
            Tx("12.00", remittance="donation", reference="U1"),
        ]
    )
    files = {"file": ("statement.xml", data, "application/xml")}
    done = client.post("/console/sepa/statements", data={"csrf_token": csrf}, files=files)
    assert done.status_code == 303
    result = client.get(done.headers["location"])
    assert result.status_code == 200
    assert "direct debit returned" in result.text
    assert "asked the bank to refund it" in result.text
    assert "to assign" in result.text
    # the same file again: nothing changes, and the page says so
    again = client.post("/console/sepa/statements", data={"csrf_token": csrf}, files=files)
    assert again.status_code == 303
    with session_factory() as s:
        assert s.scalars(select(SepaCollection)).one().status == "failed"


@pytest.mark.parametrize(
    "content", [b"", b"hello", b"<html><body>statement</body></html>", b"\xff\xfe\x00<"]
)
def test_a_file_that_is_not_a_statement_gets_a_plain_4xx(
    pages: FastAPI, world: World, content: bytes
) -> None:
    client, csrf = as_user(pages, world.staff[StaffRole.ADMIN])
    files = {"file": ("x.xml", content, "application/xml")}
    page = client.post("/console/sepa/statements", data={"csrf_token": csrf}, files=files)
    assert 400 <= page.status_code < 500
    assert "This is not a camt.053 bank statement" in page.text
    api = signed_in(pages, world.staff[StaffRole.ADMIN]).post(
        "/api/v1/admin/billing/sepa/statements",
        content=content,
        headers={"content-type": "application/xml"},
    )
    assert api.status_code == 422
    assert api.json()["detail"].startswith("This is not a camt.053 bank statement")


def test_staff_settings_refuse_a_wrong_creditor_identifier(pages: FastAPI, world: World) -> None:
    client, csrf = as_user(pages, world.staff[StaffRole.BILLING])
    form = {
        "csrf_token": csrf,
        "creditor_name": "Provider",
        "creditor_id": "DE97ZZZ09999999999",
        "iban": DEBTOR_IBAN,
        "pre_notification_days": "14",
    }
    bad = client.post("/console/sepa/settings", data=form)
    assert bad.status_code == 422 and "check digits do not match" in bad.text
    form["creditor_id"] = "DE98ZZZ09999999999"
    assert client.post("/console/sepa/settings", data=form).status_code == 303
    api = signed_in(pages, world.staff[StaffRole.BILLING])
    assert api.get("/api/v1/admin/billing/sepa/settings").json()["ready"] is True


def test_the_api_exports_and_imports(
    app: FastAPI, world: World, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    e2e = _collection_waiting(world, session_factory, clock)
    client = signed_in(app, world.staff[StaffRole.BILLING])
    base = "/api/v1/admin/billing/sepa"
    batch = client.post(base + "/batches", json={"up_to": "2026-03-01"})
    assert batch.status_code == 201, batch.text
    assert batch.json()["count"] == 1 and batch.json()["control_sum"] == "49.00"
    assert client.post(base + "/batches", json={"up_to": "2026-03-01"}).status_code == 204
    file = client.get(batch.json()["file_url"])
    assert_schema_valid("pain.008.001.02", file.content)
    data = camt053([Tx("49.00", end_to_end_id=e2e, reference="C1")], message_id="API-1")
    imported = client.post(
        base + "/statements", content=data, headers={"content-type": "application/xml"}
    )
    assert imported.status_code == 201, imported.text
    assert [e["outcome"] for e in imported.json()["entries"]] == ["collected"]
    twice = client.post(
        base + "/statements", content=data, headers={"content-type": "application/xml"}
    )
    assert twice.json()["already_imported"] is True
    collections = client.get(base + "/collections").json()
    assert [c["status"] for c in collections] == ["collected"]
    assert date.fromisoformat(collections[0]["collection_date"]) == date(2026, 2, 16)
