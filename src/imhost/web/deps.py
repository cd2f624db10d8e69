"""Dependencies every route uses, named once.

``Db`` is the request's unit of work (committed when the route returns without error).
``require(area, access, scope=...)`` authenticates the caller (a bearer API token, or the
session cookie with its CSRF header for unsafe methods), applies the permission matrix of
``imhost.accounts.permissions`` and returns a ``Principal``. Routes declare who may call them
with a typed alias, e.g.::

    MembersWrite = Annotated[Principal, Depends(require("members", Access.WRITE))]

    @router.post("/orgs/{org_id}/members")
    def add_member(principal: MembersWrite, db: Db, body: MemberIn) -> MemberOut: ...

Another organization's object answers 404, never 403, so ids cannot be probed.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session

from imhost.accounts import service as accounts
from imhost.accounts.audit import Actor
from imhost.accounts.models import (
    ApiToken,
    Membership,
    Organization,
    OrgRole,
    OrgStatus,
    StaffRole,
    User,
    WebSession,
)
from imhost.accounts.permissions import (
    Access,
    Scope,
    org_role_allows,
    scopes_allow,
    staff_role_allows,
)
from imhost.accounts.sessions import COOKIE_NAME, lookup_session
from imhost.accounts.tokens import authenticate_token
from imhost.db.engine import writer_session
from imhost.kit.clock import Clock
from imhost.kit.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    TooManyRequests,
    Unauthenticated,
)
from imhost.runtime import Runtime

CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The areas a closed organization still changes: paying its invoices, and closing (a retried
# close answers that it is closed).
CLOSED_ORG_WRITABLE = frozenset({"billing", "closure"})


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_clock(runtime: RuntimeDep) -> Clock:
    return runtime.clock


ClockDep = Annotated[Clock, Depends(get_clock)]


def get_db(request: Request) -> Iterator[Session]:
    """The request's unit of work, committed when the route returns without error.

    The body has been received whole before the route runs (:mod:`imhost.web.body`), so no
    transaction waits for a client. Requests read, then write (sign-ins, forms): on SQLite
    the transaction begins as a writer (``BEGIN IMMEDIATE``) at the session's FIRST
    statement, not before, so it waits for another writer instead of failing on a stale
    snapshot, and it holds the lock only while the route works. Before anything slow
    (sleeping, network or file I/O, deriving many keys) a route ends the unit so far with
    ``db.commit()``: the next statement begins a new transaction. To make the answer wait
    (a refused sign-in), use :func:`imhost.web.body.delay_response`: the wait happens after
    the commit, holding nothing.
    """
    runtime = get_runtime(request)
    with writer_session(runtime.session_factory) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


# scope="function": the transaction commits when the route returns, BEFORE the response is
# sent (by default this FastAPI ends yield-dependencies after sending, so a client could act on
# an answer whose commit then failed, or read its own write before it was committed).
Db = Annotated[Session, Depends(get_db, scope="function")]


@contextmanager
def commit_even_on_refusal(db: Session) -> Iterator[None]:
    """Keep what a refused attempt wrote (failure counters, audit events) and re-raise.

    A wrong password is an error for the caller but a fact to record: without this the
    request's rollback would erase the failure count, and brute-force protection with it.
    """
    try:
        yield
    except (Unauthenticated, TooManyRequests, PermissionDenied):
        db.commit()
        raise


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@dataclass
class Principal:
    """Who is calling, and in which capacity."""

    user: User | None = None
    token: ApiToken | None = None
    web_session: WebSession | None = None
    organization: Organization | None = None
    org_role: OrgRole | None = None
    staff_role: StaffRole | None = None
    address: str | None = None
    acting_as_staff: bool = False

    @property
    def actor(self) -> Actor:
        if self.token is not None:
            return Actor(
                token_id=self.token.id, label=f"token {self.token.name}", address=self.address
            )
        if self.user is not None:
            return Actor(user_id=self.user.id, label=self.user.email, address=self.address)
        return Actor(label="anonymous", address=self.address)

    @property
    def org(self) -> Organization:
        if self.organization is None:
            raise NotFound("no such organization")
        return self.organization

    @property
    def org_id(self) -> str:
        return self.org.id

    @property
    def role_for_rules(self) -> OrgRole | None:
        """The role business rules see: staff acting on a customer count as the owner."""
        return None if self.acting_as_staff else self.org_role


def _authenticate(
    request: Request, db: Session, runtime: Runtime, *, allow_mfa_pending: bool
) -> Principal:
    address = client_address(request)
    auth = request.headers.get("authorization", "")
    if auth:
        scheme, _, credentials = auth.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthenticated("use 'Authorization: Bearer <token>'")
        token = authenticate_token(db, runtime.clock, credentials.strip(), address)
        if token is None:
            raise Unauthenticated("this API token is not valid (unknown, expired or revoked)")
        staff_role = StaffRole(token.role) if token.organization_id is None else None
        return Principal(token=token, staff_role=staff_role, address=address)
    cookie = request.cookies.get(COOKIE_NAME)
    if not cookie:
        raise Unauthenticated("sign in first, or send an API token")
    web = lookup_session(db, runtime.clock, runtime.settings.security, cookie)
    if web is None:
        raise Unauthenticated("your session has ended; sign in again")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent, web.csrf_token):
            raise PermissionDenied(f"missing or wrong {CSRF_HEADER} header (CSRF protection)")
    user = db.get(User, web.user_id)
    if user is None or not user.is_active:
        raise Unauthenticated("this account is disabled")
    if not web.mfa_verified and not allow_mfa_pending:
        raise Unauthenticated(
            "two-factor authentication is needed first: verify a code at "
            "/api/v1/auth/mfa, or enrol at /api/v1/me/mfa/totp",
            mfa_required=True,
        )
    staff_role = StaffRole(user.staff_role) if user.staff_role else None
    return Principal(user=user, web_session=web, staff_role=staff_role, address=address)


class Requirement:
    """A route's declared permission; also what the authorization-matrix test reads."""

    def __init__(
        self, area: str, access: Access, scope: Scope, *, allow_mfa_pending: bool = False
    ) -> None:
        self.area = area
        self.access = access
        self.scope = scope
        self.allow_mfa_pending = allow_mfa_pending

    def __repr__(self) -> str:
        return f"require({self.area!r}, {self.access.value!r}, scope={self.scope.value!r})"

    def __call__(self, request: Request, db: Db, runtime: RuntimeDep) -> Principal:
        if self.scope is Scope.PUBLIC:
            return Principal(address=client_address(request))
        principal = _authenticate(request, db, runtime, allow_mfa_pending=self.allow_mfa_pending)
        if principal.token is not None and not scopes_allow(
            principal.token.scopes, self.area, self.access
        ):
            raise PermissionDenied(f"this token lacks the scope {self.area}:{self.access.value}")
        if self.scope is Scope.SELF:
            if principal.user is None:
                raise PermissionDenied("API tokens cannot act as a person; sign in instead")
            return principal
        if self.scope is Scope.STAFF:
            if not staff_role_allows(principal.staff_role, self.area, self.access, on_org=False):
                raise PermissionDenied("your staff role does not allow this")
            return principal
        return self._check_org(request, db, runtime, principal)

    def _check_org(
        self, request: Request, db: Session, runtime: Runtime, principal: Principal
    ) -> Principal:
        ref = request.path_params.get("org_id")
        if not ref or len(str(ref)) > 64:
            raise NotFound("no such organization")
        try:
            org = accounts.get_organization(db, str(ref))
        except NotFound:
            raise NotFound("no such organization") from None
        principal.organization = org
        if principal.token is not None:
            if principal.token.organization_id == org.id:
                principal.org_role = OrgRole(principal.token.role)
            elif principal.token.organization_id is None:
                principal.acting_as_staff = True
        elif principal.user is not None:
            membership = accounts.get_membership(db, org.id, principal.user.id)
            if membership is not None:
                principal.org_role = OrgRole(membership.role)
                now = runtime.clock.now()
                if membership.last_active_at is None or now - membership.last_active_at > timedelta(
                    hours=1
                ):
                    membership.last_active_at = now
            elif principal.staff_role is not None:
                principal.acting_as_staff = True
        web = principal.web_session
        if web is not None and web.impersonating_org_id is not None:
            # A staff member viewing a customer's portal: read-only, that customer only.
            if web.impersonating_org_id != org.id:
                raise NotFound("no such organization")
            if self.access is not Access.READ:
                raise PermissionDenied("impersonation is read-only")
        if principal.org_role is not None:
            if not org_role_allows(principal.org_role, self.area, self.access):
                raise PermissionDenied(
                    f"your role ({principal.org_role.value}) cannot "
                    f"{'change' if self.access is Access.WRITE else 'see'} {self.area}"
                )
            if org.require_mfa and web is not None and not web.mfa_verified:
                raise Unauthenticated("this organization requires two-factor authentication")
            return self._open_for_change(principal)
        if principal.acting_as_staff:
            if not staff_role_allows(principal.staff_role, self.area, self.access, on_org=True):
                raise PermissionDenied("your staff role does not allow this on a customer")
            return self._open_for_change(principal)
        raise NotFound("no such organization")

    def _open_for_change(self, principal: Principal) -> Principal:
        """A closed organization takes no more changes, but its invoices can still be paid
        (billing) and its data exported (closure)."""
        if (
            principal.org.status == OrgStatus.CLOSED.value
            and self.access is Access.WRITE
            and self.area not in CLOSED_ORG_WRITABLE
        ):
            raise Conflict("this organization is closed: only its invoices can still be paid")
        return principal


