"""custom domains and their DNS verification

Revision ID: 2c495091e1da
Revises: 5b0e7c1d2a94
Create Date: 2026-12-03 09:24:55.473311
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import imhost.db.types

revision: str = "2c495091e1da"
down_revision: str | None = "5b0e7c1d2a94"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "custom_domains",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("service_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("self_hosted", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("check_count", sa.Integer(), nullable=False),
        sa.Column("failed_checks", sa.Integer(), nullable=False),
        sa.Column("last_checked_at", imhost.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("next_check_at", imhost.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("verified_at", imhost.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_custom_domains_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["hosted_services.id"],
            name=op.f("fk_custom_domains_service_id_hosted_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custom_domains")),
        sa.UniqueConstraint("name", name=op.f("uq_custom_domains_name")),
    )
    with op.batch_alter_table("custom_domains", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_custom_domains_next_check_at"), ["next_check_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_custom_domains_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_custom_domains_service_id"), ["service_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_custom_domains_status"), ["status"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("custom_domains", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_custom_domains_status"))
        batch_op.drop_index(batch_op.f("ix_custom_domains_service_id"))
        batch_op.drop_index(batch_op.f("ix_custom_domains_organization_id"))
        batch_op.drop_index(batch_op.f("ix_custom_domains_next_check_at"))

    op.drop_table("custom_domains")
