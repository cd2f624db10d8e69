"""The audit log: append-only records of every security-relevant event.

Rows are only ever inserted (``record``); nothing in imhost updates or deletes them, and a
test checks the service offers no way to. Readers: an organization's owner and admins (their
organization's events) and staff (all).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from imhost.accounts.models import AuditEvent
from imhost.kit.clock import Clock


class AuditAction(enum.StrEnum):
    LOGIN_SUCCEEDED = "login.succeeded"
    LOGIN_FAILED = "login.failed"
    LOGIN_LOCKED_OUT = "login.locked_out"
    LOGOUT = "logout"
    SESSION_ENDED = "session.ended"
    MFA_ENROLLED = "mfa.enrolled"
    MFA_DISABLED = "mfa.disabled"
    MFA_FAILED = "mfa.failed"
    RECOVERY_CODE_USED = "mfa.recovery_code_used"
    RECOVERY_CODES_REGENERATED = "mfa.recovery_codes_regenerated"
    MFA_REQUIRED_CHANGED = "org.mfa_requirement_changed"
    PASSWORD_CHANGED = "password.changed"
    PASSWORD_RESET_REQUESTED = "password.reset_requested"
    PASSWORD_RESET = "password.reset"
    PASSWORD_POLICY_CHANGED = "org.password_policy_changed"
    ROLE_CHANGED = "member.role_changed"
    MEMBER_ADDED = "member.added"
    MEMBER_REMOVED = "member.removed"
    OWNER_CHANGED = "org.owner_added"
    INVITATION_CREATED = "invitation.created"
    INVITATION_REVOKED = "invitation.revoked"
    TOKEN_CREATED = "token.created"
    TOKEN_USED_NEW_ADDRESS = "token.used_new_address"
    TOKEN_REVOKED = "token.revoked"
    TOKEN_EXPIRED_STALE = "token.expired_stale"
    ORG_CREATED = "org.created"
    ORG_UPDATED = "org.updated"
    ORG_SUSPENDED = "org.suspended"
    ORG_REACTIVATED = "org.reactivated"
    ORG_CLOSED = "org.closed"
    ORG_DATA_EXPORTED = "org.data_exported"
    EMAIL_CHANGE_REQUESTED = "email.change_requested"
    EMAIL_CHANGED = "email.changed"
    EMAIL_CHANGE_CANCELLED = "email.change_cancelled"
    STAFF_CREATED = "staff.created"
    STAFF_ROLE_CHANGED = "staff.role_changed"
    IMPERSONATION_STARTED = "staff.impersonation_started"
    ACCESS_REVIEW_OPENED = "access_review.opened"
    ACCESS_REVIEW_DECISION = "access_review.decision"
    ACCESS_REVIEW_COMPLETED = "access_review.completed"
    XMPP_ACCOUNT_CHANGED = "xmpp.account_changed"
    XMPP_LOGIN_FAILED = "xmpp.login_failed"
    SERVICE_CHANGED = "service.changed"
    DOMAIN_ADDED = "domain.added"
    DOMAIN_REMOVED = "domain.removed"
    DOMAIN_VERIFIED = "domain.verified"
    DOMAIN_VERIFICATION_FAILED = "domain.verification_failed"


@dataclass(frozen=True)
class Actor:
    """Who did it: a person, a token, or the system."""

    user_id: str | None = None
    token_id: str | None = None
    label: str = "system"
    address: str | None = None

    @classmethod
    def system(cls) -> Actor:
        return cls()


def record(
    session: Session,
    clock: Clock,
    action: AuditAction | str,
    *,
    actor: Actor | None = None,
    organization_id: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    target_label: str | None = None,
    address: str | None = None,
    **details: Any,
) -> AuditEvent:
    actor = actor or Actor.system()
    event = AuditEvent(
        at=clock.now(),
        action=str(action),
        organization_id=organization_id,
        actor_user_id=actor.user_id,
        actor_token_id=actor.token_id,
        actor_label=actor.label,
        target_type=target_type,
        target_id=target_id,
        target_label=target_label,
        address=address or actor.address,
        details={k: v for k, v in details.items() if v is not None},
    )
    session.add(event)
    session.flush()
    # Threat rules look at every event as it is written.
    from imhost.accounts import threats  # local: threats records alerts via this module

    threats.evaluate(session, clock, event)
    return event


def query_events(
    *,
    organization_id: str | None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select[AuditEvent]:
    stmt = select(AuditEvent)
    if organization_id is not None:
        stmt = stmt.where(AuditEvent.organization_id == organization_id)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    if until:
        stmt = stmt.where(AuditEvent.at < until)
    return stmt.order_by(AuditEvent.at.desc(), AuditEvent.id.desc())


def list_events(
    session: Session,
    *,
    organization_id: str | None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[AuditEvent], int]:
    stmt = query_events(organization_id=organization_id, action=action, since=since, until=until)
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows = list(session.scalars(stmt.limit(limit).offset(offset)))
    return rows, total
