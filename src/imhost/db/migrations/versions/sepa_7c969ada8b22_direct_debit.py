"""sepa direct debit: mandates, collections, batches, statements

The creditor's settings, customers' SEPA Core mandates, one collection per invoice and
attempt, the exported pain.008 batches (their bytes kept) and the imported camt.053
statements with one row per bank transaction (unique on the bank's reference).

Revision ID: 7c969ada8b22
Revises: 285d84509e36
Create Date: 2026-12-03 08:21:13.737725
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import imhost.db.types

revision: str = "7c969ada8b22"
down_revision: str | None = "285d84509e36"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sepa_batches",
        sa.Column("message_id", sa.String(length=35), nullable=False),
        sa.Column("export_key", sa.String(length=128), nullable=False),
        sa.Column("schema", sa.String(length=32), nullable=False),
        sa.Column("up_to", sa.Date(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("control_sum", imhost.db.types.Amount(precision=38, scale=12), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("xml", sa.LargeBinary(), nullable=False),
        sa.Column("exported_by", sa.String(length=320), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sepa_batches")),
        sa.UniqueConstraint("export_key", name=op.f("uq_sepa_batches_export_key")),
        sa.UniqueConstraint("message_id", name=op.f("uq_sepa_batches_message_id")),
    )
    op.create_table(
        "sepa_settings",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("creditor_name", sa.String(length=70), nullable=False),
        sa.Column("creditor_id", sa.String(length=35), nullable=False),
        sa.Column("creditor_iban", sa.String(length=34), nullable=False),
        sa.Column("creditor_bic", sa.String(length=11), nullable=True),
        sa.Column("pre_notification_days", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sepa_settings")),
        sa.UniqueConstraint("key", name=op.f("uq_sepa_settings_key")),
    )
    op.create_table(
        "sepa_statements",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=35), nullable=False),
        sa.Column("statement_ids", sa.String(length=500), nullable=False),
        sa.Column("account_iban", sa.String(length=34), nullable=True),
        sa.Column("file_name", sa.String(length=200), nullable=False),
        sa.Column("imported_by", sa.String(length=320), nullable=False),
        sa.Column("entry_count", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sepa_statements")),
        sa.UniqueConstraint("digest", name=op.f("uq_sepa_statements_digest")),
    )
    op.create_table(
        "sepa_mandates",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=35), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("account_holder", sa.String(length=70), nullable=False),
        sa.Column("iban", sa.String(length=34), nullable=False),
        sa.Column("bic", sa.String(length=11), nullable=True),
        sa.Column("creditor_name", sa.String(length=70), nullable=False),
        sa.Column("creditor_id", sa.String(length=35), nullable=False),
        sa.Column("mandate_text", sa.Text(), nullable=False),
        sa.Column("signed_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("signed_by", sa.String(length=320), nullable=False),
        sa.Column("signed_from", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", imhost.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=320), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_sepa_mandates_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sepa_mandates")),
        sa.UniqueConstraint("reference", name=op.f("uq_sepa_mandates_reference")),
    )
    with op.batch_alter_table("sepa_mandates", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sepa_mandates_org_status", ["organization_id", "status"], unique=False
        )

    op.create_table(
        "sepa_statement_entries",
        sa.Column("statement_id", sa.String(length=32), nullable=False),
        sa.Column("bank_reference", sa.String(length=200), nullable=False),
        sa.Column("booking_date", sa.Date(), nullable=True),
        sa.Column("direction", sa.String(length=4), nullable=False),
        sa.Column("amount", imhost.db.types.Amount(precision=38, scale=12), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("end_to_end_id", sa.String(length=35), nullable=True),
        sa.Column("return_reason", sa.String(length=8), nullable=True),
        sa.Column("counterparty", sa.String(length=140), nullable=False),
        sa.Column("remittance", sa.String(length=500), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("collection_id", sa.String(length=32), nullable=True),
        sa.Column("invoice_id", sa.String(length=32), nullable=True),
        sa.Column("payment_id", sa.String(length=32), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("resolved_by", sa.String(length=320), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["statement_id"],
            ["sepa_statements.id"],
            name=op.f("fk_sepa_statement_entries_statement_id_sepa_statements"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sepa_statement_entries")),
        sa.UniqueConstraint(
            "bank_reference", name=op.f("uq_sepa_statement_entries_bank_reference")
        ),
    )
    with op.batch_alter_table("sepa_statement_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sepa_statement_entries_invoice_id"), ["invoice_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_sepa_statement_entries_statement_id"), ["statement_id"], unique=False
        )

    op.create_table(
        "sepa_collections",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("invoice_id", sa.String(length=32), nullable=False),
        sa.Column("mandate_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("end_to_end_id", sa.String(length=35), nullable=False),
        sa.Column("amount", imhost.db.types.Amount(precision=38, scale=12), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("sequence_type", sa.String(length=4), nullable=False),
        sa.Column("collection_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("batch_id", sa.String(length=32), nullable=True),
        sa.Column("payment_id", sa.String(length=32), nullable=True),
        sa.Column("return_reason", sa.String(length=8), nullable=True),
        sa.Column("settled_at", imhost.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["sepa_batches.id"],
            name=op.f("fk_sepa_collections_batch_id_sepa_batches"),
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_sepa_collections_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["mandate_id"],
            ["sepa_mandates.id"],
            name=op.f("fk_sepa_collections_mandate_id_sepa_mandates"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_sepa_collections_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sepa_collections")),
        sa.UniqueConstraint("end_to_end_id", name=op.f("uq_sepa_collections_end_to_end_id")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_sepa_collections_idempotency_key")),
    )
    with op.batch_alter_table("sepa_collections", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sepa_collections_batch_id"), ["batch_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_sepa_collections_mandate_id"), ["mandate_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_sepa_collections_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(
            "ix_sepa_collections_status_date", ["status", "collection_date"], unique=False
        )
        batch_op.create_index(
            "uq_sepa_collections_invoice_attempt", ["invoice_id", "attempt"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("sepa_collections", schema=None) as batch_op:
        batch_op.drop_index("uq_sepa_collections_invoice_attempt")
        batch_op.drop_index("ix_sepa_collections_status_date")
        batch_op.drop_index(batch_op.f("ix_sepa_collections_organization_id"))
        batch_op.drop_index(batch_op.f("ix_sepa_collections_mandate_id"))
        batch_op.drop_index(batch_op.f("ix_sepa_collections_batch_id"))

    op.drop_table("sepa_collections")
    with op.batch_alter_table("sepa_statement_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sepa_statement_entries_statement_id"))
        batch_op.drop_index(batch_op.f("ix_sepa_statement_entries_invoice_id"))

    op.drop_table("sepa_statement_entries")
    with op.batch_alter_table("sepa_mandates", schema=None) as batch_op:
        batch_op.drop_index("ix_sepa_mandates_org_status")

    op.drop_table("sepa_mandates")
    op.drop_table("sepa_statements")
    op.drop_table("sepa_settings")
    op.drop_table("sepa_batches")
