"""Rules of hosted services and their XMPP accounts. Never commits: the caller owns the
transaction; changes the running engine must learn are staged and delivered after the commit
(:mod:`imhost.hosting.changes`).

Every change is audited (``service.changed`` / ``xmpp.account_changed``). XMPP passwords follow
the organization's password policy (the strictest of the provider's and the organization's)
and are stored only as SCRAM keys.
"""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imhost.accounts import audit
from imhost.accounts.audit import Actor, AuditAction
from imhost.accounts.models import Organization
from imhost.accounts.passwords import PasswordPolicy, check_password
from imhost.catalog.models import PlanLimits
from imhost.config import SecuritySettings
from imhost.hosting import changes
from imhost.hosting.models import (
    DEFAULT_MAX_STANZA_BYTES,
    HostedService,
    ServiceStatus,
    XmppAccount,
    XmppOfflineMessage,
    XmppPrivateXml,
    XmppRoom,
)
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput, NotFound
from imhost.kit.jid import prepare_domain, prepare_localpart
from imhost.kit.scram import DEFAULT_ITERATIONS, ScramCredentials, ScramHash, derive_credentials
from imhost.kit.text import CONTROL_MESSAGE, first_control_character
from imhost.xmpp.ports import HostLimits, HostStatus, VirtualHost

BYTES_PER_MB = 1_000_000
"""A plan's ``storage_mb`` in bytes: decimal megabytes, as billing's GB are 10^9 bytes."""
OFFLINE_CEILING = 10_000
"""Offline messages per account when the plan sets no limit (a safety ceiling)."""
DEFAULT_BURST = 200
CSV_MAX_ROWS = 2_000
CSV_MAX_BYTES = 2 * 1024 * 1024
REASON_MAX = 500


# --- views for the engine ------------------------------------------------------------------


def virtual_host(service: HostedService) -> VirtualHost:
    """How the data plane sees ``service``; a budget block shows as a suspension."""
    suspended = service.status != ServiceStatus.ACTIVE.value or bool(service.budget_block_reason)
    reason = ""
    if service.status != ServiceStatus.ACTIVE.value:
        reason = service.status_reason or "this service is suspended"
    elif service.budget_block_reason:
        reason = service.budget_block_reason
    return VirtualHost(
        domain=service.domain,
        service_id=service.id,
        status=HostStatus.SUSPENDED if suspended else HostStatus.ACTIVE,
        status_reason=reason,
        limits=HostLimits(
            max_accounts=service.max_accounts,
            max_connections=service.max_connections,
            max_connections_per_account=service.max_connections_per_account,
            message_rate=float(service.message_rate) if service.message_rate is not None else None,
            message_burst=service.message_burst,
            max_stanza_bytes=service.max_stanza_bytes,
            max_offline_messages=service.max_offline_messages,
            max_storage_bytes=(
                service.storage_mb * BYTES_PER_MB if service.storage_mb is not None else None
            ),
            max_rooms=service.max_rooms,
            max_room_occupants=service.max_room_occupants,
            registration_allowed=service.registration_allowed,
        ),
    )


def _host_changed(session: Session, service: HostedService) -> None:
    changes.stage(session, changes.HostChanged(virtual_host(service), service.organization_id))


# --- services ------------------------------------------------------------------------------


def _reason(reason: str) -> str:
    text = " ".join(reason.split())
    if not text:
        raise InvalidInput(
            "Give a reason; the people using the service will see it.", field="reason"
        )
    if len(text) > REASON_MAX:
        raise InvalidInput(f"The reason is at most {REASON_MAX} characters.", field="reason")
    return text


def _audit_service(
    session: Session,
    clock: Clock,
    service: HostedService,
    change: str,
    actor: Actor | None,
    **details: Any,
) -> None:
    audit.record(
        session,
        clock,
        AuditAction.SERVICE_CHANGED,
        actor=actor,
        organization_id=service.organization_id,
        target_type="hosted_service",
        target_id=service.id,
        target_label=service.domain,
        change=change,
        **details,
    )


def apply_plan_limits(service: HostedService, limits: PlanLimits) -> None:
    """Copy a plan version's limits to ``service`` (``None``: unlimited, or a safe default
    for the two limits the engine needs a number for)."""
    service.max_accounts = limits.max_xmpp_accounts
    service.max_connections = limits.max_connections
    service.max_connections_per_account = limits.max_connections_per_account
    service.message_rate = limits.message_rate_per_second
    service.message_burst = (
        limits.message_burst if limits.message_burst is not None else DEFAULT_BURST
    )
    service.storage_mb = limits.storage_mb
    service.max_offline_messages = (
        limits.max_offline_messages if limits.max_offline_messages is not None else OFFLINE_CEILING
    )
    service.max_rooms = limits.max_rooms
    service.max_room_occupants = limits.max_room_occupants
    service.archive_days = limits.archive_days


