"""SEPA direct debit in the portal: give a mandate (the mandate text shown, then accepted),
see it with the IBAN masked, the debits announced under it, and withdraw it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from imhost.accounts.permissions import Access
from imhost.billing.sepa import mandates
from imhost.billing.sepa.collections import list_collections
from imhost.billing.sepa.identifiers import mask_iban
from imhost.billing.sepa.settings import creditor
from imhost.kit.errors import DomainError
from imhost.web.deps import Db, Principal, RuntimeDep
from imhost.web.pages import (
    Form,
    FormErrors,
    confirmation,
    page_require,
    redirect,
    render,
    text,
    values_of,
)

router = APIRouter(prefix="/portal/orgs/{org_id}/billing/direct-debit", include_in_schema=False)

BillingRead = Annotated[Principal, Depends(page_require("billing", Access.READ))]
BillingWrite = Annotated[Principal, Depends(page_require("billing", Access.WRITE))]

MANDATE_FIELDS = {"account_holder", "iban", "bic", "accept"}

COLLECTION_STATUS_WORDS = {
    "queued": "announced",
    "exported": "sent to the bank",
    "collected": "collected",
    "failed": "returned by the bank",
    "cancelled": "cancelled",
}


def _page(
    request: Request,
    principal: Principal,
    db: Db,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    org_id = principal.org_id
    found = creditor(db)
    return render(
        request,
        "portal/direct_debit.html",
        {
            "title": "Direct debit",
            "creditor": found,
            "mandate_text": mandates.mandate_text(found),
            "active": mandates.active_mandate(db, org_id),
            "mandates": mandates.list_mandates(db, org_id),
            "collections": list_collections(db, organization_id=org_id, limit=20),
            "status_words": COLLECTION_STATUS_WORDS,
            "mask": mask_iban,
            "values": values or {},
            "errors": errors or FormErrors(),
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Billing",
    )


@router.get("")
def direct_debit_page(request: Request, principal: BillingRead, db: Db) -> Response:
    return _page(request, principal, db)


@router.post("")
def give_mandate(
    request: Request, principal: BillingWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    try:
        mandate = mandates.sign_mandate(
            db,
            runtime.clock,
            principal.org_id,
            account_holder=text(form, "account_holder", max_length=200),
            iban=text(form, "iban", max_length=64),
            bic=text(form, "bic", max_length=20),
            accepted=form.get("accept") == "yes",
            signed_by=principal.actor.label,
            signed_from=principal.address or "unknown",
            actor=principal.actor,
        )
    except DomainError as exc:
        db.rollback()
        return _page(
            request,
            principal,
            db,
            values=values_of(form),
            errors=FormErrors.of(exc, MANDATE_FIELDS),
            status=exc.status,
        )
    return redirect(
        request,
        f"/portal/orgs/{principal.org.slug}/billing/direct-debit",
        f"Thank you: your mandate {mandate.reference} is in place. We e-mailed you a copy.",
    )


@router.post("/{mandate_id}/revoke")
def withdraw_mandate(
    request: Request,
    mandate_id: str,
    principal: BillingWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    url = f"/portal/orgs/{principal.org.slug}/billing/direct-debit"
    mandate = mandates.get_mandate(db, principal.org_id, mandate_id[:64])
    ask = confirmation(
        request,
        form,
        principal=principal,
        db=db,
        question=f"Withdraw the direct debit mandate for {mask_iban(mandate.iban)}?",
        consequence=(
            "We will not collect from this account again. Debits already sent to the bank are "
            "still collected. Invoices are then paid by bank transfer."
        ),
        button="Withdraw the mandate",
        cancel_url=url,
    )
    if ask is not None:
        return ask
    mandates.revoke_mandate(
        db,
        runtime.clock,
        principal.org_id,
        mandate.id,
        revoked_by=principal.actor.label,
        actor=principal.actor,
    )
    return redirect(request, url, "The mandate is withdrawn.")
