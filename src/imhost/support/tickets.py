"""Support tickets: the rules.

Open a ticket (``open_ticket``), add a public reply or an internal note (``add_reply``), change
its status, priority, assignee and tags, merge a duplicate into its survivor, rate it, and
close resolved tickets after ``auto_close_days`` (``close_resolved``, a worker job).

Nothing here commits: the caller owns the transaction. Every change is written to the
ticket's history (``TicketChange``: who, when, what), to the audit log (``ticket.<action>``)
and published as a :class:`imhost.events.TicketEvent` (e-mails and ``ticket.<kind>``
webhooks are sent by :mod:`imhost.notify.tickets`).

Entry points other packages call (e-mail in, the XMPP support address, SLA timers):
``open_ticket``, ``add_reply``, ``find_ticket_by_public_id``, ``find_ticket_by_reply_token``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts import audit
from imhost.accounts.audit import Actor
from imhost.accounts.models import Membership, User
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput, NotFound, TooManyRequests
from imhost.kit.ids import CROCKFORD, normalize_code
from imhost.support import attachments as files
from imhost.support.attachments import AttachmentIn, AttachmentStore
from imhost.support.models import HelpSuggestionEvent
from imhost.support.ticket_models import (
    CannedReply,
    Department,
    GuestContactAttempt,
    MessageKind,
    Priority,
    Ticket,
    TicketAttachment,
    TicketChange,
    TicketDeflection,
    TicketMessage,
    TicketStatus,
    Via,
)

CLOSED_STATUSES = (TicketStatus.RESOLVED.value, TicketStatus.CLOSED.value)
PUBLIC_ID_PREFIX = "IMH"
PUBLIC_ID_RE = re.compile(r"^IMH-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$")
SUBJECT_MAX = 200
BODY_MAX = 50_000
DEFAULT_MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
DEFAULT_ATTACHMENTS_PER_MESSAGE = 5
DEFAULT_AUTO_CLOSE_DAYS = 7
_ID_ATTEMPTS = 8


class TicketClosed(Conflict):
    """A reply to a closed ticket: the caller opens a new ticket instead (e-mail in does)."""


@dataclass(frozen=True)
class Author:
    """Who wrote a message: a user (customer or staff) or a guest (name and address)."""

    name: str
    email: str
    user_id: str | None = None
    staff: bool = False

    @classmethod
    def of_user(cls, user: User) -> Author:
        return cls(
            name=user.name or user.email,
            email=user.email,
            user_id=user.id,
            staff=user.staff_role is not None,
        )

    @classmethod
    def guest(cls, name: str, email: str) -> Author:
        return cls(name=name.strip()[:200], email=email.strip()[:320])

    def actor(self) -> Actor:
        return Actor(user_id=self.user_id, label=self.email or self.name or "guest")


@dataclass(frozen=True)
class Limits:
    """Attachment limits (from ``Settings.support``)."""

    max_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES
    max_count: int = DEFAULT_ATTACHMENTS_PER_MESSAGE


def limits_of(session: Session) -> Limits:
    settings = session.info.get("settings")
    if settings is None:
        return Limits()
    return Limits(
        max_bytes=settings.support.attachment_max_bytes,
        max_count=settings.support.attachments_per_message,
    )


def store_of(session: Session) -> AttachmentStore:
    """Where this process keeps attachments: ``<data dir>/attachments``."""
    settings = session.info.get("settings")
    root = Path(settings.data_dir) if settings is not None else Path("imhost-data")
    return AttachmentStore(root / "attachments")


# --- identifiers ------------------------------------------------------------------------------


def new_public_id() -> str:
    """A ticket id such as ``IMH-7K3Q-2D9F``: 8 random Crockford base-32 characters (40 bits)
    from ``secrets``, in two groups of four."""
    body = "".join(secrets.choice(CROCKFORD) for _ in range(8))
    return f"{PUBLIC_ID_PREFIX}-{body[:4]}-{body[4:]}"


def normalize_public_id(text: str) -> str | None:
    """Read a ticket id typed by a person (any case, with or without dashes, O for 0, I/L
    for 1); None if it cannot be one."""
    flat = text.strip().replace("-", "").replace(" ", "")
    if len(flat) != 11 or flat[:3].upper() != PUBLIC_ID_PREFIX:
        return None
    try:
        body = normalize_code(flat[3:])
    except ValueError:
        return None
    code = f"{PUBLIC_ID_PREFIX}-{body[:4]}-{body[4:]}"
    return code if PUBLIC_ID_RE.match(code) else None


def find_ticket_by_public_id(session: Session, public_id: str) -> Ticket | None:
    code = normalize_public_id(public_id)
    if code is None:
        return None
    return session.scalar(select(Ticket).where(Ticket.public_id == code))


def find_ticket_by_reply_token(session: Session, token: str) -> Ticket | None:
    """The ticket whose e-mails say ``Reply-To: support+<token>@...`` (tokens are lowercase
    hex; mail systems may change the case of the local part)."""
    token = token.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{32}", token):
        return None
    return session.scalar(select(Ticket).where(Ticket.reply_token == token))


def get_ticket(session: Session, public_id: str) -> Ticket:
    ticket = find_ticket_by_public_id(session, public_id)
    if ticket is None:
        raise NotFound("There is no such ticket.")
    return ticket


def survivor_of(session: Session, ticket: Ticket) -> Ticket:
    """The ticket a merged duplicate points to (following the chain), or the ticket itself."""
    seen = {ticket.id}
    while ticket.merged_into_id is not None:
        nxt = session.get(Ticket, ticket.merged_into_id)
        if nxt is None or nxt.id in seen:
            break
        seen.add(nxt.id)
        ticket = nxt
    return ticket


# --- opening and replying ---------------------------------------------------------------------


def _clean_text(value: str, *, field: str, what: str, max_len: int) -> str:
    value = value.replace("\r\n", "\n").strip()
    if not value:
        raise InvalidInput(f"Write the {what}.", field=field)
    if len(value) > max_len:
        raise InvalidInput(f"The {what} is too long (at most {max_len} characters).", field=field)
    return value


def _choice(value: str, enum_type: Any, *, field: str, what: str) -> str:
    try:
        return str(enum_type(value).value)
    except ValueError:
        raise InvalidInput(f"Choose a {what} from the list.", field=field) from None


_EMAIL_RE = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$")


def check_email(email: str) -> str:
    email = email.strip()
    if not _EMAIL_RE.match(email) or len(email) > 320:
        raise InvalidInput("Enter a valid e-mail address.", field="email")
    return email


def open_ticket(
    session: Session,
    clock: Clock,
    *,
    subject: str,
    body: str,
    requester: Author,
    organization_id: str | None = None,
    department: str = Department.TECHNICAL.value,
    priority: str = Priority.NORMAL.value,
    via: str = Via.PORTAL.value,
    attachments: Sequence[AttachmentIn] = (),
    opened_by: Author | None = None,
    email_message_id: str | None = None,
    form_context: str | None = None,
) -> Ticket:
    """Open a ticket with its first message (written by ``requester``).

    ``opened_by``: the staff member who opens it on the customer's behalf (the first message
    is then theirs, public, and the ticket waits on the customer). ``form_context``: the
    portal form's deflection token (the ticket was sent after suggestions were shown).
    """
    subject = _clean_text(subject, field="subject", what="subject", max_len=SUBJECT_MAX)
    subject = " ".join(subject.split())
    body = _clean_text(body, field="message", what="message", max_len=BODY_MAX)
    department = _choice(department, Department, field="department", what="department")
    priority = _choice(priority, Priority, field="priority", what="priority")
    via = _choice(via, Via, field="via", what="channel")
    check_email(requester.email)
    checked = files.check(list(attachments), **_limit_kwargs(session))
    now = clock.now()
    author = opened_by or requester
    ticket = Ticket(
        created_at=now,
        updated_at=now,
        subject=subject,
        organization_id=organization_id,
        requester_user_id=requester.user_id,
        requester_name=requester.name,
        requester_email=requester.email,
        department=department,
        priority=priority,
        status=(TicketStatus.WAITING_ON_CUSTOMER if opened_by else TicketStatus.NEW).value,
        tags=[],
        reply_token=secrets.token_hex(16),
        via=via,
        last_customer_reply_at=None if opened_by else now,
        first_response_at=now if opened_by else None,
    )
    _insert_with_unique_id(session, ticket)
    ticket.message_count = (ticket.message_count or 0) + 1
    message = TicketMessage(
        created_at=now,
        ticket_id=ticket.id,
        number=ticket.message_count,
        kind=MessageKind.REPLY.value,
        author_user_id=author.user_id,
        author_name=author.name,
        author_email=author.email,
        from_staff=opened_by is not None,
        via=via,
        body=body,
        email_message_id=email_message_id,
    )
    session.add(message)
    session.flush()
    _store_attachments(session, clock, ticket, message, checked)
    _history(session, clock, ticket, author.actor(), "created", None, ticket.status)
    if form_context:
        _record_form_sent(session, clock, form_context[:64], ticket)
    audit.record(
        session,
        clock,
        "ticket.opened",
        actor=author.actor(),
        organization_id=organization_id,
        target_type="ticket",
        target_id=ticket.id,
        target_label=ticket.public_id,
        department=department,
        via=via,
        on_behalf=opened_by is not None or None,
    )
    _publish(session, clock, ticket, "created", message_id=message.id, actor=author)
    return ticket


def _limit_kwargs(session: Session) -> dict[str, int]:
    limits = limits_of(session)
    return {"max_bytes": limits.max_bytes, "max_count": limits.max_count}


def _insert_with_unique_id(session: Session, ticket: Ticket) -> None:
    """Give ``ticket`` a random public id, retrying on the (rare) clash with the unique
    constraint inside a savepoint so the caller's transaction survives."""
    for _ in range(_ID_ATTEMPTS):
        ticket.public_id = new_public_id()
        try:
            with session.begin_nested():
                session.add(ticket)
                session.flush()
            return
        except IntegrityError:
            if ticket in session:
                session.expunge(ticket)
            continue
    raise Conflict("No ticket number could be chosen; try again.")


