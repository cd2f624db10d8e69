"""group chat: persistent XEP-0045 rooms and the plan limits of rooms

Persistent rooms of each service's conference service (``xmpp_rooms``), and two limits on
plan versions and services: rooms at once (``max_rooms``) and people in one room
(``max_room_occupants``). Existing plans and services get no limit (NULL).

Revision ID: 4b7e2a91c0d3
Revises: 7c969ada8b22
Create Date: 2026-12-03 08:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import imhost.db.types

revision: str = "4b7e2a91c0d3"
down_revision: str | None = "7c969ada8b22"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "xmpp_rooms",
        sa.Column("service_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=1023), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("affiliations", sa.JSON(), nullable=False),
        sa.Column("nicks", sa.JSON(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("subject_by", sa.String(length=1023), nullable=False),
        sa.Column("updated_at", imhost.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["hosted_services.id"],
            name=op.f("fk_xmpp_rooms_service_id_hosted_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_xmpp_rooms")),
        sa.UniqueConstraint("service_id", "name", name=op.f("uq_xmpp_rooms_service_id_name")),
    )
    with op.batch_alter_table("xmpp_rooms", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_xmpp_rooms_service_id"), ["service_id"], unique=False)
    for table in ("catalog_plan_versions", "hosted_services"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("max_rooms", sa.Integer(), nullable=True))
            batch_op.add_column(sa.Column("max_room_occupants", sa.Integer(), nullable=True))


def downgrade() -> None:
    for table in ("hosted_services", "catalog_plan_versions"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("max_room_occupants")
            batch_op.drop_column("max_rooms")
    with op.batch_alter_table("xmpp_rooms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_xmpp_rooms_service_id"))
    op.drop_table("xmpp_rooms")
