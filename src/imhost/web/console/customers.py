"""Console: customers (search, view, suspend/reactivate, read-only impersonation, plan change,
one-off charges), security
alerts across customers, the audit log and the e-mail outbox."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
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
from imhost.catalog import service as catalog
from imhost.catalog.intervals import interval_words
from imhost.hosting import service as hosting
from imhost.kit.errors import DomainError, InvalidInput, NotFound, PermissionDenied
from imhost.kit.money import format_money
from imhost.notify import mail
from imhost.runtime import Runtime
from imhost.web.deps import Db, Principal, Requirement, RuntimeDep
from imhost.web.pages import (
    Form,
    FormErrors,
    PageNo,
    confirmation,
    page_require,
    redirect,
    render,
    text,
    values_of,
)
from imhost.web.rooms import destroy_room, room_list

router = APIRouter(prefix="/console", include_in_schema=False)


def staff(area: str, access: Access) -> Requirement:
    return page_require(area, access, scope=Scope.STAFF)


CustomersRead = Annotated[Principal, Depends(staff("customers", Access.READ))]
CustomerStatusWrite = Annotated[Principal, Depends(staff("customer-status", Access.WRITE))]
AuditRead = Annotated[Principal, Depends(staff("audit", Access.READ))]
SecurityRead = Annotated[Principal, Depends(staff("security", Access.READ))]
OutboxRead = Annotated[Principal, Depends(staff("outbox", Access.READ))]
BillingWrite = Annotated[Principal, Depends(staff("billing-admin", Access.WRITE))]
HostingAdminWrite = Annotated[Principal, Depends(staff("hosting-admin", Access.WRITE))]


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


def _plan_options(db: Db, currency: str) -> list[tuple[str, str]]:
    """(plan version id, how staff read it) for every plan's current version in ``currency``."""
    options = []
    for view in catalog.list_plans(db, public_only=False, currency=currency):
        for v in view.versions:
            version = v.version
            price = format_money(version.base_fee, version.currency)
            words = interval_words(version.billing_interval)
            options.append((version.id, f"{view.plan.name} v{version.version}, {price} {words}"))
    return options


def _customer_page(
    request: Request,
    principal: Principal,
    db: Db,
    org: Organization,
    *,
    runtime: Runtime,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    form: str = "",
    status: int = 200,
) -> Response:
    ctx: dict[str, object] = {
        "title": org.name,
        "customer": org,
        "members": accounts.list_members(db, org.id),
        "events": audit_log.list_events(db, organization_id=org.id, limit=10)[0],
        "values": values or {},
        "errors": errors or FormErrors(),
        "form": form,
    }
    ctx["services"] = hosting.services_of(db, org.id)
    ctx["service_rooms"] = [(s, room_list(db, runtime, s)) for s in hosting.services_of(db, org.id)]
    sub = billing.current_subscription(db, org.id)
    ctx["subscription"] = sub
    if sub is not None:
        ctx["terms"] = load_plan_terms(db, sub.plan_version_id)
        ctx["plan_options"] = _plan_options(db, sub.currency)
    ctx["pending"] = billing.list_pending_charges(db, org.id)
    ctx["invoices"] = billing.list_invoices(db, organization_id=org.id, limit=10, offset=0)
    return render(
        request,
        "console/customer.html",
        ctx,
        principal=principal,
        db=db,
        section="Customers",
        status_code=status,
    )


@router.get("/customers/{customer_id}")
def customer(
    request: Request, customer_id: str, principal: CustomersRead, db: Db, runtime: RuntimeDep
) -> Response:
    return _customer_page(request, principal, db, _customer(db, customer_id), runtime=runtime)


