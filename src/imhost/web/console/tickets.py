"""Console: the ticket queue and a ticket's page.

The queue has views (open, mine, unassigned, breaching soon (by the SLA's ``due_at``), all),
narrowed by department and status, keyset-paginated so that page 1,000 costs what page 1
does. A ticket's page has the thread with internal notes, reply / note / canned reply,
assignment, status, priority, tags and merge, its history, and beside it the customer:
organization, plan, service status and its reason, usage this period and limits, open
invoices and their dunning steps, and the customer's other tickets. Staff also open a ticket
on a customer's behalf. Reading needs ``support-admin:read``; changing, ``support-admin:write``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from imhost.accounts import service as accounts
from imhost.accounts.models import Organization, User
from imhost.accounts.permissions import Access, Scope
from imhost.billing import service as billing
from imhost.billing.models import DunningAction
from imhost.billing.plans import load_plan_terms
from imhost.hosting import service as hosting
from imhost.kit.errors import DomainError, InvalidInput, NotFound
from imhost.metering.aggregate import usage_to_date
from imhost.runtime import Runtime
from imhost.support import tickets
from imhost.support.ticket_models import Department, Priority, Ticket, TicketStatus, Via
from imhost.support.tickets import Author
from imhost.web.deps import Db, Principal, RuntimeDep
from imhost.web.pages import Form, FormErrors, page_require, redirect, render, text, values_of
from imhost.web.portal.tickets import DEPARTMENT_WORDS, attachments_of, download

router = APIRouter(prefix="/console/support", include_in_schema=False)

TicketsRead = Annotated[
    Principal, Depends(page_require("support-admin", Access.READ, scope=Scope.STAFF))
]
TicketsWrite = Annotated[
    Principal, Depends(page_require("support-admin", Access.WRITE, scope=Scope.STAFF))
]
PublicId = Annotated[str, PathParam(min_length=1, max_length=20)]

STAFF_STATUS_WORDS = {
    TicketStatus.NEW.value: "new",
    TicketStatus.OPEN.value: "open",
    TicketStatus.WAITING_ON_CUSTOMER.value: "waiting on customer",
    TicketStatus.WAITING_ON_STAFF.value: "waiting on us",
    TicketStatus.RESOLVED.value: "resolved",
    TicketStatus.CLOSED.value: "closed",
}
VIEW_WORDS = [
    ("open", "Open"),
    ("mine", "Mine"),
    ("unassigned", "Unassigned"),
    ("breaching", "Breaching soon"),
    ("all", "All"),
]
FIELDS = {"message", "attachments", "status", "priority", "tags", "assignee", "into", "canned"}
NEW_FIELDS = {"customer", "email", "subject", "message", "department", "attachments"}


@router.get("/tickets")
def queue(
    request: Request,
    principal: TicketsRead,
    db: Db,
    runtime: RuntimeDep,
    view: Annotated[str, Query(max_length=20)] = "open",
    department: Annotated[str, Query(max_length=20)] = "",
    status: Annotated[str, Query(max_length=30)] = "",
    after: Annotated[str, Query(max_length=80)] = "",
) -> Response:
    if view not in tickets.QUEUE_VIEWS:
        view = "open"
    if department not in DEPARTMENT_WORDS:
        department = ""
    if status not in STAFF_STATUS_WORDS:
        status = ""
    assert principal.user is not None
    try:
        page = tickets.queue(
            db,
            runtime.clock,
            view=view,
            viewer_user_id=principal.user.id,
            department=department or None,
            status=status or None,
            cursor=after or None,
        )
    except InvalidInput:
        page = tickets.queue(
            db,
            runtime.clock,
            view=view,
            viewer_user_id=principal.user.id,
            department=department or None,
            status=status or None,
        )
    orgs = _names(db, Organization, {t.organization_id for t in page.tickets})
    staff = _names(db, User, {t.assignee_user_id for t in page.tickets})
    return render(
        request,
        "console/tickets.html",
        {
            "title": "Tickets",
            "page": page,
            "view": view,
            "views": VIEW_WORDS,
            "department": department,
            "status": status,
            "departments": DEPARTMENT_WORDS,
            "status_words": STAFF_STATUS_WORDS,
            "orgs": orgs,
            "staff": staff,
            "now": runtime.clock.now(),
            "deflected": tickets.deflection_count(db),
        },
        principal=principal,
        db=db,
        section="Tickets",
    )


def _names(db: Session, model: Any, ids: set[str | None]) -> dict[str, str]:
    wanted = [i for i in ids if i]
    if not wanted:
        return {}
    rows = db.scalars(select(model).where(model.id.in_(wanted)))
    return {row.id: getattr(row, "name", "") or getattr(row, "email", "") for row in rows}


def _ticket(db: Session, public_id: str) -> Ticket:
    return tickets.get_ticket(db, public_id)


def customer_context(db: Session, runtime: Runtime, ticket: Ticket) -> dict[str, Any]:
    """What staff see beside a ticket: the customer's account, service, usage and money."""
    ctx: dict[str, Any] = {"org": None, "others": tickets.tickets_of_requester(db, ticket)}
    if not ticket.organization_id:
        return ctx
    org = db.get(Organization, ticket.organization_id)
    if org is None:
        return ctx
    ctx["org"] = org
    ctx["services"] = hosting.services_of(db, org.id)
    sub = billing.current_subscription(db, org.id)
    ctx["subscription"] = sub
    ctx["plan"] = load_plan_terms(db, sub.plan_version_id) if sub is not None else None
    ctx["usage"] = (
        usage_to_date(db, org.id, sub.current_period_start, runtime.clock.now())
        if sub is not None
        else {}
    )
    open_invoices = billing.list_invoices(db, organization_id=org.id, status="open", limit=10)
    ctx["invoices"] = open_invoices
    ctx["dunning"] = {
        inv.id: list(
            db.scalars(
                select(DunningAction.step)
                .where(DunningAction.invoice_id == inv.id, DunningAction.outcome == "done")
                .order_by(DunningAction.at)
            )
        )
        for inv in open_invoices
    }
    return ctx


