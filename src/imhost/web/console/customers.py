"""Console: customers (search, view, suspend/reactivate, read-only impersonation), security
alerts across customers, the audit log and the e-mail outbox."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from imhost.accounts import audit as audit_log
from imhost.accounts import service as accounts
from imhost.accounts import sessions, threats
from imhost.accounts.models import Organization
from imhost.accounts.permissions import Access, Scope
from imhost.billing import service as billing
from imhost.billing.plans import load_plan_terms
from imhost.hosting import service as hosting
from imhost.kit.errors import NotFound, PermissionDenied
from imhost.notify import mail
from imhost.web.deps import Db, Principal, Requirement, RuntimeDep
from imhost.web.pages import (
    Form,
    PageNo,
    confirmation,
    page_require,
    redirect,
    render,
    text,
)

router = APIRouter(prefix="/console", include_in_schema=False)


def staff(area: str, access: Access) -> Requirement:
    return page_require(area, access, scope=Scope.STAFF)


CustomersRead = Annotated[Principal, Depends(staff("customers", Access.READ))]
CustomerStatusWrite = Annotated[Principal, Depends(staff("customer-status", Access.WRITE))]
AuditRead = Annotated[Principal, Depends(staff("audit", Access.READ))]
SecurityRead = Annotated[Principal, Depends(staff("security", Access.READ))]
OutboxRead = Annotated[Principal, Depends(staff("outbox", Access.READ))]


def _customer(db: Db, customer_id: str) -> Organization:
    try:
        return accounts.get_organization(db, customer_id[:64])
    except NotFound:
        raise NotFound("no such customer") from None


@router.get("/")
def customers(
    request: Request, principal: CustomersRead, db: Db, page: PageNo, q: str = ""
) -> Response:
    rows, total = accounts.list_organizations(
        db, search=q[:100] or None, limit=page.per_page, offset=page.offset
    )
    return render(
        request,
        "console/customers.html",
        {"title": "Customers", "customers": rows, "pg": page.with_total(total), "q": q[:100]},
        principal=principal,
        db=db,
        section="Customers",
    )


@router.get("/customers/{customer_id}")
def customer(request: Request, customer_id: str, principal: CustomersRead, db: Db) -> Response:
    org = _customer(db, customer_id)
    ctx: dict[str, object] = {
        "title": org.name,
        "customer": org,
        "members": accounts.list_members(db, org.id),
        "events": audit_log.list_events(db, organization_id=org.id, limit=10)[0],
    }
    ctx["services"] = hosting.services_of(db, org.id)
    sub = billing.current_subscription(db, org.id)
    ctx["subscription"] = sub
    if sub is not None:
        ctx["terms"] = load_plan_terms(db, sub.plan_version_id)
    ctx["invoices"] = billing.list_invoices(db, organization_id=org.id, limit=10, offset=0)
    return render(
        request, "console/customer.html", ctx, principal=principal, db=db, section="Customers"
    )


@router.post("/customers/{customer_id}/status")
def set_status(
    request: Request,
    customer_id: str,
    principal: CustomerStatusWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    org = _customer(db, customer_id)
    suspend = text(form, "action") == "suspend"
    url = f"/console/customers/{org.id}"
    if suspend:
        ask = confirmation(
            request,
            form,
            principal=principal,
            db=db,
            question=f"Suspend {org.name}?",
            consequence="Their XMPP service closes and their portal shows the reason you give.",
            button="Suspend customer",
            cancel_url=url,
            reason_field="reason",
        )
        if ask is not None:
            return ask
    accounts.set_organization_status(
        db,
        runtime.clock,
        org,
        suspended=suspend,
        reason=text(form, "reason", max_length=500),
        actor=principal.actor,
    )
    return redirect(request, url, f"{org.name} is {'suspended' if suspend else 'active again'}.")


@router.post("/customers/{customer_id}/impersonate")
def impersonate(
    request: Request, customer_id: str, principal: CustomersRead, db: Db, runtime: RuntimeDep
) -> Response:
    if principal.web_session is None:
        raise PermissionDenied("impersonation needs a signed-in staff browser session")
    org = _customer(db, customer_id)
    sessions.start_impersonation(
        db, runtime.clock, principal.web_session, org, actor=principal.actor
    )
    return redirect(request, f"/portal/orgs/{org.slug}/", f"You are viewing {org.name} read-only.")


@router.post("/impersonation/stop")
def stop_impersonating(request: Request, principal: CustomersRead) -> Response:
    org_id = principal.web_session.impersonating_org_id if principal.web_session else None
    if principal.web_session is not None:
        principal.web_session.impersonating_org_id = None
    return redirect(
        request,
        f"/console/customers/{org_id}" if org_id else "/console/",
        "You stopped viewing the customer.",
    )


@router.get("/alerts")
def alerts(request: Request, principal: SecurityRead, db: Db, page: PageNo) -> Response:
    rows, total = threats.list_alerts(
        db, organization_id=None, limit=page.per_page, offset=page.offset
    )
    return render(
        request,
        "console/alerts.html",
        {"title": "Security alerts", "alerts": rows, "pg": page.with_total(total)},
        principal=principal,
        db=db,
        section="Alerts",
    )


@router.get("/audit")
def audit(
    request: Request,
    principal: AuditRead,
    db: Db,
    page: PageNo,
    action: str = "",
    customer: str = "",
) -> Response:
    rows, total = audit_log.list_events(
        db,
        organization_id=customer[:32] or None,
        action=action[:64] or None,
        limit=page.per_page,
        offset=page.offset,
    )
    return render(
        request,
        "console/audit.html",
        {
            "title": "Audit log",
            "events": rows,
            "pg": page.with_total(total),
            "action": action[:64],
            "customer": customer[:32],
        },
        principal=principal,
        db=db,
        section="Audit log",
    )


@router.get("/outbox")
def outbox(request: Request, principal: OutboxRead, db: Db, page: PageNo) -> Response:
    rows = mail.list_outbox(db, limit=page.per_page, offset=page.offset)
    return render(
        request,
        "console/outbox.html",
        {"title": "E-mail outbox", "emails": rows, "pg": page},
        principal=principal,
        db=db,
        section="Outbox",
    )


@router.get("/outbox/{email_id}")
def outbox_email(request: Request, email_id: str, principal: OutboxRead, db: Db) -> Response:
    email = mail.get_email(db, email_id[:64])
    return render(
        request,
        "console/email.html",
        {"title": email.subject, "email": email},
        principal=principal,
        db=db,
        section="Outbox",
    )
