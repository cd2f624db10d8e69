"""SEPA wired into saved payment methods, Pay now and dunning, end to end: a mandate given in
the portal is the default payment method; Pay now (and the hourly job) queue one collection
through the generic layer; the pain.008 export and a camt.053 booking pay the invoice once and
stop the reminders; a return fails the attempt, the next reminder says why, and the debit is
tried again (``-R2``) at the step after it, once."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import OrgRole
from imhost.billing.models import Invoice, Payment, PaymentAttempt, PaymentMethod
from imhost.billing.sepa.exports import export_batch
from imhost.billing.sepa.imports import import_statement
from imhost.billing.sepa.models import SepaCollection
from imhost.billing.sepa.tasks import scheduled_queue
from imhost.billing.tasks import run_dunning
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.notify.models import OutboundEmail
from imhost.runtime import Runtime
from imhost.web import portal
from tests.factories import World, make_world
from tests.web.test_pages import as_user

from .helpers import DEBTOR_IBAN, Tx, camt053, open_invoice, set_up_creditor


@pytest.fixture
def factory(app: FastAPI) -> sessionmaker[Session]:
    """The app's sessions: events reach its e-mails and webhooks on commit."""
    runtime: Runtime = app.state.runtime
    return runtime.session_factory


@pytest.fixture
def world(factory: sessionmaker[Session], clock: FrozenClock) -> World:
    clock.set(utc(2026, 2, 2, 9))
    with factory() as session:
        made = make_world(session, clock)
        set_up_creditor(session, clock)
        session.commit()
        return made


@pytest.fixture
def pages(app: FastAPI) -> FastAPI:
    portal.install(app)
    return app


def _base(world: World) -> str:
    return f"/portal/orgs/{world.org.slug}/billing"


def _give_mandate(pages: FastAPI, world: World) -> tuple[object, str]:
    client, csrf = as_user(pages, world.members[OrgRole.BILLING])
    given = client.post(
        f"{_base(world)}/direct-debit",
        data={
            "csrf_token": csrf,
            "account_holder": "Acme Chat GmbH",
            "iban": DEBTOR_IBAN,
            "accept": "yes",
        },
    )
    assert given.status_code in (200, 303), given.text
    return client, csrf


def _count(factory: sessionmaker[Session], model: type, **where: object) -> int:
    with factory() as s:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int(s.scalar(query) or 0)


def _reminders(factory: sessionmaker[Session]) -> list[tuple[str, str]]:
    with factory() as s:
        return [
            (e.subject, e.text)
            for e in s.scalars(
                select(OutboundEmail)
                .where(OutboundEmail.kind == "invoice-reminder")
                .order_by(OutboundEmail.created_at)
            )
        ]


def _export_and_import(
    factory: sessionmaker[Session], clock: FrozenClock, txs: list[Tx], message_id: str
) -> None:
    with transaction(factory) as s:
        export_batch(s, clock, up_to=date(2026, 3, 31), exported_by="staff")
    with transaction(factory) as s:
        import_statement(
            s, clock, camt053(txs, message_id=message_id), file_name="s.xml", imported_by="staff"
        )


