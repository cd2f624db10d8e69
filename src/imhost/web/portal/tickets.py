"""Support tickets in the portal and on the public help pages.

Portal (signed in, ``/portal/orgs/{org}/support/tickets``): the organization's tickets
(filtered by status), a new ticket with article suggestions beside the form, a ticket's
thread with reply, close, reopen and rating, and its attachments. Members see only their own
organization's tickets (area ``tickets``); another organization's ticket is a 404.

Public (``/help/contact``): the guest form, with a honeypot field, a signed time trap and
rate limits per address and per client. A guest follows a ticket by the signed link of the
confirmation e-mail (``/help/tickets/{id}/{signature}``) and rates it from the resolution
e-mail (``/help/tickets/{id}/rate/{score}/{signature}``).

Attachments are always served as ``application/octet-stream`` with ``Content-Disposition:
attachment`` and ``X-Content-Type-Options: nosniff``, and only to who may see the ticket.
"""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile
from starlette.responses import Response

from imhost.accounts.permissions import Access
from imhost.kit.errors import DomainError, InvalidInput, NotFound
from imhost.runtime import Runtime
from imhost.support import service as help_service
from imhost.support import tickets
from imhost.support.attachments import DOWNLOAD_CONTENT_TYPE, AttachmentIn, AttachmentStore
from imhost.support.ticket_models import Department, Ticket, TicketAttachment, TicketStatus, Via
from imhost.support.tickets import Author
from imhost.web.deps import Db, Principal, RuntimeDep
from imhost.web.pages import (
    Form,
    FormErrors,
    PageNo,
    page_public,
    page_require,
    redirect,
    render,
    text,
    values_of,
)
from imhost.web.portal.help import visitor_nav

router = APIRouter(include_in_schema=False)

TicketsRead = Annotated[Principal, Depends(page_require("tickets", Access.READ))]
TicketsWrite = Annotated[Principal, Depends(page_require("tickets", Access.WRITE))]
PublicPage = Annotated[Principal, Depends(page_public())]
PublicId = Annotated[str, PathParam(min_length=1, max_length=20)]
Signature = Annotated[str, PathParam(min_length=1, max_length=64)]

TICKET_FIELDS = {"subject", "department", "message", "attachments", "name", "email", "form"}
DEPARTMENT_WORDS = {
    Department.TECHNICAL.value: "Technical help",
    Department.BILLING.value: "Billing and invoices",
    Department.DOMAINS.value: "Domains",
    Department.ABUSE.value: "Report abuse",
}
STATUS_WORDS = {
    TicketStatus.NEW.value: "received",
    TicketStatus.OPEN.value: "open",
    TicketStatus.WAITING_ON_CUSTOMER.value: "waiting for your reply",
    TicketStatus.WAITING_ON_STAFF.value: "waiting for us",
    TicketStatus.RESOLVED.value: "resolved",
    TicketStatus.CLOSED.value: "closed",
}
STATUS_FILTERS = [("open", "Open"), ("resolved", "Resolved"), ("closed", "Closed"), ("all", "All")]
HONEYPOT = "website"


def attachments_of(form: FormData) -> list[AttachmentIn]:
    """The files of a form's ``attachments`` field (an empty file input sends one nameless,
    empty part: that is no file)."""
    out: list[AttachmentIn] = []
    for item in form.getlist("attachments"):
        if isinstance(item, UploadFile):
            content = item.file.read()
            if content or item.filename:
                out.append(AttachmentIn(item.filename or "attachment", content))
    return out


