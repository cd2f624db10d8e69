"""E-mails and webhooks for support tickets.

To the requester: the confirmation of a new ticket (its id, a summary, a link to follow it),
each public staff reply, and the resolution (with one-click satisfaction links). Every e-mail
of a ticket threads in mail clients: it has its own ``Message-ID``, ``In-Reply-To`` and
``References`` name the ticket's first e-mail (RFC 5322 section 3.6.4), and ``Reply-To`` is
``support+<reply token>@<support domain>`` so a reply by mail lands on the ticket.

To staff: a notice of a new ticket and of a customer's reply, to the assignee, or to every
admin and support staff member while nobody is assigned.

Every :class:`imhost.events.TicketEvent` is also the ``ticket.<kind>`` webhook.

``support`` and ``notify`` stand side by side (neither imports the other): the runtime hands
this module notify's mailer and webhook service, which it uses through the two protocols
below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.models import Organization, StaffRole, User
from imhost.kit.clock import Clock
from imhost.support import tickets
from imhost.support.ticket_models import Ticket, TicketMessage

SUMMARY_CHARS = 600


class Mailer(Protocol):
    def send(
        self,
        session: Session,
        clock: Clock,
        to: str | Sequence[str],
        subject: str,
        text: str,
        html: str | None = None,
        attachments: Sequence[tuple[str, bytes, str]] = (),
        *,
        organization_id: str | None = None,
        kind: str = "",
        headers: dict[str, str] | None = None,
    ) -> object: ...


class Webhooks(Protocol):
    def enqueue(
        self,
        session: Session,
        organization_id: str | None,
        event_type: str,
        payload: dict[str, Any],
        *,
        clock: Clock | None = None,
    ) -> int: ...


def thread_id(ticket: Ticket, domain: str) -> str:
    """The Message-ID of a ticket's first e-mail; later ones point back to it."""
    return f"<ticket.{ticket.public_id.lower()}@{domain}>"


def message_mail_id(message: TicketMessage, domain: str) -> str:
    return f"<ticket-message.{message.id}@{domain}>"


STAFF_ONLY_KINDS = frozenset({"note_added"})
"""Ticket events the customer's webhooks never get (an internal note is staff's own)."""


def ticket_payload(ticket: Ticket, kind: str) -> dict[str, Any]:
    return {
        "ticket": ticket.public_id,
        "kind": kind,
        "status": ticket.status,
        "department": ticket.department,
        "priority": ticket.priority,
        "subject": ticket.subject,
        "organization_id": ticket.organization_id,
        "updated_at": ticket.updated_at.isoformat(),
    }


def follow_link(base: str, session: Session, ticket: Ticket, secret: str) -> str:
    """Where the requester follows the ticket: the portal for an organization's ticket, the
    signed guest link otherwise."""
    if ticket.organization_id:
        org = session.get(Organization, ticket.organization_id)
        slug = org.slug if org is not None else ticket.organization_id
        return f"{base}/portal/orgs/{slug}/support/tickets/{ticket.public_id}"
    signature = tickets.guest_signature(secret, ticket)
    return f"{base}/help/tickets/{ticket.public_id}/{signature}"


def rating_links(base: str, ticket: Ticket, secret: str) -> list[tuple[int, str]]:
    return [
        (
            score,
            f"{base}/help/tickets/{ticket.public_id}/rate/{score}/"
            f"{tickets.rating_signature(secret, ticket, score)}",
        )
        for score in range(5, 0, -1)
    ]


def _summary(text: str) -> str:
    text = text.strip()
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1].rstrip() + "…"