def change_plan_limits(
    session: Session,
    clock: Clock,
    service: HostedService,
    limits: PlanLimits,
    *,
    actor: Actor | None = None,
) -> HostedService:
    """The subscription changed: copy the plan's limits (already over a new, lower account
    limit? nobody is deleted; creating accounts is refused until under it)."""
    apply_plan_limits(service, limits)
    service.updated_at = clock.now()
    session.flush()
    _audit_service(session, clock, service, "plan_limits_applied", actor)
    _host_changed(session, service)
    return service


def create_service(
    session: Session,
    clock: Clock,
    organization: Organization,
    *,
    base_domain: str,
    domain: str | None = None,
    limits: PlanLimits | None = None,
    actor: Actor | None = None,
) -> HostedService:
    """A new service on ``domain`` (default ``<organization slug>.<base_domain>``)."""
    raw = domain if domain is not None else f"{organization.slug}.{base_domain}"
    try:
        prepared = prepare_domain(raw.strip())
    except ValueError as exc:
        raise InvalidInput(f"{raw!r} is not a valid domain: {exc}.", field="domain") from None
    if "." not in prepared and prepared != "localhost":
        raise InvalidInput("Use a full domain name such as chat.example.com.", field="domain")
    if session.scalar(select(HostedService.id).where(HostedService.domain == prepared)):
        raise Conflict(f"The domain {prepared} is already hosted here.", field="domain")
    now = clock.now()
    service = HostedService(
        organization_id=organization.id,
        domain=prepared,
        status=ServiceStatus.ACTIVE.value,
        status_reason="",
        max_connections_per_account=10,
        message_rate=50,
        message_burst=DEFAULT_BURST,
        max_stanza_bytes=DEFAULT_MAX_STANZA_BYTES,
        max_offline_messages=1000,
        registration_allowed=False,
        created_at=now,
        updated_at=now,
    )
    if limits is not None:
        apply_plan_limits(service, limits)
    session.add(service)
    session.flush()
    _audit_service(session, clock, service, "created", actor)
    _host_changed(session, service)
    return service


def get_service(
    session: Session, service_id: str, *, organization_id: str | None = None
) -> HostedService:
    """The service, or NotFound (also when it belongs to another organization)."""
    service = session.get(HostedService, service_id)
    if service is None or (
        organization_id is not None and service.organization_id != organization_id
    ):
        raise NotFound("no such service")
    return service


def get_service_by_domain(session: Session, domain: str) -> HostedService:
    try:
        prepared = prepare_domain(domain.strip())
    except ValueError:
        raise NotFound(f"no service on {domain!r}") from None
    service = session.scalar(select(HostedService).where(HostedService.domain == prepared))
    if service is None:
        raise NotFound(f"no service on {prepared}")
    return service


def list_services(
    session: Session, *, organization_id: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[HostedService], int]:
    stmt = select(HostedService)
    count = select(func.count()).select_from(HostedService)
    if organization_id is not None:
        stmt = stmt.where(HostedService.organization_id == organization_id)
        count = count.where(HostedService.organization_id == organization_id)
    items = session.scalars(stmt.order_by(HostedService.domain).limit(limit).offset(offset)).all()
    return list(items), int(session.scalar(count) or 0)


def count_services_by_status(session: Session) -> dict[str, int]:
    """How many hosted services there are in each status (``active``, ``suspended``)."""
    rows = session.execute(
        select(HostedService.status, func.count()).group_by(HostedService.status)
    ).all()
    return {str(status): int(n) for status, n in rows}


def service_owners(session: Session, service_ids: Collection[str]) -> dict[str, str]:
    """The organization of each of these hosted services that exists (metering checks that
    usage sent for a service belongs to the sender's organization)."""
    out: dict[str, str] = {}
    ids = sorted(set(service_ids))
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(HostedService.id, HostedService.organization_id).where(
                HostedService.id.in_(ids[start : start + 500])
            )
        )
        for service_id, organization_id in rows:
            out[service_id] = organization_id
    return out


def services_of(session: Session, organization_id: str) -> list[HostedService]:
    return list(
        session.scalars(
            select(HostedService).where(HostedService.organization_id == organization_id)
        )
    )


