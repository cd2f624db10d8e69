"""E-mails and webhooks for SEPA direct debit: the mandate confirmation, the pre-notification
of each collection (amount and date, ahead of the debit), and a returned debit explained in
plain words. A collected debit sends no e-mail of its own: the invoice's "paid" e-mail says it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.models import Organization
from imhost.billing.models import Invoice
from imhost.billing.sepa.identifiers import mask_iban
from imhost.billing.sepa.models import SepaCollection, SepaMandate
from imhost.billing.sepa.returns import return_reason_words
from imhost.kit.clock import Clock
from imhost.kit.money import format_money
from imhost.notify.billing import budget_recipients
from imhost.notify.mail import Mailer
from imhost.notify.webhooks import WebhookService


def mandate_payload(mandate: SepaMandate) -> dict[str, Any]:
    return {
        "id": mandate.id,
        "organization_id": mandate.organization_id,
        "reference": mandate.reference,
        "status": mandate.status,
        "iban": mask_iban(mandate.iban),
        "signed_at": mandate.signed_at.isoformat(),
        "revoked_at": mandate.revoked_at.isoformat() if mandate.revoked_at else None,
    }


def collection_payload(collection: SepaCollection) -> dict[str, Any]:
    return {
        "id": collection.id,
        "organization_id": collection.organization_id,
        "invoice_id": collection.invoice_id,
        "mandate_id": collection.mandate_id,
        "end_to_end_id": collection.end_to_end_id,
        "amount": str(collection.amount),
        "currency": collection.currency,
        "collection_date": collection.collection_date.isoformat(),
        "status": collection.status,
        "return_reason": collection.return_reason,
    }


def register(
    bus: events.EventBus,
    mailer: Mailer,
    webhooks: WebhookService,
    *,
    public_url: str = "",
) -> None:
    base = public_url.rstrip("/")

    def clock_of(session: Session) -> Clock:
        clock: Clock = session.info["clock"]
        return clock

    def page(org: Organization) -> str:
        return f"{base}/portal/orgs/{org.slug}/billing/direct-debit"

    def on_mandate(event: events.SepaMandateEvent, session: Any) -> None:
        mandate = session.get(SepaMandate, event.mandate_id)
        org = session.get(Organization, event.organization_id)
        if mandate is None or org is None:
            return
        clock = clock_of(session)
        webhooks.enqueue(
            session,
            org.id,
            f"sepa_mandate.{event.kind}",
            mandate_payload(mandate),
            clock=clock,
        )
        to = budget_recipients(session, org)
        if event.kind == "signed":
            mailer.send(
                session,
                clock,
                to,
                f"Your direct debit mandate {mandate.reference}",
                "You gave us a SEPA direct debit mandate. Please keep this message.\n\n"
                f"{mandate.mandate_text.replace(mandate.iban, mask_iban(mandate.iban))}\n\n"
                f"Signed on {mandate.signed_at:%Y-%m-%d %H:%M} UTC by {mandate.signed_by}.\n"
                f"You can withdraw it at any time: {page(org)}\n",
                organization_id=org.id,
                kind="direct-debit-mandate",
            )
        elif event.kind == "revoked":
            mailer.send(
                session,
                clock,
                to,
                f"Direct debit mandate {mandate.reference} withdrawn",
                f"The direct debit mandate {mandate.reference} for the account "
                f"{mask_iban(mandate.iban)} is withdrawn: we will not collect from it again.\n"
                "Debits already sent to the bank are still collected.\n"
                f"Your payment settings: {page(org)}\n",
                organization_id=org.id,
                kind="direct-debit-mandate-withdrawn",
            )

    def on_debit(event: events.DirectDebitEvent, session: Any) -> None:
        collection = session.get(SepaCollection, event.collection_id)
        if collection is None:
            return
        invoice = session.get(Invoice, collection.invoice_id)
        mandate = session.get(SepaMandate, collection.mandate_id)
        org = session.get(Organization, collection.organization_id)
        if invoice is None or mandate is None or org is None:
            return
        clock = clock_of(session)
        webhooks.enqueue(
            session,
            org.id,
            f"direct_debit.{event.kind}",
            collection_payload(collection),
            clock=clock,
        )
        to = list(
            dict.fromkeys(
                [
                    *([invoice.customer_email] if invoice.customer_email else []),
                    *budget_recipients(session, org),
                ]
            )
        )
        amount = format_money(collection.amount, collection.currency)
        invoice_link = f"{base}/portal/orgs/{org.slug}/billing/invoices/{invoice.id}"
        if event.kind == "scheduled":
            mailer.send(
                session,
                clock,
                to,
                f"We will collect {amount} on {collection.collection_date:%Y-%m-%d}",
                f"We will collect {amount} for invoice {invoice.number} by SEPA direct debit "
                f"on {collection.collection_date:%A, %d %B %Y} or the next banking day.\n\n"
                f"Account: {mask_iban(mandate.iban)} ({mandate.account_holder})\n"
                f"Mandate reference: {mandate.reference}\n"
                f"Creditor identifier: {mandate.creditor_id}\n"
                f"Your bank statement will show: Invoice {invoice.number}\n\n"
                f"Please make sure the account has enough money on that day.\n"
                f"The invoice: {invoice_link}\n",
                organization_id=org.id,
                kind="direct-debit-notice",
            )
        elif event.kind == "returned":
            why = return_reason_words(event.reason)
            mailer.send(
                session,
                clock,
                to,
                f"Your direct debit for invoice {invoice.number} did not go through",
                f"We tried to collect {amount} for invoice {invoice.number} from the account "
                f"{mask_iban(mandate.iban)}, but your bank sent the money back: {why}.\n\n"
                f"The invoice is open again. Unless you pay it otherwise, we try the debit "
                f"again after the next payment reminder. You can pay it by bank transfer with "
                f"the reference {invoice.number}, or check your account details and give us a "
                f"new mandate:\n"
                f"{page(org)}\n\n"
                f"The invoice: {invoice_link}\n",
                organization_id=org.id,
                kind="direct-debit-returned",
            )

    bus.subscribe(events.SepaMandateEvent, on_mandate)
    bus.subscribe(events.DirectDebitEvent, on_debit)


def register_runtime(runtime: Any) -> None:
    register(
        runtime.bus,
        runtime.mailer,
        runtime.webhooks,
        public_url=runtime.settings.public_url,
    )
