"""Console: monitoring. Open incidents and the checks that fail, an incident's updates with a
form to post one (or resolve it) and to hold it open, and maintenance windows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from starlette.responses import Response

from imhost.accounts.permissions import Access, Scope
from imhost.hosting.models import HostedService
from imhost.kit.errors import DomainError, InvalidInput
from imhost.monitoring import service as monitoring
from imhost.monitoring.models import (
    CheckState,
    IncidentStatus,
    MaintenanceWindow,
    ProbeCheck,
    Recurrence,
)
from imhost.monitoring.status import COMPONENTS
from imhost.web.deps import Db, Principal, RuntimeDep
from imhost.web.pages import Form, FormErrors, page_require, redirect, render, text, values_of

router = APIRouter(prefix="/console/monitoring", include_in_schema=False)

OpsRead = Annotated[
    Principal, Depends(page_require("hosting-admin", Access.READ, scope=Scope.STAFF))
]
OpsWrite = Annotated[
    Principal, Depends(page_require("hosting-admin", Access.WRITE, scope=Scope.STAFF))
]
HOME = "/console/monitoring"
STATUS_OPTIONS = [(s.value, s.value.capitalize()) for s in IncidentStatus]
RECURRENCE_OPTIONS = [("none", "Once"), ("daily", "Every day"), ("weekly", "Every week")]
MAINTENANCE_FIELDS = {"title", "subjects", "timezone", "local_start", "duration_minutes"}


def _subject_options(db: Db) -> list[tuple[str, str]]:
    options = [(f"component:{c}", monitoring.COMPONENT_NAMES[c]) for c in COMPONENTS]
    for service_id, domain in db.execute(
        select(HostedService.id, HostedService.domain).order_by(HostedService.domain).limit(500)
    ):
        options.append((f"service:{service_id}", domain))
    return options


def _home(
    request: Request,
    principal: Principal,
    db: Db,
    runtime: RuntimeDep,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
    checked: list[str] | None = None,
) -> Response:
    failing = db.scalars(
        select(ProbeCheck)
        .where(ProbeCheck.state == CheckState.DOWN.value)
        .order_by(ProbeCheck.state_since)
        .limit(200)
    ).all()
    windows = db.scalars(
        select(MaintenanceWindow)
        .where(MaintenanceWindow.cancelled.is_(False))
        .order_by(MaintenanceWindow.created_at.desc())
        .limit(50)
    ).all()
    return render(
        request,
        "console/monitoring.html",
        {
            "title": "Monitoring",
            "incidents": monitoring.open_incidents(db),
            "failing": failing,
            "label": lambda s: monitoring.subject_label(db, s),
            "windows": windows,
            "subject_options": _subject_options(db),
            "recurrence_options": RECURRENCE_OPTIONS,
            "checked": checked or [],
            "values": {"timezone": "UTC", "duration_minutes": "60", **(values or {})},
            "errors": errors or FormErrors(),
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Monitoring",
    )


@router.get("")
def monitoring_page(request: Request, principal: OpsRead, db: Db, runtime: RuntimeDep) -> Response:
    return _home(request, principal, db, runtime)


def _incident_page(
    request: Request,
    principal: Principal,
    db: Db,
    reference: str,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    incident = monitoring.get_incident(db, reference)
    return render(
        request,
        "console/incident.html",
        {
            "title": f"Incident {incident.reference}",
            "incident": incident,
            "subjects": [
                monitoring.subject_label(db, s) for s in monitoring.incident_subjects(db, incident)
            ],
            "updates": list(reversed(monitoring.incident_updates(db, incident))),
            "status_options": STATUS_OPTIONS,
            "values": {"status": incident.status, **(values or {})},
            "errors": errors or FormErrors(),
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Monitoring",
    )


@router.get("/incidents/{reference}")
def incident_page(reference: str, request: Request, principal: OpsRead, db: Db) -> Response:
    return _incident_page(request, principal, db, reference)


@router.post("/incidents/{reference}/updates")
def post_update(
    reference: str,
    request: Request,
    principal: OpsWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    incident = monitoring.get_incident(db, reference)
    try:
        monitoring.post_update(
            db,
            runtime.clock,
            incident,
            status=text(form, "status", max_length=20),
            body=text(form, "body", max_length=6000),
            actor=principal.actor,
        )
    except DomainError as exc:
        db.rollback()
        return _incident_page(
            request,
            principal,
            db,
            reference,
            values=values_of(form),
            errors=FormErrors.of(exc, {"status", "body"}),
            status=exc.status,
        )
    return redirect(request, f"{HOME}/incidents/{incident.reference}", "Update posted.")


@router.post("/incidents/{reference}/hold")
def hold(
    reference: str,
    request: Request,
    principal: OpsWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    incident = monitoring.get_incident(db, reference)
    held = text(form, "held", max_length=5) == "yes"
    try:
        monitoring.hold_incident(db, runtime.clock, incident, held=held, actor=principal.actor)
    except DomainError as exc:
        db.rollback()
        return _incident_page(
            request,
            principal,
            db,
            reference,
            errors=FormErrors(general=[exc.detail]),
            status=exc.status,
        )
    message = (
        "The incident stays open until you resolve it."
        if held
        else "The incident resolves itself once the service has stayed up."
    )
    return redirect(request, f"{HOME}/incidents/{incident.reference}", message)


def _local(raw: str) -> datetime:
    try:
        return datetime.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidInput(
            "Type the start as a date and time, such as 2026-03-01T02:00.", field="local_start"
        ) from None


def _minutes(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise InvalidInput(
            "Type the duration in whole minutes.", field="duration_minutes"
        ) from None


@router.post("/maintenance")
def schedule_maintenance(
    request: Request, principal: OpsWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    known = {value for value, _ in _subject_options(db)}
    subjects = [s for s in form.getlist("subjects") if isinstance(s, str) and s in known]
    try:
        window = monitoring.create_maintenance(
            db,
            runtime.clock,
            title=text(form, "title", max_length=200),
            description=text(form, "description", max_length=2000),
            subjects=subjects,
            timezone=text(form, "timezone", max_length=64),
            local_start=_local(text(form, "local_start", max_length=30)),
            duration_minutes=_minutes(text(form, "duration_minutes", max_length=10)),
            recurrence=text(form, "recurrence", max_length=10) or Recurrence.NONE.value,
            actor=principal.actor,
        )
    except DomainError as exc:
        db.rollback()
        return _home(
            request,
            principal,
            db,
            runtime,
            values=values_of(form),
            errors=FormErrors.of(exc, MAINTENANCE_FIELDS),
            status=exc.status,
            checked=subjects,
        )
    return redirect(request, HOME, f"Maintenance “{window.title}” scheduled.")
