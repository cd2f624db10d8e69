"""Billing API: a customer's subscription, invoices, payments, credit and coupons
(``/api/v1/orgs/{org_id}/billing/...``, area "billing"), and the provider's billing desk
(``/api/v1/admin/billing/...``, staff area "billing-admin")."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import HTMLResponse

from imhost.accounts.permissions import Access, Scope
from imhost.billing import collection, payment_methods, service
from imhost.billing.drivers import get_gateway, saving_gateways
from imhost.billing.flows import run_billing
from imhost.billing.models import Invoice, InvoiceLine, Subscription
from imhost.billing.render import render_invoice_html, render_invoice_pdf
from imhost.billing.schemas import (
    BillingSettingsIn,
    BillingSettingsOut,
    CancelIn,
    ChangeIn,
    ChangePreviewOut,
    ChargeIn,
    CouponApplyIn,
    CouponIn,
    CouponOut,
    CouponPatch,
    CreditEntryOut,
    CreditNoteIn,
    CreditNoteOut,
    CreditOut,
    CustomerDetailsIn,
    CustomerDetailsOut,
    DunningOut,
    InvoiceDetailOut,
    InvoiceLineOut,
    InvoiceOut,
    InvoicePage,
    PayIn,
    PaymentIn,
    PaymentMethodAttachIn,
    PaymentMethodOut,
    PaymentMethodSetupIn,
    PaymentMethodSetupOut,
    PaymentOut,
    PayOut,
    PendingChargeOut,
    ProrationLineOut,
    RedemptionOut,
    RefundIn,
    RefundOut,
    RunFailureOut,
    RunIn,
    RunOut,
    SubscribeIn,
    SubscriptionOut,
    TaxRateIn,
    TaxRateOut,
    VoidIn,
)
from imhost.billing.subscriptions import ChangePreview, add_ons_of
from imhost.kit.errors import DomainError, InvalidInput, NotFound
from imhost.web.deps import Db, PageDep, Principal, Public, RuntimeDep, require

router = APIRouter(tags=["billing"])


class BadWebhook(DomainError):
    """A webhook whose signature, time or body does not hold: 400, so the sender sees it."""

    status = 400
    type_slug = "bad-webhook"
    title = "Webhook refused"


BillingRead = Annotated[Principal, Depends(require("billing", Access.READ))]
BillingWrite = Annotated[Principal, Depends(require("billing", Access.WRITE))]
AdminRead = Annotated[Principal, Depends(require("billing-admin", Access.READ, scope=Scope.STAFF))]
AdminWrite = Annotated[
    Principal, Depends(require("billing-admin", Access.WRITE, scope=Scope.STAFF))
]

ORG = "/orgs/{org_id}/billing"
ADMIN = "/admin/billing"


def _sub_out(db: Db, sub: Subscription) -> SubscriptionOut:
    out = SubscriptionOut.model_validate(sub)
    out.add_ons = add_ons_of(db, sub.id)
    return out


def _preview_out(preview: ChangePreview) -> ChangePreviewOut:
    return ChangePreviewOut(
        subscription_id=preview.subscription_id,
        from_plan_version_id=preview.from_plan_version_id,
        to_plan_version_id=preview.to_plan_version_id,
        at=preview.at,
        currency=preview.currency,
        lines=[
            ProrationLineOut(description=x.description, amount=x.amount, calculation=x.calculation)
            for x in preview.lines
        ],
        total=preview.total,
    )


def usage_url(invoice: Invoice, line: InvoiceLine) -> str | None:
    """Where the usage behind a usage line can be read (metering's usage records)."""
    if not line.metric or line.period_start is None or line.period_end is None:
        return None
    query = urlencode(
        {
            "metric": line.metric,
            "period_start": line.period_start.isoformat(),
            "period_end": line.period_end.isoformat(),
        }
    )
    return f"/api/v1/orgs/{invoice.organization_id}/usage/records?{query}"


def _invoice_detail(db: Db, invoice: Invoice) -> InvoiceDetailOut:
    lines = []
    for line in service.invoice_lines(db, invoice.id):
        out = InvoiceLineOut.model_validate(line)
        out.usage_url = usage_url(invoice, line)
        lines.append(out)
    base = InvoiceOut.model_validate(invoice).model_dump()
    return InvoiceDetailOut(**base, lines=lines)


def _org_invoice(db: Db, principal: Principal, invoice_id: str) -> Invoice:
    invoice = service.get_invoice(db, invoice_id, principal.org_id)
    if invoice.status == "draft":
        raise NotFound(f"no invoice {invoice_id!r}")
    return invoice


# --- customer: subscription ---------------------------------------------------------------


@router.get(ORG + "/subscription", response_model=SubscriptionOut)
def get_subscription(principal: BillingRead, db: Db) -> SubscriptionOut:
    sub = service.current_subscription(db, principal.org_id)
    if sub is None:
        raise NotFound("the organization has no subscription")
    return _sub_out(db, sub)


@router.post(ORG + "/subscription", response_model=SubscriptionOut, status_code=201)
def subscribe(
    body: SubscribeIn, principal: BillingWrite, db: Db, runtime: RuntimeDep
) -> SubscriptionOut:
    sub = service.start_subscription(
        db,
        runtime.clock,
        principal.org_id,
        body.plan_version_id,
        add_ons=body.add_ons,
        anchor_day=body.anchor_day,
        with_trial=body.with_trial,
        actor=principal.actor,
    )
    return _sub_out(db, sub)


@router.post(ORG + "/subscription/preview", response_model=ChangePreviewOut)
def preview_change(
    body: ChangeIn, principal: BillingRead, db: Db, runtime: RuntimeDep
) -> ChangePreviewOut:
    """The proration lines of a plan change, without changing anything."""
    return _preview_out(
        service.preview_change(
            db, runtime.clock, principal.org_id, body.plan_version_id, add_ons=body.add_ons
        )
    )


@router.post(ORG + "/subscription/change", response_model=ChangePreviewOut)
def change_plan(
    body: ChangeIn, principal: BillingWrite, db: Db, runtime: RuntimeDep
) -> ChangePreviewOut:
    preview = service.change_plan(
        db,
        runtime.clock,
        principal.org_id,
        body.plan_version_id,
        add_ons=body.add_ons,
        changed_by=principal.actor.label,
        actor=principal.actor,
    )
    return _preview_out(preview)


@router.post(ORG + "/subscription/cancel", response_model=SubscriptionOut)
def cancel(body: CancelIn, principal: BillingWrite, db: Db, runtime: RuntimeDep) -> SubscriptionOut:
    sub = service.cancel_subscription(
        db, runtime.clock, principal.org_id, at_period_end=body.at_period_end, actor=principal.actor
    )
    return _sub_out(db, sub)


@router.post(ORG + "/subscription/pause", response_model=SubscriptionOut)
def pause(principal: BillingWrite, db: Db, runtime: RuntimeDep) -> SubscriptionOut:
    sub = service.pause_subscription(db, runtime.clock, principal.org_id, actor=principal.actor)
    return _sub_out(db, sub)


@router.post(ORG + "/subscription/resume", response_model=SubscriptionOut)
def resume(principal: BillingWrite, db: Db, runtime: RuntimeDep) -> SubscriptionOut:
    sub = service.resume_subscription(db, runtime.clock, principal.org_id, actor=principal.actor)
    return _sub_out(db, sub)


# --- customer: invoices, payments, credit, coupons ------------------------------------------


@router.get(ORG + "/invoices", response_model=InvoicePage)
def list_invoices(principal: BillingRead, db: Db, page: PageDep) -> InvoicePage:
    items = [
        i
        for i in service.list_invoices(
            db, organization_id=principal.org_id, limit=page.limit, offset=page.offset
        )
        if i.status != "draft"
    ]
    return InvoicePage(
        items=[InvoiceOut.model_validate(i) for i in items], limit=page.limit, offset=page.offset
    )


@router.get(ORG + "/invoices/{invoice_id}", response_model=InvoiceDetailOut)
def get_invoice(invoice_id: str, principal: BillingRead, db: Db) -> InvoiceDetailOut:
    return _invoice_detail(db, _org_invoice(db, principal, invoice_id))


@router.get(ORG + "/invoices/{invoice_id}/pdf", response_class=Response)
def invoice_pdf(invoice_id: str, principal: BillingRead, db: Db) -> Response:
    invoice = _org_invoice(db, principal, invoice_id)
    return Response(
        render_invoice_pdf(db, invoice),
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{invoice.number}.pdf"'},
    )


@router.get(ORG + "/invoices/{invoice_id}/html", response_class=HTMLResponse)
def invoice_html(invoice_id: str, principal: BillingRead, db: Db) -> HTMLResponse:
    invoice = _org_invoice(db, principal, invoice_id)
    return HTMLResponse(
        render_invoice_html(db, invoice, usage_link=lambda line: usage_url(invoice, line) or "")
    )


XML = "application/xml"


@router.get(ORG + "/invoices/{invoice_id}/e-invoice", response_class=Response)
def invoice_einvoice(invoice_id: str, principal: BillingRead, db: Db) -> Response:
    """The invoice as an EN 16931 e-invoice: UN/CEFACT CII XML, Factur-X profile EN 16931
    (the same XML is inside the PDF)."""
    invoice = _org_invoice(db, principal, invoice_id)
    return Response(
        service.invoice_xml(db, invoice),
        media_type=XML,
        headers={"Content-Disposition": f'attachment; filename="{invoice.number}.xml"'},
    )


@router.get(ORG + "/credit-notes/{credit_note_id}/e-invoice", response_class=Response)
def credit_note_einvoice(credit_note_id: str, principal: BillingRead, db: Db) -> Response:
    """A credit note as an EN 16931 e-invoice (CII XML, document type 381)."""
    note = service.get_credit_note(db, credit_note_id[:64], principal.org_id)
    return Response(
        service.credit_note_xml(db, note),
        media_type=XML,
        headers={"Content-Disposition": f'attachment; filename="{note.number}.xml"'},
    )


@router.get(ORG + "/details", response_model=CustomerDetailsOut)
def billing_details(principal: BillingRead, db: Db) -> CustomerDetailsOut:
    """What the organization's invoices are addressed to."""
    return _details_out(db, principal)


@router.put(ORG + "/details", response_model=CustomerDetailsOut)
def set_billing_details(
    body: CustomerDetailsIn, principal: BillingWrite, db: Db, runtime: RuntimeDep
) -> CustomerDetailsOut:
    """Set the billing address, VAT ID and invoice e-mail (audited); issued invoices keep
    the details they were issued with."""
    service.update_customer_details(
        db, runtime.clock, principal.org, actor=principal.actor, **body.model_dump()
    )
    return _details_out(db, principal)


def _details_out(db: Db, principal: Principal) -> CustomerDetailsOut:
    org = principal.org
    details = service.get_customer_details(db, org.id)
    return CustomerDetailsOut(
        name=details.name if details else "",
        address=details.address if details else "",
        postcode=details.postcode if details else "",
        city=details.city if details else "",
        country=org.country,
        tax_id=org.tax_id,
        invoice_email=details.invoice_email if details else None,
    )


@router.post(ORG + "/invoices/{invoice_id}/pay-from-credit", response_model=PaymentOut)
def pay_invoice_from_credit(
    invoice_id: str, principal: BillingWrite, db: Db, runtime: RuntimeDep
) -> PaymentOut:
    invoice = _org_invoice(db, principal, invoice_id)
    payment = service.pay_from_credit(
        db, runtime.clock, invoice.id, principal.org_id, actor=principal.actor
    )
    return PaymentOut.model_validate(payment)


@router.post(ORG + "/invoices/{invoice_id}/pay", response_model=PayOut)
def pay_invoice(
    invoice_id: str, body: PayIn, principal: BillingWrite, db: Db, runtime: RuntimeDep
) -> PayOut:
    """Pay now: account credit first, then the default saved method, else the gateway's own
    flow (``redirect_url``) or bank transfer instructions. Repeating the request never
    charges twice."""
    invoice = _org_invoice(db, principal, invoice_id)
    outcome = collection.pay_now(
        db,
        runtime.clock,
        invoice.id,
        principal.org_id,
        return_url=body.return_url or runtime.settings.public_url,
        use_saved_method=body.use_saved_method,
        actor=principal.actor,
    )
    return PayOut(
        status=outcome.status,
        message=outcome.message,
        attempt_id=outcome.attempt.id if outcome.attempt else None,
        redirect_url=outcome.redirect_url,
    )


@router.get(ORG + "/payment-methods", response_model=list[PaymentMethodOut])
def list_payment_methods(principal: BillingRead, db: Db) -> list[PaymentMethodOut]:
    return [
        PaymentMethodOut.model_validate(m)
        for m in payment_methods.list_methods(db, principal.org_id)
    ]


@router.post(ORG + "/payment-methods/setup", response_model=PaymentMethodSetupOut)
def start_payment_method_setup(
    body: PaymentMethodSetupIn, principal: BillingWrite, db: Db, runtime: RuntimeDep
) -> PaymentMethodSetupOut:
    """Start saving a card (or a mandate): send the customer to ``redirect_url``."""
    gateways = saving_gateways()
    name = body.gateway or (gateways[0].name if gateways else "manual")
    setup = payment_methods.start_setup(
        db,
        runtime.clock,
        principal.org_id,
        name,
        return_url=body.return_url,
        actor=principal.actor,
    )
    return PaymentMethodSetupOut(
        gateway=setup.gateway,
        setup_id=setup.external_id,
        redirect_url=setup.redirect_url,
        client_secret=setup.client_secret,
    )


@router.post(ORG + "/payment-methods", response_model=PaymentMethodOut, status_code=201)
def attach_payment_method(
    body: PaymentMethodAttachIn, principal: BillingWrite, db: Db, runtime: RuntimeDep
) -> PaymentMethodOut:
    """Keep a method the gateway saved for this organization's customer there."""
    method = payment_methods.save_from_gateway(
        db, runtime.clock, principal.org_id, body.gateway, body.external_id, actor=principal.actor
    )
    return PaymentMethodOut.model_validate(method)


@router.post(ORG + "/payment-methods/{method_id}/default", response_model=PaymentMethodOut)
def make_payment_method_default(
    method_id: str, principal: BillingWrite, db: Db, runtime: RuntimeDep
) -> PaymentMethodOut:
    method = payment_methods.set_default(
        db, runtime.clock, principal.org_id, method_id, actor=principal.actor
    )
    return PaymentMethodOut.model_validate(method)


@router.delete(ORG + "/payment-methods/{method_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_payment_method(
    method_id: str, principal: BillingWrite, db: Db, runtime: RuntimeDep
) -> Response:
    payment_methods.remove_method(
        db, runtime.clock, principal.org_id, method_id, actor=principal.actor
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _raw_body(request: Request) -> bytes:
    return await request.body()


@router.post("/payments/webhooks/{gateway}")
def gateway_webhook(
    gateway: str,
    request: Request,
    body: Annotated[bytes, Depends(_raw_body)],
    db: Db,
    runtime: RuntimeDep,
    _: Public,
) -> dict[str, str]:
    """A payment gateway's signed webhook (no session: the signature is the proof). A bad or
    stale signature is a 400; the same event twice is acted on once."""
    try:
        event = get_gateway(gateway[:32]).parse_webhook(dict(request.headers), body)
    except InvalidInput as exc:
        raise BadWebhook(exc.detail) from None
    result = collection.apply_gateway_event(db, runtime.clock, event)
    return {"result": result}


@router.get(ORG + "/payments", response_model=list[PaymentOut])
def list_payments(principal: BillingRead, db: Db) -> list[PaymentOut]:
    return [PaymentOut.model_validate(p) for p in service.list_payments(db, principal.org_id)]


@router.get(ORG + "/credit", response_model=CreditOut)
def credit(principal: BillingRead, db: Db) -> CreditOut:
    return CreditOut(
        balances=service.credit_balances(db, principal.org_id),
        entries=[
            CreditEntryOut.model_validate(e) for e in service.credit_history(db, principal.org_id)
        ],
    )


@router.post(ORG + "/coupon", response_model=RedemptionOut, status_code=201)
def apply_coupon(
    body: CouponApplyIn, principal: BillingWrite, db: Db, runtime: RuntimeDep
) -> RedemptionOut:
    redemption = service.apply_coupon(
        db, runtime.clock, principal.org_id, body.code, actor=principal.actor
    )
    return RedemptionOut.model_validate(redemption)


# --- staff: the run, invoices, payments -----------------------------------------------------


@router.post(ADMIN + "/runs", response_model=RunOut)
def run(body: RunIn, principal: AdminWrite, runtime: RuntimeDep, db: Db) -> RunOut:
    """Run billing now (up to ``as_of``, default now); each invoice commits on its own."""
    as_of = body.as_of or runtime.clock.now()
    if as_of > runtime.clock.now():
        raise InvalidInput("a billing run cannot look into the future", field="as_of")
    # The run works in transactions of its own: end the request's (which authenticated the
    # caller) first, or on SQLite the run would wait for this request's write lock.
    db.commit()
    summary = run_billing(runtime.session_factory, runtime.clock, as_of, actor=principal.actor)
    return RunOut(
        as_of=summary.as_of,
        invoices=summary.invoices,
        skipped=summary.skipped,
        totals=summary.totals,
        invoice_numbers=summary.invoice_numbers,
        failures=[
            RunFailureOut(
                subscription_id=f.subscription_id,
                organization_id=f.organization_id,
                billing_point=f.billing_point,
                error=f.error,
            )
            for f in summary.failures
        ],
        seconds=summary.seconds,
    )


@router.get(ADMIN + "/invoices", response_model=InvoicePage)
def admin_invoices(
    principal: AdminRead,
    db: Db,
    page: PageDep,
    organization_id: Annotated[str | None, Query(max_length=32)] = None,
    status_: Annotated[str | None, Query(alias="status", max_length=16)] = None,
) -> InvoicePage:
    items = service.list_invoices(
        db, organization_id=organization_id, status=status_, limit=page.limit, offset=page.offset
    )
    return InvoicePage(
        items=[InvoiceOut.model_validate(i) for i in items], limit=page.limit, offset=page.offset
    )


@router.get(ADMIN + "/invoices/{invoice_id}", response_model=InvoiceDetailOut)
def admin_invoice(invoice_id: str, principal: AdminRead, db: Db) -> InvoiceDetailOut:
    return _invoice_detail(db, service.get_invoice(db, invoice_id))


@router.post(ADMIN + "/invoices/{invoice_id}/finalize", response_model=InvoiceOut)
def finalize(invoice_id: str, principal: AdminWrite, db: Db, runtime: RuntimeDep) -> InvoiceOut:
    invoice = service.finalize_invoice(
        db, runtime.clock, service.get_invoice(db, invoice_id), actor=principal.actor
    )
    return InvoiceOut.model_validate(invoice)


@router.post(ADMIN + "/invoices/{invoice_id}/void", response_model=InvoiceOut)
def void(
    invoice_id: str, body: VoidIn, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> InvoiceOut:
    invoice = service.void_invoice(
        db, runtime.clock, invoice_id, body.reason, actor=principal.actor
    )
    return InvoiceOut.model_validate(invoice)


@router.post(
    ADMIN + "/invoices/{invoice_id}/credit-notes", response_model=CreditNoteOut, status_code=201
)
def credit_note(
    invoice_id: str, body: CreditNoteIn, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> CreditNoteOut:
    note = service.issue_credit_note(
        db,
        runtime.clock,
        invoice_id,
        reason=body.reason,
        lines=dict(body.lines) if body.lines is not None else None,
        refund_to=body.refund_to,
        created_by=principal.actor.label,
        actor=principal.actor,
    )
    return CreditNoteOut.model_validate(note)


@router.post(ADMIN + "/invoices/{invoice_id}/payments", response_model=PaymentOut, status_code=201)
def record_payment(
    invoice_id: str, body: PaymentIn, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> PaymentOut:
    payment = service.record_payment(
        db,
        runtime.clock,
        invoice_id,
        amount=body.amount,
        currency=body.currency,
        method=body.method,
        reference=body.reference,
        received_at=body.received_at,
        recorded_by=principal.actor.label,
        actor=principal.actor,
    )
    return PaymentOut.model_validate(payment)


@router.post(ADMIN + "/payments/{payment_id}/refunds", response_model=RefundOut, status_code=201)
def refund(
    payment_id: str, body: RefundIn, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> RefundOut:
    result = service.refund_credit(
        db,
        runtime.clock,
        payment_id,
        amount=body.amount,
        reason=body.reason,
        created_by=principal.actor.label,
        actor=principal.actor,
    )
    return RefundOut.model_validate(result)


@router.get(ADMIN + "/orgs/{organization_id}/payments", response_model=list[PaymentOut])
def admin_payments(organization_id: str, principal: AdminRead, db: Db) -> list[PaymentOut]:
    return [PaymentOut.model_validate(p) for p in service.list_payments(db, organization_id)]


# --- staff: charges, coupons, taxes, settings, dunning --------------------------------------


@router.get(ADMIN + "/orgs/{organization_id}/charges", response_model=list[PendingChargeOut])
def pending_charges(organization_id: str, principal: AdminRead, db: Db) -> list[PendingChargeOut]:
    return [
        PendingChargeOut.model_validate(c)
        for c in service.list_pending_charges(db, organization_id)
    ]


@router.post(
    ADMIN + "/orgs/{organization_id}/charges", response_model=PendingChargeOut, status_code=201
)
def add_charge(
    organization_id: str, body: ChargeIn, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> PendingChargeOut:
    """A one-off charge for the customer's next invoice; a reason is required."""
    charge = service.add_one_off_charge(
        db,
        runtime.clock,
        organization_id,
        description=body.description,
        amount=body.amount,
        currency=body.currency,
        reason=body.reason,
        created_by=principal.actor.label,
        actor=principal.actor,
    )
    return PendingChargeOut.model_validate(charge)


@router.delete(ADMIN + "/charges/{charge_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_charge(charge_id: str, principal: AdminWrite, db: Db, runtime: RuntimeDep) -> Response:
    service.remove_pending_charge(db, runtime.clock, charge_id, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(ADMIN + "/coupons", response_model=list[CouponOut])
def coupons(principal: AdminRead, db: Db) -> list[CouponOut]:
    return [CouponOut.model_validate(c) for c in service.list_coupons(db)]


@router.post(ADMIN + "/coupons", response_model=CouponOut, status_code=201)
def create_coupon(body: CouponIn, principal: AdminWrite, db: Db, runtime: RuntimeDep) -> CouponOut:
    coupon = service.create_coupon(db, runtime.clock, actor=principal.actor, **body.model_dump())
    return CouponOut.model_validate(coupon)


@router.get(ADMIN + "/coupons/{coupon_id}", response_model=CouponOut)
def get_coupon(coupon_id: str, principal: AdminRead, db: Db) -> CouponOut:
    return CouponOut.model_validate(service.get_coupon(db, coupon_id))


@router.patch(ADMIN + "/coupons/{coupon_id}", response_model=CouponOut)
def update_coupon(
    coupon_id: str, body: CouponPatch, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> CouponOut:
    coupon = service.update_coupon(
        db, runtime.clock, coupon_id, actor=principal.actor, **body.model_dump(exclude_unset=True)
    )
    return CouponOut.model_validate(coupon)


@router.delete(ADMIN + "/coupons/{coupon_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_coupon(coupon_id: str, principal: AdminWrite, db: Db, runtime: RuntimeDep) -> Response:
    service.delete_coupon(db, runtime.clock, coupon_id, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(ADMIN + "/tax-rates", response_model=list[TaxRateOut])
def tax_rates(principal: AdminRead, db: Db) -> list[TaxRateOut]:
    return [TaxRateOut.model_validate(r) for r in service.list_tax_rates(db)]


@router.put(ADMIN + "/tax-rates/{country}", response_model=TaxRateOut)
def set_tax_rate(
    country: str, body: TaxRateIn, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> TaxRateOut:
    rate = service.set_tax_rate(
        db, runtime.clock, country, body.percent, body.name, actor=principal.actor
    )
    return TaxRateOut.model_validate(rate)


@router.delete(ADMIN + "/tax-rates/{country}", status_code=status.HTTP_204_NO_CONTENT)
def delete_tax_rate(country: str, principal: AdminWrite, db: Db, runtime: RuntimeDep) -> Response:
    service.delete_tax_rate(db, runtime.clock, country, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(ADMIN + "/settings", response_model=BillingSettingsOut)
def billing_settings(principal: AdminRead, db: Db) -> BillingSettingsOut:
    return BillingSettingsOut.model_validate(service.get_profile(db))


@router.patch(ADMIN + "/settings", response_model=BillingSettingsOut)
def update_settings(
    body: BillingSettingsIn, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> BillingSettingsOut:
    changes = body.model_dump(exclude_unset=True)
    profile = service.update_profile(db, runtime.clock, actor=principal.actor, **changes)
    return BillingSettingsOut.model_validate(profile)


@router.get(ADMIN + "/dunning", response_model=list[DunningOut])
def dunning(principal: AdminRead, db: Db, runtime: RuntimeDep) -> list[DunningOut]:
    """Overdue invoices and the dunning steps done on each."""
    return [
        DunningOut(
            invoice_id=d.invoice_id,
            number=d.number,
            organization_id=d.organization_id,
            due_at=d.due_at,
            amount_due=d.amount_due,
            currency=d.currency,
            steps_done=d.steps_done,
        )
        for d in service.dunning_status(db, runtime.clock)
    ]


__all__ = ["router"]
