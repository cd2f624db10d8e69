"""Queued e-mails and webhooks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from imhost.db.base import Base, CreatedMixin, IdMixin
from imhost.db.types import UtcDateTime


class OutboundEmail(IdMixin, CreatedMixin, Base):
    __tablename__ = "outbound_emails"

    to: Mapped[list[str]] = mapped_column(JSON)
    subject: Mapped[str] = mapped_column(String(300))
    text: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text, default=None)
    organization_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    kind: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    transport: Mapped[str | None] = mapped_column(String(16), default=None)  # smtp | outbox
    outbox_file: Mapped[str | None] = mapped_column(String(300), default=None)
    # Extra headers a sender sets (Message-ID, In-Reply-To, References, Reply-To: tickets).
    headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)


class EmailAttachment(IdMixin, Base):
    __tablename__ = "email_attachments"

    email_id: Mapped[str] = mapped_column(
        ForeignKey("outbound_emails.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(100))
    content: Mapped[bytes] = mapped_column(LargeBinary)


class WebhookEndpoint(IdMixin, CreatedMixin, Base):
    """Where an organization (or the provider, organization_id NULL) wants events posted."""

    __tablename__ = "webhook_endpoints"

    organization_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    url: Mapped[str] = mapped_column(String(500))
    # The signing secret must be readable to sign; it is shown to the owner at creation.
    secret: Mapped[str] = mapped_column(String(100))
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: all
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class WebhookDelivery(IdMixin, CreatedMixin, Base):
    __tablename__ = "webhook_deliveries"

    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, object]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    response_status: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
