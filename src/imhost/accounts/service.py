"""Organizations, people, memberships and invitations. Never commits: the caller does."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts import audit, sessions, tokens
from imhost.accounts.audit import Actor, AuditAction
from imhost.accounts.models import (
    Invitation,
    Membership,
    Organization,
    OrgRole,
    OrgStatus,
    StaffRole,
    User,
)
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from imhost.kit.ids import slugify
from imhost.kit.vat import check_tax_id

INVITATION_LIFETIME = timedelta(days=7)


def normalize_email(email: str) -> str:
    """Validate syntax (no DNS lookups) and lower-case: e-mail is the sign-in name."""
    try:
        info = validate_email(email.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInput(f"not a valid e-mail address: {exc}", field="email") from None
    return info.normalized.lower()


# --- people ------------------------------------------------------------------------------


def get_user_by_email(session: Session, email: str) -> User | None:
    try:
        email = normalize_email(email)
    except InvalidInput:
        return None
    return session.scalar(select(User).where(User.email == email))


def create_user(
    session: Session,
    clock: Clock,
    *,
    email: str,
    name: str = "",
    password_hash: str | None = None,
    staff_role: StaffRole | None = None,
    email_verified: bool = False,
    actor: Actor | None = None,
) -> User:
    """A new person; a staff member's creation is audited (``actor`` made them)."""
    email = normalize_email(email)
    if session.scalar(select(User.id).where(User.email == email)):
        raise Conflict("an account with this e-mail address exists already", field="email")
    now = clock.now()
    user = User(
        created_at=now,
        email=email,
        name=name.strip()[:200],
        password_hash=password_hash,
        password_changed_at=now if password_hash else None,
        staff_role=staff_role.value if staff_role else None,
        email_verified_at=now if email_verified else None,
    )
    session.add(user)
    session.flush()
    if staff_role is not None:
        audit.record(
            session,
            clock,
            AuditAction.STAFF_CREATED,
            actor=actor,
            target_type="user",
            target_id=user.id,
            target_label=user.email,
            role=staff_role.value,
        )
    return user


