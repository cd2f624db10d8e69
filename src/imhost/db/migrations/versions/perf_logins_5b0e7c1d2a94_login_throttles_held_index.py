"""login throttles: a partial index of the rows something is held against

The XMPP engine reads every row with a failure or a lock every few seconds (its in-memory
view of the brute-force states, hosting/dataplane/auth.py); the trusted pairs, the bulk of
the table, stay out of the index.

Revision ID: 5b0e7c1d2a94
Revises: 9e3552716236
Create Date: 2026-12-03 08:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b0e7c1d2a94"
down_revision: str | None = "9e3552716236"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HELD = "failures > 0 OR locked_until IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("login_throttles", schema=None) as batch_op:
        batch_op.create_index(
            "ix_login_throttles_held",
            ["key"],
            unique=False,
            sqlite_where=sa.text(HELD),
            postgresql_where=sa.text(HELD),
        )


def downgrade() -> None:
    with op.batch_alter_table("login_throttles", schema=None) as batch_op:
        batch_op.drop_index("ix_login_throttles_held")
