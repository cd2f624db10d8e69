"""API tokens (service accounts).

A token is ``imh_<prefix>_<secret>``; only the SHA-256 of the whole string is stored (a token
has 256 bits of entropy, so a fast hash is safe), it is shown once at creation, and it is
usable as ``Authorization: Bearer``. Its role is at most the creator's; its scopes narrow it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost.accounts import audit
from imhost.accounts.audit import Actor, AuditAction
from imhost.accounts.models import ApiToken, OrgRole, StaffRole, TokenAddress
from imhost.accounts.permissions import ORG_MATRIX, STAFF_MATRIX
from imhost.kit.clock import Clock, ensure_utc
from imhost.kit.errors import InvalidInput, NotFound, PermissionDenied

TOKEN_PREFIX = "imh"
MAX_TOKEN_LIFETIME = timedelta(days=3650)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    plaintext: str  # shown once


def _valid_scopes(scopes: list[str], *, staff: bool) -> list[str]:
    matrix = STAFF_MATRIX if staff else ORG_MATRIX
    areas = {a for a, _ in matrix}
    cleaned: list[str] = []
    for scope in scopes:
        if scope == "*":
            cleaned.append(scope)
            continue
        area, _, access = scope.partition(":")
        if area not in areas or access not in ("read", "write"):
            raise InvalidInput(
                f"unknown scope {scope!r}; use <area>:read or <area>:write with an area among "
                + ", ".join(sorted(areas)),
                field="scopes",
            )
        cleaned.append(scope)
    if not cleaned:
        raise InvalidInput("a token needs at least one scope", field="scopes")
    return sorted(set(cleaned))


def staff_token_role(creator: StaffRole | None, requested: str | None) -> StaffRole:
    """The staff role of a new provider token: the creator's by default (docs/security.md),
    and never more than it: another role only for an admin, or read-only for anyone."""
    if creator is None:
        raise PermissionDenied("only staff can create provider tokens")
    if not requested:
        return creator
    try:
        role = StaffRole(requested)
    except ValueError:
        raise InvalidInput(
            "role must be one of " + ", ".join(r.value for r in StaffRole), field="role"
        ) from None
    if role not in (creator, StaffRole.READ_ONLY) and creator is not StaffRole.ADMIN:
        raise PermissionDenied("a token cannot have a higher role than its creator")
    return role


def create_token(
    session: Session,
    clock: Clock,
    *,
    organization_id: str | None,
    name: str,
    scopes: list[str],
    role: str,
    created_by: Actor,
    expires_at: datetime | None = None,
) -> IssuedToken:
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidInput("a token needs a name of 1 to 100 characters", field="name")
    staff = organization_id is None
    if staff:
        StaffRole(role)
    else:
        OrgRole(role)
    now = clock.now()
    if expires_at is not None:
        expires_at = ensure_utc(expires_at)
        if expires_at <= now:
            raise InvalidInput("the expiry must be in the future", field="expires_at")
        if expires_at - now > MAX_TOKEN_LIFETIME:
            raise InvalidInput("a token may live at most ten years", field="expires_at")
    prefix = secrets.token_hex(4)
    plaintext = f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken(
        created_at=now,
        organization_id=organization_id,
        name=name,
        prefix=prefix,
        token_hash=hash_token(plaintext),
        scopes=_valid_scopes(scopes, staff=staff),
        role=role,
        created_by_id=created_by.user_id,
        expires_at=expires_at,
    )
    session.add(token)
    session.flush()
    audit.record(
        session,
        clock,
        AuditAction.TOKEN_CREATED,
        actor=created_by,
        organization_id=organization_id,
        target_type="token",
        target_id=token.id,
        target_label=name,
        scopes=token.scopes,
        role=role,
    )
    return IssuedToken(token, plaintext)


def authenticate_token(
    session: Session, clock: Clock, plaintext: str, address: str | None
) -> ApiToken | None:
    """The live token for ``plaintext``, recording its use; ``None`` if unknown or dead."""
    if not plaintext.startswith(TOKEN_PREFIX + "_") or len(plaintext) > 200:
        return None
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(plaintext)))
    now = clock.now()
    if token is None or token.revoked_at is not None:
        return None
    if token.expires_at is not None and token.expires_at <= now:
        return None
    token.last_used_at = now
    if address and token.last_used_address != address:
        seen = session.scalar(
            select(TokenAddress.id).where(
                TokenAddress.token_id == token.id, TokenAddress.address == address
            )
        )
        if seen is None:
            first_use = token.last_used_address is None
            session.add(TokenAddress(created_at=now, token_id=token.id, address=address))
            if not first_use:
                audit.record(
                    session,
                    clock,
                    AuditAction.TOKEN_USED_NEW_ADDRESS,
                    actor=Actor(token_id=token.id, label=f"token {token.name}", address=address),
                    organization_id=token.organization_id,
                    target_type="token",
                    target_id=token.id,
                    target_label=token.name,
                )
        token.last_used_address = address
    return token


def list_tokens(session: Session, organization_id: str | None) -> list[ApiToken]:
    stmt = select(ApiToken).where(
        ApiToken.organization_id.is_(None)
        if organization_id is None
        else ApiToken.organization_id == organization_id
    )
    return list(session.scalars(stmt.order_by(ApiToken.created_at.desc(), ApiToken.id)))


def get_token(session: Session, organization_id: str | None, token_id: str) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None or token.organization_id != organization_id:
        raise NotFound("no such token")
    return token


def revoke_token(
    session: Session,
    clock: Clock,
    token: ApiToken,
    *,
    actor: Actor,
    reason: str = "revoked",
    action: AuditAction = AuditAction.TOKEN_REVOKED,
) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = clock.now()
        token.revoked_reason = reason[:200]
        audit.record(
            session,
            clock,
            action,
            actor=actor,
            organization_id=token.organization_id,
            target_type="token",
            target_id=token.id,
            target_label=token.name,
            reason=reason,
        )
    return token


def revoke_tokens_created_by(
    session: Session, clock: Clock, *, organization_id: str, user_id: str, actor: Actor
) -> int:
    stmt = select(ApiToken).where(
        ApiToken.organization_id == organization_id,
        ApiToken.created_by_id == user_id,
        ApiToken.revoked_at.is_(None),
    )
    count = 0
    for token in session.scalars(stmt):
        revoke_token(session, clock, token, actor=actor, reason="creator removed from organization")
        count += 1
    return count
