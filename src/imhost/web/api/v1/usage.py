"""Usage: batch ingestion, usage to date, the forecast, the usage behind an invoice line, and
budgets.

Customer routes live under ``/api/v1/orgs/{org_id}``; an external engine sends usage with an
API token holding ``usage:write``. Staff ingest across organizations at ``/api/v1/admin/usage``
and set the late-usage policy at ``/api/v1/admin/usage/late-policy``.

The current period and prices come from the organization's subscription (billing); without one
the period is the UTC calendar month and the forecast is zero.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel
from sqlalchemy.orm import Session

from imhost.accounts.permissions import Access, Scope
from imhost.billing.budgets import pricing_for
from imhost.billing.forecast import forecast_invoice
from imhost.hosting import service as hosting
from imhost.kit.decimals import Quantity
from imhost.kit.errors import Conflict, InvalidInput, NotFound
from imhost.metering import aggregate, budgets, closing, ingestion
from imhost.metering import forecast as forecasting
from imhost.metering import metrics as m
from imhost.metering.ingestion import IngestResult
from imhost.metering.models import Budget
from imhost.metering.schemas import (
    BudgetAlertOut,
    BudgetIn,
    BudgetOut,
    ForecastInvoiceLineOut,
    ForecastLineOut,
    ForecastOut,
    IngestResultOut,
    RejectionOut,
    UsageBatchIn,
    UsageToDateOut,
)
from imhost.metering.tasks import BudgetPricing, calendar_month
from imhost.web.deps import Db, Principal, RuntimeDep, require

router = APIRouter(tags=["usage"])

UsageRead = Annotated[Principal, Depends(require("usage", Access.READ))]
UsageWrite = Annotated[Principal, Depends(require("usage", Access.WRITE))]
BudgetWrite = Annotated[Principal, Depends(require("billing", Access.WRITE))]
UsageAdminWrite = Annotated[
    Principal, Depends(require("usage-admin", Access.WRITE, scope=Scope.STAFF))
]

UNITS = {code: metric.unit for code, metric in m.BILLABLE_METRICS.items()}


def _period(
    session: Session, organization_id: str, now: datetime
) -> tuple[datetime, datetime, BudgetPricing | None]:
    pricing = pricing_for(session, organization_id)
    if pricing is not None:
        return pricing.period_start, pricing.period_end, pricing
    start, end = calendar_month(now)
    return start, end, None


def _result_out(result: IngestResult) -> IngestResultOut:
    return IngestResultOut(
        accepted=result.accepted,
        duplicates=result.duplicates,
        corrected=result.corrected,
        rejected=[RejectionOut(index=r.index, key=r.key, reason=r.reason) for r in result.rejected],
    )


# --- ingestion ----------------------------------------------------------------------------


@router.post("/orgs/{org_id}/usage", response_model=IngestResultOut)
def ingest_usage(
    org_id: str, body: UsageBatchIn, principal: UsageWrite, db: Db, runtime: RuntimeDep
) -> IngestResultOut:
    """Store a batch of usage records (at most 10,000), each once by its idempotency key.

    ``atomic`` (the default): any refused record refuses the batch with 422, listing every
    refusal, and nothing is written. Otherwise the valid records are kept and the refused
    ones listed in ``rejected`` (200).
    """
    result = ingestion.ingest(
        db,
        runtime.clock,
        body.records,
        atomic=body.atomic,
        organization_id=principal.org_id,
        services=hosting.service_owners,
    )
    return _result_out(result)


@router.post("/admin/usage", response_model=IngestResultOut)
def admin_ingest_usage(
    body: UsageBatchIn, principal: UsageAdminWrite, db: Db, runtime: RuntimeDep
) -> IngestResultOut:
    """Batch ingestion across organizations (each record names its ``organization_id``)."""
    result = ingestion.ingest_by_staff(
        db,
        runtime.clock,
        body.records,
        atomic=body.atomic,
        services=hosting.service_owners,
        actor=principal.actor,
    )
    return _result_out(result)


class LatePolicyIn(BaseModel):
    late_usage_policy: Literal["refuse", "next_invoice"]


class LatePolicyOut(BaseModel):
    late_usage_policy: str


@router.put("/admin/usage/late-policy", response_model=LatePolicyOut)
def set_late_policy(
    body: LatePolicyIn, principal: UsageAdminWrite, db: Db, runtime: RuntimeDep
) -> LatePolicyOut:
    """What happens to usage for an invoiced period: ``refuse`` it, or bill it on the
    ``next_invoice`` as a correction (the original bucket is kept on the record)."""
    policy = closing.set_late_usage_policy(
        db, runtime.clock, body.late_usage_policy, actor=principal.actor
    )
    return LatePolicyOut(late_usage_policy=policy.value)


# --- reading ------------------------------------------------------------------------------


@router.get("/orgs/{org_id}/usage", response_model=UsageToDateOut)
def usage_to_date(principal: UsageRead, db: Db, runtime: RuntimeDep) -> UsageToDateOut:
    """Usage of the current period so far, per billable metric."""
    now = runtime.clock.now()
    start, end, _ = _period(db, principal.org_id, now)
    return UsageToDateOut(
        organization_id=principal.org_id,
        period_start=start,
        period_end=end,
        as_of=now,
        quantities=aggregate.usage_to_date(db, principal.org_id, start, now),
        units=UNITS,
    )


@router.get("/orgs/{org_id}/usage/forecast", response_model=ForecastOut)
def usage_forecast(principal: UsageRead, db: Db, runtime: RuntimeDep) -> ForecastOut:
    """The forecast of the next invoice, tax included, with the usage projection behind it
    (``method`` says how it is made)."""
    now = runtime.clock.now()
    start, end, pricing = _period(db, principal.org_id, now)
    if pricing is None:
        pricing = BudgetPricing(start, end, (), Decimal(0), "EUR")
    fc = forecasting.forecast(
        db,
        runtime.clock,
        principal.org_id,
        start,
        end,
        pricing.price_specs,
        pricing.base_fee,
        pricing.currency,
    )
    invoice = forecast_invoice(db, runtime.clock, principal.org_id)
    return ForecastOut(
        organization_id=principal.org_id,
        period_start=start,
        period_end=end,
        as_of=fc.as_of,
        currency=fc.currency,
        base_fee=fc.base_fee,
        lines=[
            ForecastLineOut(
                metric=line.metric,
                usage_to_date=line.usage_to_date,
                projected_quantity=line.projected_quantity,
                projected_amount=0 if invoice and invoice.in_trial else line.charge.amount,
                explanation=line.charge.explanation,
            )
            for line in fc.lines
        ],
        invoice_at=invoice.invoice_at if invoice else None,
        trial_end=invoice.trial_end if invoice else None,
        invoice_lines=[
            ForecastInvoiceLineOut(
                kind=line.kind,
                description=line.description,
                amount=line.amount,
                calculation=line.calculation,
            )
            for line in (invoice.lines if invoice else [])
        ],
        subtotal=invoice.subtotal if invoice else 0,
        tax_total=invoice.tax_total if invoice else 0,
        total=invoice.total if invoice else 0,
        amount_due=invoice.amount_due if invoice else 0,
        method=invoice.method if invoice else fc.method,
    )


class UsageRecordOut(BaseModel):
    id: int
    service_id: str | None
    metric: str
    bucket_start: datetime
    quantity: Quantity
    subject: str | None
    idempotency_key: str
    received_at: datetime
    original_bucket_start: datetime | None


@router.get("/orgs/{org_id}/usage/records", response_model=list[UsageRecordOut])
def usage_records(
    principal: UsageRead,
    db: Db,
    metric: str,
    period_start: datetime,
    period_end: datetime,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[UsageRecordOut]:
    """The usage records behind a billable metric in a period (an invoice line links here)."""
    for name, value in (("period_start", period_start), ("period_end", period_end)):
        if value.tzinfo is None:
            raise InvalidInput(f"{name} must carry a time zone, e.g. Z", field=name)
    rows = aggregate.usage_records_for(
        db, principal.org_id, metric, period_start, period_end, limit, offset
    )
    return [
        UsageRecordOut(
            id=r.id,
            service_id=r.service_id,
            metric=r.metric,
            bucket_start=r.bucket_start,
            quantity=r.quantity,
            subject=r.subject,
            idempotency_key=r.idempotency_key,
            received_at=r.received_at,
            original_bucket_start=r.original_bucket_start,
        )
        for r in rows
    ]


# --- budgets ------------------------------------------------------------------------------


def _budget_out(budget: Budget) -> BudgetOut:
    return BudgetOut(
        id=budget.id,
        organization_id=budget.organization_id,
        amount=budget.amount,
        currency=budget.currency,
        thresholds=list(budget.thresholds),
        hard_cap=budget.hard_cap,
        created_at=budget.created_at,
        updated_at=budget.updated_at,
    )


def _check_budget_currency(db: Session, org_id: str, body: BudgetIn) -> None:
    pricing = pricing_for(db, org_id)
    if pricing is not None and pricing.currency != body.currency:
        raise InvalidInput(
            f"the organization is billed in {pricing.currency}; set the budget in "
            f"{pricing.currency}",
            field="currency",
        )


def _own_budget(db: Session, org_id: str, budget_id: str) -> Budget:
    budget = budgets.get_budget(db, org_id)
    if budget is None or budget.id != budget_id:
        raise NotFound("no such budget")
    return budget


@router.get("/orgs/{org_id}/budgets", response_model=list[BudgetOut])
def list_budgets(principal: UsageRead, db: Db) -> list[BudgetOut]:
    """The organization's monthly budget (a list of at most one)."""
    budget = budgets.get_budget(db, principal.org_id)
    return [_budget_out(budget)] if budget else []