def add_reply(
    session: Session,
    clock: Clock,
    ticket: Ticket,
    author: Author,
    body: str,
    attachments: Sequence[AttachmentIn] = (),
    *,
    via: str = Via.PORTAL.value,
    internal: bool = False,
    email_message_id: str | None = None,
) -> TicketMessage:
    """Add a message to ``ticket`` (or to its survivor when it was merged).

    A staff member's public reply sets the ticket waiting on the customer (and its first
    response time); a customer's reply sets it waiting on staff and reopens a resolved
    ticket. An internal note (``internal``, staff only) changes no status. A closed ticket
    takes no reply (:class:`TicketClosed`): the caller opens a new ticket. A repeated
    ``email_message_id`` on the same ticket returns the message already stored (a mail
    delivered twice is added once).
    """
    ticket = survivor_of(session, ticket)
    if internal and not author.staff:
        raise InvalidInput("Only staff write internal notes.", field="internal")
    if email_message_id:
        existing = session.scalar(
            select(TicketMessage).where(
                TicketMessage.ticket_id == ticket.id,
                TicketMessage.email_message_id == email_message_id,
            )
        )
        if existing is not None:
            return existing
    if ticket.status == TicketStatus.CLOSED and not internal:
        raise TicketClosed(
            f"Ticket {ticket.public_id} is closed; open a new ticket and mention it."
        )
    body = _clean_text(body, field="message", what="message", max_len=BODY_MAX)
    via = _choice(via, Via, field="via", what="channel")
    checked = files.check(list(attachments), **_limit_kwargs(session))
    now = clock.now()
    ticket.message_count = (ticket.message_count or 0) + 1
    message = TicketMessage(
        created_at=now,
        ticket_id=ticket.id,
        number=ticket.message_count,
        kind=(MessageKind.NOTE if internal else MessageKind.REPLY).value,
        author_user_id=author.user_id,
        author_name=author.name,
        author_email=author.email,
        from_staff=author.staff,
        via=via,
        body=body,
        email_message_id=email_message_id,
    )
    session.add(message)
    session.flush()
    _store_attachments(session, clock, ticket, message, checked)
    ticket.updated_at = now
    if internal:
        kind = "note_added"
    elif author.staff:
        kind = "staff_replied"
        if ticket.first_response_at is None:
            ticket.first_response_at = now
        if ticket.status != TicketStatus.RESOLVED:
            _set_status(session, clock, ticket, TicketStatus.WAITING_ON_CUSTOMER, author.actor())
    else:
        kind = "customer_replied"
        ticket.last_customer_reply_at = now
        _set_status(session, clock, ticket, TicketStatus.WAITING_ON_STAFF, author.actor())
    audit.record(
        session,
        clock,
        f"ticket.{kind}",
        actor=author.actor(),
        organization_id=ticket.organization_id,
        target_type="ticket",
        target_id=ticket.id,
        target_label=ticket.public_id,
        via=via,
    )
    _publish(session, clock, ticket, kind, message_id=message.id, actor=author)
    return message