def get_user(session: Session, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("no such user")
    return user


def list_staff(session: Session) -> list[User]:
    return list(
        session.scalars(select(User).where(User.staff_role.is_not(None)).order_by(User.email))
    )


def set_staff_role(
    session: Session, clock: Clock, user: User, role: StaffRole | None, *, actor: Actor
) -> User:
    if user.staff_role == (role.value if role else None):
        return user
    if user.staff_role == StaffRole.ADMIN and role != StaffRole.ADMIN:
        admins = session.scalar(
            select(func.count()).select_from(User).where(User.staff_role == StaffRole.ADMIN)
        )
        if (admins or 0) <= 1:
            raise Conflict("the provider must keep at least one staff admin")
    old = user.staff_role
    user.staff_role = role.value if role else None
    audit.record(
        session,
        clock,
        AuditAction.STAFF_ROLE_CHANGED,
        actor=actor,
        target_type="user",
        target_id=user.id,
        target_label=user.email,
        old=old,
        new=user.staff_role,
    )
    if role is None:
        sessions.end_all_sessions(session, clock, user.id, reason="staff role removed")
    return user


# --- organizations -------------------------------------------------------------------------


def _unique_slug(session: Session, name: str) -> str:
    base = slugify(name, 40)
    slug, n = base, 1
    while session.scalar(select(Organization.id).where(Organization.slug == slug)):
        n += 1
        slug = f"{base}-{n}"
    return slug


def create_organization(
    session: Session,
    clock: Clock,
    *,
    name: str,
    owner: User,
    country: str | None = None,
    slug: str | None = None,
    actor: Actor | None = None,
) -> Organization:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("an organization needs a name of 1 to 200 characters", field="name")
    if country is not None:
        country = country.strip().upper()
        if len(country) != 2 or not country.isalpha():
            raise InvalidInput("country is a two-letter ISO 3166 code", field="country")
    if slug is not None:
        slug = slugify(slug, 40)
        if session.scalar(select(Organization.id).where(Organization.slug == slug)):
            raise Conflict(f"the name {slug!r} is taken", field="slug")
    org = Organization(
        created_at=clock.now(),
        name=name,
        slug=slug or _unique_slug(session, name),
        country=country,
        billing_email=owner.email,
    )
    session.add(org)
    session.flush()
    actor = actor or Actor(user_id=owner.id, label=owner.email)
    audit.record(
        session,
        clock,
        AuditAction.ORG_CREATED,
        actor=actor,
        organization_id=org.id,
        target_type="organization",
        target_id=org.id,
        target_label=org.name,
    )
    add_member(session, clock, org, owner, OrgRole.OWNER, actor=actor, founding=True)
    return org


def get_organization(session: Session, ref: str) -> Organization:
    """By id or slug."""
    org = session.get(Organization, ref) if len(ref) == 32 else None
    if org is None:
        org = session.scalar(select(Organization).where(Organization.slug == ref))
    if org is None:
        raise NotFound("no such organization")
    return org


def list_organizations(
    session: Session, *, search: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[Organization], int]:
    stmt = select(Organization)
    if search:
        like = f"%{search.strip().lower()}%"
        stmt = stmt.where(func.lower(Organization.name).like(like) | Organization.slug.like(like))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(
        stmt.order_by(Organization.name, Organization.id).limit(limit).offset(offset)
    )
    return list(rows), total


def organizations_of(session: Session, user_id: str) -> list[tuple[Organization, str]]:
    stmt = (
        select(Organization, Membership.role)
        .join(Membership, Membership.organization_id == Organization.id)
        .where(Membership.user_id == user_id)
        .order_by(Organization.name)
    )
    return [(org, role) for org, role in session.execute(stmt)]


def update_organization(
    session: Session,
    clock: Clock,
    org: Organization,
    *,
    actor: Actor,
    name: str | None = None,
    country: str | None = None,
    tax_id: str | None = None,
    billing_email: str | None = None,
    require_mfa: bool | None = None,
    password_min_length: int | None = None,
    password_min_score: int | None = None,
    expire_stale_tokens: bool | None = None,
) -> Organization:
    changes: dict[str, object] = {}
    if name is not None:
        if not name.strip() or len(name) > 200:
            raise InvalidInput("a name of 1 to 200 characters", field="name")
        org.name = name.strip()
        changes["name"] = org.name
    if country is not None:
        country = country.strip().upper()
        if len(country) != 2 or not country.isalpha():
            raise InvalidInput("country is a two-letter ISO 3166 code", field="country")
        org.country = country
        changes["country"] = country
    if tax_id is not None:
        org.tax_id = check_tax_id(tax_id, org.country)  # an EU VAT ID must check out
        changes["tax_id"] = org.tax_id
    if billing_email is not None:
        org.billing_email = normalize_email(billing_email)
        changes["billing_email"] = org.billing_email
    if password_min_length is not None:
        if not 8 <= password_min_length <= 128:
            raise InvalidInput("minimum length must be 8 to 128", field="password_min_length")
        org.password_min_length = password_min_length
        changes["password_min_length"] = password_min_length
    if password_min_score is not None:
        if not 0 <= password_min_score <= 4:
            raise InvalidInput("minimum strength score must be 0 to 4", field="password_min_score")
        org.password_min_score = password_min_score
        changes["password_min_score"] = password_min_score
    if expire_stale_tokens is not None:
        org.expire_stale_tokens = expire_stale_tokens
        changes["expire_stale_tokens"] = expire_stale_tokens
    if require_mfa is not None and require_mfa != org.require_mfa:
        org.require_mfa = require_mfa
        audit.record(
            session,
            clock,
            AuditAction.MFA_REQUIRED_CHANGED,
            actor=actor,
            organization_id=org.id,
            target_type="organization",
            target_id=org.id,
            target_label=org.name,
            require_mfa=require_mfa,
        )
    if changes:
        action = (
            AuditAction.PASSWORD_POLICY_CHANGED
            if set(changes) & {"password_min_length", "password_min_score"}
            else AuditAction.ORG_UPDATED
        )
        audit.record(
            session,
            clock,
            action,
            actor=actor,
            organization_id=org.id,
            target_type="organization",
            target_id=org.id,
            target_label=org.name,
            changes=changes,
        )
    return org


def set_organization_status(
    session: Session, clock: Clock, org: Organization, *, suspended: bool, reason: str, actor: Actor
) -> Organization:
    """Staff suspend or reactivate a customer; hosting closes or reopens its services."""
    reason = reason.strip()
    if suspended and not reason:
        raise InvalidInput("say why the customer is suspended", field="reason")
    if suspended:
        org.status = OrgStatus.SUSPENDED.value
        org.status_reason = reason[:500]
        events.publish(
            session,
            events.OrganizationSuspended(at=clock.now(), organization_id=org.id, reason=reason),
        )
        action = AuditAction.ORG_SUSPENDED
    else:
        org.status = OrgStatus.ACTIVE.value
        org.status_reason = None
        events.publish(
            session, events.OrganizationReactivated(at=clock.now(), organization_id=org.id)
        )
        action = AuditAction.ORG_REACTIVATED
    audit.record(
        session,
        clock,
        action,
        actor=actor,
        organization_id=org.id,
        target_type="organization",
        target_id=org.id,
        target_label=org.name,
        reason=reason or None,
    )
    return org


# --- members -------------------------------------------------------------------------------


def get_membership(session: Session, organization_id: str, user_id: str) -> Membership | None:
    return session.scalar(
        select(Membership).where(
            Membership.organization_id == organization_id, Membership.user_id == user_id
        )
    )


def list_members(session: Session, organization_id: str) -> list[tuple[Membership, User]]:
    stmt = (
        select(Membership, User)
        .join(User, User.id == Membership.user_id)
        .where(Membership.organization_id == organization_id)
        .order_by(User.email)
    )
    return [(m, u) for m, u in session.execute(stmt)]


def add_member(
    session: Session,
    clock: Clock,
    org: Organization,
    user: User,
    role: OrgRole,
    *,
    actor: Actor,
    founding: bool = False,
) -> Membership:
    """Add ``user`` with ``role``. ``founding``: the creator of a new organization (no
    'new owner' alert for it)."""
    if get_membership(session, org.id, user.id) is not None:
        raise Conflict(f"{user.email} is a member already")
    membership = Membership(
        created_at=clock.now(), organization_id=org.id, user_id=user.id, role=role.value
    )
    session.add(membership)
    session.flush()
    audit.record(
        session,
        clock,
        AuditAction.MEMBER_ADDED,
        actor=actor,
        organization_id=org.id,
        target_type="user",
        target_id=user.id,
        target_label=user.email,
        role=role.value,
    )
    if role is OrgRole.OWNER and not founding:
        audit.record(
            session,
            clock,
            AuditAction.OWNER_CHANGED,
            actor=actor,
            organization_id=org.id,
            target_type="user",
            target_id=user.id,
            target_label=user.email,
        )
    return membership


def _owner_count(session: Session, organization_id: str) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(Membership.organization_id == organization_id, Membership.role == OrgRole.OWNER)
        )
        or 0
    )