def suspend_service(
    session: Session,
    clock: Clock,
    service: HostedService,
    reason: str,
    *,
    actor: Actor | None = None,
    source: str = "staff",
) -> HostedService:
    """Suspend: the engine closes every session with ``policy-violation`` and ``reason``, and
    refuses logins with ``account-disabled`` and ``reason``, until reactivated. ``source`` is
    ``staff`` or ``organization`` (the organization was suspended: it comes back with it)."""
    text = _reason(reason)
    service.status = ServiceStatus.SUSPENDED.value
    service.status_reason = text
    service.suspended_by = source
    service.updated_at = clock.now()
    session.flush()
    _audit_service(session, clock, service, "suspended", actor, reason=text)
    _host_changed(session, service)
    return service


def reactivate_service(
    session: Session, clock: Clock, service: HostedService, *, actor: Actor | None = None
) -> HostedService:
    """Lift a suspension and a budget block."""
    service.status = ServiceStatus.ACTIVE.value
    service.status_reason = ""
    service.suspended_by = None
    service.budget_block_reason = None
    service.updated_at = clock.now()
    session.flush()
    _audit_service(session, clock, service, "reactivated", actor)
    _host_changed(session, service)
    return service


def block_for_budget(
    session: Session,
    clock: Clock,
    service: HostedService,
    reason: str,
    *,
    actor: Actor | None = None,
) -> HostedService:
    """A hard budget cap was reached: the engine stops the service (no billable overage)
    with ``reason`` until :func:`reactivate_service` or :func:`lift_budget_block`."""
    text = _reason(reason)
    service.budget_block_reason = text
    service.updated_at = clock.now()
    session.flush()
    _audit_service(session, clock, service, "budget_blocked", actor, reason=text)
    _host_changed(session, service)
    return service


def lift_budget_block(
    session: Session, clock: Clock, service: HostedService, *, actor: Actor | None = None
) -> HostedService:
    if service.budget_block_reason is None:
        return service
    service.budget_block_reason = None
    service.updated_at = clock.now()
    session.flush()
    _audit_service(session, clock, service, "budget_block_lifted", actor)
    _host_changed(session, service)
    return service


LIMIT_BOUNDS: dict[str, tuple[int, int]] = {
    "max_accounts": (0, 10_000_000),
    "max_connections": (0, 10_000_000),
    "max_connections_per_account": (1, 1000),
    "message_rate": (1, 100_000),
    "message_burst": (1, 1_000_000),
    "max_stanza_bytes": (1024, 16 * 1024 * 1024),
    "max_offline_messages": (0, 1_000_000),
    "storage_mb": (0, 100_000_000),
    "max_rooms": (0, 10_000_000),
    "max_room_occupants": (1, 1_000_000),
    "archive_days": (1, 36_500),
}
NULLABLE_LIMITS = frozenset(
    {
        "max_accounts",
        "max_connections",
        "max_connections_per_account",
        "message_rate",
        "storage_mb",
        "max_rooms",
        "max_room_occupants",
        "archive_days",
    }
)


def set_limits(
    session: Session,
    clock: Clock,
    service: HostedService,
    values: dict[str, int | bool | None],
    *,
    actor: Actor | None = None,
) -> HostedService:
    """Change limits (staff) or ``registration_allowed``; each value is bounded."""
    for name, value in values.items():
        if name == "registration_allowed":
            if not isinstance(value, bool):
                raise InvalidInput("registration_allowed is true or false.", field=name)
            continue
        if name not in LIMIT_BOUNDS:
            raise InvalidInput(f"{name} is not a limit of a service.", field=name)
        if value is None:
            if name not in NULLABLE_LIMITS:
                raise InvalidInput(f"{name} needs a number.", field=name)
            continue
        lo, hi = LIMIT_BOUNDS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise InvalidInput(f"{name} must be a whole number from {lo} to {hi}.", field=name)
    for name, value in values.items():
        setattr(service, name, value)
    service.updated_at = clock.now()
    session.flush()
    _audit_service(session, clock, service, "limits_changed", actor, limits=values)
    _host_changed(session, service)
    return service


# --- group chat rooms (XEP-0045) ---------------------------------------------------------------


def conference_domain(service: HostedService) -> str:
    """The service's conference service: ``conference.<domain>``."""
    return f"conference.{service.domain}"


def list_rooms(session: Session, service: HostedService) -> list[XmppRoom]:
    """The service's persistent rooms, by name (temporary rooms live only in the engine)."""
    return list(
        session.scalars(
            select(XmppRoom).where(XmppRoom.service_id == service.id).order_by(XmppRoom.name)
        )
    )