@router.post("/customers/{customer_id}/services/{service_id}/rooms/{name}/destroy")
def destroy_room_page(
    request: Request,
    customer_id: str,
    service_id: str,
    name: str,
    principal: HostingAdminWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    org = _customer(db, customer_id)
    service = hosting.get_service(db, service_id[:64], organization_id=org.id)
    room = name[:1100]
    url = f"/console/customers/{org.id}"
    jid = f"{room}@{hosting.conference_domain(service)}"
    ask = confirmation(
        request,
        form,
        principal=principal,
        db=db,
        question=f"Destroy the group chat {jid}?",
        consequence="Everyone in it is told your reason and it is gone, with its settings "
        "and members. The customer sees it in their audit log.",
        button="Destroy room",
        cancel_url=url,
        reason_field="reason",
    )
    if ask is not None:
        return ask
    destroy_room(db, runtime, service, room, text(form, "reason", max_length=500), principal)
    return redirect(request, url, f"The group chat {jid} is destroyed.")


@router.post("/customers/{customer_id}/plan")
def change_plan(
    request: Request,
    customer_id: str,
    principal: BillingWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    """Change the customer's plan now: the proration is shown first, then applied (billing's
    ``change_plan`` records it for the next invoice and in the audit log)."""
    org = _customer(db, customer_id)
    try:
        version_id = text(form, "plan_version_id", max_length=64)
        if not version_id:
            raise InvalidInput("Pick the plan to change to.", field="plan_version_id")
        if form.get("confirmed") != "yes":
            preview = billing.preview_change(db, runtime.clock, org.id, version_id)
            sub = billing.current_subscription(db, org.id)
            return render(
                request,
                "console/plan_change.html",
                {
                    "title": "Confirm the plan change",
                    "customer": org,
                    "preview": preview,
                    "old": load_plan_terms(db, preview.from_plan_version_id),
                    "new": load_plan_terms(db, preview.to_plan_version_id),
                    "subscription": sub,
                },
                principal=principal,
                db=db,
                section="Customers",
            )
        done = billing.change_plan(
            db,
            runtime.clock,
            org.id,
            version_id,
            changed_by=principal.actor.label,
            actor=principal.actor,
        )
    except DomainError as exc:
        db.rollback()
        return _customer_page(
            request,
            principal,
            db,
            org,
            runtime=runtime,
            values=values_of(form),
            errors=FormErrors.of(exc, {"plan_version_id"}),
            form="plan",
            status=exc.status,
        )
    new = load_plan_terms(db, done.to_plan_version_id)
    said = (
        f" {format_money(done.total, done.currency)} of proration goes on the next invoice."
        if done.lines
        else " Nothing is prorated."
    )
    return redirect(
        request, f"/console/customers/{org.id}", f"{org.name} is now on {new.plan_name}.{said}"
    )


CHARGE_FIELDS = {"amount", "description", "reason"}


@router.post("/customers/{customer_id}/charges")
def add_charge(
    request: Request,
    customer_id: str,
    principal: BillingWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    """Add a one-off charge for the customer's next invoice, after confirming its amount."""
    org = _customer(db, customer_id)
    url = f"/console/customers/{org.id}"
    sub = billing.current_subscription(db, org.id)
    try:
        raw = text(form, "amount", max_length=40).strip()
        description = text(form, "description", max_length=600).strip()
        if sub is None:
            # Charges are invoiced with a subscription's invoice, in its currency.
            raise InvalidInput(
                f"{org.name} has no subscription, so there is no next invoice to add a charge to."
            )
        currency = sub.currency
        if not raw:
            raise InvalidInput("Type the amount to charge, such as 25 or 25.50.", field="amount")
        try:
            amount = Decimal(raw)
        except InvalidOperation:
            raise InvalidInput("Type a number such as 25 or 25.50.", field="amount") from None
        if not amount.is_finite() or abs(amount) >= Decimal(10) ** 12:
            raise InvalidInput("Type an amount below 1,000,000,000,000.", field="amount")
        if not description:
            raise InvalidInput(
                "Say what the charge is for; the customer sees it on the invoice.",
                field="description",
            )
        value = billing.check_one_off_charge(amount, currency, description)
        ask = confirmation(
            request,
            form,
            principal=principal,
            db=db,
            question=f"Charge {org.name} {format_money(value, currency)}?",
            consequence=(
                f"“{description}”, {format_money(value, currency)} plus tax where it applies, "
                "is added to their next invoice. The reason is kept in the audit log."
            ),
            button="Add the charge",
            cancel_url=url,
            reason_field="reason",
        )
        if ask is not None:
            return ask
        charge = billing.add_one_off_charge(
            db,
            runtime.clock,
            org.id,
            description=description,
            amount=value,
            currency=currency,
            reason=text(form, "reason", max_length=500),
            created_by=principal.actor.label,
            actor=principal.actor,
        )
    except DomainError as exc:
        db.rollback()
        errors = FormErrors.of(exc, CHARGE_FIELDS)
        return _customer_page(
            request,
            principal,
            db,
            org,
            runtime=runtime,
            values=values_of(form),
            errors=errors,
            form="charge",
            status=exc.status,
        )
    return redirect(
        request,
        url,
        f"{format_money(charge.amount, charge.currency)} added to {org.name}'s next invoice.",
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
