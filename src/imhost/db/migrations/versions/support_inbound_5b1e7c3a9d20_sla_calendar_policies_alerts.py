"""support SLA: business calendar, policies per support tier, alerts sent

Revision ID: 5b1e7c3a9d20
Revises: 5d1c3e8f2a47
Create Date: 2026-12-03 09:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import imhost.db.types

revision: str = "5b1e7c3a9d20"
down_revision: str | None = "5d1c3e8f2a47"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "support_sla_calendar",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("weekly", sa.JSON(), nullable=False),
        sa.Column("holidays", sa.JSON(), nullable=False),
        sa.Column("updated_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_sla_calendar")),
    )
    op.create_table(
        "support_sla_policies",
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("first_response_minutes", sa.Integer(), nullable=False),
        sa.Column("resolution_minutes", sa.Integer(), nullable=False),
        sa.Column("warn_before_minutes", sa.Integer(), nullable=False),
        sa.Column("updated_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tier", name=op.f("pk_support_sla_policies")),
    )
    op.create_table(
        "support_sla_alerts",
        sa.Column("ticket_id", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("due_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_sla_alerts")),
        sa.UniqueConstraint("ticket_id", "target", "kind", "due_at", name="uq_support_sla_alerts"),
    )
    op.create_index(
        op.f("ix_support_sla_alerts_ticket_id"), "support_sla_alerts", ["ticket_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_support_sla_alerts_ticket_id"), table_name="support_sla_alerts")
    op.drop_table("support_sla_alerts")
    op.drop_table("support_sla_policies")
    op.drop_table("support_sla_calendar")
