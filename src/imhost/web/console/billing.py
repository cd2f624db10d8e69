"""Console: plans and their price components (create, new version), the billing run, invoices
(finalize, void, credit note, record a payment) and dunning."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.responses import Response

from imhost.accounts import audit
from imhost.accounts.permissions import Access, Scope
from imhost.billing import dashboard
from imhost.billing import service as billing
from imhost.billing.flows import RunSummary, run_billing
from imhost.billing.parties import missing_seller_details
from imhost.catalog import service as catalog
from imhost.catalog.schemas import PlanCreate, PlanVersionChange
from imhost.kit.errors import DomainError, InvalidInput, NotFound
from imhost.kit.ids import new_id
from imhost.kit.money import format_money
from imhost.metering.metrics import BILLABLE_CODES
from imhost.runtime import Runtime
from imhost.web.deps import Db, Principal, Requirement, RuntimeDep
from imhost.web.pages import (
    Form,
    FormErrors,
    PageNo,
    confirmation,
    invalid_form,
    page_require,
    redirect,
    render,
    text,
    values_of,
)

router = APIRouter(prefix="/console", include_in_schema=False)
log = logging.getLogger(__name__)


def staff(area: str, access: Access) -> Requirement:
    return page_require(area, access, scope=Scope.STAFF)


CatalogRead = Annotated[Principal, Depends(staff("catalog", Access.READ))]
CatalogWrite = Annotated[Principal, Depends(staff("catalog", Access.WRITE))]
BillingRead = Annotated[Principal, Depends(staff("billing-admin", Access.READ))]
BillingWrite = Annotated[Principal, Depends(staff("billing-admin", Access.WRITE))]

PLAN_FIELDS = {
    "code",
    "name",
    "description",
    "base_fee",
    "setup_fee",
    "trial_days",
    "currency",
    "max_xmpp_accounts",
    "metric",
    "unit_price",
    "included_quantity",
    "change_note",
}


def _validation(exc: ValidationError) -> InvalidInput:
    return invalid_form(exc, PLAN_FIELDS)


def _decimal(form: FormData, name: str, *, required: bool = False) -> Decimal | None:
    raw = text(form, name, max_length=40).strip()
    if not raw:
        if required:
            raise InvalidInput(f"Fill in the {name.replace('_', ' ')}.", field=name)
        return None
    try:
        return Decimal(raw)
    except InvalidOperation:
        raise InvalidInput("Type a number such as 9 or 9.50.", field=name) from None


def _int(form: FormData, name: str) -> int | None:
    raw = text(form, name, max_length=20).strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput("Type a whole number.", field=name) from None


def _component(form: FormData) -> list[dict[str, Any]]:
    metric = text(form, "metric", max_length=40)
    if not metric:
        return []
    return [
        {
            "metric": metric,
            "pricing_model": "per_unit",
            "unit_price": _decimal(form, "unit_price", required=True),
            "included_quantity": _decimal(form, "included_quantity") or Decimal(0),
        }
    ]


# --- plans ----------------------------------------------------------------------------------------


def _plans_page(
    request: Request,
    principal: Principal,
    db: Db,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "console/plans.html",
        {
            "title": "Plans",
            "plans": [catalog.plan_out(v) for v in catalog.list_plans(db, public_only=False)],
            "metrics": sorted(BILLABLE_CODES),
            "values": values or {"currency": "EUR", "trial_days": "0"},
            "errors": errors or FormErrors(),
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Plans",
    )


@router.get("/plans")
def plans(request: Request, principal: CatalogRead, db: Db) -> Response:
    return _plans_page(request, principal, db)


@router.post("/plans")
def create_plan(
    request: Request, principal: CatalogWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    try:
        try:
            data = PlanCreate(
                code=text(form, "code", max_length=64),
                name=text(form, "name", max_length=100),
                description=text(form, "description", max_length=5000),
                version={
                    "currency": text(form, "currency", max_length=3).upper() or "EUR",
                    "base_fee": _decimal(form, "base_fee", required=True),
                    "setup_fee": _decimal(form, "setup_fee") or Decimal(0),
                    "trial_days": _int(form, "trial_days") or 0,
                    "limits": {"max_xmpp_accounts": _int(form, "max_xmpp_accounts")},
                    "components": _component(form),
                },
            )
        except ValidationError as exc:
            raise _validation(exc) from None
        plan = catalog.create_plan(
            db, runtime.clock, data, known_metrics=BILLABLE_CODES, actor=principal.actor
        )
    except DomainError as exc:
        db.rollback()
        return _plans_page(
            request,
            principal,
            db,
            values=values_of(form),
            errors=FormErrors.of(exc, PLAN_FIELDS),
            status=exc.status,
        )
    return redirect(request, f"/console/plans/{plan.code}", f"Plan {plan.name} created.")


@router.get("/plans/{code}")
def plan(request: Request, code: str, principal: CatalogRead, db: Db) -> Response:
    view = catalog.plan_out(catalog.plan_view(db, code[:64], current_only=False))
    return render(
        request,
        "console/plan.html",
        {
            "title": view.name,
            "plan": view,
            "metrics": sorted(BILLABLE_CODES),
            "values": {},
            "errors": FormErrors(),
        },
        principal=principal,
        db=db,
        section="Plans",
    )


@router.post("/plans/{code}/versions")
def new_version(
    request: Request, code: str, principal: CatalogWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    code = code[:64]
    try:
        try:
            change = PlanVersionChange(
                currency=text(form, "currency", max_length=3).upper() or "EUR",
                base_fee=_decimal(form, "base_fee"),
                components=_component(form) or None,
                change_note=text(form, "change_note", max_length=500),
            )
        except ValidationError as exc:
            raise _validation(exc) from None
        version = catalog.new_plan_version(
            db, runtime.clock, code, change, known_metrics=BILLABLE_CODES, actor=principal.actor
        )
    except DomainError as exc:
        db.rollback()
        view = catalog.plan_out(catalog.plan_view(db, code, current_only=False))
        return render(
            request,
            "console/plan.html",
            {
                "title": view.name,
                "plan": view,
                "metrics": sorted(BILLABLE_CODES),
                "values": values_of(form),
                "errors": FormErrors.of(exc, PLAN_FIELDS),
            },
            principal=principal,
            db=db,
            status_code=exc.status,
            section="Plans",
        )
    return redirect(request, f"/console/plans/{code}", f"Version {version.version} is now current.")


# --- the billing run ----------------------------------------------------------------------------


@dataclass
class BillingRunState:
    """A billing run started from the console, followed by its page while it runs."""

    id: str
    started_by: str
    as_of: datetime
    done: int = 0
    total: int = 0
    current: str = ""
    finished: bool = False
    summary: RunSummary | None = None
    error: str | None = None


def _runs(request: Request) -> dict[str, BillingRunState]:
    runs: dict[str, BillingRunState] | None = getattr(request.app.state, "billing_runs", None)
    if runs is None:
        runs = {}
        request.app.state.billing_runs = runs
    return runs


def _execute(runtime: Runtime, state: BillingRunState, principal: Principal) -> None:
    """Run billing in the background; each invoice commits on its own (resumable)."""

    def progress(done: int, total: int, current: str) -> None:
        state.done, state.total, state.current = done, total, current

    try:
        summary = run_billing(
            runtime.session_factory,
            runtime.clock,
            state.as_of,
            progress=progress,
            actor=principal.actor,
        )
        state.summary = summary
    except Exception as exc:  # shown on the run page, never lost silently
        log.exception("billing run %s failed", state.id)
        state.error = f"The run stopped: {exc}. Start it again; finished invoices are kept."
    finally:
        state.finished = True


@router.get("/billing")
def billing_run_page(request: Request, principal: BillingRead, db: Db) -> Response:
    recent = audit.list_events(db, organization_id=None, action="billing.run", limit=10)[0]
    running = [r for r in _runs(request).values() if not r.finished]
    return render(
        request,
        "console/billing.html",
        {"title": "Billing run", "recent": recent, "running": running},
        principal=principal,
        db=db,
        section="Billing run",
    )


@router.post("/billing")
def billing_run(request: Request, principal: BillingWrite, runtime: RuntimeDep) -> Response:
    """Start a billing run up to now and follow it on its page."""
    runs = _runs(request)
    running = next((r for r in runs.values() if not r.finished), None)
    if running is not None:
        return redirect(request, f"/console/billing/runs/{running.id}", "A run is in progress.")
    state = BillingRunState(
        id=new_id(), started_by=principal.actor.label, as_of=runtime.clock.now()
    )
    runs[state.id] = state
    threading.Thread(
        target=_execute,
        args=(runtime, state, principal),
        name=f"billing-run-{state.id}",
        daemon=True,
    ).start()
    return redirect(request, f"/console/billing/runs/{state.id}")


# --- seller details ---------------------------------------------------------------------------

SELLER_FIELDS = {
    "legal_name",
    "street_1",
    "street_2",
    "street_3",
    "postcode",
    "city",
    "home_country",
    "provider_tax_id",
    "registration_number",
    "contact_email",
}
STREET_FIELDS = ("street_1", "street_2", "street_3")


def _seller_page(
    request: Request,
    principal: Principal,
    db: Db,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    if values is None:
        profile = billing.get_profile(db)
        lines = profile.address.splitlines()
        values = {
            "legal_name": profile.legal_name,
            **{key: (lines[i] if i < len(lines) else "") for i, key in enumerate(STREET_FIELDS)},
            "postcode": profile.postcode,
            "city": profile.city,
            "home_country": profile.home_country,
            "provider_tax_id": profile.provider_tax_id or "",
            "registration_number": profile.registration_number or "",
            "contact_email": profile.contact_email or "",
        }
    return render(
        request,
        "console/billing_settings.html",
        {
            "title": "Seller details",
            "values": values,
            "errors": errors or FormErrors(),
            "missing": missing_seller_details(billing.get_profile(db)),
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Billing run",
    )


@router.get("/billing/settings")
def seller_page(request: Request, principal: BillingRead, db: Db) -> Response:
    return _seller_page(request, principal, db)


@router.post("/billing/settings")
def save_seller(
    request: Request, principal: BillingWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    """Save the provider's details as invoices print them (audited: billing.settings_changed)."""
    try:
        billing.update_profile(
            db,
            runtime.clock,
            actor=principal.actor,
            legal_name=text(form, "legal_name", max_length=300),
            address="\n".join(text(form, key, max_length=200) for key in STREET_FIELDS),
            postcode=text(form, "postcode", max_length=40),
            city=text(form, "city", max_length=200),
            home_country=text(form, "home_country", max_length=10),
            provider_tax_id=text(form, "provider_tax_id", max_length=100),
            registration_number=text(form, "registration_number", max_length=200),
            contact_email=text(form, "contact_email", max_length=320),
        )
    except DomainError as exc:
        db.rollback()
        if exc.field == "address":
            exc.field = "street_1"
        return _seller_page(
            request,
            principal,
            db,
            values=values_of(form),
            errors=FormErrors.of(exc, SELLER_FIELDS),
            status=exc.status,
        )
    return redirect(request, "/console/billing/settings", "Seller details saved.")


