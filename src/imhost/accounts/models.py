"""Tables of the accounts package."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from imhost.db.base import Base, CreatedMixin, IdMixin
from imhost.db.types import UtcDateTime


class StaffRole(enum.StrEnum):
    """The provider's own people."""

    ADMIN = "admin"
    BILLING = "billing"
    SUPPORT = "support"
    READ_ONLY = "read-only"


class OrgRole(enum.StrEnum):
    """A person's role in a customer organization."""

    OWNER = "owner"
    ADMIN = "admin"
    BILLING = "billing"
    TECHNICAL = "technical"
    READ_ONLY = "read-only"


class OrgStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


class Organization(IdMixin, CreatedMixin, Base):
    """A customer of the provider."""

    __tablename__ = "organizations"

    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=OrgStatus.ACTIVE.value)
    status_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    country: Mapped[str | None] = mapped_column(String(2), default=None)
    tax_id: Mapped[str | None] = mapped_column(String(64), default=None)
    billing_email: Mapped[str | None] = mapped_column(String(320), default=None)
    require_mfa: Mapped[bool] = mapped_column(Boolean, default=False)
    password_min_length: Mapped[int | None] = mapped_column(Integer, default=None)
    password_min_score: Mapped[int | None] = mapped_column(Integer, default=None)
    expire_stale_tokens: Mapped[bool] = mapped_column(Boolean, default=False)
    next_access_review_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class User(IdMixin, CreatedMixin, Base):
    """A person who signs in to the portal or the console (not an XMPP account)."""

    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    email_verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    staff_role: Mapped[str | None] = mapped_column(String(16), default=None)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    password_changed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class Membership(IdMixin, CreatedMixin, Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("organization_id", "user_id"),)

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    last_active_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class Invitation(IdMixin, CreatedMixin, Base):
    __tablename__ = "invitations"

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    accepted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class ApiToken(IdMixin, CreatedMixin, Base):
    """A service account's bearer token. Only its SHA-256 is stored; shown once."""

    __tablename__ = "api_tokens"

    organization_id: Mapped[str | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True, default=None
    )  # None: a provider (staff) token
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    role: Mapped[str] = mapped_column(String(16))
    created_by_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    last_used_address: Mapped[str | None] = mapped_column(String(64), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    revoked_reason: Mapped[str | None] = mapped_column(String(200), default=None)


class TokenAddress(IdMixin, CreatedMixin, Base):
    """Addresses a token has been used from (to notice a new one)."""

    __tablename__ = "token_addresses"
    __table_args__ = (UniqueConstraint("token_id", "address"),)

    token_id: Mapped[str] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(String(64))


class WebSession(IdMixin, CreatedMixin, Base):
    """A signed-in browser. The cookie holds a random secret; only its hash is stored."""

    __tablename__ = "web_sessions"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    address: Mapped[str | None] = mapped_column(String(64), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(300), default=None)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    mfa_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    reauthenticated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    ended_reason: Mapped[str | None] = mapped_column(String(100), default=None)
    # Set while a staff member views a customer's portal read-only (impersonation).
    impersonating_org_id: Mapped[str | None] = mapped_column(String(32), default=None)


class MfaFactor(IdMixin, CreatedMixin, Base):
    """A second factor. ``kind`` is 'totp' today; WebAuthn can join as another kind."""

    __tablename__ = "mfa_factors"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    secret: Mapped[str] = mapped_column(String(128))
    confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    last_used_step: Mapped[int | None] = mapped_column(Integer, default=None)
    label: Mapped[str] = mapped_column(String(100), default="Authenticator app")


class RecoveryCode(IdMixin, CreatedMixin, Base):
    __tablename__ = "recovery_codes"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(255))
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class LoginThrottle(IdMixin, Base):
    """Failed attempts per key ('account:<id>', 'pair:account:<id>@<ip>', 'address:<ip>',
    'totp:<user id>', 'xmpp:<jid>'); see accounts/throttle.py."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(200), unique=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    # A pair key ('pair:<account key>@<ip>') the account signed in from: trusted until then.
    trusted_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class KnownLogin(IdMixin, CreatedMixin, Base):
    """An (address, client) pair a user has signed in from, to notice a new one."""

    __tablename__ = "known_logins"
    __table_args__ = (UniqueConstraint("user_id", "address", "client"),)

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(64))
    client: Mapped[str] = mapped_column(String(100))


class AuditEvent(IdMixin, Base):
    """Append-only: rows are inserted, never updated or deleted (enforced in the service)."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_org_at", "organization_id", "at"),)

    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    organization_id: Mapped[str | None] = mapped_column(String(32), default=None)
    actor_user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    actor_token_id: Mapped[str | None] = mapped_column(String(32), default=None)
    actor_label: Mapped[str] = mapped_column(String(320), default="")
    target_type: Mapped[str | None] = mapped_column(String(32), default=None)
    target_id: Mapped[str | None] = mapped_column(String(64), default=None)
    target_label: Mapped[str | None] = mapped_column(String(320), default=None)
    address: Mapped[str | None] = mapped_column(String(64), default=None)
    details: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)


