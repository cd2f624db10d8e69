"""The provider's staff API (``/api/v1/admin``): customers, staff, tokens, audit, outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel

from imhost.accounts import audit as audit_log
from imhost.accounts import service as accounts
from imhost.accounts import sessions, threats, tokens
from imhost.accounts.models import Organization
from imhost.accounts.permissions import Access, Scope
from imhost.accounts.schemas import (
    AlertOut,
    AuditEventOut,
    OrganizationOut,
    Paged,
    StaffIn,
    StaffRoleIn,
    StatusIn,
    TokenCreatedOut,
    TokenIn,
    TokenOut,
    UserOut,
)
from imhost.kit.errors import NotFound, PermissionDenied
from imhost.notify import mail
from imhost.web.deps import Db, PageDep, Principal, Requirement, RuntimeDep, require

router = APIRouter(prefix="/admin", tags=["admin"])


def staff(area: str, access: Access) -> Requirement:
    return require(area, access, scope=Scope.STAFF)


CustomersRead = Annotated[Principal, Depends(staff("customers", Access.READ))]
CustomerStatusWrite = Annotated[Principal, Depends(staff("customer-status", Access.WRITE))]
StaffRead = Annotated[Principal, Depends(staff("staff", Access.READ))]
StaffWrite = Annotated[Principal, Depends(staff("staff", Access.WRITE))]
TokensRead = Annotated[Principal, Depends(staff("tokens", Access.READ))]
TokensWrite = Annotated[Principal, Depends(staff("tokens", Access.WRITE))]
AuditRead = Annotated[Principal, Depends(staff("audit", Access.READ))]
SecurityRead = Annotated[Principal, Depends(staff("security", Access.READ))]
OutboxRead = Annotated[Principal, Depends(staff("outbox", Access.READ))]


def _customer(db: Db, customer_id: str) -> Organization:
    try:
        return accounts.get_organization(db, customer_id)
    except NotFound:
        raise NotFound("no such customer") from None


class CustomerPage(Paged):
    items: list[OrganizationOut]


class AuditPage(Paged):
    items: list[AuditEventOut]


class AlertPage(Paged):
    items: list[AlertOut]


class EmailOut(BaseModel):
    id: str
    created_at: datetime
    to: list[str]
    subject: str
    kind: str
    status: str
    transport: str | None
    sent_at: datetime | None
    organization_id: str | None


class EmailDetailOut(EmailOut):
    text: str
    html: str | None
    last_error: str | None


@router.get("/customers", response_model=CustomerPage)
def list_customers(
    principal: CustomersRead,
    db: Db,
    page: PageDep,
    q: Annotated[str | None, Query(max_length=100)] = None,
) -> CustomerPage:
    rows, total = accounts.list_organizations(db, search=q, limit=page.limit, offset=page.offset)
    return CustomerPage(
        total=total,
        limit=page.limit,
        offset=page.offset,
        items=[OrganizationOut.model_validate(o) for o in rows],
    )


@router.get("/customers/{customer_id}", response_model=OrganizationOut)
def get_customer(customer_id: str, principal: CustomersRead, db: Db) -> OrganizationOut:
    return OrganizationOut.model_validate(_customer(db, customer_id))


@router.post("/customers/{customer_id}/status", response_model=OrganizationOut)
def set_customer_status(
    customer_id: str, body: StatusIn, principal: CustomerStatusWrite, db: Db, runtime: RuntimeDep
) -> OrganizationOut:
    """Suspend (with a reason the customer sees) or reactivate a customer."""
    org = _customer(db, customer_id)
    accounts.set_organization_status(
        db, runtime.clock, org, suspended=body.suspended, reason=body.reason, actor=principal.actor
    )
    return OrganizationOut.model_validate(org)


@router.post("/customers/{customer_id}/impersonate", status_code=status.HTTP_204_NO_CONTENT)
def impersonate(
    customer_id: str, principal: CustomersRead, db: Db, runtime: RuntimeDep
) -> Response:
    """View the customer's portal read-only from this browser session (audited)."""
    if principal.web_session is None:
        raise PermissionDenied("impersonation needs a signed-in staff browser session")
    org = _customer(db, customer_id)
    sessions.start_impersonation(
        db, runtime.clock, principal.web_session, org, actor=principal.actor
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/impersonation", status_code=status.HTTP_204_NO_CONTENT)
def stop_impersonating(principal: CustomersRead) -> Response:
    if principal.web_session is not None:
        principal.web_session.impersonating_org_id = None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/staff", response_model=list[UserOut])
def list_staff(principal: StaffRead, db: Db) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in accounts.list_staff(db)]


