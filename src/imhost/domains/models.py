"""Tables of custom domains: a customer's own name for its hosted service, and its DNS checks.

A domain is claimed by one organization at a time (``name`` is unique across the platform).
``service_id`` names the hosted service it is for; the row goes when the service goes.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from imhost.db.base import Base, CreatedMixin, IdMixin
from imhost.db.types import UtcDateTime


class DomainStatus(enum.StrEnum):
    PENDING = "pending"
    """Added, not checked yet."""
    FAILING = "failing"
    """Checked, and some record is missing or wrong (re-checked on a schedule)."""
    VERIFIED = "verified"


class CustomDomain(IdMixin, CreatedMixin, Base):
    """A domain a customer brings (``chat.acme.com``), with its verification state.

    ``name`` is the IDNA 2008 A-label form (ASCII, lower case, no final dot); ``checks`` holds
    the last check, record by record (see :class:`imhost.domains.checks.RecordCheck`).
    """

    __tablename__ = "custom_domains"

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    service_id: Mapped[str] = mapped_column(
        ForeignKey("hosted_services.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(253), unique=True)
    token: Mapped[str] = mapped_column(String(64))
    self_hosted: Mapped[bool] = mapped_column(Boolean, default=False)
    """The domain itself is the XMPP host (A/AAAA to the provider) instead of SRV records
    pointing at the provider's host name."""
    status: Mapped[str] = mapped_column(String(16), default=DomainStatus.PENDING.value, index=True)
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    check_count: Mapped[int] = mapped_column(Integer, default=0)
    failed_checks: Mapped[int] = mapped_column(Integer, default=0)
    """Failed checks in a row (the re-check backoff doubles with each)."""
    last_checked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    next_check_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None, index=True)
    verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


DOMAIN_STATUS_LABELS: dict[str, str] = {
    DomainStatus.PENDING.value: "Waiting for the first check",
    DomainStatus.FAILING.value: "Records missing or wrong",
    DomainStatus.VERIFIED.value: "Verified",
}

RECORD_STATE_LABELS: dict[str, str] = {
    "ok": "Found",
    "missing": "Missing",
    "wrong": "Wrong value",
    "unknown": "No answer yet",
}
