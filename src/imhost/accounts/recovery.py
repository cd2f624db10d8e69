"""Password reset by e-mail ("Forgot your password?").

The flow (docs/security.md, "Password reset"), after OWASP's Forgot Password Cheat Sheet:

1. :func:`request_reset` takes an e-mail address and always gives the same answer
   (:data:`REQUEST_ANSWER`), whether an account has it or not. Requests are rate limited per
   e-mail address and per client address (``accounts.throttle.admit_email_request``). For an
   active account it stores a random 256-bit token's SHA-256 with an expiry
   (``password_reset_minutes``, 60) and mails the link through the outbox.
2. :func:`find_reset` checks a link (used, expired and unknown links all get
   :data:`LINK_INVALID`).
3. :func:`complete_reset` sets the new password (it must pass the policy), uses the link up
   (and every other open link of the account), ends every session of the account, clears its
   lockout (the owner proved themselves by e-mail: strangers' guesses must not keep them
   out), and writes the audit log. It does not sign in: the person signs in with the new
   password, and a second factor is still asked for.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts import audit, sessions
from imhost.accounts.audit import Actor, AuditAction
from imhost.accounts.auth import hasher, password_policy_for, validate_new_password
from imhost.accounts.models import PasswordReset, User
from imhost.accounts.service import get_user_by_email, normalize_email
from imhost.accounts.throttle import LoginThrottleService, account_key, admit_email_request
from imhost.config import SecuritySettings
from imhost.kit.clock import Clock
from imhost.kit.errors import NotFound

REQUEST_ANSWER = (
    "If an account uses that address, we sent it a link to choose a new password. "
    "Check your e-mail; the link works for {minutes} minutes."
)
LINK_INVALID = (
    "This link to choose a new password does not work any more: it was used already, it "
    "expired, or it was not copied whole. Ask for a new one."
)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def request_answer(security: SecuritySettings) -> str:
    return REQUEST_ANSWER.format(minutes=security.password_reset_minutes)


def request_reset(
    session: Session,
    clock: Clock,
    security: SecuritySettings,
    *,
    email: str,
    address: str | None,
) -> str:
    """Mail a reset link if an active account has ``email``; return the one answer."""
    normalized = normalize_email(email)
    admit_email_request(
        session, clock, security, purpose="reset", email=normalized, address=address
    )
    user = get_user_by_email(session, normalized)
    if user is not None and user.is_active:
        token = secrets.token_urlsafe(32)
        now = clock.now()
        session.add(
            PasswordReset(
                created_at=now,
                user_id=user.id,
                token_hash=_hash(token),
                expires_at=now + timedelta(minutes=security.password_reset_minutes),
                address=(address or None) and address[:64],
            )
        )
        session.flush()
        audit.record(
            session,
            clock,
            AuditAction.PASSWORD_RESET_REQUESTED,
            actor=Actor(label=normalized[:320], address=address),
            target_type="user",
            target_id=user.id,
            target_label=user.email,
        )
        events.publish(
            session,
            events.PasswordResetRequested(
                at=now,
                user_id=user.id,
                email=user.email,
                token=token,
                expires_minutes=security.password_reset_minutes,
            ),
        )
    return request_answer(security)


def find_reset(session: Session, clock: Clock, token: str) -> tuple[PasswordReset, User]:
    """The open reset of a link, or :class:`NotFound` with :data:`LINK_INVALID`."""
    row = session.scalar(select(PasswordReset).where(PasswordReset.token_hash == _hash(token)))
    if row is None or row.used_at is not None or row.expires_at <= clock.now():
        raise NotFound(LINK_INVALID)
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise NotFound(LINK_INVALID)
    return row, user


def complete_reset(
    session: Session,
    clock: Clock,
    security: SecuritySettings,
    *,
    token: str,
    new_password: str,
    address: str | None,
) -> User:
    """Set the new password from a reset link (see the module docstring)."""
    row, user = find_reset(session, clock, token)
    policy = password_policy_for(session, security, user)
    validate_new_password(
        new_password,
        policy,
        user_inputs=[user.email, user.name, *user.email.split("@")],
        field_name="new_password",
    )
    now = clock.now()
    # Use the link up first, guarded by its own state: of two requests racing with one
    # link, only one changes the password.
    claimed = session.execute(
        update(PasswordReset)
        .where(PasswordReset.id == row.id, PasswordReset.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if int(getattr(claimed, "rowcount", 0) or 0) != 1:
        raise NotFound(LINK_INVALID)
    session.execute(
        update(PasswordReset)
        .where(PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    row.used_at = now
    user.password_hash = hasher.hash(new_password)
    user.password_changed_at = now
    if user.email_verified_at is None:
        user.email_verified_at = now  # the link reached this address
    sessions.end_all_sessions(session, clock, user.id, reason="password reset")
    LoginThrottleService(session, clock, security).clear_account(account_key(user.id))
    audit.record(
        session,
        clock,
        AuditAction.PASSWORD_RESET,
        actor=Actor(user_id=user.id, label=user.email, address=address),
        target_type="user",
        target_id=user.id,
        target_label=user.email,
    )
    return user