def _store_attachments(
    session: Session,
    clock: Clock,
    ticket: Ticket,
    message: TicketMessage,
    checked: list[files.CheckedAttachment],
) -> None:
    if not checked:
        return
    store = store_of(session)
    for item in checked:
        session.add(
            TicketAttachment(
                created_at=clock.now(),
                ticket_id=ticket.id,
                message_id=message.id,
                filename=item.filename,
                kind=item.kind,
                size=len(item.content),
                sha256=item.sha256,
                storage_name=store.save(item.content),
            )
        )
    session.flush()


# --- changes staff make -----------------------------------------------------------------------


def _history(
    session: Session,
    clock: Clock,
    ticket: Ticket,
    actor: Actor,
    field: str,
    old: str | None,
    new: str | None,
) -> None:
    ticket.change_count = (ticket.change_count or 0) + 1
    session.add(
        TicketChange(
            ticket_id=ticket.id,
            number=ticket.change_count,
            at=clock.now(),
            actor_user_id=actor.user_id,
            actor_label=actor.label,
            field=field,
            old_value=None if old is None else old[:500],
            new_value=None if new is None else new[:500],
        )
    )


def _set_status(
    session: Session, clock: Clock, ticket: Ticket, status: TicketStatus, actor: Actor
) -> bool:
    if ticket.status == status:
        return False
    old = ticket.status
    ticket.status = status.value
    now = clock.now()
    ticket.updated_at = now
    if status == TicketStatus.RESOLVED:
        ticket.resolved_at = now
    elif status == TicketStatus.CLOSED:
        ticket.closed_at = now
    else:
        ticket.resolved_at = None
        ticket.closed_at = None
    _history(session, clock, ticket, actor, "status", old, status.value)
    return True


