"""Changing a person's e-mail address, proved by a link sent to the new address.

:func:`request_change` (the caller has checked the person's password) keeps the request and
sends two messages: the confirmation link to the new address, and a notice to the old one
with a link that cancels the change. :func:`confirm_change` applies it when the link is
opened: once, before it expires, only if the account still has the old address and nobody
has taken the new one meanwhile. Sessions stay signed in (the person is the same). Each
step is audited. Only the tokens' SHA-256 are stored.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from imhost import events
from imhost.accounts import audit
from imhost.accounts.audit import Actor
from imhost.accounts.models import EmailChange, User
from imhost.accounts.service import get_user_by_email, normalize_email
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput, NotFound

LIFETIME = timedelta(hours=24)
LINK_INVALID = (
    "This link does not work any more: it was used already, it expired, the change was "
    "cancelled, or it was not copied whole. Ask for the change again from your account page."
)
ADDRESS_TAKEN = "Another account uses this e-mail address already."


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _actor(user: User, address: str | None = None) -> Actor:
    return Actor(user_id=user.id, label=user.email, address=address)


def request_change(
    session: Session, clock: Clock, user: User, new_email: str, *, address: str | None = None
) -> EmailChange:
    """Start changing ``user``'s address to ``new_email`` (a newer request replaces an open
    one)."""
    try:
        email = normalize_email(new_email)
    except InvalidInput:
        raise InvalidInput(
            "Enter an e-mail address such as name@example.com.", field="new_email"
        ) from None
    if email == user.email:
        raise InvalidInput("This is your address already.", field="new_email")
    if get_user_by_email(session, email) is not None:
        raise Conflict(ADDRESS_TAKEN, field="new_email")
    now = clock.now()
    session.execute(
        update(EmailChange)
        .where(
            EmailChange.user_id == user.id,
            EmailChange.used_at.is_(None),
            EmailChange.cancelled_at.is_(None),
        )
        .values(cancelled_at=now)
        .execution_options(synchronize_session=False)
    )
    token, cancel_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    change = EmailChange(
        created_at=now,
        user_id=user.id,
        old_email=user.email,
        new_email=email,
        token_hash=_hash(token),
        cancel_token_hash=_hash(cancel_token),
        expires_at=now + LIFETIME,
        address=address,
    )
    session.add(change)
    session.flush()
    audit.record(
        session,
        clock,
        audit.AuditAction.EMAIL_CHANGE_REQUESTED,
        actor=_actor(user, address),
        target_type="user",
        target_id=user.id,
        target_label=user.email,
        new_email=email,
    )
    events.publish(
        session,
        events.EmailChangeRequested(
            at=now,
            user_id=user.id,
            old_email=user.email,
            new_email=email,
            token=token,
            cancel_token=cancel_token,
            expires_hours=int(LIFETIME.total_seconds() // 3600),
        ),
    )
    return change


def _open(
    session: Session, clock: Clock, column: InstrumentedAttribute[str], token: str
) -> EmailChange:
    row = session.scalar(select(EmailChange).where(column == _hash(token)))
    if (
        row is None
        or row.used_at is not None
        or row.cancelled_at is not None
        or row.expires_at <= clock.now()
    ):
        raise NotFound(LINK_INVALID)
    return row


def find_change(session: Session, clock: Clock, token: str) -> EmailChange:
    """The open change of a confirmation link, or :class:`NotFound`."""
    return _open(session, clock, EmailChange.token_hash, token)


def find_change_to_cancel(session: Session, clock: Clock, cancel_token: str) -> EmailChange:
    """The open change of a cancel link (the notice to the old address), or :class:`NotFound`."""
    return _open(session, clock, EmailChange.cancel_token_hash, cancel_token)


def confirm_change(
    session: Session, clock: Clock, token: str, *, address: str | None = None
) -> User:
    """Apply the change of a confirmation link (once)."""
    row = find_change(session, clock, token)
    now = clock.now()
    claimed = session.execute(
        update(EmailChange)
        .where(
            EmailChange.id == row.id,
            EmailChange.used_at.is_(None),
            EmailChange.cancelled_at.is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if int(getattr(claimed, "rowcount", 0) or 0) != 1:
        raise NotFound(LINK_INVALID)
    row.used_at = now
    user = session.get(User, row.user_id)
    if user is None or user.email != row.old_email:
        raise NotFound(LINK_INVALID)
    if get_user_by_email(session, row.new_email) is not None:
        raise Conflict(ADDRESS_TAKEN)
    old = user.email
    user.email = row.new_email
    user.email_verified_at = now  # the link reached the new address
    session.flush()
    audit.record(
        session,
        clock,
        audit.AuditAction.EMAIL_CHANGED,
        actor=Actor(user_id=user.id, label=user.email, address=address),
        target_type="user",
        target_id=user.id,
        target_label=user.email,
        old_email=old,
        new_email=user.email,
    )
    return user


def cancel_change(
    session: Session, clock: Clock, cancel_token: str, *, address: str | None = None
) -> EmailChange:
    """Stop a change from the notice sent to the old address (audited: the person said it was
    not them, which is worth a look)."""
    row = find_change_to_cancel(session, clock, cancel_token)
    row.cancelled_at = clock.now()
    audit.record(
        session,
        clock,
        audit.AuditAction.EMAIL_CHANGE_CANCELLED,
        actor=Actor(label=row.old_email, address=address),
        target_type="user",
        target_id=row.user_id,
        target_label=row.old_email,
        new_email=row.new_email,
    )
    return row