def destroy_room(
    session: Session,
    clock: Clock,
    service: HostedService,
    name: str,
    *,
    reason: str,
    live: Collection[str] = (),
    actor: Actor | None = None,
) -> None:
    """Destroy a room (staff or the customer's admin): its stored row goes now, and after the
    commit the engine tells its occupants (XEP-0045 ``<destroy/>`` with ``reason``) and
    forgets it. ``live``: the names of the rooms the engine holds now (temporary ones are
    not stored). An unknown room is :class:`NotFound`."""
    text = _reason(reason)
    row = session.scalars(
        select(XmppRoom).where(XmppRoom.service_id == service.id, XmppRoom.name == name)
    ).one_or_none()
    if row is None and name not in live:
        raise NotFound(f"{service.domain} has no room called {name}.")
    if row is not None:
        session.delete(row)
        session.flush()
    _audit_service(session, clock, service, "room_destroyed", actor, room=name, reason=text)
    changes.stage(session, changes.RoomDestroyed(service.domain, name, text))


def remove_service(
    session: Session, clock: Clock, service: HostedService, *, actor: Actor | None = None
) -> None:
    """Delete the service with its accounts and their stored data; the engine closes its
    sessions with ``host-gone``."""
    _audit_service(session, clock, service, "removed", actor)
    domain = service.domain
    session.delete(service)
    session.flush()
    changes.stage(session, changes.HostRemoved(domain))


# --- passwords -----------------------------------------------------------------------------


def password_policy(
    session: Session, security: SecuritySettings, organization_id: str
) -> PasswordPolicy:
    """The strictest of the provider's policy and the organization's (as for its people)."""
    min_length, min_score = security.password_min_length, security.password_min_score
    row = session.execute(
        select(Organization.password_min_length, Organization.password_min_score).where(
            Organization.id == organization_id
        )
    ).first()
    if row is not None:
        min_length = max(min_length, row[0] or 0)
        min_score = max(min_score, row[1] or 0)
    return PasswordPolicy(min_length=min_length, min_score=min_score)


def generate_password() -> str:
    """A strong password to show once: 20 URL-safe characters (about 120 bits)."""
    return secrets.token_urlsafe(15)


def _policy_context(
    session: Session, security: SecuritySettings, service: HostedService
) -> tuple[PasswordPolicy, str]:
    """The policy for the service's accounts and the organization's name (a context word)."""
    policy = password_policy(session, security, service.organization_id)
    org_name = session.scalar(
        select(Organization.name).where(Organization.id == service.organization_id)
    )
    return policy, org_name or ""


def _refuse_weak(
    password: str,
    policy: PasswordPolicy,
    service: HostedService,
    localpart: str,
    name: str,
    org_name: str,
) -> None:
    inputs = [localpart, f"{localpart}@{service.domain}", service.domain, name, org_name]
    problems = check_password(password, policy, user_inputs=[i for i in inputs if i])
    if problems:
        raise InvalidInput(
            " ".join(p.message for p in problems),
            field="password",
            problems=[{"code": p.code.value, "message": p.message} for p in problems],
        )


def check_xmpp_password(
    session: Session,
    security: SecuritySettings,
    service: HostedService,
    localpart: str,
    password: str,
    *,
    name: str = "",
) -> None:
    """Raise :class:`InvalidInput` listing every reason the policy refuses ``password``."""
    policy, org_name = _policy_context(session, security, service)
    _refuse_weak(password, policy, service, localpart, name, org_name)


@dataclass(frozen=True, slots=True)
class _Secret:
    """The stored form of a password (never the password)."""

    sha1: ScramCredentials
    sha256: ScramCredentials


def _derive(password: str, iterations: int) -> _Secret:
    try:
        return _Secret(
            sha1=derive_credentials(password, ScramHash.SHA1, iterations=iterations),
            sha256=derive_credentials(password, ScramHash.SHA256, iterations=iterations),
        )
    except ValueError as exc:
        raise InvalidInput(f"This password cannot be used: {exc}.", field="password") from None


def _store(account: XmppAccount, secret: _Secret) -> None:
    sha1, sha256 = secret.sha1, secret.sha256
    account.sha1_salt, account.sha1_iterations = sha1.salt, sha1.iterations
    account.sha1_stored_key, account.sha1_server_key = sha1.stored_key, sha1.server_key
    account.sha256_salt, account.sha256_iterations = sha256.salt, sha256.iterations
    account.sha256_stored_key, account.sha256_server_key = sha256.stored_key, sha256.server_key