@router.post(
    "/orgs/{org_id}/budgets", response_model=BudgetOut, status_code=status.HTTP_201_CREATED
)
def create_budget(body: BudgetIn, principal: BudgetWrite, db: Db, runtime: RuntimeDep) -> BudgetOut:
    """Set a monthly budget with alert thresholds (percent; default 50, 80, 100) and an
    optional hard cap that stops billable overage at 100 %."""
    if budgets.get_budget(db, principal.org_id) is not None:
        raise Conflict("this organization has a budget already; change it with PUT")
    _check_budget_currency(db, principal.org_id, body)
    budget = budgets.set_budget(db, runtime.clock, principal.org_id, body, actor=principal.actor)
    return _budget_out(budget)


@router.get("/orgs/{org_id}/budgets/{budget_id}", response_model=BudgetOut)
def get_budget(budget_id: str, principal: UsageRead, db: Db) -> BudgetOut:
    return _budget_out(_own_budget(db, principal.org_id, budget_id))


@router.put("/orgs/{org_id}/budgets/{budget_id}", response_model=BudgetOut)
def replace_budget(
    budget_id: str, body: BudgetIn, principal: BudgetWrite, db: Db, runtime: RuntimeDep
) -> BudgetOut:
    _own_budget(db, principal.org_id, budget_id)
    _check_budget_currency(db, principal.org_id, body)
    budget = budgets.set_budget(db, runtime.clock, principal.org_id, body, actor=principal.actor)
    return _budget_out(budget)


@router.delete("/orgs/{org_id}/budgets/{budget_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_budget(budget_id: str, principal: BudgetWrite, db: Db, runtime: RuntimeDep) -> Response:
    _own_budget(db, principal.org_id, budget_id)
    budgets.delete_budget(db, principal.org_id, runtime.clock, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/orgs/{org_id}/budgets/{budget_id}/alerts", response_model=list[BudgetAlertOut])
def list_budget_alerts(budget_id: str, principal: UsageRead, db: Db) -> list[BudgetAlertOut]:
    """The thresholds crossed, newest period first (threshold 0 is the hard cap)."""
    budget = _own_budget(db, principal.org_id, budget_id)
    return [
        BudgetAlertOut(
            period_start=a.period_start,
            threshold=a.threshold,
            amount=a.amount,
            budget_amount=a.budget_amount,
            currency=budget.currency,
            created_at=a.created_at,
        )
        for a in budgets.budget_alerts(db, budget.id)
    ]
