"""Sign-up continued by e-mail, so that the answer never tells whether an address has an
account (docs/security.md, "Signing up").

:func:`request_signup` checks the form (the password against the policy, the organization's
name, the country), counts the request (per e-mail address and per client address), and
always answers :data:`SIGNUP_ANSWER`. For a new address it keeps the request (the password
only as its argon2 hash, as for an account) and mails a link that finishes the sign-up; for
an address that has an account it mails "you already have an account: sign in or reset your
password" instead. The password is hashed in both cases, so the time taken tells nothing
either. :func:`complete_signup` (the link) makes the account, its e-mail address verified,
and the organization it owns.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.auth import hasher, password_policy_for, validate_new_password
from imhost.accounts.models import Membership, Organization, SignupRequest, User
from imhost.accounts.passwords import PasswordPolicy
from imhost.accounts.service import (
    accept_invitation,
    create_organization,
    create_user,
    find_invitation,
    get_organization,
    get_user_by_email,
    normalize_email,
)
from imhost.accounts.throttle import admit_email_request
from imhost.config import SecuritySettings
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput, NotFound

LIFETIME = timedelta(hours=24)
SIGNUP_ANSWER = (
    "Check your e-mail: we sent a message to {email} to finish signing up. "
    "The link in it works for 24 hours."
)
SIGNUP_LINK_INVALID = (
    "This sign-up link does not work any more: it was used already, it expired, or it was "
    "not copied whole. Sign up again to get a new one."
)
ACCOUNT_EXISTS = (
    "An account with this e-mail address exists already: sign in, or reset your password."
)


@dataclass(frozen=True, slots=True)
class SignupForm:
    email: str
    password: str
    name: str
    organization_name: str
    country: str | None = None
    plan_version_id: str | None = None


@dataclass(frozen=True, slots=True)
class CompletedSignup:
    user: User
    organization: Organization
    plan_version_id: str | None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def request_signup(
    session: Session,
    clock: Clock,
    security: SecuritySettings,
    form: SignupForm,
    *,
    address: str | None,
) -> str:
    """Check and count a sign-up, mail the right message, return the one answer."""
    email = normalize_email(form.email)
    name = form.name.strip()[:200]
    org_name = form.organization_name.strip()
    if not org_name or len(org_name) > 200:
        raise InvalidInput("Give your organization a name.", field="organization_name")
    country = form.country.strip().upper() if form.country else None
    if country is not None and (len(country) != 2 or not country.isalpha()):
        raise InvalidInput("country is a two-letter ISO 3166 code", field="country")
    policy = password_policy_for(session, security, None)
    validate_new_password(form.password, policy, user_inputs=[email, name, org_name])
    admit_email_request(session, clock, security, purpose="signup", email=email, address=address)
    password_hash = hasher.hash(form.password)  # in both cases, so timing tells nothing
    now = clock.now()
    if get_user_by_email(session, email) is not None:
        events.publish(session, events.SignupForExistingAccount(at=now, email=email))
    else:
        token = secrets.token_urlsafe(32)
        session.add(
            SignupRequest(
                created_at=now,
                email=email,
                name=name,
                organization_name=org_name,
                country=country,
                plan_version_id=form.plan_version_id or None,
                password_hash=password_hash,
                token_hash=_hash(token),
                expires_at=now + LIFETIME,
            )
        )
        session.flush()
        events.publish(session, events.SignupRequested(at=now, email=email, token=token))
    return SIGNUP_ANSWER.format(email=email)


def find_signup(session: Session, clock: Clock, token: str) -> SignupRequest:
    """The open sign-up of a link, or :class:`NotFound` with :data:`SIGNUP_LINK_INVALID`."""
    row = session.scalar(select(SignupRequest).where(SignupRequest.token_hash == _hash(token)))
    if row is None or row.used_at is not None or row.expires_at <= clock.now():
        raise NotFound(SIGNUP_LINK_INVALID)
    return row


def complete_signup(session: Session, clock: Clock, token: str) -> CompletedSignup:
    """Make the account and its organization from a sign-up link (used once)."""
    row = find_signup(session, clock, token)
    now = clock.now()
    claimed = session.execute(
        update(SignupRequest)
        .where(SignupRequest.id == row.id, SignupRequest.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if int(getattr(claimed, "rowcount", 0) or 0) != 1:
        raise NotFound(SIGNUP_LINK_INVALID)
    row.used_at = now
    if get_user_by_email(session, row.email) is not None:
        raise Conflict(ACCOUNT_EXISTS)
    # Other open sign-ups of this address are spent too: the address has its account now.
    session.execute(
        update(SignupRequest)
        .where(SignupRequest.email == row.email, SignupRequest.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    user = create_user(
        session,
        clock,
        email=row.email,
        name=row.name,
        password_hash=row.password_hash,
        email_verified=True,
    )
    org = create_organization(
        session, clock, name=row.organization_name, owner=user, country=row.country
    )
    return CompletedSignup(user=user, organization=org, plan_version_id=row.plan_version_id)


ACCOUNT_EXISTS_FOR_INVITATION = (
    "An account with this e-mail address exists already: sign in to accept the invitation."
)


@dataclass(frozen=True, slots=True)
class JoinedByInvitation:
    user: User
    membership: Membership
    organization: Organization


def join_by_invitation(
    session: Session,
    clock: Clock,
    security: SecuritySettings,
    token: str,
    *,
    name: str,
    password: str,
) -> JoinedByInvitation:
    """An invited person without an account makes just their own: no organization of their
    own, the invited address (verified: the link reached it), and membership of the inviting
    organization with the invited role. The invitation is used once."""
    invitation = find_invitation(session, clock, token)
    org = get_organization(session, invitation.organization_id)
    if get_user_by_email(session, invitation.email) is not None:
        raise Conflict(ACCOUNT_EXISTS_FOR_INVITATION)
    name = name.strip()
    if len(name) > 200:
        raise InvalidInput("Use at most 200 characters.", field="name")
    base = password_policy_for(session, security, None)
    policy = PasswordPolicy(
        min_length=max(base.min_length, org.password_min_length or 0),
        min_score=max(base.min_score, org.password_min_score or 0),
    )
    validate_new_password(password, policy, user_inputs=[invitation.email, name, org.name])
    user = create_user(
        session,
        clock,
        email=invitation.email,
        name=name,
        password_hash=hasher.hash(password),
        email_verified=True,
    )
    membership = accept_invitation(session, clock, token, user)
    return JoinedByInvitation(user=user, membership=membership, organization=org)
