"""merge the keys and accsec heads (no schema change)

The webconc branch merged the branches keys and accsec, each with a revision on the same
parent; this joins the two heads so that ``imhost db upgrade`` (and ``imhost serve``) work on
this branch. If the integrator chains the two revisions instead, delete this file.

Revision ID: 5e1f0c3a9b2d
Revises: 285d84509e36, c9b12e5d7a3c
Create Date: 2026-12-03 02:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "5e1f0c3a9b2d"
down_revision: str | Sequence[str] | None = ("285d84509e36", "c9b12e5d7a3c")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