def change_role(
    session: Session,
    clock: Clock,
    org: Organization,
    membership: Membership,
    role: OrgRole,
    *,
    actor: Actor,
    actor_role: OrgRole | None,
) -> Membership:
    if membership.role == role.value:
        return membership
    # Only an owner makes or unmakes owners (staff admins act as owners).
    if OrgRole.OWNER in (role, OrgRole(membership.role)) and actor_role not in (
        OrgRole.OWNER,
        None,
    ):
        raise PermissionDenied("only an owner can grant or take away the owner role")
    if membership.role == OrgRole.OWNER and _owner_count(session, org.id) <= 1:
        raise Conflict("an organization must keep at least one owner")
    user = get_user(session, membership.user_id)
    old = membership.role
    membership.role = role.value
    audit.record(
        session,
        clock,
        AuditAction.ROLE_CHANGED,
        actor=actor,
        organization_id=org.id,
        target_type="user",
        target_id=user.id,
        target_label=user.email,
        old=old,
        new=role.value,
    )
    if role is OrgRole.OWNER:
        audit.record(
            session,
            clock,
            AuditAction.OWNER_CHANGED,
            actor=actor,
            organization_id=org.id,
            target_type="user",
            target_id=user.id,
            target_label=user.email,
        )
    return membership


def remove_member(
    session: Session,
    clock: Clock,
    org: Organization,
    membership: Membership,
    *,
    actor: Actor,
    actor_role: OrgRole | None,
) -> None:
    """Remove a member: their sessions end and the tokens they made for the org are revoked."""
    if membership.role == OrgRole.OWNER:
        if actor_role not in (OrgRole.OWNER, None):
            raise PermissionDenied("only an owner can remove an owner")
        if _owner_count(session, org.id) <= 1:
            raise Conflict("an organization must keep at least one owner")
    user = get_user(session, membership.user_id)
    session.delete(membership)
    session.flush()
    sessions.end_all_sessions(session, clock, user.id, reason="removed from an organization")
    tokens.revoke_tokens_created_by(
        session, clock, organization_id=org.id, user_id=user.id, actor=actor
    )
    audit.record(
        session,
        clock,
        AuditAction.MEMBER_REMOVED,
        actor=actor,
        organization_id=org.id,
        target_type="user",
        target_id=user.id,
        target_label=user.email,
        role=membership.role,
    )
    events.publish(
        session, events.MemberRemoved(at=clock.now(), organization_id=org.id, user_id=user.id)
    )


