"""Support tickets over the API: customers list, open, read and answer their organization's
tickets (``/api/v1/orgs/{org_id}/tickets``, area ``tickets``); staff read the queue and any
ticket (``/api/v1/admin/tickets``, area ``support-admin``). Another organization's ticket is
a 404. Attachments are sent through the portal or by e-mail."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from imhost.accounts.models import Organization
from imhost.accounts.permissions import Access, Scope
from imhost.kit.errors import InvalidInput, NotFound
from imhost.support import tickets
from imhost.support.ticket_models import Department, Ticket, TicketMessage, Via
from imhost.support.tickets import Author
from imhost.web.deps import Db, PageDep, Principal, RuntimeDep, require

router = APIRouter(tags=["support tickets"])

TicketsRead = Annotated[Principal, Depends(require("tickets", Access.READ))]
TicketsWrite = Annotated[Principal, Depends(require("tickets", Access.WRITE))]
StaffRead = Annotated[Principal, Depends(require("support-admin", Access.READ, scope=Scope.STAFF))]
ORG = "/orgs/{org_id}/tickets"


class TicketOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    public_id: str = Field(description="The ticket's number, e.g. IMH-7K3Q-2D9F.")
    subject: str
    department: str
    priority: str
    status: str
    requester_name: str
    requester_email: str
    created_at: datetime
    updated_at: datetime
    due_at: datetime | None
    rating: int | None


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    author_name: str
    from_staff: bool
    kind: str = Field(description="reply (the customer sees it) or note (staff only).")
    via: str
    body: str
    created_at: datetime


class TicketDetailOut(TicketOut):
    messages: list[MessageOut]


class TicketPage(BaseModel):
    items: list[TicketOut]
    limit: int
    offset: int
    total: int


class QueuePageOut(BaseModel):
    items: list[TicketOut]
    next_cursor: str | None


class TicketIn(BaseModel):
    subject: str = Field(min_length=1, max_length=200)
    message: str = Field(min_length=1, max_length=50_000)
    department: Department = Department.TECHNICAL


class ReplyIn(BaseModel):
    message: str = Field(min_length=1, max_length=50_000)


def _detail(db: Db, ticket: Ticket, *, staff: bool) -> TicketDetailOut:
    out = TicketOut.model_validate(ticket).model_dump()
    rows: list[TicketMessage] = tickets.messages(db, ticket, include_notes=staff)
    return TicketDetailOut(**out, messages=[MessageOut.model_validate(m) for m in rows])


def _org_ticket(db: Db, principal: Principal, public_id: str) -> Ticket:
    ticket = tickets.find_ticket_by_public_id(db, public_id)
    if ticket is None or ticket.organization_id != principal.org_id:
        raise NotFound("There is no such ticket.")
    return ticket


def _author(db: Db, principal: Principal) -> Author:
    if principal.user is not None:
        return Author.of_user(principal.user)
    org = db.get(Organization, principal.org_id)
    email = org.billing_email if org is not None else None
    if not email:
        raise InvalidInput(
            "An API token without a person writes as the organization's invoice address; "
            "set one in the billing details first."
        )
    return Author(name=principal.actor.label, email=email)


@router.get(ORG, response_model=TicketPage)
def list_tickets(
    principal: TicketsRead,
    db: Db,
    page: PageDep,
    status: Annotated[str, Query(max_length=30)] = "all",
) -> TicketPage:
    """The organization's tickets, newest change first (``status``: one status, ``open`` or
    ``all``)."""
    rows, total = tickets.list_for_organization(
        db, principal.org_id, status=status, limit=page.limit, offset=page.offset
    )
    return TicketPage(
        items=[TicketOut.model_validate(t) for t in rows],
        limit=page.limit,
        offset=page.offset,
        total=total,
    )


@router.post(ORG, response_model=TicketDetailOut, status_code=201)
def open_ticket(
    body: TicketIn, principal: TicketsWrite, db: Db, runtime: RuntimeDep
) -> TicketDetailOut:
    ticket = tickets.open_ticket(
        db,
        runtime.clock,
        subject=body.subject,
        body=body.message,
        department=body.department.value,
        requester=_author(db, principal),
        organization_id=principal.org_id,
        via=Via.API.value,
    )
    return _detail(db, ticket, staff=False)


@router.get(ORG + "/{public_id}", response_model=TicketDetailOut)
def get_ticket(public_id: str, principal: TicketsRead, db: Db) -> TicketDetailOut:
    return _detail(db, _org_ticket(db, principal, public_id), staff=False)


@router.post(ORG + "/{public_id}/replies", response_model=TicketDetailOut, status_code=201)
def reply(
    public_id: str, body: ReplyIn, principal: TicketsWrite, db: Db, runtime: RuntimeDep
) -> TicketDetailOut:
    ticket = _org_ticket(db, principal, public_id)
    tickets.add_reply(
        db, runtime.clock, ticket, _author(db, principal), body.message, via=Via.API.value
    )
    return _detail(db, tickets.survivor_of(db, ticket), staff=False)


@router.get("/admin/tickets", response_model=QueuePageOut)
def queue(
    principal: StaffRead,
    db: Db,
    runtime: RuntimeDep,
    view: Annotated[str, Query(max_length=20)] = "open",
    department: Annotated[str | None, Query(max_length=20)] = None,
    status: Annotated[str | None, Query(max_length=30)] = None,
    cursor: Annotated[str | None, Query(max_length=80)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> QueuePageOut:
    """The staff queue (views: open, mine, unassigned, breaching, all), keyset-paginated:
    pass ``next_cursor`` back as ``cursor``."""
    page = tickets.queue(
        db,
        runtime.clock,
        view=view,
        viewer_user_id=principal.user.id if principal.user else None,
        department=department,
        status=status,
        cursor=cursor,
        limit=limit,
    )
    return QueuePageOut(
        items=[TicketOut.model_validate(t) for t in page.tickets], next_cursor=page.next_cursor
    )


@router.get("/admin/tickets/{public_id}", response_model=TicketDetailOut)
def staff_ticket(public_id: str, principal: StaffRead, db: Db) -> TicketDetailOut:
    """A ticket with its internal notes."""
    return _detail(db, tickets.get_ticket(db, public_id), staff=True)