def set_status(
    session: Session, clock: Clock, ticket: Ticket, status: str, *, actor: Actor
) -> Ticket:
    """Change the status (staff: any; a customer closes or reopens through ``close`` and
    ``reopen``). A merged duplicate cannot change."""
    new = TicketStatus(_choice(status, TicketStatus, field="status", what="status"))
    if ticket.merged_into_id is not None:
        raise Conflict("This ticket was merged into another; change that one instead.")
    if _set_status(session, clock, ticket, new, actor):
        _audit_change(session, clock, ticket, actor, "status_changed", status=new.value)
        _publish(session, clock, ticket, "status_changed", actor_user_id=actor.user_id)
    return ticket


def close(session: Session, clock: Clock, ticket: Ticket, *, actor: Actor) -> Ticket:
    """The customer closes their ticket (or staff do): it is resolved, then closed."""
    return set_status(session, clock, ticket, TicketStatus.CLOSED.value, actor=actor)


def reopen(session: Session, clock: Clock, ticket: Ticket, *, actor: Actor) -> Ticket:
    if ticket.status not in (TicketStatus.RESOLVED, TicketStatus.CLOSED):
        raise Conflict("This ticket is already open.")
    return set_status(session, clock, ticket, TicketStatus.WAITING_ON_STAFF.value, actor=actor)


def set_priority(
    session: Session, clock: Clock, ticket: Ticket, priority: str, *, actor: Actor
) -> Ticket:
    new = _choice(priority, Priority, field="priority", what="priority")
    if new != ticket.priority:
        _history(session, clock, ticket, actor, "priority", ticket.priority, new)
        ticket.priority = new
        ticket.updated_at = clock.now()
        _audit_change(session, clock, ticket, actor, "priority_changed", priority=new)
        _publish(session, clock, ticket, "priority_changed", actor_user_id=actor.user_id)
    return ticket


def set_department(
    session: Session, clock: Clock, ticket: Ticket, department: str, *, actor: Actor
) -> Ticket:
    new = _choice(department, Department, field="department", what="department")
    if new != ticket.department:
        _history(session, clock, ticket, actor, "department", ticket.department, new)
        ticket.department = new
        ticket.updated_at = clock.now()
        _audit_change(session, clock, ticket, actor, "department_changed", department=new)
    return ticket


def assign(
    session: Session, clock: Clock, ticket: Ticket, assignee_user_id: str | None, *, actor: Actor
) -> Ticket:
    """Give the ticket to a staff member (None: unassign)."""
    label: str | None = None
    if assignee_user_id:
        user = session.get(User, assignee_user_id)
        if user is None or user.staff_role is None:
            raise InvalidInput("Choose a staff member.", field="assignee")
        label = user.email
    if assignee_user_id == ticket.assignee_user_id:
        return ticket
    old_label = None
    if ticket.assignee_user_id:
        old = session.get(User, ticket.assignee_user_id)
        old_label = old.email if old else ticket.assignee_user_id
    _history(session, clock, ticket, actor, "assignee", old_label, label)
    ticket.assignee_user_id = assignee_user_id or None
    ticket.updated_at = clock.now()
    _audit_change(session, clock, ticket, actor, "assigned", assignee=label)
    _publish(session, clock, ticket, "assigned", actor_user_id=actor.user_id)
    return ticket


_TAG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")


def parse_tags(text: str | Sequence[str]) -> list[str]:
    raw = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    tags: list[str] = []
    for tag in raw:
        tag = tag.strip().lower()
        if not tag:
            continue
        if not _TAG_RE.match(tag):
            raise InvalidInput(
                "A tag is up to 40 lowercase letters, digits, dots, dashes or underscores.",
                field="tags",
            )
        if tag not in tags:
            tags.append(tag)
    if len(tags) > 20:
        raise InvalidInput("A ticket has at most 20 tags.", field="tags")
    return tags


def set_tags(
    session: Session, clock: Clock, ticket: Ticket, tags: str | Sequence[str], *, actor: Actor
) -> Ticket:
    new = sorted(parse_tags(tags))
    old = sorted(ticket.tags or [])
    if new != old:
        _history(session, clock, ticket, actor, "tags", " ".join(old), " ".join(new))
        ticket.tags = new
        ticket.updated_at = clock.now()
        _audit_change(session, clock, ticket, actor, "tags_changed", tags=" ".join(new))
        _publish(session, clock, ticket, "tags_changed", actor_user_id=actor.user_id)
    return ticket


