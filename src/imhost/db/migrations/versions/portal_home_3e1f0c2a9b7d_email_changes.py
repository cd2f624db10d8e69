"""email changes: a new address applies only when its confirmation link is opened

Revision ID: 3e1f0c2a9b7d
Revises: 5c1e0f7a9b2d
Create Date: 2026-12-03 08:25:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import imhost.db.types

revision: str = "3e1f0c2a9b7d"
down_revision: str | None = "5c1e0f7a9b2d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "email_changes",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("old_email", sa.String(length=320), nullable=False),
        sa.Column("new_email", sa.String(length=320), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("cancel_token_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("used_at", imhost.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", imhost.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_email_changes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_changes")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_email_changes_token_hash")),
        sa.UniqueConstraint("cancel_token_hash", name=op.f("uq_email_changes_cancel_token_hash")),
    )
    with op.batch_alter_table("email_changes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_email_changes_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("email_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_email_changes_user_id"))
    op.drop_table("email_changes")