def register(
    bus: events.EventBus,
    mailer: Mailer,
    webhooks: Webhooks,
    *,
    public_url: str,
    provider_name: str,
    support_domain: str,
    secret: str,
) -> None:
    base = public_url.rstrip("/")
    words = {5: "Great", 4: "Good", 3: "OK", 2: "Poor", 1: "Bad"}

    def clock_of(session: Session) -> Clock:
        clock: Clock = session.info["clock"]
        return clock

    def headers(ticket: Ticket, message: TicketMessage | None, first: bool) -> dict[str, str]:
        root = thread_id(ticket, support_domain)
        out = {"Reply-To": f"support+{ticket.reply_token}@{support_domain}"}
        if first:
            out["Message-ID"] = root
        else:
            if message is not None:
                out["Message-ID"] = message_mail_id(message, support_domain)
            out["In-Reply-To"] = root
            out["References"] = root
        return out

    def staff_recipients(session: Session, ticket: Ticket) -> list[str]:
        if ticket.assignee_user_id:
            user = session.get(User, ticket.assignee_user_id)
            return [user.email] if user is not None else []
        return list(
            session.scalars(
                select(User.email)
                .where(User.staff_role.in_([StaffRole.ADMIN.value, StaffRole.SUPPORT.value]))
                .order_by(User.email)
            )
        )

    def staff_link(ticket: Ticket) -> str:
        return f"{base}/console/support/tickets/{ticket.public_id}"

    def on_ticket(event: events.TicketEvent, session: Any) -> None:
        ticket = session.get(Ticket, event.ticket_id)
        if ticket is None:
            return
        clock = clock_of(session)
        if event.kind not in STAFF_ONLY_KINDS:
            webhooks.enqueue(
                session,
                ticket.organization_id,
                f"ticket.{event.kind}",
                ticket_payload(ticket, event.kind),
                clock=clock,
            )
        message = session.get(TicketMessage, event.message_id) if event.message_id else None
        link = follow_link(base, session, ticket, secret)
        subject = f"[{ticket.public_id}] {ticket.subject}"
        if event.kind == "created" and message is not None:
            mailer.send(
                session,
                clock,
                ticket.requester_email,
                subject,
                (
                    f"Hello {ticket.requester_name or ticket.requester_email},\n\n"
                    f"We received your request; its number is {ticket.public_id}.\n\n"
                    f"You wrote:\n{_summary(message.body)}\n\n"
                    f"Follow it and reply here:\n{link}\n\n"
                    "You can also answer this e-mail; keep the number in the subject.\n\n"
                    f"{provider_name} support\n"
                ),
                organization_id=ticket.organization_id,
                kind="ticket-received",
                headers=headers(ticket, message, first=True),
            )
            if not message.from_staff:
                notify_staff(session, clock, ticket, message, "New ticket")
        elif event.kind == "staff_replied" and message is not None:
            mailer.send(
                session,
                clock,
                ticket.requester_email,
                f"Re: {subject}",
                (
                    f"{message.author_name} wrote:\n\n{message.body}\n\n"
                    f"Follow the ticket and reply here:\n{link}\n\n"
                    "Or answer this e-mail.\n"
                ),
                organization_id=ticket.organization_id,
                kind="ticket-reply",
                headers=headers(ticket, message, first=False),
            )
        elif event.kind == "customer_replied" and message is not None:
            notify_staff(session, clock, ticket, message, "Customer replied")
        elif event.kind == "status_changed" and ticket.status == "resolved":
            ratings = "\n".join(
                f"  {words[score]} ({score}/5): {url}"
                for score, url in rating_links(base, ticket, secret)
            )
            mailer.send(
                session,
                clock,
                ticket.requester_email,
                f"Resolved: {subject}",
                (
                    f"We consider ticket {ticket.public_id} resolved.\n\n"
                    "How did we do? One click rates it (you can add a comment after):\n"
                    f"{ratings}\n\n"
                    f"If something is still wrong, reply here to reopen it:\n{link}\n"
                ),
                organization_id=ticket.organization_id,
                kind="ticket-resolved",
                headers=headers(ticket, None, first=False),
            )

    def notify_staff(
        session: Session, clock: Clock, ticket: Ticket, message: TicketMessage, what: str
    ) -> None:
        mailer.send(
            session,
            clock,
            staff_recipients(session, ticket),
            f"{what}: [{ticket.public_id}] {ticket.subject}",
            (
                f"{what} from {message.author_name or message.author_email} "
                f"({ticket.department}, {ticket.priority} priority):\n\n"
                f"{_summary(message.body)}\n\nOpen it in the console:\n{staff_link(ticket)}\n"
            ),
            kind="ticket-staff-notice",
        )

    bus.subscribe(events.TicketEvent, on_ticket)


def register_runtime(runtime: Any) -> None:
    settings = runtime.settings
    register(
        runtime.bus,
        runtime.mailer,
        runtime.webhooks,
        public_url=settings.public_url,
        provider_name=settings.provider_name,
        support_domain=settings.support_domain,
        secret=runtime.secret_key,
    )