def _set_credentials(account: XmppAccount, password: str, iterations: int) -> None:
    _store(account, _derive(password, iterations))


def credentials_of(account: XmppAccount, h: ScramHash) -> ScramCredentials:
    if h is ScramHash.SHA1:
        return ScramCredentials(
            account.sha1_salt,
            account.sha1_iterations,
            account.sha1_stored_key,
            account.sha1_server_key,
        )
    return ScramCredentials(
        account.sha256_salt,
        account.sha256_iterations,
        account.sha256_stored_key,
        account.sha256_server_key,
    )


# --- accounts ------------------------------------------------------------------------------


def prepare_username(username: str) -> str:
    """RFC 7622 localpart, or InvalidInput saying what is wrong."""
    raw = username.strip()
    if "@" in raw:
        raise InvalidInput(
            "Give the username without '@' and domain (e.g. alice, not alice@example.com).",
            field="username",
        )
    try:
        return prepare_localpart(raw)
    except ValueError as exc:
        raise InvalidInput(f"{raw!r} cannot be a username: {exc}.", field="username") from None


def stored_bytes(session: Session, service_id: str) -> int:
    """Bytes the service stores against its plan's storage: offline messages and private XML
    (what the engine limits and metering bills as storage). Two SUMs: for pages, not for the
    engine's hot path (which keeps counters, ``hosting.ports``)."""
    offline = session.scalar(
        select(func.coalesce(func.sum(XmppOfflineMessage.size), 0)).where(
            XmppOfflineMessage.service_id == service_id
        )
    )
    private = session.scalar(
        select(func.coalesce(func.sum(XmppPrivateXml.size), 0)).where(
            XmppPrivateXml.service_id == service_id
        )
    )
    return int(offline or 0) + int(private or 0)


def count_accounts(session: Session, service_id: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(XmppAccount)
            .where(XmppAccount.service_id == service_id)
        )
        or 0
    )


def _jid(service: HostedService, account: XmppAccount) -> str:
    return f"{account.localpart}@{service.domain}"


def _audit_account(
    session: Session,
    clock: Clock,
    service: HostedService,
    account: XmppAccount,
    change: str,
    actor: Actor | None,
    **details: Any,
) -> None:
    audit.record(
        session,
        clock,
        AuditAction.XMPP_ACCOUNT_CHANGED,
        actor=actor,
        organization_id=service.organization_id,
        target_type="xmpp_account",
        target_id=account.id,
        target_label=_jid(service, account),
        change=change,
        **details,
    )


def _lock_service(session: Session, service: HostedService) -> None:
    """Serialise account creation per service (PostgreSQL row lock; SQLite locks the file)."""
    session.execute(
        select(HostedService.id).where(HostedService.id == service.id).with_for_update()
    )


def _display_name(name: str) -> str:
    text = " ".join(name.split())
    if len(text) > 200:
        raise InvalidInput("The name is at most 200 characters.", field="name")
    if first_control_character(text) is not None:
        raise InvalidInput("The name " + CONTROL_MESSAGE.format("") + ".", field="name")
    return text


def _ensure_room(session: Session, service: HostedService, localpart: str) -> None:
    """Refuse when the service is at its account limit or the username is taken."""
    _lock_service(session, service)
    if (
        service.max_accounts is not None
        and count_accounts(session, service.id) >= service.max_accounts
    ):
        raise Conflict(
            f"{service.domain} already has {service.max_accounts} accounts, the most its plan "
            "allows. Delete an account or move to a larger plan.",
            field="username",
        )
    exists = session.scalar(
        select(XmppAccount.id).where(
            XmppAccount.service_id == service.id, XmppAccount.localpart == localpart
        )
    )
    if exists:
        raise Conflict(f"{localpart}@{service.domain} already exists.", field="username")


def _insert_account(
    session: Session,
    clock: Clock,
    service: HostedService,
    localpart: str,
    name: str,
    secret: _Secret,
    actor: Actor | None,
) -> XmppAccount:
    now = clock.now()
    account = XmppAccount(
        service_id=service.id,
        localpart=localpart,
        name=name,
        disabled=False,
        disabled_reason="",
        roster_version=0,
        created_at=now,
        updated_at=now,
        password_changed_at=now,
    )
    _store(account, secret)
    session.add(account)
    session.flush()
    _audit_account(session, clock, service, account, "created", actor)
    changes.stage(session, changes.AccountChanged(service.domain, localpart))
    return account


