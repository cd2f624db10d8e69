"""Console: SEPA direct debit. The creditor settings, collections waiting for export, the
pain.008 export (stored; downloading it again gives the same file), the camt.053 statement
import with its result, and the bank entries left for staff to assign by hand."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import Response

from imhost.accounts.permissions import Access, Scope
from imhost.billing.sepa import collections, exports, imports
from imhost.billing.sepa.camt053 import MAX_STATEMENT_BYTES, NOT_A_STATEMENT
from imhost.billing.sepa.identifiers import mask_iban
from imhost.billing.sepa.returns import return_reason_words
from imhost.billing.sepa.settings import creditor, update_creditor
from imhost.kit.errors import DomainError, InvalidInput
from imhost.kit.money import format_money
from imhost.web.deps import Db, Principal, RuntimeDep
from imhost.web.pages import (
    Form,
    FormErrors,
    page_require,
    redirect,
    render,
    text,
    values_of,
)

router = APIRouter(prefix="/console/sepa", include_in_schema=False)

BillingRead = Annotated[
    Principal, Depends(page_require("billing-admin", Access.READ, scope=Scope.STAFF))
]
BillingWrite = Annotated[
    Principal, Depends(page_require("billing-admin", Access.WRITE, scope=Scope.STAFF))
]

SETTINGS_FIELDS = {"creditor_name", "creditor_id", "iban", "bic", "pre_notification_days"}
EXPORT_FIELDS = {"up_to"}
HOME = "/console/sepa"

OUTCOME_WORDS = {
    "collected": "direct debit collected",
    "returned": "direct debit returned",
    "invoice_paid": "invoice paid",
    "unmatched": "to assign",
    "assigned": "assigned by hand",
    "ignored": "set aside",
}


def _page(
    request: Request,
    principal: Principal,
    db: Db,
    runtime: RuntimeDep,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    found = creditor(db)
    today = runtime.clock.now().date()
    default_up_to = today + timedelta(days=14)
    defaults = {
        "creditor_name": found.name,
        "creditor_id": found.creditor_id,
        "iban": found.iban,
        "bic": found.bic or "",
        "pre_notification_days": str(found.pre_notification_days),
        "up_to": default_up_to.isoformat(),
    }
    return render(
        request,
        "console/sepa.html",
        {
            "title": "Direct debit",
            "creditor": found,
            "queued": collections.list_collections(db, status="queued"),
            "exported": collections.list_collections(db, status="exported", limit=50),
            "failed": collections.list_collections(db, status="failed", limit=20),
            "preview": exports.preview_export(db, runtime.clock, default_up_to),
            "batches": exports.list_batches(db),
            "statements": imports.list_statements(db),
            "unmatched": imports.unmatched_entries(db),
            "outcome_words": OUTCOME_WORDS,
            "reason_words": return_reason_words,
            "mask": mask_iban,
            "values": {**defaults, **(values or {})},
            "errors": errors or FormErrors(),
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Direct debit",
    )


@router.get("")
def sepa_page(request: Request, principal: BillingRead, db: Db, runtime: RuntimeDep) -> Response:
    return _page(request, principal, db, runtime)


def _days(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise InvalidInput("Type a whole number of days.", field="pre_notification_days") from None


@router.post("/settings")
def save_settings(
    request: Request, principal: BillingWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    try:
        update_creditor(
            db,
            runtime.clock,
            creditor_name=text(form, "creditor_name", max_length=200),
            creditor_id=text(form, "creditor_id", max_length=64),
            iban=text(form, "iban", max_length=64),
            bic=text(form, "bic", max_length=20),
            pre_notification_days=_days(text(form, "pre_notification_days", max_length=10)),
            actor=principal.actor,
        )
    except DomainError as exc:
        db.rollback()
        return _page(
            request,
            principal,
            db,
            runtime,
            values=values_of(form),
            errors=FormErrors.of(exc, SETTINGS_FIELDS),
            status=exc.status,
        )
    return redirect(request, HOME, "Direct debit settings saved.")


@router.post("/queue")
def queue_due(request: Request, principal: BillingWrite, db: Db, runtime: RuntimeDep) -> Response:
    try:
        queued = collections.queue_due_collections(db, runtime.clock, actor=principal.actor)
    except DomainError as exc:
        db.rollback()
        return _page(
            request,
            principal,
            db,
            runtime,
            errors=FormErrors(general=[exc.detail]),
            status=exc.status,
        )
    if not queued:
        return redirect(request, HOME, "No open invoice is waiting for a direct debit.")
    return redirect(
        request,
        HOME,
        f"{len(queued)} debit{'s' if len(queued) != 1 else ''} announced to the customers.",
    )


def _date(raw: str) -> date:
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidInput("Type a date such as 2026-03-01.", field="up_to") from None


@router.post("/export")
def export(
    request: Request, principal: BillingWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    try:
        batch = exports.export_batch(
            db,
            runtime.clock,
            up_to=_date(text(form, "up_to", max_length=20)),
            exported_by=principal.actor.label,
            actor=principal.actor,
        )
    except DomainError as exc:
        db.rollback()
        return _page(
            request,
            principal,
            db,
            runtime,
            values=values_of(form),
            errors=FormErrors.of(exc, EXPORT_FIELDS),
            status=exc.status,
        )
    if batch is None:
        return redirect(request, HOME, "No debit is waiting for export up to that date.")
    return redirect(
        request,
        HOME,
        f"Exported {batch.count} debit{'s' if batch.count != 1 else ''} "
        f"({format_money(batch.control_sum, batch.currency)}). Download the file below and "
        "upload it to the bank.",
    )


@router.get("/batches/{batch_id}/file")
def batch_file(batch_id: str, principal: BillingRead, db: Db) -> Response:
    batch = exports.get_batch(db, batch_id[:64])
    return Response(
        batch.xml,
        media_type="application/xml",
        headers={"Content-Disposition": f'attachment; filename="{exports.batch_file_name(batch)}"'},
    )


@router.post("/statements")
async def upload_statement(
    request: Request, principal: BillingWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    upload = form.get("file")
    try:
        if not isinstance(upload, UploadFile):
            raise InvalidInput("Choose a camt.053 bank statement file.", field="file")
        data = await upload.read(MAX_STATEMENT_BYTES + 1)
        if len(data) > MAX_STATEMENT_BYTES:
            raise InvalidInput(f"{NOT_A_STATEMENT} The file is too large.", field="file")
        name = upload.filename or ""
        result = await run_in_threadpool(
            lambda: imports.import_statement(
                db,
                runtime.clock,
                data,
                file_name=name,
                imported_by=principal.actor.label,
                actor=principal.actor,
            )
        )
    except DomainError as exc:
        db.rollback()
        errors = FormErrors.of(exc, {"file"})
        status = exc.status
        return await run_in_threadpool(
            lambda: _page(request, principal, db, runtime, errors=errors, status=status)
        )
    statement_id = result.statement.id
    if result.already_imported:
        message = "This statement was imported before; nothing changed."
    else:
        message = f"Statement imported: {len(result.entries)} new entries."
        if result.seen_before:
            message += f" {result.seen_before} were in an earlier statement."
    return redirect(request, f"{HOME}/statements/{statement_id}", message)


def _statement_page(
    request: Request,
    principal: Principal,
    db: Db,
    statement_id: str,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    statement = imports.get_statement(db, statement_id[:64])
    entries = imports.statement_entries(db, statement.id)
    counts: dict[str, Any] = {}
    for entry in entries:
        counts[entry.outcome] = counts.get(entry.outcome, 0) + 1
    return render(
        request,
        "console/sepa_statement.html",
        {
            "title": f"Bank statement {statement.message_id}",
            "statement": statement,
            "entries": entries,
            "counts": counts,
            "outcome_words": OUTCOME_WORDS,
            "values": values or {},
            "errors": errors or FormErrors(),
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Direct debit",
    )


@router.get("/statements/{statement_id}")
def statement_page(request: Request, statement_id: str, principal: BillingRead, db: Db) -> Response:
    return _statement_page(request, principal, db, statement_id)


@router.post("/entries/{entry_id}/assign")
def assign(
    request: Request,
    entry_id: str,
    principal: BillingWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    entry = imports.get_entry(db, entry_id[:64])
    try:
        imports.assign_entry(
            db,
            runtime.clock,
            entry.id,
            text(form, "invoice", max_length=64),
            resolved_by=principal.actor.label,
            actor=principal.actor,
        )
    except DomainError as exc:
        db.rollback()
        return _statement_page(
            request,
            principal,
            db,
            entry.statement_id,
            values=values_of(form),
            errors=FormErrors(general=[exc.detail]),
            status=exc.status,
        )
    return redirect(
        request, f"{HOME}/statements/{entry.statement_id}", "Payment recorded on the invoice."
    )


@router.post("/entries/{entry_id}/ignore")
def set_aside(
    request: Request,
    entry_id: str,
    principal: BillingWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    entry = imports.get_entry(db, entry_id[:64])
    try:
        imports.ignore_entry(
            db,
            runtime.clock,
            entry.id,
            reason=text(form, "reason", max_length=500),
            resolved_by=principal.actor.label,
            actor=principal.actor,
        )
    except DomainError as exc:
        db.rollback()
        return _statement_page(
            request,
            principal,
            db,
            entry.statement_id,
            values=values_of(form),
            errors=FormErrors(general=[exc.detail]),
            status=exc.status,
        )
    return redirect(request, f"{HOME}/statements/{entry.statement_id}", "Entry set aside.")
