"""Test objects for hosting: organizations, services, XMPP accounts."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session

from imhost.accounts.models import Organization
from imhost.catalog.models import Plan, PlanLimits, PlanVersion
from imhost.config import SecuritySettings
from imhost.hosting import service as hosting
from imhost.hosting.models import HostedService, XmppAccount
from imhost.kit.clock import Clock
from imhost.kit.ids import new_id

PASSWORD = "violet-tundra-harbour-1987"
"""Passes the default policy (12+ characters, zxcvbn score 3)."""
SECURITY = SecuritySettings()
ITERATIONS = 64
"""Few PBKDF2 iterations: the tests exercise the logic, not the cost."""


def make_org(session: Session, clock: Clock, name: str = "Acme") -> Organization:
    suffix = new_id()[:6]
    org = Organization(
        name=f"{name} {suffix}", slug=f"{name.lower()}-{suffix}", created_at=clock.now()
    )
    session.add(org)
    session.flush()
    return org


def make_service(
    session: Session,
    clock: Clock,
    org: Organization | None = None,
    *,
    domain: str | None = None,
    limits: PlanLimits | None = None,
) -> HostedService:
    org = org or make_org(session, clock)
    return hosting.create_service(
        session, clock, org, base_domain="im.test", domain=domain, limits=limits
    )


def make_account(
    session: Session,
    clock: Clock,
    service: HostedService,
    username: str = "alice",
    password: str = PASSWORD,
) -> XmppAccount:
    account, _ = hosting.create_account(
        session,
        clock,
        service,
        username=username,
        password=password,
        security=SECURITY,
        iterations=ITERATIONS,
    )
    return account


def make_plan_version(
    session: Session, clock: Clock, *, version: int = 1, plan_id: str | None = None, **limits: int
) -> PlanVersion:
    """A plan version with ``limits`` (PlanVersion limit columns)."""
    if plan_id is None:
        plan = Plan(code=f"plan-{new_id()[:8]}", name="Business", created_at=clock.now())
        session.add(plan)
        session.flush()
        plan_id = plan.id
    pv = PlanVersion(
        plan_id=plan_id,
        version=version,
        currency="EUR",
        base_fee=Decimal("10"),
        created_at=clock.now(),
        **limits,
    )
    session.add(pv)
    session.flush()
    return pv
