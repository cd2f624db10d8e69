"""engine nodes: one live process per node_id

The built-in engine takes a lease on its node_id at start (imhost.hosting.nodes); a second
process with the same node_id refuses to start. The lease's incarnation goes into every usage
key, so a restart within the same minute never repeats a key.

Revision ID: 285d84509e36
Revises: 31936b9f60a5
Create Date: 2026-12-03 01:59:03.362973
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import imhost.db.types

revision: str = "285d84509e36"
down_revision: str | None = "31936b9f60a5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "engine_nodes",
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("incarnation", sa.String(length=32), nullable=False),
        sa.Column("holder", sa.String(length=300), nullable=False),
        sa.Column("started_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("lease_expires_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_engine_nodes")),
    )


def downgrade() -> None:
    op.drop_table("engine_nodes")
