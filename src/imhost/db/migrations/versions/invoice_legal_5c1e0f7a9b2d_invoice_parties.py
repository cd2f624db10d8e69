"""invoices that are legal documents: seller and customer details, VAT category

The provider's billing profile gains its postcode, city, trade register number and contact
e-mail (street lines stay in ``address``); customers gain their billing details (name,
address, invoice e-mail); every invoice keeps what it was issued with (seller, customer
address, EN 16931 VAT category and rate), and every line whether it is taxable.

Revision ID: 5c1e0f7a9b2d
Revises: 4b7e2a91c0d3
Create Date: 2026-12-03 08:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import imhost.db.types

revision: str = "5c1e0f7a9b2d"
down_revision: str | None = "4b7e2a91c0d3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "billing_customer_details",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("postcode", sa.String(length=16), nullable=False),
        sa.Column("city", sa.String(length=100), nullable=False),
        sa.Column("invoice_email", sa.String(length=320), nullable=True),
        sa.Column("updated_at", imhost.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_billing_customer_details_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_customer_details")),
        sa.UniqueConstraint(
            "organization_id", name=op.f("uq_billing_customer_details_organization_id")
        ),
    )
    with op.batch_alter_table("billing_profiles", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("postcode", sa.String(length=16), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("city", sa.String(length=100), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("registration_number", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("contact_email", sa.String(length=320), nullable=True))
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seller", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("customer_address", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("tax_category", sa.String(length=2), nullable=True))
        batch_op.add_column(
            sa.Column("tax_percent", imhost.db.types.Amount(precision=38, scale=12), nullable=True)
        )
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("taxable", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    # What was known already: the credit carried to the account and late fees are untaxed.
    op.execute(
        "UPDATE invoice_lines SET taxable = false WHERE kind IN ('carried_to_credit', "
        "'late_fee', 'tax')"
    )


def downgrade() -> None:
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.drop_column("taxable")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_column("tax_percent")
        batch_op.drop_column("tax_category")
        batch_op.drop_column("customer_address")
        batch_op.drop_column("seller")
    with op.batch_alter_table("billing_profiles", schema=None) as batch_op:
        batch_op.drop_column("contact_email")
        batch_op.drop_column("registration_number")
        batch_op.drop_column("city")
        batch_op.drop_column("postcode")
    op.drop_table("billing_customer_details")
