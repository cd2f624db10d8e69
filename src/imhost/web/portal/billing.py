"""Billing in the portal: the current plan and changing it (with the proration preview before
confirming), usage to date with a chart over the period, the forecast against the budget,
budget thresholds, invoices (with each line's calculation, the VAT breakdown, the PDF and the
EN 16931 e-invoice), payments and credit, and the billing details invoices are addressed to."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.responses import Response

from imhost.accounts.permissions import Access, org_role_allows, staff_role_allows
from imhost.billing import collection, payment_methods
from imhost.billing import service as billing
from imhost.billing.budgets import pricing_for
from imhost.billing.documents import invoice_document, rate_label
from imhost.billing.drivers import saving_gateways
from imhost.billing.forecast import forecast_invoice, forecast_invoices
from imhost.billing.models import Invoice
from imhost.billing.plans import load_plan_terms
from imhost.billing.render import render_invoice_pdf
from imhost.billing.sepa.settings import creditor as sepa_creditor
from imhost.catalog.models import LIMIT_FIELDS, LIMIT_LABELS, PlanVersion
from imhost.hosting import service as hosting
from imhost.kit.errors import DomainError, InvalidInput, NotFound
from imhost.metering import aggregate, budgets
from imhost.metering import forecast as forecasting
from imhost.metering import metrics as m
from imhost.metering.schemas import BudgetIn
from imhost.metering.tasks import CHECK_EVERY, BudgetPricing, calendar_month
from imhost.runtime import Runtime
from imhost.web.deps import Db, Principal, RuntimeDep
from imhost.web.pages import (
    Form,
    FormErrors,
    PageNo,
    commit_now,
    confirmation,
    invalid_form,
    page_require,
    redirect,
    render,
    text,
    values_of,
)
from imhost.web.portal import charts
from imhost.web.portal.auth import public_plans
from imhost.web.portal.hosting import stored_mb

router = APIRouter(prefix="/portal/orgs/{org_id}/billing", include_in_schema=False)

BillingRead = Annotated[Principal, Depends(page_require("billing", Access.READ))]
BillingWrite = Annotated[Principal, Depends(page_require("billing", Access.WRITE))]
UsageRead = Annotated[Principal, Depends(page_require("usage", Access.READ))]


def org_role_allows_write(principal: Principal) -> bool:
    if principal.org_role is not None:
        return org_role_allows(principal.org_role, "billing", Access.WRITE)
    return staff_role_allows(principal.staff_role, "billing", Access.WRITE, on_org=True)


def _allowed(principal: Principal, area: str) -> bool:
    if principal.org_role is not None:
        return org_role_allows(principal.org_role, area, Access.READ)
    return staff_role_allows(principal.staff_role, area, Access.READ, on_org=True)


def _forecast(db: Db, runtime: Runtime, org_id: str) -> tuple[Any, BudgetPricing | None]:
    now = runtime.clock.now()
    pricing = pricing_for(db, org_id)
    if pricing is None:
        start, end = calendar_month(now)
        effective = BudgetPricing(start, end, (), Decimal(0), "EUR")
    else:
        effective = pricing
    fc = forecasting.forecast(
        db,
        runtime.clock,
        org_id,
        effective.period_start,
        effective.period_end,
        effective.price_specs,
        effective.base_fee,
        effective.currency,
    )
    return fc, pricing


def billing_summary(db: Db, runtime: Runtime, principal: Principal) -> dict[str, Any] | None:
    """What the overview shows about billing (None when the person may not see billing)."""
    if not _allowed(principal, "billing"):
        return None
    sub = billing.current_subscription(db, principal.org_id)
    if sub is None:
        return {"plan_name": None}
    terms = load_plan_terms(db, sub.plan_version_id)
    invoice = forecast_invoice(db, runtime.clock, principal.org_id)
    return {"plan_name": terms.plan_name, "status": sub.status, "invoice": invoice}


def daily_usage(
    db: Db, org_id: str, metric: str, start: Any, end: Any
) -> list[tuple[str, Decimal]]:
    """The day-by-day sums of one summed metric over [start, end) (from the hourly rollups)."""
    per_day = aggregate.sums_per_day(db, org_id, metric, start, end)
    days: list[tuple[str, Decimal]] = []
    day = start
    while day < end and len(days) < 400:
        days.append((day.strftime("%m-%d"), per_day.get(day.date(), Decimal(0))))
        day += timedelta(days=1)
    return days


def _billing_page(
    request: Request,
    principal: Principal,
    db: Db,
    runtime: Runtime,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    org_id = principal.org_id
    sub = billing.current_subscription(db, org_id)
    terms = load_plan_terms(db, sub.plan_version_id) if sub is not None else None
    fc, pricing = _forecast(db, runtime, org_id)
    invoice, so_far = forecast_invoices(db, runtime.clock, org_id) or (None, None)
    now = runtime.clock.now()
    budget = budgets.get_budget(db, org_id)
    days = daily_usage(db, org_id, m.MESSAGES, fc.period_start, fc.period_end)
    today = (now - fc.period_start).days + 1
    currency = invoice.currency if invoice is not None else fc.currency
    ctx = {
        "title": "Billing and usage",
        "sub": sub,
        "terms": terms,
        "forecast": fc,
        "invoice": invoice,
        "so_far": so_far,
        "usage_chart": charts.bars(
            "Messages per day this period", days, unit="messages", forecast_from=today
        ),
        "budget_chart": charts.against_budget(
            "Next invoice against the budget",
            [
                ("So far", so_far.total if so_far else Decimal(0)),
                ("Forecast", invoice.total if invoice else Decimal(0)),
            ],
            budget.amount if budget else None,
            currency,
        ),
        "budget": budget,
        "check_minutes": int(CHECK_EVERY.total_seconds() // 60),
        "credit": billing.credit_balances(db, org_id) if _allowed(principal, "billing") else {},
        "can_billing": _allowed(principal, "billing"),
        "values": values
        or (
            {
                "amount": f"{budget.amount:.2f}",
                "thresholds": ", ".join(str(t) for t in budget.thresholds),
                "hard_cap": "on" if budget.hard_cap else "",
            }
            if budget
            else {"thresholds": "50, 80, 100"}
        ),
        "errors": errors or FormErrors(),
        "has_pricing": pricing is not None,
    }
    return render(
        request,
        "portal/billing.html",
        ctx,
        principal=principal,
        db=db,
        status_code=status,
        section="Billing",
    )


@router.get("")
def billing_page(request: Request, principal: UsageRead, db: Db, runtime: RuntimeDep) -> Response:
    return _billing_page(request, principal, db, runtime)


@router.post("/budget")
def set_budget(
    request: Request, principal: BillingWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    fc, _ = _forecast(db, runtime, principal.org_id)
    try:
        try:
            amount = Decimal(text(form, "amount", max_length=30).strip().replace(",", ""))
        except InvalidOperation:
            raise InvalidInput("Type an amount such as 100 or 99.50.", field="amount") from None
        try:
            thresholds = [
                int(t)
                for t in text(form, "thresholds", max_length=100).replace(" ", "").split(",")
                if t
            ]
        except ValueError:
            raise InvalidInput(
                "Thresholds are whole percentages separated by commas, e.g. 50, 80, 100.",
                field="thresholds",
            ) from None
        try:
            data = BudgetIn(
                amount=amount,
                currency=fc.currency,
                thresholds=thresholds,
                hard_cap=form.get("hard_cap") == "on",
            )
        except ValidationError as exc:
            raise invalid_form(exc, {"amount", "thresholds"}) from None
        budgets.set_budget(db, runtime.clock, principal.org_id, data, actor=principal.actor)
    except DomainError as exc:
        db.rollback()
        return _billing_page(
            request,
            principal,
            db,
            runtime,
            values=values_of(form),
            errors=FormErrors.of(exc, {"amount", "thresholds"}),
            status=exc.status,
        )
    return redirect(request, f"/portal/orgs/{principal.org.slug}/billing", "Budget saved.")


# --- plan changes ---------------------------------------------------------------------------


@router.get("/plan")
def plan_page(request: Request, principal: BillingRead, db: Db) -> Response:
    sub = billing.current_subscription(db, principal.org_id)
    return render(
        request,
        "portal/plan.html",
        {
            "title": "Change plan",
            "plans": public_plans(db),
            "sub": sub,
            "values": {"plan": sub.plan_version_id if sub else ""},
            "errors": FormErrors(),
        },
        principal=principal,
        db=db,
        section="Billing",
    )


def lower_limits(db: Db, org_id: str, from_version: str, to_version: str) -> list[dict[str, Any]]:
    """The limits ``to_version`` sets lower than ``from_version`` (an unlimited limit counts
    as higher than any number), each with what the organization's busiest service uses now
    where that is known (accounts, storage)."""
    old, new = db.get(PlanVersion, from_version), db.get(PlanVersion, to_version)
    if old is None or new is None:
        return []
    services = hosting.services_of(db, org_id)
    in_use: dict[str, int | None] = {
        "max_xmpp_accounts": max((hosting.count_accounts(db, s.id) for s in services), default=0),
        "storage_mb": max((stored_mb(db, s) for s in services), default=0),
    }
    rows: list[dict[str, Any]] = []
    for name in LIMIT_FIELDS:
        was, will = getattr(old.limits, name), getattr(new.limits, name)
        if will is None or (was is not None and will >= was):
            continue
        used = in_use.get(name)
        rows.append(
            {
                "label": LIMIT_LABELS.get(name, name),
                "now": was,
                "new": will,
                "in_use": used,
                "over": used is not None and used > will,
            }
        )
    return rows


@router.post("/plan/preview")
def preview_plan(
    request: Request, principal: BillingWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    version_id = text(form, "plan", max_length=64)
    sub = billing.current_subscription(db, principal.org_id)
    try:
        if sub is None:
            load_plan_terms(db, version_id)
            preview = None
        else:
            preview = billing.preview_change(db, runtime.clock, principal.org_id, version_id)
    except DomainError as exc:
        db.rollback()
        return render(
            request,
            "portal/plan.html",
            {
                "title": "Change plan",
                "plans": public_plans(db),
                "sub": sub,
                "values": {"plan": version_id},
                "errors": FormErrors(fields={"plan": exc.detail}),
            },
            principal=principal,
            db=db,
            status_code=exc.status,
            section="Billing",
        )
    return render(
        request,
        "portal/plan_preview.html",
        {
            "title": "Confirm the plan change",
            "preview": preview,
            "terms": load_plan_terms(db, version_id),
            "version_id": version_id,
            "lower": lower_limits(db, principal.org_id, sub.plan_version_id, version_id)
            if sub is not None
            else [],
        },
        principal=principal,
        db=db,
        section="Billing",
    )


@router.post("/plan/change")
def change_plan(
    request: Request, principal: BillingWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    version_id = text(form, "plan", max_length=64)
    url = f"/portal/orgs/{principal.org.slug}/billing"
    if billing.current_subscription(db, principal.org_id) is None:
        billing.start_subscription(
            db, runtime.clock, principal.org_id, version_id, actor=principal.actor
        )
        return redirect(request, url, "Your plan has started.")
    billing.change_plan(
        db,
        runtime.clock,
        principal.org_id,
        version_id,
        changed_by=principal.actor.label,
        actor=principal.actor,
    )
    return redirect(request, url, "Your plan is changed.")


# --- cancelling -------------------------------------------------------------------------------


def _cancel_page(
    request: Request,
    principal: Principal,
    db: Db,
    runtime: Runtime,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    sub = billing.current_subscription(db, principal.org_id)
    if sub is None:
        raise NotFound("there is no subscription to cancel")
    return render(
        request,
        "portal/cancel.html",
        {
            "title": "Cancel the subscription",
            "sub": sub,
            "terms": load_plan_terms(db, sub.plan_version_id),
            "preview": billing.preview_cancel(db, runtime.clock, principal.org_id),
            "values": values or {},
            "errors": errors or FormErrors(),
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Billing",
    )


@router.get("/cancel")
def cancel_page(request: Request, principal: BillingWrite, db: Db, runtime: RuntimeDep) -> Response:
    return _cancel_page(request, principal, db, runtime)


@router.post("/cancel")
def cancel(
    request: Request, principal: BillingWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    when = text(form, "when", max_length=10)
    url = f"/portal/orgs/{principal.org.slug}/billing"
    try:
        if when not in ("end", "now"):
            raise InvalidInput("Choose when the subscription ends.", field="when")
        billing.cancel_subscription(
            db,
            runtime.clock,
            principal.org_id,
            at_period_end=when == "end",
            actor=principal.actor,
        )
    except DomainError as exc:
        db.rollback()
        return _cancel_page(
            request,
            principal,
            db,
            runtime,
            values=values_of(form),
            errors=FormErrors.of(exc, {"when"}),
            status=exc.status,
        )
    if when == "end":
        return redirect(request, url, "Your subscription will end at the end of the period.")
    return redirect(request, url, "Your subscription is cancelled.")


@router.post("/cancel/undo")
def keep_subscription(
    request: Request, principal: BillingWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    billing.undo_cancel(db, runtime.clock, principal.org_id, actor=principal.actor)
    return redirect(
        request, f"/portal/orgs/{principal.org.slug}/billing", "Your subscription continues."
    )


# --- invoices, payments ------------------------------------------------------------------------


@router.get("/invoices")
def invoices_page(request: Request, principal: BillingRead, db: Db, page: PageNo) -> Response:
    rows = [
        i
        for i in billing.list_invoices(
            db, organization_id=principal.org_id, limit=page.per_page, offset=page.offset
        )
        if i.status != "draft"
    ]
    return render(
        request,
        "portal/invoices.html",
        {
            "title": "Invoices",
            "invoices": rows,
            "pg": page,
            "payments": billing.list_payments(db, principal.org_id)[:20],
            "credit": billing.credit_balances(db, principal.org_id),
            "default_method": payment_methods.default_method(db, principal.org_id),
        },
        principal=principal,
        db=db,
        section="Billing",
    )


def _invoice(db: Db, principal: Principal, invoice_id: str) -> Invoice:
    invoice = billing.get_invoice(db, invoice_id[:64], principal.org_id)
    if invoice.status == "draft":
        raise NotFound("no such invoice")
    return invoice


@router.get("/invoices/{invoice_id}")
def invoice_page(
    request: Request, invoice_id: str, principal: BillingRead, db: Db, paid: str = ""
) -> Response:
    """The invoice; ``?paid=1`` is the way back from the gateway's payment page."""
    invoice = _invoice(db, principal, invoice_id)
    return render(
        request,
        "portal/invoice.html",
        {
            "title": f"Invoice {invoice.number}",
            "invoice": invoice,
            "doc": invoice_document(db, invoice),
            "vat_label": rate_label,
            "payments": billing.invoice_payments(db, invoice.id),
            "attempts": collection.invoice_attempts(db, invoice.id)[:5],
            "default_method": payment_methods.default_method(db, principal.org_id),
            "back_from_payment": paid == "1" and invoice.status == "open",
            "card_page": bool(saving_gateways()),
        },
        principal=principal,
        db=db,
        section="Billing",
    )


