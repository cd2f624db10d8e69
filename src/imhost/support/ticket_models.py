"""Tables of support tickets: the ticket, its messages (public replies and internal notes),
attachments, the history of every change, canned replies and satisfaction ratings.

A ticket's ``public_id`` (``IMH-7K3Q-2D9F``) is the only identifier people see; it is random
(no sequence is exposed) and unique by constraint. ``reply_token`` threads e-mail: replies go
to ``support+<token>@<support domain>``. ``due_at`` is filled by the SLA timers
(:mod:`imhost.support.sla`); the queue shows it when set.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from imhost.db.base import Base, CreatedMixin, IdMixin
from imhost.db.types import UtcDateTime


class Department(enum.StrEnum):
    TECHNICAL = "technical"
    BILLING = "billing"
    DOMAINS = "domains"
    ABUSE = "abuse"


class Priority(enum.StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class TicketStatus(enum.StrEnum):
    NEW = "new"
    OPEN = "open"
    WAITING_ON_CUSTOMER = "waiting_on_customer"
    WAITING_ON_STAFF = "waiting_on_staff"
    RESOLVED = "resolved"
    CLOSED = "closed"


OPEN_STATUSES: frozenset[str] = frozenset(
    {
        TicketStatus.NEW,
        TicketStatus.OPEN,
        TicketStatus.WAITING_ON_CUSTOMER,
        TicketStatus.WAITING_ON_STAFF,
    }
)


class Via(enum.StrEnum):
    """Where a message came from."""

    PORTAL = "portal"
    EMAIL = "email"
    XMPP = "xmpp"
    STAFF = "staff"
    WEB = "web"  # the public guest form
    API = "api"


class MessageKind(enum.StrEnum):
    REPLY = "reply"  # public: the customer sees it
    NOTE = "note"  # internal: staff only


class Ticket(IdMixin, CreatedMixin, Base):
    __tablename__ = "support_tickets"

    public_id: Mapped[str] = mapped_column(String(16), unique=True)
    subject: Mapped[str] = mapped_column(String(200))
    organization_id: Mapped[str | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL"), default=None
    )
    requester_user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    # Who to write to: the requester user's, or the guest's, name and address.
    requester_name: Mapped[str] = mapped_column(String(200), default="")
    requester_email: Mapped[str] = mapped_column(String(320))
    department: Mapped[str] = mapped_column(String(16), default=Department.TECHNICAL.value)
    priority: Mapped[str] = mapped_column(String(16), default=Priority.NORMAL.value)
    status: Mapped[str] = mapped_column(String(24), default=TicketStatus.NEW.value)
    assignee_user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    reply_token: Mapped[str] = mapped_column(String(32), unique=True)
    via: Mapped[str] = mapped_column(String(16), default=Via.PORTAL.value)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_customer_reply_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    first_response_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    # The SLA timers' next deadline (first response or resolution); None: no timer running.
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    # A duplicate merged into another ticket points to the survivor.
    merged_into_id: Mapped[str | None] = mapped_column(
        ForeignKey("support_tickets.id", ondelete="SET NULL"), default=None
    )
    # The satisfaction rating (1-5) from the signed link of the resolution e-mail.
    rating: Mapped[int | None] = mapped_column(Integer, default=None)
    rating_comment: Mapped[str] = mapped_column(Text, default="")
    rated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    # Counters that number the ticket's messages and changes (their order within a second).
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    change_count: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        # The queue's views: by status, by assignee, by department, by due time; each
        # ordered by the last change, newest first (keyset pagination on (updated_at, id)).
        Index("ix_support_tickets_status_updated", "status", "updated_at", "id"),
        Index("ix_support_tickets_assignee_updated", "assignee_user_id", "updated_at", "id"),
        Index("ix_support_tickets_department_updated", "department", "updated_at", "id"),
        Index("ix_support_tickets_org_updated", "organization_id", "updated_at", "id"),
        Index("ix_support_tickets_updated", "updated_at", "id"),
        Index("ix_support_tickets_due_at", "due_at"),
        Index("ix_support_tickets_requester_user_id", "requester_user_id"),
        Index("ix_support_tickets_requester_email", "requester_email"),
        Index("ix_support_tickets_resolved_at", "status", "resolved_at"),
    )


class TicketMessage(IdMixin, CreatedMixin, Base):
    """A public reply or an internal note; ``email_message_id`` is the RFC 5322 Message-ID
    of the e-mail that carried it (in or out), so replies thread."""

    __tablename__ = "support_ticket_messages"

    ticket_id: Mapped[str] = mapped_column(
        ForeignKey("support_tickets.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(8), default=MessageKind.REPLY.value)
    author_user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    author_name: Mapped[str] = mapped_column(String(200), default="")
    author_email: Mapped[str] = mapped_column(String(320), default="")
    from_staff: Mapped[bool] = mapped_column(default=False)
    via: Mapped[str] = mapped_column(String(16), default=Via.PORTAL.value)
    body: Mapped[str] = mapped_column(Text)
    email_message_id: Mapped[str | None] = mapped_column(String(255), default=None, index=True)


class TicketAttachment(IdMixin, CreatedMixin, Base):
    """A file attached to a message, stored in the data dir under ``storage_name`` (random)."""

    __tablename__ = "support_ticket_attachments"

    ticket_id: Mapped[str] = mapped_column(
        ForeignKey("support_tickets.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[str] = mapped_column(
        ForeignKey("support_ticket_messages.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # image, pdf, text, zip (by content)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_name: Mapped[str] = mapped_column(String(64), unique=True)


class TicketChange(IdMixin, Base):
    """One change to a ticket: who, when, what (field, old value, new value)."""

    __tablename__ = "support_ticket_changes"

    ticket_id: Mapped[str] = mapped_column(
        ForeignKey("support_tickets.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    actor_user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    actor_label: Mapped[str] = mapped_column(String(320), default="system")
    field: Mapped[str] = mapped_column(String(32))
    old_value: Mapped[str | None] = mapped_column(String(500), default=None)
    new_value: Mapped[str | None] = mapped_column(String(500), default=None)


class CannedReply(IdMixin, CreatedMixin, Base):
    """A reply staff insert with one click; ``body`` may hold placeholders
    (``{customer_name}``, ``{ticket_id}``, ``{agent_name}``, ``{subject}``)."""

    __tablename__ = "support_canned_replies"

    title: Mapped[str] = mapped_column(String(120), unique=True)
    body: Mapped[str] = mapped_column(Text)
    department: Mapped[str | None] = mapped_column(String(16), default=None)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class TicketDeflection(IdMixin, CreatedMixin, Base):
    """A ticket form context whose ticket was sent (so "suggestion opened, no ticket sent"
    is the suggestion events whose context has no row here)."""

    __tablename__ = "support_ticket_form_sent"

    context: Mapped[str] = mapped_column(String(64), unique=True)
    ticket_id: Mapped[str | None] = mapped_column(
        ForeignKey("support_tickets.id", ondelete="SET NULL"), default=None
    )


class GuestContactAttempt(IdMixin, Base):
    """One submission of the public contact form, for its rate limits (keyed hashes only)."""

    __tablename__ = "support_guest_attempts"

    at: Mapped[datetime] = mapped_column(UtcDateTime())
    email_hash: Mapped[str] = mapped_column(String(64))
    address_hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_support_guest_attempts_email_hash_at", "email_hash", "at"),
        Index("ix_support_guest_attempts_address_hash_at", "address_hash", "at"),
    )