def merge(
    session: Session, clock: Clock, duplicate: Ticket, survivor: Ticket, *, actor: Actor
) -> Ticket:
    """Move ``duplicate``'s messages and attachments to ``survivor``; the duplicate is closed
    and points to the survivor (its links and e-mail replies lead there)."""
    survivor = survivor_of(session, survivor)
    if duplicate.id == survivor.id:
        raise InvalidInput("A ticket cannot be merged into itself.", field="into")
    if duplicate.merged_into_id is not None:
        raise Conflict(f"Ticket {duplicate.public_id} was already merged.")
    if duplicate.organization_id != survivor.organization_id or (
        duplicate.organization_id is None
        and duplicate.requester_email.lower() != survivor.requester_email.lower()
    ):
        raise InvalidInput("Only tickets of the same customer can be merged.", field="into")
    moved = 0
    for message in session.scalars(
        select(TicketMessage).where(TicketMessage.ticket_id == duplicate.id)
    ):
        message.ticket_id = survivor.id
        moved += 1
    for attachment in session.scalars(
        select(TicketAttachment).where(TicketAttachment.ticket_id == duplicate.id)
    ):
        attachment.ticket_id = survivor.id
    now = clock.now()
    duplicate.merged_into_id = survivor.id
    _set_status(session, clock, duplicate, TicketStatus.CLOSED, actor)
    _history(session, clock, duplicate, actor, "merged_into", None, survivor.public_id)
    _history(session, clock, survivor, actor, "merged_from", None, duplicate.public_id)
    survivor.tags = sorted(set(survivor.tags or []) | set(duplicate.tags or []))
    survivor.updated_at = now
    if survivor.status in (TicketStatus.RESOLVED, TicketStatus.CLOSED):
        _set_status(session, clock, survivor, TicketStatus.OPEN, actor)
    session.flush()
    _audit_change(
        session, clock, duplicate, actor, "merged", into=survivor.public_id, messages=moved
    )
    _publish(session, clock, duplicate, "merged", actor_user_id=actor.user_id)
    return survivor


def close_resolved(
    session: Session, clock: Clock, *, days: int = DEFAULT_AUTO_CLOSE_DAYS, limit: int = 500
) -> int:
    """Close tickets resolved at least ``days`` ago (the worker's job). Running it again
    changes nothing more: closed tickets are no longer resolved."""
    cutoff = clock.now() - timedelta(days=days)
    due = list(
        session.scalars(
            select(Ticket)
            .where(Ticket.status == TicketStatus.RESOLVED.value, Ticket.resolved_at <= cutoff)
            .order_by(Ticket.resolved_at, Ticket.id)
            .limit(limit)
        )
    )
    system = Actor.system()
    for ticket in due:
        _set_status(session, clock, ticket, TicketStatus.CLOSED, system)
        _audit_change(session, clock, ticket, system, "auto_closed", after_days=days)
        _publish(session, clock, ticket, "status_changed")
    return len(due)


def rate(session: Session, clock: Clock, ticket: Ticket, score: int, comment: str = "") -> Ticket:
    """The requester's satisfaction rating, 1 (bad) to 5 (great), with an optional comment.
    Rating again replaces the earlier rating."""
    if score not in range(1, 6):
        raise InvalidInput("Choose a rating from 1 to 5.", field="rating")
    comment = comment.strip()
    if len(comment) > 2000:
        raise InvalidInput("The comment is too long (at most 2000 characters).", field="comment")
    if ticket.status not in (TicketStatus.RESOLVED, TicketStatus.CLOSED):
        raise Conflict("A ticket is rated once it is resolved.")
    if ticket.rating == score and (not comment or comment == ticket.rating_comment):
        return ticket
    actor = Actor(user_id=ticket.requester_user_id, label=ticket.requester_email)
    _history(
        session,
        clock,
        ticket,
        actor,
        "rating",
        None if ticket.rating is None else str(ticket.rating),
        str(score),
    )
    ticket.rating = score
    if comment:
        ticket.rating_comment = comment
    ticket.rated_at = clock.now()
    _audit_change(session, clock, ticket, actor, "rated", rating=score)
    _publish(session, clock, ticket, "rated", actor_user_id=ticket.requester_user_id)
    return ticket


def _audit_change(
    session: Session, clock: Clock, ticket: Ticket, actor: Actor, action: str, **details: Any
) -> None:
    audit.record(
        session,
        clock,
        f"ticket.{action}",
        actor=actor,
        organization_id=ticket.organization_id,
        target_type="ticket",
        target_id=ticket.id,
        target_label=ticket.public_id,
        **details,
    )