def create_account(
    session: Session,
    clock: Clock,
    service: HostedService,
    *,
    username: str,
    password: str | None,
    security: SecuritySettings,
    name: str = "",
    actor: Actor | None = None,
    iterations: int = DEFAULT_ITERATIONS,
) -> tuple[XmppAccount, str | None]:
    """Create ``username@service.domain``. Without ``password`` a strong one is generated and
    returned (show it once; it is not stored); with one, it must satisfy the policy and
    ``None`` is returned."""
    localpart = prepare_username(username)
    name = _display_name(name)
    _ensure_room(session, service, localpart)
    generated = None
    if password is None:
        password = generated = generate_password()
    else:
        check_xmpp_password(session, security, service, localpart, password, name=name)
    secret = _derive(password, iterations)
    account = _insert_account(session, clock, service, localpart, name, secret, actor)
    return account, generated


def get_account(session: Session, service: HostedService, username: str) -> XmppAccount:
    try:
        localpart = prepare_localpart(username.strip())
    except ValueError:
        raise NotFound("no such account") from None
    account = session.scalar(
        select(XmppAccount).where(
            XmppAccount.service_id == service.id, XmppAccount.localpart == localpart
        )
    )
    if account is None:
        raise NotFound(f"no account {localpart}@{service.domain}")
    return account


def list_accounts(
    session: Session,
    service: HostedService,
    *,
    limit: int = 50,
    offset: int = 0,
    search: str | None = None,
) -> tuple[list[XmppAccount], int]:
    where = [XmppAccount.service_id == service.id]
    if search:
        escaped = (
            search.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        )
        where.append(XmppAccount.localpart.like(f"%{escaped}%", escape="\\"))
    items = session.scalars(
        select(XmppAccount)
        .where(*where)
        .order_by(XmppAccount.localpart)
        .limit(limit)
        .offset(offset)
    ).all()
    total = session.scalar(select(func.count()).select_from(XmppAccount).where(*where))
    return list(items), int(total or 0)


def rename_account(
    session: Session,
    clock: Clock,
    service: HostedService,
    account: XmppAccount,
    name: str,
    *,
    actor: Actor | None = None,
) -> XmppAccount:
    """Change the person's display name (the username, part of the JID, never changes)."""
    account.name = _display_name(name)
    account.updated_at = clock.now()
    session.flush()
    _audit_account(session, clock, service, account, "renamed", actor)
    return account


def disable_account(
    session: Session,
    clock: Clock,
    service: HostedService,
    account: XmppAccount,
    reason: str,
    *,
    actor: Actor | None = None,
) -> XmppAccount:
    """Disable: sessions are closed and logins refused with ``account-disabled`` + reason."""
    text = _reason(reason)
    account.disabled = True
    account.disabled_reason = text
    account.updated_at = clock.now()
    session.flush()
    _audit_account(session, clock, service, account, "disabled", actor, reason=text)
    changes.stage(session, changes.AccountChanged(service.domain, account.localpart, text))
    return account


def enable_account(
    session: Session,
    clock: Clock,
    service: HostedService,
    account: XmppAccount,
    *,
    actor: Actor | None = None,
) -> XmppAccount:
    account.disabled = False
    account.disabled_reason = ""
    account.updated_at = clock.now()
    session.flush()
    _audit_account(session, clock, service, account, "enabled", actor)
    changes.stage(session, changes.AccountChanged(service.domain, account.localpart))
    return account


def delete_account(
    session: Session,
    clock: Clock,
    service: HostedService,
    account: XmppAccount,
    *,
    actor: Actor | None = None,
) -> None:
    """Delete the account with its roster, offline messages and other stored data."""
    _audit_account(session, clock, service, account, "deleted", actor)
    localpart = account.localpart
    session.delete(account)
    session.flush()
    changes.stage(
        session, changes.AccountChanged(service.domain, localpart, "this account was deleted")
    )


def reset_password(
    session: Session,
    clock: Clock,
    service: HostedService,
    account: XmppAccount,
    *,
    password: str | None,
    security: SecuritySettings,
    actor: Actor | None = None,
    iterations: int = DEFAULT_ITERATIONS,
) -> str | None:
    """Set a new password (policy-checked), or generate one and return it to show once.
    Open sessions are closed: whoever knew the old password is signed out."""
    generated = None
    if password is None:
        password = generated = generate_password()
    else:
        check_xmpp_password(
            session, security, service, account.localpart, password, name=account.name
        )
    _set_credentials(account, password, iterations)
    now = clock.now()
    account.password_changed_at = now
    account.updated_at = now
    session.flush()
    _audit_account(session, clock, service, account, "password_reset", actor)
    changes.stage(
        session,
        changes.AccountChanged(
            service.domain, account.localpart, "the password was reset by an administrator"
        ),
    )
    return generated


