"""Closing an organization, and its data export (the owner's pages).

``/close`` says what closing does (with the numbers of this organization), offers the export
first, and asks for the organization's name and the owner's password. ``/export`` downloads
the ZIP (also linked from the settings page: GDPR Art. 15 and 20)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from imhost.accounts.permissions import Access
from imhost.kit.errors import DomainError, InvalidInput, TooManyRequests, Unauthenticated
from imhost.offboarding import flows
from imhost.offboarding.export import build_export, export_file_name
from imhost.web.deps import Db, Principal, RuntimeDep, commit_even_on_refusal
from imhost.web.pages import (
    Form,
    FormErrors,
    commit_now,
    page_require,
    redirect,
    render,
    text,
    values_of,
)

router = APIRouter(prefix="/portal/orgs/{org_id}", include_in_schema=False)

ClosureRead = Annotated[Principal, Depends(page_require("closure", Access.READ))]
ClosureWrite = Annotated[Principal, Depends(page_require("closure", Access.WRITE))]


def _close_page(
    request: Request,
    principal: Principal,
    db: Db,
    runtime: RuntimeDep,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    error: DomainError | None = None,
    status: int = 200,
) -> Response:
    org = principal.org
    return render(
        request,
        "portal/close.html",
        {
            "title": f"Close {org.name}",
            "preview": flows.preview_close(db, runtime.clock, org),
            "closed": org.status == "closed",
            "values": values or {},
            "errors": errors or FormErrors(),
        },
        principal=principal,
        db=db,
        status_code=status,
        error=error,
        section="Settings",
    )


@router.get("/close")
def close_page(request: Request, principal: ClosureRead, db: Db, runtime: RuntimeDep) -> Response:
    return _close_page(request, principal, db, runtime)


@router.get("/export")
def export(principal: ClosureRead, request: Request, db: Db, runtime: RuntimeDep) -> Response:
    """The organization's data as a ZIP (audited)."""
    data = build_export(db, runtime.clock, principal.org, actor=principal.actor)
    commit_now(request)
    name = export_file_name(principal.org, runtime.clock.now())
    return Response(
        data,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/close")
def close(
    request: Request, principal: ClosureWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    assert principal.web_session is not None
    org = principal.org
    values = values_of(form)
    if org.status == "closed":
        return redirect(request, "/portal/orgs", f"{org.name} is closed.")
    try:
        password = text(form, "password", max_length=1024)
        if not password:
            raise InvalidInput("Type your password to confirm.", field="password")
        try:
            with commit_even_on_refusal(db):
                runtime.auth.reauthenticate(db, principal.web_session, password)
        except (Unauthenticated, TooManyRequests) as exc:
            return _close_page(
                request,
                principal,
                db,
                runtime,
                values=values,
                errors=FormErrors(fields={"password": exc.detail}),
                error=exc,
            )
        flows.close_organization(
            db,
            runtime.clock,
            org,
            confirm_name=text(form, "confirm_name", max_length=300),
            actor=principal.actor,
        )
    except DomainError as exc:
        db.rollback()
        return _close_page(
            request,
            principal,
            db,
            runtime,
            values=values,
            errors=FormErrors.of(exc, {"confirm_name", "password"}),
            status=exc.status,
        )
    return redirect(
        request,
        "/portal/orgs",
        f"{org.name} is closed. Its members are told by e-mail; its invoices stay available.",
    )