def _publish(
    session: Session,
    clock: Clock,
    ticket: Ticket,
    kind: str,
    *,
    message_id: str | None = None,
    actor: Author | None = None,
    actor_user_id: str | None = None,
) -> None:
    session.flush()
    events.publish(
        session,
        events.TicketEvent(
            at=clock.now(),
            ticket_id=ticket.id,
            public_id=ticket.public_id,
            organization_id=ticket.organization_id,
            kind=kind,
            status=ticket.status,
            message_id=message_id,
            actor_user_id=actor.user_id if actor is not None else actor_user_id,
        ),
    )


# --- reading ----------------------------------------------------------------------------------


def messages(session: Session, ticket: Ticket, *, include_notes: bool) -> list[TicketMessage]:
    stmt = select(TicketMessage).where(TicketMessage.ticket_id == ticket.id)
    if not include_notes:
        stmt = stmt.where(TicketMessage.kind == MessageKind.REPLY.value)
    return list(
        session.scalars(
            stmt.order_by(TicketMessage.created_at, TicketMessage.number, TicketMessage.id)
        )
    )


def attachments_by_message(session: Session, ticket: Ticket) -> dict[str, list[TicketAttachment]]:
    out: dict[str, list[TicketAttachment]] = {}
    for att in session.scalars(
        select(TicketAttachment)
        .where(TicketAttachment.ticket_id == ticket.id)
        .order_by(TicketAttachment.created_at, TicketAttachment.id)
    ):
        out.setdefault(att.message_id, []).append(att)
    return out


def history(session: Session, ticket: Ticket) -> list[TicketChange]:
    return list(
        session.scalars(
            select(TicketChange)
            .where(TicketChange.ticket_id == ticket.id)
            .order_by(TicketChange.at, TicketChange.number)
        )
    )


def get_attachment(session: Session, ticket: Ticket, attachment_id: str) -> TicketAttachment:
    """An attachment of ``ticket`` (of a public message unless the caller checked staff)."""
    att = session.get(TicketAttachment, attachment_id[:32])
    if att is None or att.ticket_id != ticket.id:
        raise NotFound("There is no such file.")
    return att


def attachment_is_public(session: Session, att: TicketAttachment) -> bool:
    message = session.get(TicketMessage, att.message_id)
    return message is not None and message.kind == MessageKind.REPLY.value


def user_organization_ids(session: Session, user_id: str) -> list[str]:
    return list(
        session.scalars(select(Membership.organization_id).where(Membership.user_id == user_id))
    )


def list_for_organization(
    session: Session,
    organization_id: str,
    *,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Ticket], int]:
    """An organization's tickets, newest change first; ``status``: one status, ``open``
    (every not-yet-resolved status) or None (all). Merged duplicates are left out."""
    stmt = select(Ticket).where(
        Ticket.organization_id == organization_id, Ticket.merged_into_id.is_(None)
    )
    stmt = _status_filter(stmt, status)
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows = list(
        session.scalars(
            stmt.order_by(Ticket.updated_at.desc(), Ticket.id.desc()).limit(limit).offset(offset)
        )
    )
    return rows, total


def _status_filter(stmt: Any, status: str | None) -> Any:
    if not status or status == "all":
        return stmt
    if status == "open":
        return stmt.where(Ticket.status.not_in(CLOSED_STATUSES))
    value = _choice(status, TicketStatus, field="status", what="status")
    return stmt.where(Ticket.status == value)


QUEUE_VIEWS = ("open", "mine", "unassigned", "breaching", "all")


@dataclass(frozen=True)
class QueuePage:
    tickets: list[Ticket]
    next_cursor: str | None


def encode_cursor(ticket: Ticket, *, by_due: bool = False) -> str:
    when = ticket.due_at if by_due and ticket.due_at is not None else ticket.updated_at
    return f"{when.strftime('%Y%m%dT%H%M%S.%f')}_{ticket.id}"


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        stamp, _, ticket_id = cursor.partition("_")
        when = datetime.strptime(stamp, "%Y%m%dT%H%M%S.%f").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput("This page link is not valid; start from the first page.") from None
    if not re.fullmatch(r"[0-9a-f]{32}", ticket_id):
        raise InvalidInput("This page link is not valid; start from the first page.")
    return when, ticket_id


