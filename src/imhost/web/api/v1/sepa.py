"""SEPA direct debit API: a customer's mandates (``/api/v1/orgs/{org_id}/billing/sepa/...``,
area "billing"), and the provider's side (``/api/v1/admin/billing/sepa/...``, staff area
"billing-admin"): creditor settings, collections, pain.008 exports, camt.053 imports."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from imhost.accounts.permissions import Access, Scope
from imhost.billing.sepa import collections, exports, imports, mandates
from imhost.billing.sepa.camt053 import MAX_STATEMENT_BYTES, NOT_A_STATEMENT
from imhost.billing.sepa.imports import ImportResult
from imhost.billing.sepa.models import SepaBatch, SepaStatement, SepaStatementEntry
from imhost.billing.sepa.schemas import (
    AssignIn,
    BatchOut,
    CollectionOut,
    CreditorIn,
    CreditorOut,
    EntryOut,
    ExportIn,
    MandateIn,
    MandateOut,
    MandateTextOut,
    SetAsideIn,
    StatementOut,
)
from imhost.billing.sepa.settings import Creditor, creditor, update_creditor
from imhost.kit.errors import InvalidInput
from imhost.web.deps import Db, Principal, RuntimeDep, require

router = APIRouter(tags=["sepa direct debit"])

BillingRead = Annotated[Principal, Depends(require("billing", Access.READ))]
BillingWrite = Annotated[Principal, Depends(require("billing", Access.WRITE))]
AdminRead = Annotated[Principal, Depends(require("billing-admin", Access.READ, scope=Scope.STAFF))]
AdminWrite = Annotated[
    Principal, Depends(require("billing-admin", Access.WRITE, scope=Scope.STAFF))
]

ORG = "/orgs/{org_id}/billing/sepa"
ADMIN = "/admin/billing/sepa"


# --- customer: mandates ---------------------------------------------------------------------


@router.get(ORG + "/mandate-text", response_model=MandateTextOut)
def mandate_text(principal: BillingRead, db: Db) -> MandateTextOut:
    """The mandate the customer accepts by giving one (creditor name and identifier in it)."""
    found = creditor(db)
    return MandateTextOut(
        creditor_name=found.name,
        creditor_id=found.creditor_id,
        available=found.ready,
        mandate_text=mandates.mandate_text(found),
    )


@router.get(ORG + "/mandates", response_model=list[MandateOut])
def list_mandates(principal: BillingRead, db: Db) -> list[MandateOut]:
    return [MandateOut.of(m) for m in mandates.list_mandates(db, principal.org_id)]


@router.post(ORG + "/mandates", response_model=MandateOut, status_code=201)
def give_mandate(
    body: MandateIn, principal: BillingWrite, db: Db, runtime: RuntimeDep
) -> MandateOut:
    """Give a SEPA Core mandate; an earlier active one is replaced."""
    mandate = mandates.sign_mandate(
        db,
        runtime.clock,
        principal.org_id,
        account_holder=body.account_holder,
        iban=body.iban,
        bic=body.bic,
        accepted=body.accept,
        signed_by=principal.actor.label,
        signed_from=principal.address or "unknown",
        actor=principal.actor,
    )
    return MandateOut.of(mandate)


@router.post(ORG + "/mandates/{mandate_id}/revoke", response_model=MandateOut)
def revoke_mandate(
    mandate_id: str, principal: BillingWrite, db: Db, runtime: RuntimeDep
) -> MandateOut:
    mandate = mandates.revoke_mandate(
        db,
        runtime.clock,
        principal.org_id,
        mandate_id[:64],
        revoked_by=principal.actor.label,
        actor=principal.actor,
    )
    return MandateOut.of(mandate)


@router.get(ORG + "/collections", response_model=list[CollectionOut])
def customer_collections(principal: BillingRead, db: Db) -> list[CollectionOut]:
    return [
        CollectionOut.model_validate(c)
        for c in collections.list_collections(db, organization_id=principal.org_id)
    ]


# --- staff: settings, collections, exports, statements -----------------------------------------


def _creditor_out(found: Creditor) -> CreditorOut:
    return CreditorOut(
        creditor_name=found.name,
        creditor_id=found.creditor_id,
        iban=found.iban,
        bic=found.bic,
        pre_notification_days=found.pre_notification_days,
        ready=found.ready,
    )


@router.get(ADMIN + "/settings", response_model=CreditorOut)
def get_settings(principal: AdminRead, db: Db) -> CreditorOut:
    return _creditor_out(creditor(db))


@router.put(ADMIN + "/settings", response_model=CreditorOut)
def put_settings(
    body: CreditorIn, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> CreditorOut:
    return _creditor_out(
        update_creditor(
            db,
            runtime.clock,
            creditor_name=body.creditor_name,
            creditor_id=body.creditor_id,
            iban=body.iban,
            bic=body.bic,
            pre_notification_days=body.pre_notification_days,
            actor=principal.actor,
        )
    )


@router.get(ADMIN + "/collections", response_model=list[CollectionOut])
def staff_collections(
    principal: AdminRead, db: Db, status: str = "", customer: str = ""
) -> list[CollectionOut]:
    return [
        CollectionOut.model_validate(c)
        for c in collections.list_collections(
            db, organization_id=customer[:32] or None, status=status[:16] or None
        )
    ]


@router.post(ADMIN + "/collections/queue", response_model=list[CollectionOut])
def queue_due(principal: AdminWrite, db: Db, runtime: RuntimeDep) -> list[CollectionOut]:
    """Announce a debit for every open invoice of a customer with a mandate (safe to repeat)."""
    return [
        CollectionOut.model_validate(c)
        for c in collections.queue_due_collections(db, runtime.clock, actor=principal.actor)
    ]


def _batch_out(batch: SepaBatch) -> BatchOut:
    return BatchOut(
        id=batch.id,
        message_id=batch.message_id,
        schema_name=batch.schema,
        up_to=batch.up_to,
        count=batch.count,
        control_sum=batch.control_sum,
        currency=batch.currency,
        exported_by=batch.exported_by,
        created_at=batch.created_at,
        file_url=f"/api/v1{ADMIN}/batches/{batch.id}/file",
    )


@router.post(
    ADMIN + "/batches",
    response_model=BatchOut,
    status_code=201,
    responses={204: {"description": "No debit waits for export up to that date"}},
)
def export_batch(
    body: ExportIn, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> BatchOut | Response:
    batch = exports.export_batch(
        db,
        runtime.clock,
        up_to=body.up_to,
        exported_by=principal.actor.label,
        actor=principal.actor,
    )
    if batch is None:
        return Response(status_code=204)
    return _batch_out(batch)


@router.get(ADMIN + "/batches", response_model=list[BatchOut])
def list_batches(principal: AdminRead, db: Db) -> list[BatchOut]:
    return [_batch_out(b) for b in exports.list_batches(db)]


@router.get(ADMIN + "/batches/{batch_id}/file", response_class=Response)
def batch_file(batch_id: str, principal: AdminRead, db: Db) -> Response:
    """The pain.008 file, byte for byte as first exported."""
    batch = exports.get_batch(db, batch_id[:64])
    return Response(
        batch.xml,
        media_type="application/xml",
        headers={"Content-Disposition": f'attachment; filename="{exports.batch_file_name(batch)}"'},
    )


def _statement_out(
    statement: SepaStatement, entries: list[SepaStatementEntry], result: ImportResult | None
) -> StatementOut:
    return StatementOut(
        id=statement.id,
        message_id=statement.message_id,
        statement_ids=statement.statement_ids,
        account_iban=statement.account_iban,
        imported_by=statement.imported_by,
        created_at=statement.created_at,
        already_imported=result.already_imported if result else False,
        seen_before=result.seen_before if result else 0,
        not_booked=result.not_booked if result else 0,
        entries=[EntryOut.model_validate(e) for e in entries],
    )


@router.post(
    ADMIN + "/statements",
    response_model=StatementOut,
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/xml": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def import_statement(
    request: Request, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> StatementOut:
    """Import a camt.053 statement sent as the request body (``application/xml``)."""
    data = await request.body()
    if len(data) > MAX_STATEMENT_BYTES:
        raise InvalidInput(f"{NOT_A_STATEMENT} The file is too large.", field="file")

    def run() -> StatementOut:
        result = imports.import_statement(
            db,
            runtime.clock,
            data,
            file_name=request.headers.get("x-file-name", "")[:200],
            imported_by=principal.actor.label,
            actor=principal.actor,
        )
        return _statement_out(result.statement, result.entries, result)

    return await run_in_threadpool(run)


@router.get(ADMIN + "/statements/{statement_id}", response_model=StatementOut)
def get_statement(statement_id: str, principal: AdminRead, db: Db) -> StatementOut:
    statement = imports.get_statement(db, statement_id[:64])
    return _statement_out(statement, imports.statement_entries(db, statement.id), None)


@router.get(ADMIN + "/entries/unmatched", response_model=list[EntryOut])
def unmatched(principal: AdminRead, db: Db) -> list[EntryOut]:
    return [EntryOut.model_validate(e) for e in imports.unmatched_entries(db)]


@router.post(ADMIN + "/entries/{entry_id}/assign", response_model=EntryOut)
def assign_entry(
    entry_id: str, body: AssignIn, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> EntryOut:
    entry = imports.assign_entry(
        db,
        runtime.clock,
        entry_id[:64],
        body.invoice,
        resolved_by=principal.actor.label,
        actor=principal.actor,
    )
    return EntryOut.model_validate(entry)


@router.post(ADMIN + "/entries/{entry_id}/set-aside", response_model=EntryOut)
def set_aside(
    entry_id: str, body: SetAsideIn, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> EntryOut:
    entry = imports.ignore_entry(
        db,
        runtime.clock,
        entry_id[:64],
        reason=body.reason,
        resolved_by=principal.actor.label,
        actor=principal.actor,
    )
    return EntryOut.model_validate(entry)