def _staff_members(db: Session) -> list[User]:
    return list(db.scalars(select(User).where(User.staff_role.is_not(None)).order_by(User.email)))


def _page(
    request: Request,
    principal: Principal,
    db: Session,
    runtime: Runtime,
    ticket: Ticket,
    *,
    errors: FormErrors | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    values = dict(values or {})
    canned_id = request.query_params.get("canned", "")
    if canned_id and "message" not in values:
        assert principal.user is not None
        try:
            canned = tickets.get_canned(db, canned_id)
        except NotFound:
            canned = None
        if canned is not None:
            values["message"] = tickets.render_canned(
                canned.body, tickets.canned_values(db, ticket, Author.of_user(principal.user))
            )
    merged_into = db.get(Ticket, ticket.merged_into_id) if ticket.merged_into_id else None
    ctx: dict[str, Any] = {
        "title": f"{ticket.public_id}: {ticket.subject}",
        "ticket": ticket,
        "merged_into": merged_into,
        "messages": tickets.messages(db, ticket, include_notes=True),
        "files": tickets.attachments_by_message(db, ticket),
        "history": tickets.history(db, ticket),
        "status_words": STAFF_STATUS_WORDS,
        "statuses": list(STAFF_STATUS_WORDS.items()),
        "priorities": [(p.value, p.value) for p in Priority],
        "departments": DEPARTMENT_WORDS,
        "staff_members": _staff_members(db),
        "canned": tickets.list_canned(db),
        "errors": errors or FormErrors(),
        "values": values,
        "action": f"/console/support/tickets/{ticket.public_id}",
        "now": runtime.clock.now(),
    }
    ctx.update(customer_context(db, runtime, ticket))
    return render(
        request,
        "console/ticket.html",
        ctx,
        principal=principal,
        db=db,
        status_code=status,
        section="Tickets",
    )


@router.get("/tickets/new")
def new_ticket_page(request: Request, principal: TicketsWrite, db: Db) -> Response:
    return _new_page(request, principal, db)


def _new_page(
    request: Request,
    principal: Principal,
    db: Session,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "console/ticket_new.html",
        {
            "title": "Open a ticket for a customer",
            "values": values or {"customer": request.query_params.get("customer", "")[:64]},
            "errors": errors or FormErrors(),
            "departments": list(DEPARTMENT_WORDS.items()),
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Tickets",
    )


@router.post("/tickets/new")
def open_for_customer(
    request: Request, principal: TicketsWrite, db: Db, runtime: RuntimeDep, form: Form
) -> Response:
    """Staff open a ticket on a customer's behalf: the customer's organization (slug or id)
    and the member it is for (their e-mail address)."""
    assert principal.user is not None
    try:
        ref = text(form, "customer", max_length=64)
        try:
            org = accounts.get_organization(db, ref)
        except NotFound:
            raise InvalidInput("There is no such customer.", field="customer") from None
        email = text(form, "email", max_length=320).lower()
        user = next(
            (u for _, u in accounts.list_members(db, org.id) if u.email.lower() == email), None
        )
        if user is None:
            raise InvalidInput("Choose a member of this customer's organization.", field="email")
        ticket = tickets.open_ticket(
            db,
            runtime.clock,
            subject=text(form, "subject", max_length=300),
            body=text(form, "message", max_length=60_000),
            department=text(form, "department", max_length=20) or Department.TECHNICAL.value,
            requester=Author.of_user(user),
            organization_id=org.id,
            via=Via.STAFF.value,
            attachments=attachments_of(form),
            opened_by=Author.of_user(principal.user),
        )
    except DomainError as exc:
        db.rollback()
        return _new_page(
            request,
            principal,
            db,
            values=values_of(form),
            errors=FormErrors.of(exc, NEW_FIELDS),
            status=exc.status,
        )
    return redirect(
        request,
        f"/console/support/tickets/{ticket.public_id}",
        f"Ticket {ticket.public_id} is open; the customer was e-mailed.",
    )


@router.get("/tickets/{public_id}")
def ticket_page(
    request: Request, public_id: PublicId, principal: TicketsRead, db: Db, runtime: RuntimeDep
) -> Response:
    return _page(request, principal, db, runtime, _ticket(db, public_id))


@router.post("/tickets/{public_id}/reply")
def reply(
    request: Request,
    public_id: PublicId,
    principal: TicketsWrite,
    db: Db,
    runtime: RuntimeDep,
    form: Form,
) -> Response:
    assert principal.user is not None
    ticket = _ticket(db, public_id)
    internal = form.get("kind") == "note"
    try:
        tickets.add_reply(
            db,
            runtime.clock,
            ticket,
            Author.of_user(principal.user),
            text(form, "message", max_length=60_000),
            attachments_of(form),
            via=Via.STAFF.value,
            internal=internal,
        )
    except DomainError as exc:
        db.rollback()
        return _page(
            request,
            principal,
            db,
            runtime,
            _ticket(db, public_id),
            errors=FormErrors.of(exc, FIELDS),
            values=values_of(form),
            status=exc.status,
        )
    return redirect(
        request,
        f"/console/support/tickets/{ticket.public_id}",
        "Note added." if internal else "Reply sent to the customer.",
    )


@router.post("/tickets/{public_id}/update")
def update(
    request: Request,
    public_id: PublicId,
    principal: TicketsWrite,
    db: Db,
    runtime: RuntimeDep,
    form: Form,
) -> Response:
    """Status, priority, assignee and tags in one form (only what changed is recorded)."""
    ticket = _ticket(db, public_id)
    actor, clock = principal.actor, runtime.clock
    try:
        if "status" in form:
            tickets.set_status(db, clock, ticket, text(form, "status", max_length=30), actor=actor)
        if "priority" in form:
            tickets.set_priority(
                db, clock, ticket, text(form, "priority", max_length=20), actor=actor
            )
        if "department" in form:
            tickets.set_department(
                db, clock, ticket, text(form, "department", max_length=20), actor=actor
            )
        if "assignee" in form:
            tickets.assign(
                db, clock, ticket, text(form, "assignee", max_length=32) or None, actor=actor
            )
        if "tags" in form:
            tickets.set_tags(db, clock, ticket, text(form, "tags", max_length=1000), actor=actor)
    except DomainError as exc:
        db.rollback()
        return _page(
            request,
            principal,
            db,
            runtime,
            _ticket(db, public_id),
            errors=FormErrors.of(exc, FIELDS),
            status=exc.status,
        )
    return redirect(request, f"/console/support/tickets/{ticket.public_id}", "Ticket updated.")


@router.post("/tickets/{public_id}/merge")
def merge(
    request: Request,
    public_id: PublicId,
    principal: TicketsWrite,
    db: Db,
    runtime: RuntimeDep,
    form: Form,
) -> Response:
    ticket = _ticket(db, public_id)
    try:
        survivor = tickets.find_ticket_by_public_id(db, text(form, "into", max_length=20))
        if survivor is None:
            raise InvalidInput("There is no ticket with this number.", field="into")
        survivor = tickets.merge(db, runtime.clock, ticket, survivor, actor=principal.actor)
    except DomainError as exc:
        db.rollback()
        return _page(
            request,
            principal,
            db,
            runtime,
            _ticket(db, public_id),
            errors=FormErrors.of(exc, FIELDS),
            status=exc.status,
        )
    return redirect(
        request,
        f"/console/support/tickets/{survivor.public_id}",
        f"{ticket.public_id} is merged into this ticket.",
    )


@router.get("/tickets/{public_id}/files/{attachment_id}")
def file(
    public_id: PublicId,
    attachment_id: Annotated[str, PathParam(max_length=32)],
    principal: TicketsRead,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    ticket = _ticket(db, public_id)
    return download(runtime, tickets.get_attachment(db, ticket, attachment_id))


@router.post("/canned")
def save_canned(
    request: Request, principal: TicketsWrite, db: Db, runtime: RuntimeDep, form: Form
) -> Response:
    back = text(form, "back", max_length=40)
    tickets.save_canned(
        db,
        runtime.clock,
        title=text(form, "title", max_length=120),
        body=text(form, "body", max_length=60_000),
        actor=principal.actor,
    )
    target = (
        f"/console/support/tickets/{back}"
        if tickets.normalize_public_id(back)
        else ("/console/support/tickets")
    )
    return redirect(request, target, "Canned reply saved.")