class OrgRequirement(Requirement):
    """A customer route's requirement; declares the ``org_id`` path parameter it reads."""

    def __call__(  # type: ignore[override]
        self,
        request: Request,
        db: Db,
        runtime: RuntimeDep,
        org_id: Annotated[
            str, Path(description="The organization's id or slug.", min_length=1, max_length=64)
        ],
    ) -> Principal:
        return super().__call__(request, db, runtime)


def require(
    area: str,
    access: Access | str = Access.READ,
    *,
    scope: Scope | str = Scope.ORG,
    allow_mfa_pending: bool = False,
) -> Requirement:
    cls = OrgRequirement if Scope(scope) is Scope.ORG else Requirement
    return cls(area, Access(access), Scope(scope), allow_mfa_pending=allow_mfa_pending)


def public() -> Requirement:
    return Requirement("public", Access.READ, Scope.PUBLIC)


Public = Annotated[Principal, Depends(public())]
SelfUser = Annotated[Principal, Depends(require("self", Access.WRITE, scope=Scope.SELF))]
SelfMfaPending = Annotated[
    Principal, Depends(require("self", Access.WRITE, scope=Scope.SELF, allow_mfa_pending=True))
]


class Page:
    """``limit`` (1..200, default 50) and ``offset`` query parameters."""

    def __init__(self, limit: int = 50, offset: int = 0) -> None:
        from imhost.kit.errors import InvalidInput

        if not 1 <= limit <= 200:
            raise InvalidInput("limit must be 1 to 200", field="limit")
        if not 0 <= offset <= 10_000_000:
            raise InvalidInput("offset must be 0 or more", field="offset")
        self.limit = limit
        self.offset = offset


PageDep = Annotated[Page, Depends(Page)]


__all__ = [
    "Access",
    "ClockDep",
    "Db",
    "Membership",
    "PageDep",
    "Principal",
    "Public",
    "Requirement",
    "RuntimeDep",
    "Scope",
    "SelfMfaPending",
    "SelfUser",
    "require",
]
