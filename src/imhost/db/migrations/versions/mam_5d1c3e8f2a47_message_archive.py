"""message archive: XEP-0313 archives of accounts, their preferences, retention per plan

The archived messages of each account (``xmpp_archive``, indexed by owner and time and by
owner, contact and time), the accounts' archiving preferences (``xmpp_archive_prefs``), and
the days a message is kept (``archive_days``) on plan versions and services. Existing plans
and services keep messages for ever (NULL).

Revision ID: 5d1c3e8f2a47
Revises: 2c495091e1da
Create Date: 2026-12-03 09:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import imhost.db.types

revision: str = "5d1c3e8f2a47"
down_revision: str | None = "2c495091e1da"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "xmpp_archive",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("service_id", sa.String(length=32), nullable=False),
        sa.Column("archive_id", sa.String(length=40), nullable=False),
        sa.Column("with_jid", sa.String(length=1023), nullable=False),
        sa.Column("with_resource", sa.String(length=1023), nullable=False),
        sa.Column("stamp", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("outgoing", sa.Boolean(), nullable=False),
        sa.Column("stanza", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["xmpp_accounts.id"],
            name=op.f("fk_xmpp_archive_account_id_xmpp_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_xmpp_archive")),
        sa.UniqueConstraint(
            "account_id", "archive_id", name=op.f("uq_xmpp_archive_account_id_archive_id")
        ),
    )
    with op.batch_alter_table("xmpp_archive", schema=None) as batch_op:
        batch_op.create_index(
            "ix_xmpp_archive_owner_stamp", ["account_id", "stamp", "archive_id"], unique=False
        )
        batch_op.create_index(
            "ix_xmpp_archive_owner_with_stamp", ["account_id", "with_jid", "stamp"], unique=False
        )
        batch_op.create_index(
            "ix_xmpp_archive_service_stamp", ["service_id", "stamp"], unique=False
        )
    op.create_table(
        "xmpp_archive_prefs",
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("default", sa.String(length=8), nullable=False),
        sa.Column("always", sa.JSON(), nullable=False),
        sa.Column("never", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["xmpp_accounts.id"],
            name=op.f("fk_xmpp_archive_prefs_account_id_xmpp_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_xmpp_archive_prefs")),
    )
    for table in ("catalog_plan_versions", "hosted_services"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("archive_days", sa.Integer(), nullable=True))


def downgrade() -> None:
    for table in ("hosted_services", "catalog_plan_versions"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("archive_days")
    op.drop_table("xmpp_archive_prefs")
    with op.batch_alter_table("xmpp_archive", schema=None) as batch_op:
        batch_op.drop_index("ix_xmpp_archive_service_stamp")
        batch_op.drop_index("ix_xmpp_archive_owner_with_stamp")
        batch_op.drop_index("ix_xmpp_archive_owner_stamp")
    op.drop_table("xmpp_archive")
