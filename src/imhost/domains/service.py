"""Custom domains: add, check, remove, list. Never commits (the caller owns the transaction).

A domain is added to one hosted service of an organization; the caller (web, CLI) has already
checked that the service is the organization's. Checking asks DNS (:mod:`.checks`) and then
records the outcome with :func:`record_check`, which moves the status, schedules the next
re-check with a doubling backoff, audits and publishes :class:`~imhost.events.CustomDomainChanged`
on each change of state (never twice for the same state).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts import audit
from imhost.accounts.audit import Actor, AuditAction
from imhost.config import Settings
from imhost.domains import checks
from imhost.domains.checks import Expected, RecordCheck
from imhost.domains.models import CustomDomain, DomainStatus
from imhost.domains.names import display_name, is_within, normalize_domain
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput, NotFound

MAX_DOMAINS_PER_SERVICE = 20
CHECK_NOW_MIN_SECONDS = 10
"""A "Check now" within this many seconds of the last check shows the last result (DNS is
not asked again), so repeated clicks cannot turn us into a DNS load generator."""


def add_domain(
    session: Session,
    clock: Clock,
    settings: Settings,
    *,
    organization_id: str,
    service_id: str,
    name: str,
    self_hosted: bool = False,
    actor: Actor | None = None,
) -> CustomDomain:
    """Claim ``name`` for the service, with a fresh verification token.

    Refused when the name is invalid, is the provider's own domain or under it, or is already
    claimed (by this organization: it says so; by another: it says only that it is taken).
    """
    ascii_name = normalize_domain(name)
    if is_within(ascii_name, settings.base_domain) or (
        settings.dns.srv_target and is_within(ascii_name, settings.dns.srv_target)
    ):
        raise InvalidInput(
            f"Names under {settings.base_domain} are ours; enter a domain your organization owns.",
            field="domain",
        )
    if self_hosted and not settings.dns.addresses:
        raise InvalidInput(
            "This provider has not published the addresses a domain would point at; use SRV "
            "records instead.",
            field="self_hosted",
        )
    existing = session.scalar(select(CustomDomain).where(CustomDomain.name == ascii_name))
    if existing is not None:
        if existing.organization_id == organization_id:
            raise Conflict(
                f"{display_name(ascii_name)} is already added to your organization.",
                field="domain",
            )
        raise Conflict(
            f"{display_name(ascii_name)} is already in use by another customer. If the domain "
            "is yours, contact support.",
            field="domain",
        )
    count = session.scalar(
        select(func.count()).select_from(CustomDomain).where(CustomDomain.service_id == service_id)
    )
    if (count or 0) >= MAX_DOMAINS_PER_SERVICE:
        raise Conflict(
            f"A service has at most {MAX_DOMAINS_PER_SERVICE} custom domains; remove one first.",
            field="domain",
        )
    now = clock.now()
    domain = CustomDomain(
        organization_id=organization_id,
        service_id=service_id,
        name=ascii_name,
        token=secrets.token_hex(16),
        self_hosted=self_hosted,
        status=DomainStatus.PENDING.value,
        checks=[],
        check_count=0,
        failed_checks=0,
        created_at=now,
        next_check_at=now + timedelta(minutes=settings.dns.recheck_first_minutes),
    )
    session.add(domain)
    session.flush()
    _audit(session, clock, domain, AuditAction.DOMAIN_ADDED, actor, self_hosted=self_hosted)
    _publish(session, clock, domain, "added")
    return domain


def get_domain(
    session: Session, domain_id: str, *, organization_id: str | None = None
) -> CustomDomain:
    """The domain, or NotFound (also when it belongs to another organization)."""
    domain = session.get(CustomDomain, domain_id[:64])
    if domain is None or (
        organization_id is not None and domain.organization_id != organization_id
    ):
        raise NotFound("no such domain")
    return domain


def find_domain(session: Session, name: str, *, organization_id: str | None = None) -> CustomDomain:
    """The domain by name (any spelling that normalizes to it), or NotFound."""
    try:
        ascii_name = normalize_domain(name)
    except InvalidInput:
        raise NotFound(f"no domain {name[:80]!r}") from None
    domain = session.scalar(select(CustomDomain).where(CustomDomain.name == ascii_name))
    if domain is None or (
        organization_id is not None and domain.organization_id != organization_id
    ):
        raise NotFound(f"no domain {display_name(ascii_name)}")
    return domain


def domains_of_service(session: Session, service_id: str) -> list[CustomDomain]:
    return list(
        session.scalars(
            select(CustomDomain)
            .where(CustomDomain.service_id == service_id)
            .order_by(CustomDomain.created_at, CustomDomain.name)
        )
    )


def list_domains(
    session: Session,
    *,
    organization_id: str | None = None,
    status: str | None = None,
    search: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[CustomDomain], int]:
    """Domains, newest first, filtered by organization, status and a name fragment."""
    stmt = select(CustomDomain)
    if organization_id is not None:
        stmt = stmt.where(CustomDomain.organization_id == organization_id)
    if status:
        if status not in {s.value for s in DomainStatus}:
            raise InvalidInput("Status is one of: pending, failing, verified.", field="status")
        stmt = stmt.where(CustomDomain.status == status)
    if search:
        fragment = search.strip().lower()
        try:
            fragment_ascii = normalize_domain(fragment)
        except InvalidInput:
            fragment_ascii = fragment
        stmt = stmt.where(
            or_(
                CustomDomain.name.contains(fragment, autoescape=True),
                CustomDomain.name.contains(fragment_ascii, autoescape=True),
            )
        )
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(
        stmt.order_by(CustomDomain.created_at.desc(), CustomDomain.id).limit(limit).offset(offset)
    )
    return list(rows), int(total)


def count_by_status(session: Session) -> dict[str, int]:
    counts = {s.value: 0 for s in DomainStatus}
    for status, n in session.execute(
        select(CustomDomain.status, func.count()).group_by(CustomDomain.status)
    ):
        counts[str(status)] = int(n)
    return counts


def remove_domain(
    session: Session, clock: Clock, domain: CustomDomain, *, actor: Actor | None = None
) -> None:
    """Stop using and checking the domain; its name is free to be claimed again."""
    _audit(session, clock, domain, AuditAction.DOMAIN_REMOVED, actor)
    _publish(session, clock, domain, "removed")
    session.delete(domain)
    session.flush()


def expected_records(settings: Settings, domain: CustomDomain) -> list[RecordCheck]:
    """The last check's records, or (never checked) the records to add."""
    if domain.checks:
        return [RecordCheck.from_json(item) for item in domain.checks]
    return checks.required_records(
        domain.name, domain.token, Expected.from_settings(settings), self_hosted=domain.self_hosted
    )


