"""An organization's data export and its closing, for API clients (the owner).

``GET /orgs/{org_id}/export`` answers the ZIP the portal offers (GDPR Art. 15 and 20);
``POST /orgs/{org_id}/close`` closes the organization (``offboarding.flows``). Closing needs
the owner's password, so a signed-in person, never an API token.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from imhost.accounts.permissions import Access
from imhost.kit.errors import PermissionDenied
from imhost.kit.text import PlainText
from imhost.offboarding import flows
from imhost.offboarding.export import build_export, export_file_name
from imhost.web.deps import Db, Principal, RuntimeDep, commit_even_on_refusal, require

router = APIRouter(prefix="/orgs", tags=["organizations"])

ClosureRead = Annotated[Principal, Depends(require("closure", Access.READ))]
ClosureWrite = Annotated[Principal, Depends(require("closure", Access.WRITE))]


class CloseIn(BaseModel):
    confirm_name: PlainText = Field(
        min_length=1, max_length=200, description="The organization's name, typed exactly."
    )
    password: str = Field(min_length=1, max_length=1024, description="The owner's password.")


class CloseOut(BaseModel):
    status: str = Field(description="Always 'closed'.")
    closed_now: bool = Field(description="False when the organization was closed already.")


@router.get(
    "/{org_id}/export",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "The data export."}},
)
def export(principal: ClosureRead, db: Db, runtime: RuntimeDep) -> Response:
    """Everything the organization holds, as one ZIP of JSON and CSV files (audited)."""
    data = build_export(db, runtime.clock, principal.org, actor=principal.actor)
    name = export_file_name(principal.org, runtime.clock.now())
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.post("/{org_id}/close", response_model=CloseOut)
def close(body: CloseIn, principal: ClosureWrite, db: Db, runtime: RuntimeDep) -> CloseOut:
    """Close the organization: the service stops, its XMPP accounts are deleted, the
    subscription ends at once (unused time credited), invoices stay. Download the export
    first (within a day). Closing a closed organization answers ``closed_now: false``."""
    if principal.web_session is None:
        raise PermissionDenied(
            "closing an organization needs its owner's password: sign in as the owner; "
            "an API token cannot close it"
        )
    if principal.org.status == "closed":
        return CloseOut(status="closed", closed_now=False)
    with commit_even_on_refusal(db):
        runtime.auth.reauthenticate(db, principal.web_session, body.password)
    closed_now = flows.close_organization(
        db, runtime.clock, principal.org, confirm_name=body.confirm_name, actor=principal.actor
    )
    return CloseOut(status="closed", closed_now=closed_now)