# --- invitations ---------------------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invite(
    session: Session,
    clock: Clock,
    org: Organization,
    *,
    email: str,
    role: OrgRole,
    actor: Actor,
    actor_role: OrgRole | None,
) -> tuple[Invitation, str]:
    email = normalize_email(email)
    if role is OrgRole.OWNER and actor_role not in (OrgRole.OWNER, None):
        raise PermissionDenied("only an owner can invite an owner")
    existing = get_user_by_email(session, email)
    if existing and get_membership(session, org.id, existing.id):
        raise Conflict(f"{email} is a member already", field="email")
    pending = session.scalar(
        select(Invitation).where(
            Invitation.organization_id == org.id,
            Invitation.email == email,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.expires_at > clock.now(),
        )
    )
    if pending is not None:
        pending.revoked_at = clock.now()  # a new invitation replaces the old link
    token = secrets.token_urlsafe(32)
    invitation = Invitation(
        created_at=clock.now(),
        organization_id=org.id,
        email=email,
        role=role.value,
        token_hash=_token_hash(token),
        invited_by_id=actor.user_id,
        expires_at=clock.now() + INVITATION_LIFETIME,
    )
    session.add(invitation)
    session.flush()
    audit.record(
        session,
        clock,
        AuditAction.INVITATION_CREATED,
        actor=actor,
        organization_id=org.id,
        target_type="invitation",
        target_id=invitation.id,
        target_label=email,
        role=role.value,
    )
    events.publish(
        session,
        events.InvitationCreated(
            at=clock.now(),
            organization_id=org.id,
            organization_name=org.name,
            email=email,
            role=role.value,
            token=token,
            invited_by=actor.label,
        ),
    )
    return invitation, token


def list_invitations(session: Session, clock: Clock, organization_id: str) -> list[Invitation]:
    stmt = select(Invitation).where(
        Invitation.organization_id == organization_id,
        Invitation.accepted_at.is_(None),
        Invitation.revoked_at.is_(None),
        Invitation.expires_at > clock.now(),
    )
    return list(session.scalars(stmt.order_by(Invitation.created_at.desc())))


def revoke_invitation(
    session: Session, clock: Clock, organization_id: str, invitation_id: str, *, actor: Actor
) -> None:
    inv = session.get(Invitation, invitation_id)
    if inv is None or inv.organization_id != organization_id or inv.revoked_at or inv.accepted_at:
        raise NotFound("no such pending invitation")
    inv.revoked_at = clock.now()
    audit.record(
        session,
        clock,
        AuditAction.INVITATION_REVOKED,
        actor=actor,
        organization_id=organization_id,
        target_type="invitation",
        target_id=inv.id,
        target_label=inv.email,
    )


def find_invitation(session: Session, clock: Clock, token: str) -> Invitation:
    inv = session.scalar(select(Invitation).where(Invitation.token_hash == _token_hash(token)))
    if inv is None or inv.revoked_at or inv.accepted_at or inv.expires_at <= clock.now():
        raise NotFound("this invitation link is not valid any more; ask for a new one")
    return inv


def accept_invitation(session: Session, clock: Clock, token: str, user: User) -> Membership:
    inv = find_invitation(session, clock, token)
    if inv.email != user.email:
        raise PermissionDenied(
            "this invitation was sent to another e-mail address; sign in as that person"
        )
    org = get_organization(session, inv.organization_id)
    inv.accepted_at = clock.now()
    if user.email_verified_at is None:
        user.email_verified_at = clock.now()  # the link proved the address
    return add_member(
        session, clock, org, user, OrgRole(inv.role), actor=Actor(user_id=user.id, label=user.email)
    )