def backoff(settings: Settings, failed_checks: int) -> timedelta:
    """Delay before the next re-check after ``failed_checks`` failures in a row: the first
    delay, doubling each time, at most the configured maximum."""
    first = timedelta(minutes=settings.dns.recheck_first_minutes)
    ceiling = timedelta(hours=settings.dns.recheck_max_hours)
    steps = max(0, failed_checks - 1)
    if steps > 20:
        return ceiling
    delay: timedelta = first * (2**steps)
    return min(delay, ceiling)


def run_check(
    settings: Settings, domain_name: str, token: str, self_hosted: bool
) -> list[RecordCheck]:
    """Ask DNS (no database): the records of one domain, checked."""
    resolver = checks.make_resolver(settings.dns)
    return checks.check_domain(
        resolver, domain_name, token, Expected.from_settings(settings), self_hosted=self_hosted
    )


def check_now(
    session: Session,
    clock: Clock,
    settings: Settings,
    domain: CustomDomain,
    *,
    actor: Actor | None = None,
) -> list[RecordCheck]:
    """Check the domain's DNS at once and record the outcome (the portal's "Check now").

    DNS is asked without touching the database; a web route ends its unit of work before
    calling this (``db.commit()``), so no write lock is held while a lookup waits. The domain is
    read again after the lookup: removed (or removed and added again) meanwhile, it is
    NotFound and nothing is recorded.
    """
    last = domain.last_checked_at
    if last is not None and clock.now() - last < timedelta(seconds=CHECK_NOW_MIN_SECONDS):
        return [RecordCheck.from_json(item) for item in domain.checks]
    domain_id, token = domain.id, domain.token
    results = run_check(settings, domain.name, token, domain.self_hosted)
    current = session.get(CustomDomain, domain_id, populate_existing=True)
    if current is None or current.token != token:
        raise NotFound("The domain was removed while it was being checked.")
    record_check(session, clock, settings, current, results, actor=actor)
    return results


