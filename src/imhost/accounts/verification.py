"""E-mail address verification with a signed, expiring token."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.models import EmailVerification, User
from imhost.kit.clock import Clock
from imhost.kit.errors import NotFound

LIFETIME = timedelta(days=3)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def request_verification(session: Session, clock: Clock, user: User) -> str:
    token = secrets.token_urlsafe(32)
    session.add(
        EmailVerification(
            created_at=clock.now(),
            user_id=user.id,
            email=user.email,
            token_hash=_hash(token),
            expires_at=clock.now() + LIFETIME,
        )
    )
    session.flush()
    events.publish(
        session,
        events.EmailVerificationRequested(
            at=clock.now(), user_id=user.id, email=user.email, token=token
        ),
    )
    return token


def confirm(session: Session, clock: Clock, token: str) -> User:
    row = session.scalar(
        select(EmailVerification).where(EmailVerification.token_hash == _hash(token))
    )
    if row is None or row.used_at is not None or row.expires_at <= clock.now():
        raise NotFound("this confirmation link is not valid any more; ask for a new one")
    user = session.get(User, row.user_id)
    if user is None or user.email != row.email:
        raise NotFound("this confirmation link is not valid any more; ask for a new one")
    row.used_at = clock.now()
    user.email_verified_at = clock.now()
    return user
