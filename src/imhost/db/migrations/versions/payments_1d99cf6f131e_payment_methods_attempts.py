"""payment methods, gateway customers, payment attempts

Saved payment methods (the gateway's id and a label, one default per organization), the
organization's customer record at each gateway, and every try to collect an invoice through
a gateway, unique on its idempotency key so that nothing is charged twice.

Revision ID: 1d99cf6f131e
Revises: 3e1f0c2a9b7d
Create Date: 2026-12-03 08:18:54.403356
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import imhost.db.types

revision: str = "1d99cf6f131e"
down_revision: str | None = "3e1f0c2a9b7d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_customers",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("gateway", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_gateway_customers_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_customers")),
        sa.UniqueConstraint(
            "organization_id", "gateway", name=op.f("uq_gateway_customers_organization_id_gateway")
        ),
    )
    with op.batch_alter_table("gateway_customers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_gateway_customers_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "payment_methods",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("gateway", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("customer_external_id", sa.String(length=128), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("removed_at", imhost.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_payment_methods_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_methods")),
        sa.UniqueConstraint(
            "gateway", "external_id", name=op.f("uq_payment_methods_gateway_external_id")
        ),
    )
    with op.batch_alter_table("payment_methods", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_methods_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "payment_attempts",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("invoice_id", sa.String(length=32), nullable=False),
        sa.Column("payment_method_id", sa.String(length=32), nullable=True),
        sa.Column("gateway", sa.String(length=32), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=True),
        sa.Column("amount", imhost.db.types.Amount(precision=38, scale=12), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("failure_message", sa.String(length=300), nullable=True),
        sa.Column("instructions", sa.Text(), nullable=True),
        sa.Column("redirect_url", sa.String(length=2000), nullable=True),
        sa.Column("payment_id", sa.String(length=32), nullable=True),
        sa.Column("updated_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_payment_attempts_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_payment_attempts_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["payment_method_id"],
            ["payment_methods.id"],
            name=op.f("fk_payment_attempts_payment_method_id_payment_methods"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_attempts")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_payment_attempts_idempotency_key")),
    )
    with op.batch_alter_table("payment_attempts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_payment_attempts_gateway_external", ["gateway", "external_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_payment_attempts_invoice_id"), ["invoice_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_payment_attempts_organization_id"), ["organization_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("payment_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_attempts_organization_id"))
        batch_op.drop_index(batch_op.f("ix_payment_attempts_invoice_id"))
        batch_op.drop_index("ix_payment_attempts_gateway_external")

    op.drop_table("payment_attempts")
    with op.batch_alter_table("payment_methods", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_methods_organization_id"))

    op.drop_table("payment_methods")
    with op.batch_alter_table("gateway_customers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_customers_organization_id"))

    op.drop_table("gateway_customers")