def record_check(
    session: Session,
    clock: Clock,
    settings: Settings,
    domain: CustomDomain,
    results: Sequence[RecordCheck],
    *,
    actor: Actor | None = None,
) -> str | None:
    """Store a check's outcome and move the status. Returns the change (``verified`` or
    ``failed``) when the status changed in a way that is published, else None.

    All records found: verified, no more scheduled checks. Something missing or wrong:
    failing, re-checked after :func:`backoff`. Only "no answer" from the resolver: a verified
    domain stays verified (the resolver's trouble is not the customer's), a pending one is
    re-checked later.
    """
    now = clock.now()
    domain.checks = [r.as_json() for r in results]
    domain.check_count += 1
    domain.last_checked_at = now
    before = domain.status
    change: str | None = None
    if checks.all_ok(results):
        domain.status = DomainStatus.VERIFIED.value
        domain.failed_checks = 0
        domain.next_check_at = None
        if before != DomainStatus.VERIFIED.value:
            domain.verified_at = now
            change = "verified"
    elif checks.inconclusive(results) and before == DomainStatus.VERIFIED.value:
        domain.next_check_at = None
    else:
        domain.failed_checks += 1
        domain.status = DomainStatus.FAILING.value
        domain.next_check_at = now + backoff(settings, domain.failed_checks)
        if before != DomainStatus.FAILING.value:
            change = "failed"
    session.flush()
    if change == "verified":
        _audit(session, clock, domain, AuditAction.DOMAIN_VERIFIED, actor)
        _publish(session, clock, domain, "verified")
    elif change == "failed":
        problems = [f"{r.kind} {r.name}: {r.state.value}" for r in results if r.state != "ok"]
        _audit(
            session,
            clock,
            domain,
            AuditAction.DOMAIN_VERIFICATION_FAILED,
            actor,
            problems=problems[:10],
        )
        _publish(session, clock, domain, "failed")
    return change


def due_domains(session: Session, now: datetime, *, limit: int = 200) -> list[CustomDomain]:
    """Unverified domains whose re-check is due, oldest due first."""
    return list(
        session.scalars(
            select(CustomDomain)
            .where(
                CustomDomain.next_check_at.is_not(None),
                CustomDomain.next_check_at <= now,
                CustomDomain.status != DomainStatus.VERIFIED.value,
            )
            .order_by(CustomDomain.next_check_at, CustomDomain.id)
            .limit(limit)
        )
    )


def _audit(
    session: Session,
    clock: Clock,
    domain: CustomDomain,
    action: AuditAction,
    actor: Actor | None,
    **details: Any,
) -> None:
    audit.record(
        session,
        clock,
        action,
        actor=actor,
        organization_id=domain.organization_id,
        target_type="custom_domain",
        target_id=domain.id,
        target_label=display_name(domain.name),
        service_id=domain.service_id,
        **details,
    )


def _publish(session: Session, clock: Clock, domain: CustomDomain, kind: str) -> None:
    events.publish(
        session,
        events.CustomDomainChanged(
            at=clock.now(),
            organization_id=domain.organization_id,
            domain_id=domain.id,
            service_id=domain.service_id,
            name=domain.name,
            kind=kind,
        ),
    )
