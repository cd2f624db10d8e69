"""An organization's data export: one ZIP of JSON and CSV files (and the invoices' PDFs).

What it holds (``README.txt`` in the archive says the same): the organization and its
members; the hosted services and their XMPP accounts (never password hashes or keys); the
invoices with their lines, and their PDFs; payments and the account credit ledger; usage
per calendar month (the billable quantities, as invoices count them); the audit log.

The right of access and to data portability (GDPR Art. 15 and 20) asks for a "structured,
commonly used and machine-readable format": JSON for the nested records, CSV for the tables.
Every download is audited (``org.data_exported``).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost.accounts import audit
from imhost.accounts import service as accounts
from imhost.accounts.audit import Actor, AuditAction
from imhost.accounts.models import AuditEvent, Organization
from imhost.billing import service as billing
from imhost.billing.models import Invoice, InvoiceStatus
from imhost.billing.render import render_invoice_pdf
from imhost.hosting import service as hosting
from imhost.hosting.models import XmppAccount
from imhost.kit.clock import Clock
from imhost.metering.aggregate import billable_quantities_many

# The PDFs of this many invoices at most (the newest); every invoice is in invoices.json.
MAX_PDFS = 240
# Usage months at most (ten years).
MAX_MONTHS = 120

README = """Data export of {name} ({slug}), made {at} UTC.