def test_a_mandate_is_the_default_method_pay_now_queues_once_and_the_booking_pays_once(
    pages: FastAPI,
    world: World,
    factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    session_factory = factory
    client, csrf = _give_mandate(pages, world)
    methods = client.get(f"{_base(world)}/payment-methods")
    assert "SEPA Direct Debit, IBAN DE89 **** 3000" in methods.text
    assert "Manage the mandate" in methods.text and "/billing/direct-debit" in methods.text
    with session_factory() as s:
        [method] = s.scalars(select(PaymentMethod)).all()
        assert method.gateway == "sepa" and method.is_default and method.kind == "sepa_debit"
    with transaction(session_factory) as s:
        invoice = open_invoice(s, clock, world.org.id, "49.00")
        invoice_id, due = invoice.id, invoice.due_at
    assert due is not None
    pay = f"{_base(world)}/invoices/{invoice_id}/pay"
    first = client.post(pay, data={"csrf_token": csrf}, follow_redirects=True)
    again = client.post(pay, data={"csrf_token": csrf}, follow_redirects=True)  # double click
    assert first.status_code == again.status_code == 200
    with session_factory() as s:
        on = s.scalars(select(SepaCollection)).one().collection_date
    # The lead time the customer is promised: 14 days from today, on a banking day.
    assert on == date(2026, 2, 16)
    for page in (first, again):
        assert "will be collected by direct debit from your SEPA Direct Debit" in page.text
        assert "on 16 February 2026" in page.text
    assert _count(session_factory, SepaCollection) == 1
    assert _count(session_factory, PaymentAttempt) == 1
    # The hourly job leaves it alone: one path, one collection.
    assert scheduled_queue(session_factory, clock) == 0
    assert _count(session_factory, SepaCollection) == 1
    # From the due date on the debit is processing: dunning holds its reminders.
    clock.set(due + timedelta(days=3, hours=1))
    run_dunning(session_factory, clock)
    assert _reminders(session_factory) == []
    with session_factory() as s:
        collection = s.scalars(select(SepaCollection)).one()
        e2e = collection.end_to_end_id
    clock.set(utc(2026, 2, 16, 12))
    statement = [Tx("49.00", end_to_end_id=e2e, reference="BANK-1", booked_on=on)]
    _export_and_import(session_factory, clock, statement, "STMT-1")
    _export_and_import(session_factory, clock, statement, "STMT-2")  # seen again: still once
    with session_factory() as s:
        paid = s.get(Invoice, invoice_id)
        assert paid is not None and paid.status == "paid"
        [payment] = s.scalars(select(Payment)).all()
        assert payment.amount == Decimal("49.00") and payment.driver == "sepa"
        attempt = s.scalars(select(PaymentAttempt)).one()
        assert attempt.status == "succeeded" and attempt.payment_id == payment.id
    clock.set(due + timedelta(days=20))
    run_dunning(session_factory, clock)
    assert _reminders(session_factory) == []


def test_a_return_fails_the_attempt_the_reminder_says_why_and_the_next_step_retries_once(
    pages: FastAPI,
    world: World,
    factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    session_factory = factory
    _give_mandate(pages, world)
    with transaction(session_factory) as s:
        invoice = open_invoice(s, clock, world.org.id, "25.00")
        invoice.due_at = clock.now() + timedelta(days=14)  # a subscription invoice's terms
        invoice_id, due = invoice.id, invoice.due_at
    # The hourly job announces the debit through the generic layer (its key is the
    # collection's); a rerun queues nothing more.
    assert scheduled_queue(session_factory, clock) == 1
    assert scheduled_queue(session_factory, clock) == 0
    with session_factory() as s:
        collection = s.scalars(select(SepaCollection)).one()
        attempt = s.scalars(select(PaymentAttempt)).one()
        assert attempt.idempotency_key == collection.idempotency_key == f"invoice:{invoice_id}:1"
        e2e = collection.end_to_end_id
        assert collection.collection_date == due.date()
    # The reminder before the due date waits while the debit is announced.
    clock.set(due - timedelta(days=3) + timedelta(hours=1))
    run_dunning(session_factory, clock)
    assert _reminders(session_factory) == []
    clock.set(due + timedelta(days=2))
    _export_and_import(
        session_factory,
        clock,
        [Tx("25.00", direction="DBIT", end_to_end_id=e2e, reference="R1", return_reason="AM04")],
        "STMT-R",
    )
    with session_factory() as s:
        attempt = s.scalars(select(PaymentAttempt)).one()
        assert attempt.status == "failed"
        assert "did not have enough money" in (attempt.failure_message or "")
    with factory() as s:
        [told] = s.scalars(
            select(OutboundEmail).where(OutboundEmail.kind == "direct-debit-returned")
        ).all()
        assert "we try the debit again after the next payment reminder" in told.text
    # The next dunning run sends the reminder with the bank's reason and charges nothing.
    run_dunning(session_factory, clock)
    run_dunning(session_factory, clock)
    [(subject, body)] = _reminders(session_factory)
    assert "is due today" in subject
    assert "by direct debit from your SEPA Direct Debit, IBAN DE89 **** 3000" in body
    assert "the account did not have enough money on the day" in body
    assert "AM04" not in body
    assert _count(session_factory, SepaCollection) == 1
    # The step after it collects again, once: a new attempt with its own end-to-end id.
    clock.set(due + timedelta(days=3, hours=1))
    run_dunning(session_factory, clock)
    run_dunning(session_factory, clock)
    assert scheduled_queue(session_factory, clock) == 0
    with session_factory() as s:
        collections = s.scalars(select(SepaCollection).order_by(SepaCollection.attempt)).all()
        assert [c.attempt for c in collections] == [1, 2]
        assert collections[1].end_to_end_id == f"{e2e}-R2"
        assert collections[1].status == "queued"
    assert len(_reminders(session_factory)) == 1  # held while the new debit is processing


def test_withdrawing_the_mandate_removes_the_method_and_fails_its_waiting_debit(
    pages: FastAPI,
    world: World,
    factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    session_factory = factory
    client, csrf = _give_mandate(pages, world)
    with transaction(session_factory) as s:
        invoice_id = open_invoice(s, clock, world.org.id, "10.00").id
    client.post(f"{_base(world)}/invoices/{invoice_id}/pay", data={"csrf_token": csrf})
    page = client.get(f"{_base(world)}/direct-debit")
    [mandate_id] = re.findall(r"/direct-debit/([^/\"]+)/revoke", page.text)
    done = client.post(
        f"{_base(world)}/direct-debit/{mandate_id}/revoke",
        data={"csrf_token": csrf, "confirmed": "yes"},
    )
    assert done.status_code in (200, 303)
    with session_factory() as s:
        method = s.scalars(select(PaymentMethod)).one()
        assert method.status == "removed" and not method.is_default
        attempt = s.scalars(select(PaymentAttempt)).one()
        assert attempt.status == "failed"
        assert s.scalars(select(SepaCollection)).one().status == "cancelled"
    assert "SEPA Direct Debit" not in client.get(f"{_base(world)}/payment-methods").text


def test_a_mandate_given_before_it_was_a_payment_method_is_kept_as_one_by_the_job(
    world: World, factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    from imhost.billing.sepa.mandates import sign_mandate

    with transaction(factory) as s:
        sign_mandate(
            s,
            clock,
            world.org.id,
            account_holder="Acme Chat GmbH",
            iban=DEBTOR_IBAN,
            accepted=True,
            signed_by="owner",
            signed_from="192.0.2.1",
        )
        # As it was before: the mandate without its payment method.
        for method in s.scalars(select(PaymentMethod)):
            s.delete(method)
        open_invoice(s, clock, world.org.id, "12.00")
    assert scheduled_queue(factory, clock) == 1
    assert scheduled_queue(factory, clock) == 0
    with factory() as s:
        method = s.scalars(select(PaymentMethod)).one()
        assert method.is_default and method.label == "SEPA Direct Debit, IBAN DE89 **** 3000"