def change_own_password(
    session: Session,
    clock: Clock,
    service: HostedService,
    account: XmppAccount,
    password: str,
    *,
    iterations: int = DEFAULT_ITERATIONS,
) -> None:
    """XEP-0077 password change by the account itself (the caller checked the policy with
    :func:`check_xmpp_password`). Its own sessions stay open."""
    _set_credentials(account, password, iterations)
    now = clock.now()
    account.password_changed_at = now
    account.updated_at = now
    session.flush()
    _audit_account(
        session,
        clock,
        service,
        account,
        "password_changed",
        Actor(label=_jid(service, account)),
    )
    changes.stage(session, changes.AccountChanged(service.domain, account.localpart))


# --- CSV import ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportRow:
    line: int
    username: str
    status: str  # "created" | "refused"
    reason: str = ""


@dataclass(slots=True)
class ImportReport:
    rows: list[ImportRow] = field(default_factory=list)

    @property
    def created(self) -> int:
        return sum(1 for r in self.rows if r.status == "created")

    @property
    def refused(self) -> int:
        return sum(1 for r in self.rows if r.status == "refused")


def _csv_rows(text: str) -> list[tuple[int, list[str]]]:
    if len(text.encode("utf-8")) > CSV_MAX_BYTES:
        raise InvalidInput(
            f"The file is larger than {CSV_MAX_BYTES // (1024 * 1024)} MiB; split it.", field="file"
        )
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")), strict=True)
    rows: list[tuple[int, list[str]]] = []
    try:
        for fields in reader:
            if not fields or all(not f.strip() for f in fields):
                continue
            rows.append((reader.line_num, fields))
            if len(rows) > CSV_MAX_ROWS + 1:
                raise InvalidInput(f"At most {CSV_MAX_ROWS} accounts per file.", field="file")
    except csv.Error as exc:
        raise InvalidInput(
            f"The file is not valid CSV (line {reader.line_num}): {exc}.", field="file"
        ) from None
    if rows and [f.strip().lower() for f in rows[0][1][:2]] == ["username", "password"]:
        rows = rows[1:]
    if len(rows) > CSV_MAX_ROWS:
        raise InvalidInput(f"At most {CSV_MAX_ROWS} accounts per file.", field="file")
    if not rows:
        raise InvalidInput(
            "The file has no accounts (columns: username,password[,name]).", field="file"
        )
    return rows


@dataclass(frozen=True, slots=True)
class ImportPolicy:
    """What checking an import's passwords needs from the database, read once."""

    policy: PasswordPolicy
    org_name: str


@dataclass(slots=True)
class PreparedImport:
    """An import checked and its passwords derived (no database needed): the rows ready to
    insert, and the refusals so far, by line."""

    lines: list[int] = field(default_factory=list)
    outcome: dict[int, ImportRow] = field(default_factory=dict)
    ready: list[tuple[int, str, str, _Secret]] = field(default_factory=list)


IMPORT_WRITE_CHUNK = 250
"""Rows inserted per transaction by callers that commit between chunks (the web routes)."""


def import_policy(
    session: Session, security: SecuritySettings, service: HostedService
) -> ImportPolicy:
    """Read what :func:`prepare_import` needs (one short read)."""
    policy, org_name = _policy_context(session, security, service)
    return ImportPolicy(policy, org_name)


def prepare_import(
    text: str,
    service: HostedService,
    policy: ImportPolicy,
    *,
    iterations: int = DEFAULT_ITERATIONS,
) -> PreparedImport:
    """Check every row and derive its password (the slow part, ~15 ms a row). Touches no
    database, so a caller can run it outside any transaction. A file that cannot be read as
    a whole (not CSV, too large, empty) raises ``InvalidInput``."""
    rows = _csv_rows(text)
    prepared = PreparedImport(lines=[line for line, _ in rows])
    for line, fields in rows:
        username = fields[0].strip() if fields else ""
        if len(fields) not in (2, 3):
            prepared.outcome[line] = ImportRow(
                line, username, "refused", "expected username,password[,name]"
            )
            continue
        password = fields[1]
        if not password:
            prepared.outcome[line] = ImportRow(line, username, "refused", "the password is empty")
            continue
        try:
            localpart = prepare_username(username)
            name = _display_name(fields[2] if len(fields) == 3 else "")
            _refuse_weak(password, policy.policy, service, localpart, name, policy.org_name)
            secret = _derive(password, iterations)
        except InvalidInput as exc:
            prepared.outcome[line] = ImportRow(line, username, "refused", exc.detail)
            continue
        prepared.ready.append((line, localpart, name, secret))
    return prepared


