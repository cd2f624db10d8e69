"""Browser sessions: a random secret in a Secure, HttpOnly, SameSite=Lax cookie.

Only the SHA-256 of the secret is stored. A session ends when idle too long, when it reaches
its absolute lifetime, when its person signs out or ends it from the list of active sessions,
and for all of a person's sessions when their password changes or they are removed from an
organization.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost.accounts import audit
from imhost.accounts.audit import Actor, AuditAction
from imhost.accounts.models import Organization, WebSession
from imhost.config import SecuritySettings
from imhost.kit.clock import Clock
from imhost.kit.errors import NotFound

COOKIE_NAME = "imhost_session"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class NewSession:
    session: WebSession
    cookie_value: str


def start_session(
    session: Session,
    clock: Clock,
    policy: SecuritySettings,
    *,
    user_id: str,
    address: str | None,
    user_agent: str | None,
    mfa_verified: bool,
) -> NewSession:
    now = clock.now()
    secret = secrets.token_urlsafe(32)
    web = WebSession(
        created_at=now,
        user_id=user_id,
        secret_hash=_hash(secret),
        csrf_token=secrets.token_urlsafe(24),
        address=address,
        user_agent=(user_agent or "")[:300] or None,
        last_seen_at=now,
        expires_at=now + timedelta(hours=policy.session_absolute_hours),
        mfa_verified=mfa_verified,
        reauthenticated_at=now,
    )
    session.add(web)
    session.flush()
    return NewSession(web, secret)


def lookup_session(
    session: Session, clock: Clock, policy: SecuritySettings, cookie_value: str
) -> WebSession | None:
    """The live session for a cookie, touched; ``None`` (and ended) if it timed out."""
    if not cookie_value or len(cookie_value) > 200:
        return None
    web = session.scalar(select(WebSession).where(WebSession.secret_hash == _hash(cookie_value)))
    if web is None or web.ended_at is not None:
        return None
    now = clock.now()
    if now >= web.expires_at:
        end_session(session, clock, web, reason="absolute timeout")
        return None
    if now - web.last_seen_at > timedelta(minutes=policy.session_idle_minutes):
        end_session(session, clock, web, reason="idle timeout")
        return None
    # Touch at most once a minute to keep writes down.
    if now - web.last_seen_at > timedelta(seconds=60):
        web.last_seen_at = now
    return web


def end_session(
    session: Session, clock: Clock, web: WebSession, *, reason: str, actor: Actor | None = None
) -> None:
    if web.ended_at is None:
        web.ended_at = clock.now()
        web.ended_reason = reason[:100]
        if actor is not None:
            audit.record(
                session,
                clock,
                AuditAction.SESSION_ENDED,
                actor=actor,
                target_type="session",
                target_id=web.id,
                reason=reason,
            )


def active_sessions(session: Session, clock: Clock, user_id: str) -> list[WebSession]:
    now = clock.now()
    stmt = select(WebSession).where(
        WebSession.user_id == user_id, WebSession.ended_at.is_(None), WebSession.expires_at > now
    )
    return list(session.scalars(stmt.order_by(WebSession.last_seen_at.desc())))


def end_user_session(
    session: Session, clock: Clock, *, user_id: str, session_id: str, actor: Actor
) -> None:
    web = session.get(WebSession, session_id)
    if web is None or web.user_id != user_id or web.ended_at is not None:
        raise NotFound("no such active session")
    end_session(session, clock, web, reason="ended by user", actor=actor)


def end_all_sessions(
    session: Session, clock: Clock, user_id: str, *, reason: str, keep_id: str | None = None
) -> int:
    count = 0
    for web in active_sessions(session, clock, user_id):
        if web.id != keep_id:
            end_session(session, clock, web, reason=reason)
            count += 1
    return count


def start_impersonation(
    session: Session, clock: Clock, web: WebSession, org: Organization, *, actor: Actor
) -> None:
    """Let a staff browser session view ``org``'s portal read-only (audited: the customer
    sees it in their own log)."""
    web.impersonating_org_id = org.id
    audit.record(
        session,
        clock,
        AuditAction.IMPERSONATION_STARTED,
        actor=actor,
        organization_id=org.id,
        target_type="organization",
        target_id=org.id,
        target_label=org.name,
    )