@router.get("/billing/runs/{run_id}")
def billing_run_progress(request: Request, run_id: str, principal: BillingRead, db: Db) -> Response:
    state = _runs(request).get(run_id[:64])
    if state is None:
        raise NotFound("no such billing run (runs are kept until the server restarts)")
    return render(
        request,
        "console/billing_run.html",
        {"title": "Billing run", "run": state},
        principal=principal,
        db=db,
        section="Billing run",
    )


# --- invoices ----------------------------------------------------------------------------


@router.get("/invoices")
def invoices(
    request: Request,
    principal: BillingRead,
    db: Db,
    runtime: RuntimeDep,
    page: PageNo,
    status: str = "",
    customer: str = "",
) -> Response:
    """Invoices, filtered by status (``overdue``: open and past the due date) or customer."""
    if status == "overdue":
        rows = dashboard.list_overdue_invoices(
            db,
            runtime.clock,
            organization_id=customer[:32] or None,
            limit=page.per_page,
            offset=page.offset,
        )
    else:
        rows = billing.list_invoices(
            db,
            organization_id=customer[:32] or None,
            status=status[:16] or None,
            limit=page.per_page,
            offset=page.offset,
        )
    return render(
        request,
        "console/invoices.html",
        {
            "title": "Invoices",
            "invoices": rows,
            "pg": page,
            "status": status[:16],
            "customer": customer[:32],
        },
        principal=principal,
        db=db,
        section="Invoices",
    )