@router.get("/invoices/{invoice_id}/e-invoice")
def invoice_einvoice(invoice_id: str, principal: BillingRead, db: Db) -> Response:
    """The EN 16931 e-invoice (CII XML) of an invoice, for accounting software."""
    invoice = _invoice(db, principal, invoice_id)
    return Response(
        billing.invoice_xml(db, invoice),
        media_type="application/xml",
        headers={"Content-Disposition": f'attachment; filename="{invoice.number}.xml"'},
    )


@router.get("/invoices/{invoice_id}/pdf")
def invoice_pdf(invoice_id: str, principal: BillingRead, db: Db) -> Response:
    invoice = _invoice(db, principal, invoice_id)
    return Response(
        render_invoice_pdf(db, invoice),
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{invoice.number}.pdf"'},
    )


# --- billing details ----------------------------------------------------------------------------

DETAIL_FIELDS = {
    "name",
    "street_1",
    "street_2",
    "street_3",
    "postcode",
    "city",
    "country",
    "tax_id",
    "invoice_email",
}
STREET_FIELDS = ("street_1", "street_2", "street_3")


def _details_page(
    request: Request,
    principal: Principal,
    db: Db,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    if values is None:
        org = principal.org
        details = billing.get_customer_details(db, org.id)
        lines = details.address.splitlines() if details else []
        values = {
            "name": details.name if details else "",
            **{key: (lines[i] if i < len(lines) else "") for i, key in enumerate(STREET_FIELDS)},
            "postcode": details.postcode if details else "",
            "city": details.city if details else "",
            "country": org.country or "",
            "tax_id": org.tax_id or "",
            "invoice_email": (details.invoice_email or "") if details else "",
        }
    return render(
        request,
        "portal/billing_details.html",
        {"title": "Billing details", "values": values, "errors": errors or FormErrors()},
        principal=principal,
        db=db,
        status_code=status,
        section="Billing",
    )


@router.get("/details")
def details_page(request: Request, principal: BillingRead, db: Db) -> Response:
    return _details_page(request, principal, db)


@router.post("/details")
def save_details(
    request: Request, principal: BillingWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    """Save what invoices are addressed to (audited: billing.customer_details_changed)."""
    try:
        billing.update_customer_details(
            db,
            runtime.clock,
            principal.org,
            actor=principal.actor,
            name=text(form, "name", max_length=300),
            address="\n".join(text(form, key, max_length=200) for key in STREET_FIELDS),
            postcode=text(form, "postcode", max_length=40),
            city=text(form, "city", max_length=200),
            country=text(form, "country", max_length=10),
            tax_id=text(form, "tax_id", max_length=100),
            invoice_email=text(form, "invoice_email", max_length=320),
        )
    except DomainError as exc:
        db.rollback()
        if exc.field == "address":
            exc.field = "street_1"
        return _details_page(
            request,
            principal,
            db,
            values=values_of(form),
            errors=FormErrors.of(exc, DETAIL_FIELDS),
            status=exc.status,
        )
    return redirect(
        request, f"/portal/orgs/{principal.org.slug}/billing/details", "Billing details saved."
    )


@router.post("/invoices/{invoice_id}/pay")
def pay_invoice(
    request: Request,
    invoice_id: str,
    principal: BillingWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    """Pay now: account credit, the default saved method, or the gateway's own page (``via``
    = ``page`` skips the saved method). The same click twice (or a retried POST) never charges
    twice (``billing.collection``)."""
    invoice = _invoice(db, principal, invoice_id)
    here = f"/portal/orgs/{principal.org.slug}/billing/invoices/{invoice.id}"
    outcome = collection.pay_now(
        db,
        runtime.clock,
        invoice.id,
        principal.org_id,
        return_url=runtime.settings.public_url.rstrip("/") + here,
        use_saved_method=text(form, "via", max_length=10) != "page",
        actor=principal.actor,
    )
    if outcome.redirect_url:
        return _continue_page(
            request,
            principal,
            db,
            title=f"Pay invoice {invoice.number}",
            explanation="You enter your card on our payment provider's page; it brings you "
            "back here when the payment is done.",
            url=outcome.redirect_url,
            back_url=here,
        )
    # A failure is shown on the invoice, in the payment box (a flash reads as good news).
    return redirect(request, here, None if outcome.status == "failed" else outcome.message)


def _continue_page(
    request: Request,
    principal: Principal,
    db: Db,
    *,
    title: str,
    explanation: str,
    url: str,
    back_url: str,
) -> Response:
    """The way to the gateway's own page: a link (the site's forms post only to itself, its
    Content-Security-Policy says so, so a form cannot redirect there)."""
    commit_now(request)
    return render(
        request,
        "portal/continue.html",
        {"title": title, "explanation": explanation, "url": url, "back_url": back_url},
        principal=principal,
        db=db,
        section="Billing",
    )


# --- payment methods -----------------------------------------------------------------------------


def _methods_page(
    request: Request,
    principal: Principal,
    db: Db,
    *,
    errors: FormErrors | None = None,
    status: int = 200,
    notice: str | None = None,
) -> Response:
    return render(
        request,
        "portal/payment_methods.html",
        {
            "title": "Payment methods",
            "methods": payment_methods.list_methods(db, principal.org_id),
            "can_save": bool(saving_gateways()),
            "direct_debit": sepa_creditor(db).ready,
            "errors": errors or FormErrors(),
            "notice": notice,
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Billing",
    )


@router.get("/payment-methods")
def methods_page(
    request: Request, principal: BillingRead, db: Db, runtime: RuntimeDep, setup: str = ""
) -> Response:
    """The saved methods. Coming back from the gateway's page (``?setup=<id>``), the method
    is saved at once if the gateway says it is done (its webhook says the same)."""
    notice = None
    if setup and org_role_allows_write(principal):
        for gateway in saving_gateways():
            try:
                method_id = gateway.complete_method_setup(setup[:200])
            except DomainError:
                continue
            if method_id is not None:
                payment_methods.save_from_gateway(
                    db,
                    runtime.clock,
                    principal.org_id,
                    gateway.name,
                    method_id,
                    actor=principal.actor,
                )
                notice = "Your payment method is saved."
                break
        else:
            notice = "Your payment method is being saved; it appears here in a moment."
    return _methods_page(request, principal, db, notice=notice)


@router.post("/payment-methods/add")
def add_method(request: Request, principal: BillingWrite, db: Db, runtime: RuntimeDep) -> Response:
    gateways = saving_gateways()
    here = f"/portal/orgs/{principal.org.slug}/billing/payment-methods"
    try:
        setup = payment_methods.start_setup(
            db,
            runtime.clock,
            principal.org_id,
            gateways[0].name if gateways else "manual",
            return_url=runtime.settings.public_url.rstrip("/") + here,
            actor=principal.actor,
        )
    except DomainError as exc:
        db.rollback()
        return _methods_page(
            request, principal, db, errors=FormErrors.of(exc, set()), status=exc.status
        )
    if not setup.redirect_url:
        return redirect(request, here, "Your payment method is being saved.")
    return _continue_page(
        request,
        principal,
        db,
        title="Add a card",
        explanation="You enter your card on our payment provider's page; we never see its "
        "number. The page brings you back here when the card is saved.",
        url=setup.redirect_url,
        back_url=here,
    )


@router.post("/payment-methods/{method_id}/default")
def make_default(
    request: Request, method_id: str, principal: BillingWrite, db: Db, runtime: RuntimeDep
) -> Response:
    method = payment_methods.set_default(
        db, runtime.clock, principal.org_id, method_id, actor=principal.actor
    )
    return redirect(
        request,
        f"/portal/orgs/{principal.org.slug}/billing/payment-methods",
        f"{method.label} is now your default payment method.",
    )


@router.post("/payment-methods/{method_id}/remove")
def remove_method(
    request: Request,
    method_id: str,
    principal: BillingWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    here = f"/portal/orgs/{principal.org.slug}/billing/payment-methods"
    method = payment_methods.get_method(db, principal.org_id, method_id)
    ask = confirmation(
        request,
        form,
        principal=principal,
        db=db,
        question=f"Remove {method.label}?",
        consequence="It is no longer charged for your invoices, and the payment provider "
        "forgets it. You can add it again later.",
        button="Remove",
        cancel_url=here,
    )
    if ask is not None:
        return ask
    payment_methods.remove_method(
        db, runtime.clock, principal.org_id, method.id, actor=principal.actor
    )
    return redirect(request, here, f"{method.label} is removed.")
