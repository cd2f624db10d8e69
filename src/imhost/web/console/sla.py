"""Console: SLA settings (``/console/sla``): the business calendar (time zone, weekly hours,
holidays) and the targets of each support tier. Reading needs ``support-admin`` read,
changing it ``support-admin`` write; changes are audited (``imhost.support.sla_service``)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import Response

from imhost.accounts.permissions import Access, Scope
from imhost.kit.errors import DomainError, InvalidInput
from imhost.kit.text import first_control_character
from imhost.support import sla_service
from imhost.support.sla import WEEKDAYS, format_weekly
from imhost.web.deps import Db, Principal, RuntimeDep
from imhost.web.pages import Form, FormErrors, page_require, redirect, render, text

router = APIRouter(prefix="/console/sla", include_in_schema=False)

SlaRead = Annotated[
    Principal, Depends(page_require("support-admin", Access.READ, scope=Scope.STAFF))
]
SlaWrite = Annotated[
    Principal, Depends(page_require("support-admin", Access.WRITE, scope=Scope.STAFF))
]
Tier = Annotated[str, PathParam(min_length=1, max_length=32)]

SECTION = "SLA"
CALENDAR_FIELDS = {"timezone", "holidays", *WEEKDAYS}
POLICY_FIELDS = {"first_response", "resolution", "warn_before"}


def _hours(value: Decimal) -> str:
    return f"{value:f}".rstrip("0").rstrip(".") if "." in f"{value:f}" else f"{value:f}"


def _calendar_values(db: Session) -> dict[str, str]:
    calendar = sla_service.load_calendar(db)
    values = dict(format_weekly(calendar.weekly))
    values["timezone"] = calendar.timezone
    values["holidays"] = "\n".join(sorted(d.isoformat() for d in calendar.holidays))
    return values


def _policy_values(db: Session) -> dict[str, dict[str, str]]:
    out = {}
    for tier, policy in sla_service.load_policies(db).items():
        out[tier] = {
            "first_response": _hours(Decimal(policy.first_response.total_seconds()) / 3600),
            "resolution": _hours(Decimal(policy.resolution.total_seconds()) / 3600),
            "warn_before": str(int(policy.warn_before.total_seconds() // 60)),
        }
    return out


def _page(
    request: Request,
    principal: Principal,
    db: Db,
    *,
    calendar: dict[str, str] | None = None,
    calendar_errors: FormErrors | None = None,
    policies: dict[str, dict[str, str]] | None = None,
    policy_errors: dict[str, FormErrors] | None = None,
    error: DomainError | None = None,
) -> Response:
    return render(
        request,
        "console/sla.html",
        {
            "title": "SLA settings",
            "weekdays": WEEKDAYS,
            "calendar": calendar or _calendar_values(db),
            "calendar_errors": calendar_errors or FormErrors(),
            "policies": policies or _policy_values(db),
            "policy_errors": policy_errors or {},
        },
        principal=principal,
        db=db,
        section=SECTION,
        error=error,
    )


@router.get("")
def settings(request: Request, principal: SlaRead, db: Db) -> Response:
    return _page(request, principal, db)


def _multiline(form: FormData, name: str, max_length: int = 10_000) -> str:
    value = form.get(name, "")
    typed = str(value)[:max_length] if isinstance(value, str) else ""
    if first_control_character(typed, multiline=True) is not None:
        raise InvalidInput("This field must not contain invisible control characters.", field=name)
    return typed


@router.post("/calendar")
def save_calendar(
    request: Request, principal: SlaWrite, db: Db, runtime: RuntimeDep, form: Form
) -> Response:
    values: dict[str, str] = {}
    try:
        values = {day: text(form, day, max_length=200) for day in WEEKDAYS}
        values["timezone"] = text(form, "timezone", max_length=64)
        values["holidays"] = _multiline(form, "holidays")
        sla_service.save_calendar(
            db,
            runtime.clock,
            timezone=values["timezone"],
            weekly={day: values[day] for day in WEEKDAYS},
            holidays=values["holidays"],
            actor=principal.actor,
        )
    except DomainError as exc:
        return _page(
            request,
            principal,
            db,
            calendar=values or None,
            calendar_errors=FormErrors.of(exc, CALENDAR_FIELDS),
            error=exc,
        )
    return redirect(request, "/console/sla", "Business calendar saved.")


def _minutes(form: FormData, name: str, label: str, *, unit: int) -> int:
    raw = text(form, name, max_length=20).strip()
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise InvalidInput(f"{label} must be a number.", field=name) from None
    if not value.is_finite() or value < 0:
        raise InvalidInput(f"{label} must be a number of 0 or more.", field=name)
    return int(value * unit)


@router.post("/policies/{tier}")
def save_policy(
    request: Request, tier: Tier, principal: SlaWrite, db: Db, runtime: RuntimeDep, form: Form
) -> Response:
    policies = _policy_values(db)
    if tier not in policies:
        raise InvalidInput("There is no such support tier.")
    typed = {name: str(form.get(name, ""))[:20] for name in POLICY_FIELDS}
    try:
        sla_service.save_policy(
            db,
            runtime.clock,
            tier=tier,
            first_response_minutes=_minutes(form, "first_response", "First response", unit=60),
            resolution_minutes=_minutes(form, "resolution", "Resolution", unit=60),
            warn_before_minutes=_minutes(form, "warn_before", "Warning", unit=1),
            actor=principal.actor,
        )
    except DomainError as exc:
        policies[tier] = typed
        return _page(
            request,
            principal,
            db,
            policies=policies,
            policy_errors={tier: FormErrors.of(exc, POLICY_FIELDS)},
            error=exc,
        )
    return redirect(request, "/console/sla", f"Targets of the {tier} tier saved.")