def _invoice_page(
    request: Request,
    principal: Principal,
    db: Db,
    invoice_id: str,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    invoice = billing.get_invoice(db, invoice_id[:64])
    return render(
        request,
        "console/invoice.html",
        {
            "title": f"Invoice {invoice.number or '(draft)'}",
            "invoice": invoice,
            "lines": billing.invoice_lines(db, invoice.id),
            "payments": billing.invoice_payments(db, invoice.id),
            "values": values
            or {
                "currency": invoice.currency,
                "amount": str(invoice.total - invoice.amount_paid - invoice.amount_credited),
            },
            "errors": errors or FormErrors(),
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Invoices",
    )


@router.get("/invoices/{invoice_id}")
def invoice(request: Request, invoice_id: str, principal: BillingRead, db: Db) -> Response:
    return _invoice_page(request, principal, db, invoice_id)


@router.post("/invoices/{invoice_id}/finalize")
def finalize(
    request: Request, invoice_id: str, principal: BillingWrite, db: Db, runtime: RuntimeDep
) -> Response:
    inv = billing.finalize_invoice(
        db, runtime.clock, billing.get_invoice(db, invoice_id[:64]), actor=principal.actor
    )
    return redirect(request, f"/console/invoices/{inv.id}", f"Invoice {inv.number} is final.")


@router.post("/invoices/{invoice_id}/void")
def void(
    request: Request,
    invoice_id: str,
    principal: BillingWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    url = f"/console/invoices/{invoice_id[:64]}"
    ask = confirmation(
        request,
        form,
        principal=principal,
        db=db,
        question="Void this invoice?",
        consequence="It stays in the records with its number but is no longer owed.",
        button="Void invoice",
        cancel_url=url,
        reason_field="reason",
    )
    if ask is not None:
        return ask
    reason = text(form, "reason", max_length=500)
    billing.void_invoice(db, runtime.clock, invoice_id[:64], reason, actor=principal.actor)
    return redirect(request, url, "The invoice is void.")


@router.post("/invoices/{invoice_id}/credit-note")
def credit_note(
    request: Request,
    invoice_id: str,
    principal: BillingWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    url = f"/console/invoices/{invoice_id[:64]}"
    ask = confirmation(
        request,
        form,
        principal=principal,
        db=db,
        question="Credit this whole invoice?",
        consequence="A credit note is issued and the amount goes to the customer's account credit.",
        button="Issue credit note",
        cancel_url=url,
        reason_field="reason",
    )
    if ask is not None:
        return ask
    reason = text(form, "reason", max_length=500)
    try:
        note = billing.issue_credit_note(
            db,
            runtime.clock,
            invoice_id[:64],
            reason=reason,
            lines=None,
            refund_to="credit",
            created_by=principal.actor.label,
            actor=principal.actor,
        )
    except DomainError as exc:
        db.rollback()
        return _invoice_page(
            request,
            principal,
            db,
            invoice_id,
            errors=FormErrors(general=[exc.detail]),
            status=exc.status,
        )
    return redirect(request, url, f"Credit note {note.number} issued.")


@router.post("/invoices/{invoice_id}/payments")
def record_payment(
    request: Request,
    invoice_id: str,
    principal: BillingWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    try:
        amount = _decimal(form, "amount", required=True)
        assert amount is not None
        method = text(form, "method", max_length=32) or "bank_transfer"
        if method not in ("bank_transfer", "cash", "cheque", "card", "other"):
            raise InvalidInput("Pick a payment method.", field="method")
        payment = billing.record_payment(
            db,
            runtime.clock,
            invoice_id[:64],
            amount=amount,
            currency=text(form, "currency", max_length=3).upper(),
            method=method,
            reference=text(form, "reference", max_length=200) or None,
            received_at=None,
            recorded_by=principal.actor.label,
            actor=principal.actor,
        )
    except DomainError as exc:
        db.rollback()
        return _invoice_page(
            request,
            principal,
            db,
            invoice_id,
            values=values_of(form),
            errors=FormErrors.of(exc, {"amount", "currency", "method", "reference"}),
            status=exc.status,
        )
    return redirect(
        request,
        f"/console/invoices/{invoice_id[:64]}",
        f"Payment of {format_money(payment.amount, payment.currency)} recorded.",
    )


@router.get("/dunning")
def dunning(request: Request, principal: BillingRead, db: Db, runtime: RuntimeDep) -> Response:
    return render(
        request,
        "console/dunning.html",
        {"title": "Dunning", "rows": billing.dunning_status(db, runtime.clock)},
        principal=principal,
        db=db,
        section="Dunning",
    )


@router.get("/subscriptions")
def subscriptions(request: Request, principal: BillingRead, db: Db, page: PageNo) -> Response:
    """Every subscription with its customer and plan, newest first (read-only)."""
    from sqlalchemy import func, select

    from imhost.accounts.models import Organization
    from imhost.billing.models import Subscription
    from imhost.billing.plans import load_plan_terms

    total = db.scalar(select(func.count()).select_from(Subscription)) or 0
    rows = db.execute(
        select(Subscription, Organization)
        .join(Organization, Organization.id == Subscription.organization_id)
        .order_by(Subscription.started_at.desc(), Subscription.id)
        .limit(page.per_page)
        .offset(page.offset)
    ).all()
    items = [(sub, org, load_plan_terms(db, sub.plan_version_id)) for sub, org in rows]
    return render(
        request,
        "console/subscriptions.html",
        {"title": "Subscriptions", "items": items, "pg": page.with_total(total)},
        principal=principal,
        db=db,
        section="Subscriptions",
    )
