"""Security alerts a person reads from an e-mail: ``/portal/security/alerts/{id}`` shows the
alert the e-mail is about, whether it concerns the person (failed sign-ins, a new place) or an
organization they may watch the security of; ``/portal/account/alerts`` lists the alerts about
the person. An organization's own list stays at ``/portal/orgs/{org}/security/alerts``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from imhost.accounts import service as accounts
from imhost.accounts import threats
from imhost.accounts.models import Organization, OrgRole, SecurityAlert
from imhost.accounts.permissions import Access, Scope, org_role_allows
from imhost.kit.errors import NotFound, PermissionDenied
from imhost.web.deps import Db, Principal, RuntimeDep
from imhost.web.pages import Form, PageNo, page_require, redirect, render

router = APIRouter(include_in_schema=False)
SelfRead = Annotated[Principal, Depends(page_require("self", Access.READ, scope=Scope.SELF))]
SelfWrite = Annotated[Principal, Depends(page_require("self", Access.WRITE, scope=Scope.SELF))]


@dataclass(frozen=True)
class AlertAccess:
    """What the signed-in person may do with one alert."""

    alert: SecurityAlert
    org: Organization | None  # the alert's organization, when the person may watch it
    about_me: bool  # the alert concerns the person themself
    may_acknowledge: bool


def alert_access(db: Db, principal: Principal, alert_id: str) -> AlertAccess:
    """The alert if it is about the person or about an organization whose security they may
    read; otherwise 404 (as if it did not exist)."""
    assert principal.user is not None
    alert = db.get(SecurityAlert, alert_id[:64])
    if alert is None:
        raise NotFound("There is no such alert, or it is not yours to see.")
    about_me = alert.user_id == principal.user.id
    org, may_write = None, False
    if alert.organization_id:
        membership = accounts.get_membership(db, alert.organization_id, principal.user.id)
        role = OrgRole(membership.role) if membership is not None else None
        if role is not None and org_role_allows(role, "security", Access.READ):
            org = accounts.get_organization(db, alert.organization_id)
            may_write = org_role_allows(role, "security", Access.WRITE)
    if not about_me and org is None:
        raise NotFound("There is no such alert, or it is not yours to see.")
    return AlertAccess(alert, org, about_me, about_me or may_write)


@router.get("/portal/account/alerts")
def my_alerts(request: Request, principal: SelfRead, db: Db, page: PageNo) -> Response:
    assert principal.user is not None
    rows, total = threats.list_alerts(
        db,
        organization_id=None,
        user_id=principal.user.id,
        limit=page.per_page,
        offset=page.offset,
    )
    return render(
        request,
        "portal/my_alerts.html",
        {"title": "Security alerts about you", "alerts": rows, "pg": page.with_total(total)},
        principal=principal,
        db=db,
        section="Account",
    )


@router.get("/portal/security/alerts/{alert_id}")
def alert_page(request: Request, alert_id: str, principal: SelfRead, db: Db) -> Response:
    """The page a security alert e-mail links to: that alert and what to do about it."""
    access = alert_access(db, principal, alert_id)
    return render(
        request,
        "portal/alert.html",
        {"title": "Security alert", "access": access, "a": access.alert},
        principal=principal,
        db=db,
        section="Account",
    )


@router.post("/portal/security/alerts/{alert_id}/acknowledge")
def acknowledge(
    request: Request, alert_id: str, principal: SelfWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    access = alert_access(db, principal, alert_id)
    if not access.may_acknowledge:
        raise PermissionDenied(
            "Only the person it is about, or an owner or admin of the organization, can mark "
            "this alert as seen."
        )
    alert = access.alert
    alert.acknowledged_at = alert.acknowledged_at or runtime.clock.now()
    return redirect(request, f"/portal/security/alerts/{alert.id}", "Alert marked as seen.")