organization.json   the organization: name, country, tax id, billing e-mail, status
members.csv         the people with access, their role and when they joined
services.json       the hosted XMPP services, their domain, status and limits
xmpp_accounts.csv   the XMPP accounts (no password hashes or keys are exported)
invoices.json       every issued invoice with its lines (amounts are exact decimals)
invoices.csv        the same invoices, one line each
invoices/*.pdf      the invoices as sent (the newest {max_pdfs})
payments.csv        payments received and taken from account credit
credit_ledger.csv   every change of the account credit
usage_by_month.csv  usage per calendar month, as invoices count it
audit_log.csv       who did what and when in the organization

Times are UTC in ISO 8601. Money is in the currency named on each row.
"""


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else _value(v) for v in row])
    return out.getvalue().encode("utf-8")


def _json(data: Any) -> bytes:
    return json.dumps(data, default=_value, indent=2, ensure_ascii=False).encode("utf-8")


def _months(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    month = start.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while month < end and len(out) < MAX_MONTHS:
        following = (month + timedelta(days=32)).replace(day=1)
        out.append((month, min(following, end)))
        month = following
    return out[-MAX_MONTHS:]


def export_file_name(org: Organization, now: datetime) -> str:
    return f"{org.slug}-data-{now:%Y-%m-%d}.zip"


def build_export(session: Session, clock: Clock, org: Organization, *, actor: Actor) -> bytes:
    """The ZIP of everything the organization's data is; audited as downloaded by ``actor``."""
    now = clock.now()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(
            "README.txt",
            README.format(
                name=org.name, slug=org.slug, at=now.strftime("%Y-%m-%d %H:%M"), max_pdfs=MAX_PDFS
            ),
        )
        z.writestr(
            "organization.json",
            _json(
                {
                    "id": org.id,
                    "name": org.name,
                    "slug": org.slug,
                    "status": org.status,
                    "status_reason": org.status_reason,
                    "country": org.country,
                    "tax_id": org.tax_id,
                    "billing_email": org.billing_email,
                    "require_mfa": org.require_mfa,
                    "created_at": org.created_at,
                }
            ),
        )
        z.writestr(
            "members.csv",
            _csv(
                ["email", "name", "role", "joined_at", "last_active_at"],
                (
                    (u.email, u.name, m.role, m.created_at, m.last_active_at)
                    for m, u in accounts.list_members(session, org.id)
                ),
            ),
        )
        services = hosting.services_of(session, org.id)
        z.writestr(
            "services.json",
            _json(
                [
                    {
                        "domain": s.domain,
                        "status": s.status,
                        "status_reason": s.status_reason,
                        "max_accounts": s.max_accounts,
                        "max_connections": s.max_connections,
                        "storage_mb": s.storage_mb,
                        "created_at": s.created_at,
                    }
                    for s in services
                ]
            ),
        )
        account_rows: list[tuple[Any, ...]] = []
        for s in services:
            for a in session.scalars(
                select(XmppAccount)
                .where(XmppAccount.service_id == s.id)
                .order_by(XmppAccount.localpart)
            ):
                account_rows.append(
                    (
                        f"{a.localpart}@{s.domain}",
                        a.name,
                        "yes" if a.disabled else "no",
                        a.created_at,
                        a.last_login_at,
                        a.password_changed_at,
                    )
                )
        z.writestr(
            "xmpp_accounts.csv",
            _csv(
                [
                    "address",
                    "name",
                    "disabled",
                    "created_at",
                    "last_login_at",
                    "password_changed_at",
                ],
                account_rows,
            ),
        )
        invoices = list(
            session.scalars(
                select(Invoice)
                .where(
                    Invoice.organization_id == org.id,
                    Invoice.status != InvoiceStatus.DRAFT.value,
                )
                .order_by(Invoice.issued_at, Invoice.id)
            )
        )
        z.writestr("invoices.json", _json([_invoice(session, i) for i in invoices]))
        z.writestr(
            "invoices.csv",
            _csv(
                [
                    "number",
                    "status",
                    "currency",
                    "issued_at",
                    "due_at",
                    "paid_at",
                    "subtotal",
                    "tax_total",
                    "total",
                    "amount_paid",
                    "amount_credited",
                    "amount_due",
                ],
                (
                    (
                        i.number,
                        i.status,
                        i.currency,
                        i.issued_at,
                        i.due_at,
                        i.paid_at,
                        i.subtotal,
                        i.tax_total,
                        i.total,
                        i.amount_paid,
                        i.amount_credited,
                        i.amount_due,
                    )
                    for i in invoices
                ),
            ),
        )
        for invoice in invoices[-MAX_PDFS:]:
            z.writestr(f"invoices/{invoice.number}.pdf", render_invoice_pdf(session, invoice))
        z.writestr(
            "payments.csv",
            _csv(
                [
                    "received_at",
                    "amount",
                    "currency",
                    "method",
                    "reference",
                    "invoice_number",
                    "refunded_amount",
                ],
                (
                    (
                        p.received_at,
                        p.amount,
                        p.currency,
                        p.method,
                        p.reference,
                        _number_of(invoices, p.invoice_id),
                        p.refunded_amount,
                    )
                    for p in billing.list_payments(session, org.id)
                ),
            ),
        )
        z.writestr(
            "credit_ledger.csv",
            _csv(
                ["at", "amount", "currency", "kind", "description"],
                (
                    (e.created_at, e.amount, e.currency, e.kind, e.description)
                    for e in billing.credit_history(session, org.id)
                ),
            ),
        )
        z.writestr("usage_by_month.csv", _usage(session, org, now))
        z.writestr(
            "audit_log.csv",
            _csv(
                ["at", "action", "actor", "target_type", "target", "address", "details"],
                (
                    (
                        e.at,
                        e.action,
                        e.actor_label,
                        e.target_type,
                        e.target_label,
                        e.address,
                        json.dumps(e.details, default=_value, ensure_ascii=False),
                    )
                    for e in session.scalars(
                        select(AuditEvent)
                        .where(AuditEvent.organization_id == org.id)
                        .order_by(AuditEvent.at, AuditEvent.id)
                    )
                ),
            ),
        )
    audit.record(
        session,
        clock,
        AuditAction.ORG_DATA_EXPORTED,
        actor=actor,
        organization_id=org.id,
        target_type="organization",
        target_id=org.id,
        target_label=org.name,
        invoices=len(invoices),
        xmpp_accounts=len(account_rows),
    )
    return buffer.getvalue()


def _number_of(invoices: list[Invoice], invoice_id: str | None) -> str | None:
    for i in invoices:
        if i.id == invoice_id:
            return i.number
    return None


def _invoice(session: Session, invoice: Invoice) -> dict[str, Any]:
    return {
        "number": invoice.number,
        "status": invoice.status,
        "kind": invoice.kind,
        "currency": invoice.currency,
        "period_start": invoice.period_start,
        "period_end": invoice.period_end,
        "issued_at": invoice.issued_at,
        "due_at": invoice.due_at,
        "paid_at": invoice.paid_at,
        "voided_at": invoice.voided_at,
        "subtotal": invoice.subtotal,
        "tax_total": invoice.tax_total,
        "total": invoice.total,
        "amount_paid": invoice.amount_paid,
        "amount_credited": invoice.amount_credited,
        "amount_due": invoice.amount_due,
        "customer_name": invoice.customer_name,
        "customer_country": invoice.customer_country,
        "customer_tax_id": invoice.customer_tax_id,
        "lines": [
            {
                "description": line.description,
                "calculation": line.calculation,
                "quantity": line.quantity,
                "amount": line.amount,
                "kind": line.kind,
            }
            for line in billing.invoice_lines(session, invoice.id)
        ],
    }


def _usage(session: Session, org: Organization, now: datetime) -> bytes:
    months = _months(org.created_at, now)
    quantities = billable_quantities_many(session, [(org.id, s, e) for s, e in months])
    rows = []
    for (start, end), per_metric in zip(months, quantities, strict=True):
        for metric, quantity in sorted(per_metric.items()):
            rows.append((start.strftime("%Y-%m"), start, end, metric, quantity))
    return _csv(["month", "from", "until", "metric", "quantity"], rows)


def exported_since(session: Session, organization_id: str, since: datetime) -> bool:
    """Whether the organization's data was exported at ``since`` or later."""
    return (
        session.scalar(
            select(AuditEvent.id)
            .where(
                AuditEvent.organization_id == organization_id,
                AuditEvent.action == AuditAction.ORG_DATA_EXPORTED.value,
                AuditEvent.at >= since,
            )
            .limit(1)
        )
        is not None
    )
