"""Add-ons in the portal: what the plan offers (prices and limits in plain words), what the
subscription has, and adding or removing one after a preview of what it charges or credits
now and what it costs each period (``billing.add_ons``). The change form sends the quantity
wanted, not a difference, so a form sent twice changes nothing the second time."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from imhost.accounts.permissions import Access
from imhost.billing import add_ons
from imhost.billing import service as billing
from imhost.billing.add_ons import OfferedAddOn
from imhost.billing.plans import load_plan_terms
from imhost.catalog.models import LIMIT_LABELS
from imhost.kit.errors import DomainError, InvalidInput
from imhost.runtime import Runtime
from imhost.web.deps import Db, Principal, RuntimeDep
from imhost.web.pages import Form, FormErrors, page_require, redirect, render, text

router = APIRouter(prefix="/portal/orgs/{org_id}/billing/add-ons", include_in_schema=False)

BillingRead = Annotated[Principal, Depends(page_require("billing", Access.READ))]
BillingWrite = Annotated[Principal, Depends(page_require("billing", Access.WRITE))]

FIELDS = {"quantity"}


# What one unit and several units of each limit are called ("1 more custom domain").
_LIMIT_NOUNS: dict[str, tuple[str, str]] = {
    "max_xmpp_accounts": ("XMPP account", "XMPP accounts"),
    "max_connections": ("connection at once", "connections at once"),
    "max_connections_per_account": ("connection per account", "connections per account"),
    "message_rate_per_second": ("message per second", "messages per second"),
    "message_burst": ("message in a burst", "messages in a burst"),
    "storage_mb": ("MB of storage", "MB of storage"),
    "max_custom_domains": ("custom domain", "custom domains"),
    "max_offline_messages": ("offline message kept", "offline messages kept"),
}


def limit_words(deltas: dict[str, int], quantity: int = 1) -> list[str]:
    """``{"max_xmpp_accounts": 10}`` as ``["10 more XMPP accounts"]`` (times ``quantity``)."""
    out = []
    for name, delta in sorted(deltas.items()):
        amount = delta * quantity
        if not amount:
            continue
        fallback = LIMIT_LABELS.get(name, name.replace("_", " ")).lower()
        one, many = _LIMIT_NOUNS.get(name, (fallback, fallback))
        more = "more" if amount > 0 else "fewer"
        out.append(f"{abs(amount):,} {more} {one if abs(amount) == 1 else many}")
    return out


def _quantity(form: Any) -> int:
    raw = text(form, "quantity", max_length=12).strip()
    if not raw.isdigit():
        raise InvalidInput("Enter a whole number, such as 1.", field="quantity")
    return int(raw)


def _page(
    request: Request,
    principal: Principal,
    db: Db,
    *,
    errors: FormErrors | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    sub = billing.current_subscription(db, principal.org_id)
    offered: list[OfferedAddOn] = add_ons.offered_add_ons(db, principal.org_id) if sub else []
    return render(
        request,
        "portal/add_ons.html",
        {
            "title": "Add-ons",
            "sub": sub,
            "terms": load_plan_terms(db, sub.plan_version_id) if sub else None,
            "have": [a for a in offered if a.quantity],
            "offered": [a for a in offered if a.on_sale],
            "limit_words": limit_words,
            "errors": errors or FormErrors(),
            "values": values or {},
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Billing",
    )


@router.get("")
def add_ons_page(request: Request, principal: BillingRead, db: Db) -> Response:
    return _page(request, principal, db)


def _refused(
    request: Request, principal: Principal, db: Db, form: Any, exc: DomainError
) -> Response:
    """The add-ons page again with the error: beside the quantity field of the add-on it is
    about when that add-on has one, else in the summary at the top."""
    db.rollback()
    add_on_id = str(form.get("add_on", ""))[:64]
    sub = billing.current_subscription(db, principal.org_id)
    offered = {a.id: a for a in add_ons.offered_add_ons(db, principal.org_id)} if sub else {}
    chosen = offered.get(add_on_id)
    fields = FIELDS if chosen is not None and chosen.stackable and chosen.on_sale else set()
    return _page(
        request,
        principal,
        db,
        errors=FormErrors.of(exc, fields),
        values={"add_on": add_on_id, "quantity": str(form.get("quantity", ""))[:12]},
        status=exc.status,
    )


@router.post("/preview")
def preview(
    request: Request, principal: BillingWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    try:
        add_on_id = text(form, "add_on", max_length=64)
        change = add_ons.preview_add_on(
            db, runtime.clock, principal.org_id, add_on_id, _quantity(form)
        )
    except DomainError as exc:
        return _refused(request, principal, db, form, exc)
    return _preview_page(request, principal, db, runtime, change)


def _preview_page(
    request: Request, principal: Principal, db: Db, runtime: Runtime, change: Any
) -> Response:
    sub = billing.current_subscription(db, principal.org_id)
    return render(
        request,
        "portal/add_on_preview.html",
        {
            "title": "Confirm the add-on change",
            "change": change,
            "sub": sub,
            "interval": load_plan_terms(db, sub.plan_version_id).interval if sub else "",
            "limit_words": limit_words,
            "now": runtime.clock.now(),
        },
        principal=principal,
        db=db,
        section="Billing",
    )


@router.post("/change")
def change(
    request: Request, principal: BillingWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    url = f"/portal/orgs/{principal.org.slug}/billing/add-ons"
    try:
        add_on_id = text(form, "add_on", max_length=64)
        quantity = _quantity(form)
        done = add_ons.set_add_on(
            db, runtime.clock, principal.org_id, add_on_id, quantity, actor=principal.actor
        )
    except DomainError as exc:
        return _refused(request, principal, db, form, exc)
    if done is None:
        return redirect(request, url, "Nothing changed: your add-ons were already like this.")
    if done.to_quantity == 0:
        return redirect(request, url, f"{done.add_on.name} is removed.")
    return redirect(request, url, f"You now have {done.to_quantity} × {done.add_on.name}.")