def download(runtime: Runtime, att: TicketAttachment) -> Response:
    """An attachment as a download that no browser renders or sniffs."""
    store = AttachmentStore(runtime.settings.data_dir / "attachments")
    try:
        content = store.read(att.storage_name)
    except OSError:
        raise NotFound("This file is no longer available.") from None
    ascii_name = att.filename.encode("ascii", "replace").decode().replace("?", "_")
    return Response(
        content,
        media_type=DOWNLOAD_CONTENT_TYPE,
        headers={
            "Content-Disposition": (
                f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(att.filename)}"
            ),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


def _org_ticket(db: Session, principal: Principal, public_id: str) -> Ticket:
    """The organization's ticket, or 404 (another organization's ticket is not confirmed)."""
    ticket = tickets.find_ticket_by_public_id(db, public_id)
    if ticket is None or ticket.organization_id != principal.org_id:
        raise NotFound("There is no such ticket.")
    return ticket


def _base(principal: Principal) -> str:
    return f"/portal/orgs/{principal.org.slug}/support/tickets"


# --- portal -------------------------------------------------------------------------------------


@router.get("/portal/orgs/{org_id}/support/tickets")
def my_tickets(
    request: Request,
    principal: TicketsRead,
    db: Db,
    pg: PageNo,
    status: Annotated[str, Query(max_length=30)] = "open",
) -> Response:
    if status not in {value for value, _ in STATUS_FILTERS}:
        status = "open"
    rows, total = tickets.list_for_organization(
        db, principal.org_id, status=status, limit=pg.per_page, offset=pg.offset
    )
    return render(
        request,
        "portal/tickets.html",
        {
            "title": "Support tickets",
            "tickets": rows,
            "status": status,
            "filters": STATUS_FILTERS,
            "status_words": STATUS_WORDS,
            "departments": DEPARTMENT_WORDS,
            "pg": pg.with_total(total),
        },
        principal=principal,
        db=db,
        section="Support",
    )


def _new_page(
    request: Request,
    principal: Principal,
    db: Session,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    values = dict(values or {})
    values.setdefault("context", secrets.token_urlsafe(16))
    subject = values.get("subject", "")
    return render(
        request,
        "portal/ticket_new.html",
        {
            "title": "New ticket",
            "values": values,
            "errors": errors or FormErrors(),
            "departments": list(DEPARTMENT_WORDS.items()),
            # Without JavaScript the suggestions appear after a first (refused) submit.
            "suggestions": help_service.suggest_articles(db, subject, 5) if subject else [],
            "action": _base(principal),
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Support",
    )


@router.get("/portal/orgs/{org_id}/support/tickets/new")
def new_ticket_page(request: Request, principal: TicketsWrite, db: Db) -> Response:
    return _new_page(request, principal, db)


@router.post("/portal/orgs/{org_id}/support/tickets")
def open_ticket(
    request: Request, principal: TicketsWrite, db: Db, runtime: RuntimeDep, form: Form
) -> Response:
    assert principal.user is not None
    try:
        ticket = tickets.open_ticket(
            db,
            runtime.clock,
            subject=text(form, "subject", max_length=300),
            body=text(form, "message", max_length=60_000),
            department=text(form, "department", max_length=20) or Department.TECHNICAL.value,
            requester=Author.of_user(principal.user),
            organization_id=principal.org_id,
            via=Via.PORTAL.value,
            attachments=attachments_of(form),
            form_context=text(form, "context", max_length=64) or None,
        )
    except DomainError as exc:
        db.rollback()
        return _new_page(
            request,
            principal,
            db,
            values=values_of(form),
            errors=FormErrors.of(exc, TICKET_FIELDS),
            status=exc.status,
        )
    return redirect(
        request,
        f"{_base(principal)}/{ticket.public_id}",
        f"Thank you: ticket {ticket.public_id} is open. We e-mailed you a confirmation.",
    )


def _thread_context(db: Session, ticket: Ticket) -> dict[str, object]:
    return {
        "ticket": ticket,
        "messages": tickets.messages(db, ticket, include_notes=False),
        "files": tickets.attachments_by_message(db, ticket),
        "status_words": STATUS_WORDS,
        "departments": DEPARTMENT_WORDS,
        "closed": ticket.status == TicketStatus.CLOSED,
        "resolved": ticket.status in (TicketStatus.RESOLVED, TicketStatus.CLOSED),
    }


@router.get("/portal/orgs/{org_id}/support/tickets/{public_id}")
def ticket_page(
    request: Request,
    public_id: PublicId,
    principal: TicketsRead,
    db: Db,
) -> Response:
    ticket = _org_ticket(db, principal, public_id)
    if ticket.merged_into_id is not None:
        survivor = tickets.survivor_of(db, ticket)
        return redirect(request, f"{_base(principal)}/{survivor.public_id}")
    return _thread(request, principal, db, ticket)


def _thread(
    request: Request,
    principal: Principal,
    db: Session,
    ticket: Ticket,
    *,
    errors: FormErrors | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    ctx = _thread_context(db, ticket)
    ctx.update(
        {
            "title": f"{ticket.public_id}: {ticket.subject}",
            "errors": errors or FormErrors(),
            "values": values or {},
            "action": f"{_base(principal)}/{ticket.public_id}",
            "guest": False,
        }
    )
    return render(
        request,
        "portal/ticket.html",
        ctx,
        principal=principal,
        db=db,
        status_code=status,
        section="Support",
    )


@router.post("/portal/orgs/{org_id}/support/tickets/{public_id}/reply")
def reply(
    request: Request,
    public_id: PublicId,
    principal: TicketsWrite,
    db: Db,
    runtime: RuntimeDep,
    form: Form,
) -> Response:
    assert principal.user is not None
    ticket = _org_ticket(db, principal, public_id)
    try:
        tickets.add_reply(
            db,
            runtime.clock,
            ticket,
            Author.of_user(principal.user),
            text(form, "message", max_length=60_000),
            attachments_of(form),
            via=Via.PORTAL.value,
        )
    except DomainError as exc:
        db.rollback()
        ticket = _org_ticket(db, principal, public_id)
        return _thread(
            request,
            principal,
            db,
            ticket,
            errors=FormErrors.of(exc, TICKET_FIELDS),
            values=values_of(form),
            status=exc.status,
        )
    return redirect(request, f"{_base(principal)}/{ticket.public_id}", "Your reply is sent.")


@router.post("/portal/orgs/{org_id}/support/tickets/{public_id}/close")
def close(
    request: Request,
    public_id: PublicId,
    principal: TicketsWrite,
    db: Db,
    runtime: RuntimeDep,
    form: Form,
) -> Response:
    ticket = _org_ticket(db, principal, public_id)
    tickets.close(db, runtime.clock, ticket, actor=principal.actor)
    return redirect(request, f"{_base(principal)}/{ticket.public_id}", "The ticket is closed.")


@router.post("/portal/orgs/{org_id}/support/tickets/{public_id}/reopen")
def reopen(
    request: Request,
    public_id: PublicId,
    principal: TicketsWrite,
    db: Db,
    runtime: RuntimeDep,
    form: Form,
) -> Response:
    ticket = _org_ticket(db, principal, public_id)
    tickets.reopen(db, runtime.clock, ticket, actor=principal.actor)
    return redirect(request, f"{_base(principal)}/{ticket.public_id}", "The ticket is open again.")


@router.post("/portal/orgs/{org_id}/support/tickets/{public_id}/rate")
def rate(
    request: Request,
    public_id: PublicId,
    principal: TicketsWrite,
    db: Db,
    runtime: RuntimeDep,
    form: Form,
) -> Response:
    ticket = _org_ticket(db, principal, public_id)
    score = text(form, "rating", max_length=2)
    tickets.rate(
        db,
        runtime.clock,
        ticket,
        int(score) if score.isdigit() else 0,
        text(form, "comment", max_length=2000),
    )
    return redirect(request, f"{_base(principal)}/{ticket.public_id}", "Thank you for your rating.")


@router.get("/portal/orgs/{org_id}/support/tickets/{public_id}/files/{attachment_id}")
def portal_file(
    public_id: PublicId,
    attachment_id: Annotated[str, PathParam(max_length=32)],
    principal: TicketsRead,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    ticket = _org_ticket(db, principal, public_id)
    att = tickets.get_attachment(db, ticket, attachment_id)
    if not tickets.attachment_is_public(db, att):
        raise NotFound("There is no such file.")
    return download(runtime, att)


# --- public: the guest form, a guest's ticket, ratings --------------------------------------------


def _contact_page(
    request: Request,
    db: Session,
    runtime: Runtime,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    values = dict(values or {})
    values["stamp"] = tickets.form_stamp(runtime.secret_key, runtime.clock.now())
    values.setdefault("context", secrets.token_urlsafe(16))
    subject = values.get("subject", "")
    return render(
        request,
        "help/contact.html",
        {
            "nav": visitor_nav(request, db, runtime),
            "title": "Contact support",
            "values": values,
            "errors": errors or FormErrors(),
            "departments": list(DEPARTMENT_WORDS.items()),
            "suggestions": help_service.suggest_articles(db, subject, 5) if subject else [],
            "honeypot": HONEYPOT,
        },
        db=db,
        status_code=status,
    )


@router.get("/help/contact")
def contact_page(request: Request, principal: PublicPage, db: Db, runtime: RuntimeDep) -> Response:
    return _contact_page(request, db, runtime)


@router.post("/help/contact")
def contact_send(
    request: Request, principal: PublicPage, db: Db, runtime: RuntimeDep, form: Form
) -> Response:
    settings = runtime.settings.support
    clock = runtime.clock
    values = values_of(form)
    try:
        if text(form, HONEYPOT, max_length=500):
            # Only a robot fills the field people cannot see; it is told nothing useful.
            raise InvalidInput("We could not accept this message.", field="form")
        tickets.check_form_stamp(
            runtime.secret_key,
            text(form, "stamp", max_length=100),
            clock.now(),
            min_seconds=settings.guest_form_min_seconds,
        )
        name = text(form, "name", max_length=200)
        email = tickets.check_email(text(form, "email", max_length=320))
        if not name:
            raise InvalidInput("Write your name.", field="name")
        tickets.check_guest_rate(
            db,
            clock,
            runtime.secret_key,
            email=email,
            address=principal.address or "unknown",
            per_email=settings.guest_tickets_per_address_per_hour,
            per_address=settings.guest_tickets_per_ip_per_hour,
        )
        ticket = tickets.open_ticket(
            db,
            clock,
            subject=text(form, "subject", max_length=300),
            body=text(form, "message", max_length=60_000),
            department=text(form, "department", max_length=20) or Department.TECHNICAL.value,
            requester=Author.guest(name, email),
            via=Via.WEB.value,
            form_context=text(form, "context", max_length=64) or None,
        )
    except DomainError as exc:
        if exc.status != 429:
            db.rollback()
        else:
            db.commit()  # the refused attempt still counts
        return _contact_page(
            request,
            db,
            runtime,
            values=values,
            errors=FormErrors.of(exc, TICKET_FIELDS),
            status=exc.status,
        )
    link = f"/help/tickets/{ticket.public_id}/{tickets.guest_signature(runtime.secret_key, ticket)}"
    return redirect(
        request,
        link,
        f"Thank you: your ticket is {ticket.public_id}. We e-mailed you a link to this page.",
    )


def _guest_ticket(db: Session, runtime: Runtime, public_id: str, signature: str) -> Ticket:
    ticket = tickets.find_ticket_by_public_id(db, public_id)
    if ticket is None or not tickets.check_guest_signature(runtime.secret_key, ticket, signature):
        raise NotFound("There is no such ticket, or the link is incomplete.")
    return ticket


def _guest_page(
    request: Request,
    db: Session,
    runtime: Runtime,
    ticket: Ticket,
    signature: str,
    *,
    errors: FormErrors | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
    rated: bool = False,
) -> Response:
    ctx = _thread_context(db, ticket)
    ctx.update(
        {
            "nav": visitor_nav(request, db, runtime),
            "title": f"{ticket.public_id}: {ticket.subject}",
            "errors": errors or FormErrors(),
            "values": values or {},
            "action": f"/help/tickets/{ticket.public_id}/{signature}",
            "guest": True,
            "rated": rated,
        }
    )
    return render(request, "portal/ticket.html", ctx, db=db, status_code=status)


@router.get("/help/tickets/{public_id}/{signature}")
def guest_ticket(
    request: Request,
    public_id: PublicId,
    signature: Signature,
    principal: PublicPage,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    ticket = _guest_ticket(db, runtime, public_id, signature)
    return _guest_page(request, db, runtime, ticket, signature)


@router.post("/help/tickets/{public_id}/{signature}/reply")
def guest_reply(
    request: Request,
    public_id: PublicId,
    signature: Signature,
    principal: PublicPage,
    db: Db,
    runtime: RuntimeDep,
    form: Form,
) -> Response:
    ticket = _guest_ticket(db, runtime, public_id, signature)
    try:
        tickets.add_reply(
            db,
            runtime.clock,
            ticket,
            Author.guest(ticket.requester_name, ticket.requester_email),
            text(form, "message", max_length=60_000),
            attachments_of(form),
            via=Via.WEB.value,
        )
    except DomainError as exc:
        db.rollback()
        ticket = _guest_ticket(db, runtime, public_id, signature)
        return _guest_page(
            request,
            db,
            runtime,
            ticket,
            signature,
            errors=FormErrors.of(exc, TICKET_FIELDS),
            values=values_of(form),
            status=exc.status,
        )
    return redirect(request, f"/help/tickets/{ticket.public_id}/{signature}", "Your reply is sent.")


@router.get("/help/tickets/{public_id}/{signature}/files/{attachment_id}")
def guest_file(
    public_id: PublicId,
    signature: Signature,
    attachment_id: Annotated[str, PathParam(max_length=32)],
    principal: PublicPage,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    ticket = _guest_ticket(db, runtime, public_id, signature)
    att = tickets.get_attachment(db, ticket, attachment_id)
    if not tickets.attachment_is_public(db, att):
        raise NotFound("There is no such file.")
    return download(runtime, att)


@router.get("/help/tickets/{public_id}/rate/{score}/{signature}")
def rate_from_email(
    request: Request,
    public_id: PublicId,
    score: Annotated[int, PathParam(ge=1, le=5)],
    signature: Signature,
    principal: PublicPage,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    """The one-click rating of the resolution e-mail: the link's score is recorded, and the
    page offers to add a comment (or change the score)."""
    ticket = tickets.find_ticket_by_public_id(db, public_id)
    if ticket is None or not tickets.check_rating_signature(
        runtime.secret_key, ticket, score, signature
    ):
        raise NotFound("There is no such ticket, or the link is incomplete.")
    tickets.rate(db, runtime.clock, ticket, score)
    return render(
        request,
        "help/rate.html",
        {
            "nav": visitor_nav(request, db, runtime),
            "title": "Thank you for your rating",
            "ticket": ticket,
            "score": score,
            "action": f"/help/tickets/{ticket.public_id}/rate/{score}/{signature}",
        },
        db=db,
    )


@router.post("/help/tickets/{public_id}/rate/{score}/{signature}")
def rate_comment(
    request: Request,
    public_id: PublicId,
    score: Annotated[int, PathParam(ge=1, le=5)],
    signature: Signature,
    principal: PublicPage,
    db: Db,
    runtime: RuntimeDep,
    form: Form,
) -> Response:
    ticket = tickets.find_ticket_by_public_id(db, public_id)
    if ticket is None or not tickets.check_rating_signature(
        runtime.secret_key, ticket, score, signature
    ):
        raise NotFound("There is no such ticket, or the link is incomplete.")
    tickets.rate(db, runtime.clock, ticket, score, text(form, "comment", max_length=2000))
    return redirect(
        request,
        f"/help/tickets/{ticket.public_id}/rate/{score}/{signature}",
        "Thank you: your comment is saved.",
    )