@router.post("/staff", response_model=UserOut, status_code=status.HTTP_201_CREATED)
def create_staff(body: StaffIn, principal: StaffWrite, db: Db, runtime: RuntimeDep) -> UserOut:
    user = accounts.create_user(
        db,
        runtime.clock,
        email=body.email,
        name=body.name,
        staff_role=body.role,
        email_verified=True,
        actor=principal.actor,
    )
    runtime.auth.set_password_directly(db, user, body.password)
    return UserOut.model_validate(user)


@router.patch("/staff/{user_id}", response_model=UserOut)
def change_staff_role(
    user_id: str, body: StaffRoleIn, principal: StaffWrite, db: Db, runtime: RuntimeDep
) -> UserOut:
    user = accounts.get_user(db, user_id)
    if user.staff_role is None:
        raise NotFound("no such staff member")
    accounts.set_staff_role(db, runtime.clock, user, body.role, actor=principal.actor)
    return UserOut.model_validate(user)


@router.get("/tokens", response_model=list[TokenOut])
def list_provider_tokens(principal: TokensRead, db: Db) -> list[TokenOut]:
    return [TokenOut.model_validate(t) for t in tokens.list_tokens(db, None)]


@router.post("/tokens", response_model=TokenCreatedOut, status_code=status.HTTP_201_CREATED)
def create_provider_token(
    body: TokenIn, principal: TokensWrite, db: Db, runtime: RuntimeDep
) -> TokenCreatedOut:
    """A provider token (for the provider's own tools). Its staff role defaults to the
    creator's, never more; its scopes (required) narrow it."""
    role = tokens.staff_token_role(principal.staff_role, body.role)
    issued = tokens.create_token(
        db,
        runtime.clock,
        organization_id=None,
        name=body.name,
        scopes=body.scopes,
        role=role.value,
        created_by=principal.actor,
        expires_at=body.expires_at,
    )
    return TokenCreatedOut(
        **TokenOut.model_validate(issued.token).model_dump(), token=issued.plaintext
    )


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_provider_token(
    token_id: str, principal: TokensWrite, db: Db, runtime: RuntimeDep
) -> Response:
    tokens.revoke_token(
        db, runtime.clock, tokens.get_token(db, None, token_id), actor=principal.actor
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/audit", response_model=AuditPage)
def list_all_audit(
    principal: AuditRead,
    db: Db,
    page: PageDep,
    organization_id: Annotated[str | None, Query(max_length=32)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AuditPage:
    rows, total = audit_log.list_events(
        db,
        organization_id=organization_id,
        action=action,
        since=since,
        until=until,
        limit=page.limit,
        offset=page.offset,
    )
    return AuditPage(
        total=total,
        limit=page.limit,
        offset=page.offset,
        items=[AuditEventOut.model_validate(r) for r in rows],
    )


@router.get("/security/alerts", response_model=AlertPage)
def list_all_alerts(principal: SecurityRead, db: Db, page: PageDep) -> AlertPage:
    rows, total = threats.list_alerts(
        db, organization_id=None, limit=page.limit, offset=page.offset
    )
    return AlertPage(
        total=total,
        limit=page.limit,
        offset=page.offset,
        items=[AlertOut.model_validate(r) for r in rows],
    )


@router.get("/outbox", response_model=list[EmailOut])
def list_outbox(principal: OutboxRead, db: Db, page: PageDep) -> list[EmailOut]:
    return [
        EmailOut.model_validate(m, from_attributes=True)
        for m in mail.list_outbox(db, limit=page.limit, offset=page.offset)
    ]


@router.get("/outbox/{email_id}", response_model=EmailDetailOut)
def get_outbox_email(email_id: str, principal: OutboxRead, db: Db) -> EmailDetailOut:
    return EmailDetailOut.model_validate(mail.get_email(db, email_id), from_attributes=True)