def queue(
    session: Session,
    clock: Clock,
    *,
    view: str = "open",
    viewer_user_id: str | None = None,
    department: str | None = None,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
    breaching_within: timedelta = timedelta(hours=4),
) -> QueuePage:
    """One page of the staff queue, keyset-paginated (fast at any depth).

    Views: ``open`` (not resolved), ``mine`` (open and assigned to the viewer),
    ``unassigned`` (open, nobody's), ``breaching`` (open with a ``due_at`` within
    ``breaching_within``, soonest first), ``all``. ``department`` and ``status`` narrow it.
    """
    if view not in QUEUE_VIEWS:
        raise InvalidInput("Choose a queue view from the list.", field="view")
    stmt = select(Ticket).where(Ticket.merged_into_id.is_(None))
    if view in ("open", "mine", "unassigned", "breaching") and not status:
        # "Not resolved or closed" rather than "in the four open statuses": the planner then
        # walks the view's (updated_at, id) or due_at index instead of sorting every open row.
        stmt = stmt.where(Ticket.status.not_in(CLOSED_STATUSES))
    if view == "mine":
        stmt = stmt.where(Ticket.assignee_user_id == (viewer_user_id or ""))
    elif view == "unassigned":
        stmt = stmt.where(Ticket.assignee_user_id.is_(None))
    if department:
        stmt = stmt.where(
            Ticket.department
            == _choice(department, Department, field="department", what="department")
        )
    stmt = _status_filter(stmt, status)
    limit = max(1, min(limit, 200))
    by_due = view == "breaching"
    if by_due:
        horizon = clock.now() + breaching_within
        stmt = stmt.where(Ticket.due_at.is_not(None), Ticket.due_at <= horizon)
        if cursor:
            when, tid = _decode_cursor(cursor)
            stmt = stmt.where(
                or_(Ticket.due_at > when, and_(Ticket.due_at == when, Ticket.id > tid))
            )
        stmt = stmt.order_by(Ticket.due_at, Ticket.id)
    else:
        if cursor:
            when, tid = _decode_cursor(cursor)
            stmt = stmt.where(
                or_(Ticket.updated_at < when, and_(Ticket.updated_at == when, Ticket.id < tid))
            )
        stmt = stmt.order_by(Ticket.updated_at.desc(), Ticket.id.desc())
    rows = list(session.scalars(stmt.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return QueuePage(
        tickets=rows, next_cursor=encode_cursor(rows[-1], by_due=by_due) if more and rows else None
    )


def tickets_of_requester(session: Session, ticket: Ticket, *, limit: int = 10) -> list[Ticket]:
    """The same customer's other tickets (organization, or the guest's address)."""
    stmt = select(Ticket).where(Ticket.id != ticket.id, Ticket.merged_into_id.is_(None))
    if ticket.organization_id:
        stmt = stmt.where(Ticket.organization_id == ticket.organization_id)
    else:
        stmt = stmt.where(Ticket.requester_email == ticket.requester_email)
    return list(session.scalars(stmt.order_by(Ticket.updated_at.desc()).limit(limit)))


# --- canned replies ---------------------------------------------------------------------------

PLACEHOLDERS = ("customer_name", "ticket_id", "agent_name", "subject", "organization_name")
_PLACEHOLDER_RE = re.compile(r"\{([a-z_]{1,40})\}")


def render_canned(body: str, values: dict[str, str]) -> str:
    """Fill ``{name}`` placeholders from ``values``: only the known names, by plain text
    replacement (no ``str.format``: no attribute or index lookups, and a value that itself
    holds braces is not filled again). Unknown placeholders stay as written."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in PLACEHOLDERS and name in values:
            return values[name]
        return match.group(0)

    return _PLACEHOLDER_RE.sub(fill, body)


def canned_values(session: Session, ticket: Ticket, agent: Author) -> dict[str, str]:
    from imhost.accounts.models import Organization

    org = session.get(Organization, ticket.organization_id) if ticket.organization_id else None
    return {
        "customer_name": ticket.requester_name or ticket.requester_email,
        "ticket_id": ticket.public_id,
        "agent_name": agent.name,
        "subject": ticket.subject,
        "organization_name": org.name if org else "",
    }


def list_canned(session: Session) -> list[CannedReply]:
    return list(session.scalars(select(CannedReply).order_by(CannedReply.title)))


def save_canned(
    session: Session,
    clock: Clock,
    *,
    title: str,
    body: str,
    department: str | None = None,
    actor: Actor,
) -> CannedReply:
    title = _clean_text(title, field="title", what="title", max_len=120)
    body = _clean_text(body, field="body", what="reply", max_len=BODY_MAX)
    if department:
        department = _choice(department, Department, field="department", what="department")
    for name in _PLACEHOLDER_RE.findall(body):
        if name not in PLACEHOLDERS:
            raise InvalidInput(
                f"{{{name}}} is not a placeholder; use "
                + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                + ".",
                field="body",
            )
    canned = session.scalar(select(CannedReply).where(CannedReply.title == title))
    now = clock.now()
    if canned is None:
        canned = CannedReply(title=title, body=body, created_at=now, updated_at=now)
        session.add(canned)
    canned.body = body
    canned.department = department or None
    canned.updated_at = now
    session.flush()
    audit.record(
        session,
        clock,
        "ticket.canned_saved",
        actor=actor,
        target_type="canned_reply",
        target_id=canned.id,
        target_label=title,
    )
    return canned


def get_canned(session: Session, canned_id: str) -> CannedReply:
    canned = session.get(CannedReply, canned_id[:32])
    if canned is None:
        raise NotFound("There is no such canned reply.")
    return canned


# --- signed links (guests following a ticket, ratings) -----------------------------------------


def _sign(secret: str, *parts: str) -> str:
    mac = hmac.new(secret.encode(), "\x1f".join(parts).encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def guest_signature(secret: str, ticket: Ticket) -> str:
    """Signs (ticket id, requester address): a guest follows the ticket with no account."""
    return _sign(secret, "ticket-guest", ticket.public_id, ticket.requester_email.lower())


def check_guest_signature(secret: str, ticket: Ticket, signature: str) -> bool:
    return hmac.compare_digest(guest_signature(secret, ticket), signature[:64])


def rating_signature(secret: str, ticket: Ticket, score: int) -> str:
    return _sign(secret, "ticket-rating", ticket.public_id, ticket.reply_token, str(score))


def check_rating_signature(secret: str, ticket: Ticket, score: int, signature: str) -> bool:
    return hmac.compare_digest(rating_signature(secret, ticket, score), signature[:64])


# --- the public contact form: anti-abuse --------------------------------------------------------

GUEST_WINDOW = timedelta(hours=1)


def form_stamp(secret: str, now: datetime) -> str:
    """A signed timestamp put in the form when it is shown (the time trap)."""
    stamp = str(int(now.timestamp()))
    return f"{stamp}.{_sign(secret, 'contact-form', stamp)[:16]}"


def check_form_stamp(secret: str, stamp: str, now: datetime, *, min_seconds: float) -> None:
    """Refuse a form sent faster than a person could fill it, or with a forged stamp."""
    value, _, sig = stamp.partition(".")
    if not value.isdigit() or not hmac.compare_digest(
        _sign(secret, "contact-form", value)[:16], sig[:16]
    ):
        raise InvalidInput("This form has expired; fill it in again.", field="form")
    shown = int(value)
    elapsed = now.timestamp() - shown
    if elapsed < min_seconds:
        raise InvalidInput(
            "That was faster than a person types; wait a few seconds and send again.",
            field="form",
        )
    if elapsed > 24 * 3600:
        raise InvalidInput("This form has expired; fill it in again.", field="form")


def _key_hash(secret: str, value: str) -> str:
    mac = hmac.new(secret.encode(), f"guest-limit\x1f{value.strip().lower()}".encode(), "sha256")
    return mac.hexdigest()


def check_guest_rate(
    session: Session,
    clock: Clock,
    secret: str,
    *,
    email: str,
    address: str,
    per_email: int,
    per_address: int,
) -> None:
    """Count this submission and refuse it when the address or the client sent too many in
    the last hour. Attempts older than the window are deleted as we go."""
    now = clock.now()
    since = now - GUEST_WINDOW
    session.query(GuestContactAttempt).filter(GuestContactAttempt.at < since).delete(
        synchronize_session=False
    )
    email_hash = _key_hash(secret, email)
    address_hash = _key_hash(secret, address or "unknown")
    by_email = session.scalar(
        select(func.count()).where(
            GuestContactAttempt.email_hash == email_hash, GuestContactAttempt.at >= since
        )
    )
    by_address = session.scalar(
        select(func.count()).where(
            GuestContactAttempt.address_hash == address_hash, GuestContactAttempt.at >= since
        )
    )
    if (by_email or 0) >= per_email or (by_address or 0) >= per_address:
        raise TooManyRequests(
            "We received several messages from you in the last hour; please wait an hour "
            "before sending another, or reply to the e-mail we sent you.",
            retry_after=int(GUEST_WINDOW.total_seconds()),
        )
    session.add(GuestContactAttempt(at=now, email_hash=email_hash, address_hash=address_hash))
    session.flush()


# --- deflection ----------------------------------------------------------------------------------


def _record_form_sent(session: Session, clock: Clock, context: str, ticket: Ticket) -> None:
    if session.scalar(select(TicketDeflection).where(TicketDeflection.context == context)):
        return
    session.add(TicketDeflection(created_at=clock.now(), context=context, ticket_id=ticket.id))
    session.flush()


def deflection_count(session: Session) -> int:
    """Ticket forms where a suggested article was opened and no ticket was then sent."""
    sent = exists().where(TicketDeflection.context == HelpSuggestionEvent.context)
    return (
        session.scalar(
            select(func.count(func.distinct(HelpSuggestionEvent.context))).where(
                HelpSuggestionEvent.context.is_not(None), ~sent
            )
        )
        or 0
    )
