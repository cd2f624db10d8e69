"""Billing events become e-mails (invoice PDF attached) and signed webhooks; dunning."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select

from imhost import events
from imhost.accounts.models import Organization
from imhost.billing import service
from imhost.billing.flows import run_billing
from imhost.billing.models import DunningAction, Invoice, PendingCharge
from imhost.billing.tasks import run_dunning
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.notify.models import EmailAttachment, OutboundEmail, WebhookDelivery
from imhost.runtime import Runtime

from .factories import make_org, make_plan


def _customer(runtime: Runtime, clock: FrozenClock) -> str:
    clock.set(utc(2026, 11, 1, 8))
    with transaction(runtime.session_factory) as s:
        org = make_org(s, clock, org_id="acme", email="ap@acme.example")
        pv = make_plan(s, clock)
        service.start_subscription(s, clock, org.id, pv.id)
        runtime.webhooks.create_endpoint(
            s, clock, organization_id=org.id, url="http://127.0.0.1:9/hook"
        )
    return "acme"


def test_a_finalized_invoice_is_mailed_with_its_pdf_and_announced_by_webhook(
    runtime: Runtime, clock: FrozenClock
) -> None:
    _customer(runtime, clock)
    run_billing(runtime.session_factory, clock, clock.now())
    with runtime.session_factory() as s:
        invoice = s.scalars(select(Invoice)).one()
        mail = s.scalars(select(OutboundEmail).where(OutboundEmail.kind == "invoice")).one()
        attachment = s.scalars(
            select(EmailAttachment).where(EmailAttachment.email_id == mail.id)
        ).one()
        hooks = s.scalars(select(WebhookDelivery.event_type)).all()
    assert mail.to == ["ap@acme.example"]
    assert invoice.number is not None and invoice.number in mail.subject
    assert attachment.filename == f"{invoice.number}.pdf"
    assert attachment.content.startswith(b"%PDF")
    assert "invoice.finalized" in hooks


def test_dunning_reminds_once_per_step_charges_a_late_fee_then_suspends_and_payment_reactivates(
    runtime: Runtime, clock: FrozenClock
) -> None:
    _customer(runtime, clock)
    seen: list[type[events.Event]] = []
    runtime.bus.subscribe(events.OrganizationSuspended, lambda e, s: seen.append(type(e)))
    runtime.bus.subscribe(events.OrganizationReactivated, lambda e, s: seen.append(type(e)))
    run_billing(runtime.session_factory, clock, clock.now())
    with runtime.session_factory() as s:
        invoice = s.scalars(select(Invoice)).one()
        due = invoice.due_at
    assert due == utc(2026, 11, 15)

    def reminders() -> list[str]:
        with runtime.session_factory() as s:
            return list(
                s.scalars(
                    select(OutboundEmail.subject).where(OutboundEmail.kind == "invoice-reminder")
                )
            )

    clock.set(due - timedelta(days=3))
    run_dunning(runtime.session_factory, clock)
    run_dunning(runtime.session_factory, clock)
    assert len(reminders()) == 1 and "due in 3 days" in reminders()[0]

    clock.set(due + timedelta(days=7, hours=1))
    summary = run_dunning(runtime.session_factory, clock)
    assert summary.actions.get("late_fee") == 1
    # The reminders for day 0 and day 3 were missed while the job did not run: only the
    # latest one (7 days overdue) is sent, the others are recorded as skipped.
    assert len(reminders()) == 2 and "7 days overdue" in reminders()[-1]
    with runtime.session_factory() as s:
        fee = s.scalars(select(Invoice).where(Invoice.kind == "late_fee")).one()
        skipped = s.scalars(
            select(DunningAction.step).where(DunningAction.outcome == "skipped")
        ).all()
    assert fee.total == Decimal("5.00")  # 5 % of 49.00 is 2.45, below the 5.00 minimum
    assert sorted(skipped) == ["reminder:0", "reminder:3"]

    clock.set(due + timedelta(days=14, hours=1))
    run_dunning(runtime.session_factory, clock)
    run_dunning(runtime.session_factory, clock)
    with runtime.session_factory() as s:
        org = s.get(Organization, "acme")
        assert org is not None and org.status == "suspended"
    assert seen == [events.OrganizationSuspended]

    with transaction(runtime.session_factory) as s:
        for inv in s.scalars(select(Invoice).where(Invoice.status == "open")):
            service.record_payment(
                s, clock, inv.id, amount=inv.amount_due, currency="EUR", recorded_by="staff"
            )
    with runtime.session_factory() as s:
        org = s.get(Organization, "acme")
        assert org is not None and org.status == "active"
    assert seen == [events.OrganizationSuspended, events.OrganizationReactivated]


def test_a_domain_fee_event_becomes_one_pending_charge_even_if_published_twice(
    runtime: Runtime, clock: FrozenClock
) -> None:
    _customer(runtime, clock)
    event = events.DomainFeeIncurred(
        at=clock.now(),
        organization_id="acme",
        description="Renewal of acme.example for one year",
        amount=Decimal("12.00"),
        currency="EUR",
        reference="renewal:acme.example:2026",
    )
    for _ in range(2):
        with transaction(runtime.session_factory) as s:
            events.publish(s, event)
    with runtime.session_factory() as s:
        charges = s.scalars(select(PendingCharge)).all()
    assert [(c.source, c.amount) for c in charges] == [("domain", Decimal("12.00"))]
    # Recorded after the opening invoice's billing point (00:00), the fee waits for the next.
    clock.set(utc(2026, 12, 1, 1))
    run_billing(runtime.session_factory, clock, clock.now())
    with runtime.session_factory() as s:
        kinds = {
            inv.period_start: [line.kind for line in service.invoice_lines(s, inv.id)]
            for inv in s.scalars(select(Invoice))
        }
    assert "domain" not in kinds[utc(2026, 11, 1)]
    assert "domain" in kinds[utc(2026, 12, 1)]
