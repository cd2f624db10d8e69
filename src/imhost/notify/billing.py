"""E-mails and signed webhooks for billing events.

Billing publishes events (it never imports notify); these subscribers turn them into
messages queued in the publisher's transaction: the invoice e-mail with its PDF attached,
payment receipts, dunning reminders, credit notes, and a webhook for each; and the budget
alert (metering's ``BudgetThresholdCrossed``: the forecast of the next invoice passed a
threshold) to the organization's owners, billing members and invoice address.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.models import Membership, Organization, OrgRole, User
from imhost.billing import subscribers as billing_subscribers
from imhost.billing.collection import invoice_attempts, latest_attempt
from imhost.billing.models import CreditNote, Invoice, Payment, PaymentAttempt, PaymentMethod
from imhost.billing.render import render_invoice_html, render_invoice_pdf
from imhost.kit.clock import Clock
from imhost.kit.money import format_money
from imhost.notify.mail import Mailer
from imhost.notify.webhooks import WebhookService


def invoice_payload(invoice: Invoice) -> dict[str, Any]:
    return {
        "id": invoice.id,
        "number": invoice.number,
        "organization_id": invoice.organization_id,
        "status": invoice.status,
        "currency": invoice.currency,
        "subtotal": str(invoice.subtotal),
        "tax_total": str(invoice.tax_total),
        "total": str(invoice.total),
        "amount_due": str(invoice.amount_due),
        "issued_at": invoice.issued_at.isoformat() if invoice.issued_at else None,
        "due_at": invoice.due_at.isoformat() if invoice.due_at else None,
        "period_start": invoice.period_start.isoformat() if invoice.period_start else None,
        "period_end": invoice.period_end.isoformat() if invoice.period_end else None,
    }


def payment_payload(payment: Payment) -> dict[str, Any]:
    return {
        "id": payment.id,
        "organization_id": payment.organization_id,
        "invoice_id": payment.invoice_id,
        "amount": str(payment.amount),
        "currency": payment.currency,
        "method": payment.method,
        "refunded_amount": str(payment.refunded_amount),
        "received_at": payment.received_at.isoformat(),
    }


def budget_recipients(session: Session, org: Organization) -> list[str]:
    """Who budget alerts go to: the organization's owners and billing contacts (members
    with the billing role), and its invoice address."""
    emails = session.scalars(
        select(User.email)
        .join(Membership, Membership.user_id == User.id)
        .where(
            Membership.organization_id == org.id,
            Membership.role.in_([OrgRole.OWNER.value, OrgRole.BILLING.value]),
        )
        .order_by(User.email)
    )
    return list(dict.fromkeys([*emails, *([org.billing_email] if org.billing_email else [])]))


def register(
    bus: events.EventBus,
    mailer: Mailer,
    webhooks: WebhookService,
    *,
    public_url: str = "",
    provider_name: str = "imhost",
) -> None:
    base = public_url.rstrip("/")

    def clock_of(session: Session) -> Clock:
        clock: Clock = session.info["clock"]
        return clock

    def recipient(session: Session, invoice: Invoice) -> str | None:
        if invoice.customer_email:
            return invoice.customer_email
        org = session.get(Organization, invoice.organization_id)
        return org.billing_email if org else None

    def invoice_link(session: Session, invoice: Invoice) -> str:
        """The invoice's page in the portal, under its organization."""
        org = session.get(Organization, invoice.organization_id)
        slug = org.slug if org is not None else invoice.organization_id
        return f"{base}/portal/orgs/{slug}/billing/invoices/{invoice.id}"

    def methods_link(session: Session, invoice: Invoice) -> str:
        org = session.get(Organization, invoice.organization_id)
        slug = org.slug if org is not None else invoice.organization_id
        return f"{base}/portal/orgs/{slug}/billing/payment-methods"

    def on_invoice(event: events.InvoiceEvent, session: Any) -> None:
        invoice = session.get(Invoice, event.invoice_id)
        if invoice is None:
            return
        clock = clock_of(session)
        webhooks.enqueue(
            session,
            invoice.organization_id,
            f"invoice.{event.kind}",
            invoice_payload(invoice),
            clock=clock,
        )
        to = recipient(session, invoice)
        if to is None:
            return
        amount = format_money(invoice.total, invoice.currency)
        link = invoice_link(session, invoice)
        if event.kind == "finalized":
            due = f"{invoice.due_at:%Y-%m-%d}" if invoice.due_at else "now"
            if invoice.amount_due > 0:
                body = f"Amount due: {format_money(invoice.amount_due, invoice.currency)}, "
                body += f"by {due}."
            else:
                body = "Nothing is due: the invoice is settled."
            mailer.send(
                session,
                clock,
                to,
                f"Invoice {invoice.number} from {provider_name}: {amount}",
                f"Your invoice {invoice.number} of {amount} is attached.\n{body}\n\n"
                f"Every line says how it was computed; see it online: {link}\n",
                html=render_invoice_html(session, invoice),
                attachments=[
                    (
                        f"{invoice.number}.pdf",
                        render_invoice_pdf(session, invoice),
                        "application/pdf",
                    )
                ],
                organization_id=invoice.organization_id,
                kind="invoice",
            )
        elif event.kind == "paid":
            mailer.send(
                session,
                clock,
                to,
                f"Payment received: invoice {invoice.number}",
                f"Thank you: invoice {invoice.number} of {amount} is paid.\n{link}\n",
                organization_id=invoice.organization_id,
                kind="invoice-paid",
            )

    def on_payment(event: events.PaymentEvent, session: Any) -> None:
        payment = session.get(Payment, event.payment_id)
        if payment is None:
            return
        webhooks.enqueue(
            session,
            payment.organization_id,
            f"payment.{event.kind}",
            payment_payload(payment),
            clock=clock_of(session),
        )

    def on_payment_method(event: events.PaymentMethodChanged, session: Any) -> None:
        method = session.get(PaymentMethod, event.payment_method_id)
        if method is None:
            return
        webhooks.enqueue(
            session,
            method.organization_id,
            f"payment_method.{event.kind}",
            {
                "id": method.id,
                "organization_id": method.organization_id,
                "gateway": method.gateway,
                "kind": method.kind,
                "label": method.label,
                "is_default": method.is_default,
                "status": method.status,
            },
            clock=clock_of(session),
        )

    def on_payment_failed(event: events.PaymentAttemptFailed, session: Any) -> None:
        attempt = session.get(PaymentAttempt, event.attempt_id)
        if attempt is None:
            return
        webhooks.enqueue(
            session,
            attempt.organization_id,
            "payment.failed",
            {
                "invoice_id": attempt.invoice_id,
                "amount": str(attempt.amount),
                "currency": attempt.currency,
                "reason": attempt.failure_message,
                "source": attempt.source,
            },
            clock=clock_of(session),
        )

    def on_reminder(event: events.DunningReminderDue, session: Any) -> None:
        invoice = session.get(Invoice, event.invoice_id)
        if invoice is None:
            return
        clock = clock_of(session)
        webhooks.enqueue(
            session,
            invoice.organization_id,
            "invoice.reminder",
            {**invoice_payload(invoice), "step": event.step, "days_from_due": event.days_from_due},
            clock=clock,
        )
        to = recipient(session, invoice)
        if to is None:
            return
        due = format_money(invoice.amount_due, invoice.currency)
        days = event.days_from_due
        if days < 0:
            when = f"is due in {-days} day{'s' if days != -1 else ''}"
        elif days == 0:
            when = "is due today"
        else:
            when = f"is {days} day{'s' if days != 1 else ''} overdue"
        link = invoice_link(session, invoice)
        how = (
            f"Pay by bank transfer with the reference {invoice.number}, or see {link}\n"
            "If you have paid already, thank you, and please ignore this message.\n"
        )
        attempt = latest_attempt(session, invoice.id, f"dunning:{event.step}"[:40])
        if attempt is None:
            # A direct debit queued earlier (Pay now, the debit schedule) that came back.
            tries = invoice_attempts(session, invoice.id)
            attempt = tries[0] if tries and tries[0].gateway == "sepa" else None
        if attempt is not None and attempt.status == "failed":
            method = session.get(PaymentMethod, attempt.payment_method_id or "")
            what = f"your {method.label}" if method is not None else "your saved payment method"
            tried = (
                f"We collected it by direct debit from {what}, and it did not go through"
                if attempt.gateway == "sepa"
                else f"We tried to charge {what} for it today, and the charge failed"
            )
            how = (
                f"{tried}: "
                f"{attempt.failure_message}\n\n"
                f"Update your payment method: {methods_link(session, invoice)}\n"
                f"Or pay now, with another method or by bank transfer with the reference "
                f"{invoice.number}: {link}\n"
            )
        mailer.send(
            session,
            clock,
            to,
            f"Reminder: invoice {invoice.number} {when}",
            f"Invoice {invoice.number} ({due} to pay) {when}.\n{how}",
            attachments=[
                (f"{invoice.number}.pdf", render_invoice_pdf(session, invoice), "application/pdf")
            ],
            organization_id=invoice.organization_id,
            kind="invoice-reminder",
        )

    def on_credit_note(event: events.CreditNoteIssued, session: Any) -> None:
        note = session.get(CreditNote, event.credit_note_id)
        invoice = session.get(Invoice, event.invoice_id)
        if note is None or invoice is None:
            return
        clock = clock_of(session)
        webhooks.enqueue(
            session,
            note.organization_id,
            "credit_note.issued",
            {
                "id": note.id,
                "number": note.number,
                "invoice_id": note.invoice_id,
                "total": str(note.total),
                "currency": note.currency,
                "reason": note.reason,
            },
            clock=clock,
        )
        to = recipient(session, invoice)
        if to is not None:
            mailer.send(
                session,
                clock,
                to,
                f"Credit note {note.number} on invoice {invoice.number}",
                f"We credited {format_money(note.total, note.currency)} on invoice "
                f"{invoice.number}: {note.reason}\n",
                organization_id=note.organization_id,
                kind="credit-note",
            )

    def on_budget(event: events.BudgetThresholdCrossed, session: Any) -> None:
        org = session.get(Organization, event.organization_id)
        if org is None:
            return
        to = budget_recipients(session, org)
        forecast = format_money(event.amount, event.currency)
        budget = format_money(event.budget_amount, event.currency)
        share = (event.amount * 100 / event.budget_amount).quantize(Decimal(1))
        at = event.invoice_at
        when = f" on {at.day} {at:%B %Y}" if at else ""
        mailer.send(
            session,
            clock_of(session),
            to,
            f"Budget alert: your next invoice is forecast at {share} % of your budget",
            (
                f"The forecast of your next invoice{when} is {forecast}, tax included: "
                f"{share} % of your monthly budget of {budget}. You asked to be told when "
                f"it passes {event.threshold} %.\n\n"
                "The forecast assumes your usage continues at the same pace until the end of "
                "the period. We send this once per period and threshold.\n\n"
                f"See your usage, the forecast line by line and your budget: "
                f"{base}/portal/orgs/{org.slug}/billing\n"
            ),
            organization_id=org.id,
            kind="budget-alert",
        )

    bus.subscribe(events.InvoiceEvent, on_invoice)
    bus.subscribe(events.BudgetThresholdCrossed, on_budget)
    bus.subscribe(events.PaymentEvent, on_payment)
    bus.subscribe(events.DunningReminderDue, on_reminder)
    bus.subscribe(events.PaymentAttemptFailed, on_payment_failed)
    bus.subscribe(events.PaymentMethodChanged, on_payment_method)
    bus.subscribe(events.CreditNoteIssued, on_credit_note)


def register_runtime(runtime: Any) -> None:
    """Called by ``imhost.runtime``: billing's own subscribers, then its notifications."""
    billing_subscribers.register(runtime.bus)
    register(
        runtime.bus,
        runtime.mailer,
        runtime.webhooks,
        public_url=runtime.settings.public_url,
        provider_name=runtime.settings.provider_name,
    )