class SecurityAlert(IdMixin, CreatedMixin, Base):
    __tablename__ = "security_alerts"

    rule: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    organization_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    summary: Mapped[str] = mapped_column(Text)
    audit_event_id: Mapped[str | None] = mapped_column(String(32), default=None)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class AccessReview(IdMixin, CreatedMixin, Base):
    __tablename__ = "access_reviews"

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    period_label: Mapped[str] = mapped_column(String(16))  # e.g. 2026-Q4
    due_at: Mapped[datetime] = mapped_column(UtcDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    completed_by_id: Mapped[str | None] = mapped_column(String(32), default=None)
    __table_args__ = (UniqueConstraint("organization_id", "period_label"),)


class AccessReviewItem(IdMixin, Base):
    __tablename__ = "access_review_items"

    review_id: Mapped[str] = mapped_column(
        ForeignKey("access_reviews.id", ondelete="CASCADE"), index=True
    )
    subject_type: Mapped[str] = mapped_column(String(16))  # member | token
    subject_id: Mapped[str] = mapped_column(String(32))
    subject_label: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))
    last_activity_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    flagged_stale: Mapped[bool] = mapped_column(Boolean, default=False)
    decision: Mapped[str | None] = mapped_column(String(16), default=None)  # keep | revoke
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class EmailVerification(IdMixin, CreatedMixin, Base):
    __tablename__ = "email_verifications"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class PasswordReset(IdMixin, CreatedMixin, Base):
    """A "forgot your password" link: single use, expiring; only the token's SHA-256 is kept."""

    __tablename__ = "password_resets"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    address: Mapped[str | None] = mapped_column(String(64), default=None)


class SignupRequest(IdMixin, CreatedMixin, Base):
    """A sign-up waiting for its e-mail link: the account is made when the link is opened.

    The password is kept only as its argon2 hash; the row is used once and expires.
    """

    __tablename__ = "signup_requests"

    email: Mapped[str] = mapped_column(String(320), index=True)
    name: Mapped[str] = mapped_column(String(200))
    organization_name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str | None] = mapped_column(String(2), default=None)
    plan_version_id: Mapped[str | None] = mapped_column(String(64), default=None)
    password_hash: Mapped[str] = mapped_column(String(255))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class EmailChange(IdMixin, CreatedMixin, Base):
    """A request to change a person's e-mail address, waiting for the link sent to the new
    address. Applied only when that link is opened (once, before it expires); the old address
    is told and can cancel it with its own link. Only the tokens' SHA-256 are stored."""

    __tablename__ = "email_changes"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    old_email: Mapped[str] = mapped_column(String(320))
    new_email: Mapped[str] = mapped_column(String(320))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    cancel_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    cancelled_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    address: Mapped[str | None] = mapped_column(String(64), default=None)