def apply_import(
    session: Session,
    clock: Clock,
    service: HostedService,
    prepared: PreparedImport,
    *,
    actor: Actor | None = None,
    start: int = 0,
    stop: int | None = None,
) -> None:
    """Insert the prepared rows ``ready[start:stop]``, each in a SAVEPOINT so a row refused
    here (username taken, account limit) leaves the others; outcomes go into ``prepared``.
    Never commits: a caller may commit between slices to keep each write short."""
    for line, localpart, name, secret in prepared.ready[start:stop]:
        try:
            with session.begin_nested():
                _ensure_room(session, service, localpart)
                _insert_account(session, clock, service, localpart, name, secret, actor)
        except (InvalidInput, Conflict) as exc:
            prepared.outcome[line] = ImportRow(line, localpart, "refused", exc.detail)
            continue
        except IntegrityError:
            prepared.outcome[line] = ImportRow(
                line, localpart, "refused", "this username already exists"
            )
            continue
        prepared.outcome[line] = ImportRow(line, localpart, "created")


def import_report(prepared: PreparedImport) -> ImportReport:
    return ImportReport(rows=[prepared.outcome[line] for line in prepared.lines])


def import_accounts_csv(
    session: Session,
    clock: Clock,
    service: HostedService,
    text: str,
    *,
    security: SecuritySettings,
    actor: Actor | None = None,
    iterations: int = DEFAULT_ITERATIONS,
) -> ImportReport:
    """Bulk-create from CSV ``username,password[,name]`` (an optional header line).

    Every valid row is created and every bad row is refused with its reason, in one report:
    nothing is skipped silently. A file that cannot be read as a whole (not CSV, too large,
    empty) is refused before any row is created.

    Three steps (:func:`import_policy`, :func:`prepare_import`, :func:`apply_import`), here in
    the caller's one transaction. A caller that must not hold a write lock while passwords are
    derived (a web request on SQLite) runs them itself: read the policy, end the transaction,
    prepare, then insert in short transactions (``web/api/v1/hosting.py``).
    """
    prepared = prepare_import(
        text, service, import_policy(session, security, service), iterations=iterations
    )
    apply_import(session, clock, service, prepared, actor=actor)
    return import_report(prepared)


# --- engine reports ------------------------------------------------------------------------


def record_logins(
    session: Session,
    service_id_by_domain: dict[str, str],
    logins: Sequence[tuple[str, str, datetime]],
) -> None:
    """Set ``last_login_at`` for (domain, localpart, at) reported by the engine (batched):
    the latest login of each account, in one statement run for all of them (never earlier
    than what is stored)."""
    latest: dict[tuple[str, str], datetime] = {}
    for domain, localpart, at in logins:
        service_id = service_id_by_domain.get(domain)
        if service_id is None:
            continue
        key = (service_id, localpart)
        if key not in latest or latest[key] < at:
            latest[key] = at
    if not latest:
        return
    table = cast(Table, XmppAccount.__table__)
    at_type = table.c.last_login_at.type
    statement = (
        update(table)
        .where(
            table.c.service_id == bindparam("b_service"),
            table.c.localpart == bindparam("b_localpart"),
            or_(
                table.c.last_login_at.is_(None),
                table.c.last_login_at < bindparam("b_at", type_=at_type),
            ),
        )
        .values(last_login_at=bindparam("b_at", type_=at_type))
    )
    session.execute(
        statement,
        [
            {"b_service": service_id, "b_localpart": localpart, "b_at": at}
            for (service_id, localpart), at in sorted(latest.items())
        ],
    )


def record_client_versions(
    session: Session,
    service_id_by_domain: dict[str, str],
    versions: dict[tuple[str, str], str],
) -> None:
    """Keep the XEP-0092 answers of clients (batched: (domain, localpart) -> version) on
    their accounts, in one statement run for all of them (a burst of logins answers a
    thousand at once)."""
    rows = [
        {"b_service": service_id, "b_localpart": localpart, "b_version": version[:300]}
        for (domain, localpart), version in sorted(versions.items())
        if (service_id := service_id_by_domain.get(domain)) is not None
    ]
    if not rows:
        return
    table = cast(Table, XmppAccount.__table__)
    statement = (
        update(table)
        .where(
            table.c.service_id == bindparam("b_service"),
            table.c.localpart == bindparam("b_localpart"),
        )
        .values(client_version=bindparam("b_version"))
    )
    session.execute(statement, rows)
