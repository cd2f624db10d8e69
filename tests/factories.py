"""Factories for test objects shared across packages."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from imhost.accounts import service as accounts
from imhost.accounts.audit import Actor
from imhost.accounts.auth import hasher
from imhost.accounts.models import Organization, OrgRole, StaffRole, User
from imhost.kit.clock import Clock

PASSWORD = "correct horse battery staple 42"


def make_user(
    session: Session,
    clock: Clock,
    email: str,
    *,
    password: str = PASSWORD,
    staff_role: StaffRole | None = None,
    name: str = "",
) -> User:
    user = accounts.create_user(
        session, clock, email=email, name=name, staff_role=staff_role, email_verified=True
    )
    user.password_hash = hasher.hash(password)
    return user


def make_org(session: Session, clock: Clock, name: str, owner: User, **kw: object) -> Organization:
    return accounts.create_organization(session, clock, name=name, owner=owner, **kw)  # type: ignore[arg-type]


def add_member(
    session: Session, clock: Clock, org: Organization, user: User, role: OrgRole
) -> None:
    accounts.add_member(session, clock, org, user, role, actor=Actor.system())


@dataclass
class World:
    """Two customer organizations with a member of every role, and staff of every role."""

    org: Organization
    other_org: Organization
    members: dict[OrgRole, User]
    outsider: User  # owner of other_org
    staff: dict[StaffRole, User]


def make_world(session: Session, clock: Clock) -> World:
    owner = make_user(session, clock, "owner@a.example.com", name="Olga Owner")
    org = make_org(session, clock, "Acme Chat", owner, country="DE")
    members = {OrgRole.OWNER: owner}
    for role in OrgRole:
        if role is OrgRole.OWNER:
            continue
        user = make_user(session, clock, f"{role.value}@a.example.com")
        add_member(session, clock, org, user, role)
        members[role] = user
    outsider = make_user(session, clock, "owner@b.example.com")
    other = make_org(session, clock, "Beta Talk", outsider, country="FR")
    staff = {
        role: make_user(session, clock, f"staff-{role.value}@provider.example.com", staff_role=role)
        for role in StaffRole
    }
    session.flush()
    return World(org=org, other_org=other, members=members, outsider=outsider, staff=staff)
