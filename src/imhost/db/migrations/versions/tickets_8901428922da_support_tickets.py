"""tickets: support tickets, messages, attachments, history, canned replies

Also outbound_emails.headers (the threading headers of ticket e-mails).

Revision ID: 8901428922da
Revises: ad0a777fbb71
Create Date: 2026-12-03 09:37:00.384161
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import imhost.db.types

revision: str = "8901428922da"
down_revision: str | None = "ad0a777fbb71"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "support_canned_replies",
        sa.Column("title", sa.String(length=120), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("department", sa.String(length=16), nullable=True),
        sa.Column("updated_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_canned_replies")),
        sa.UniqueConstraint("title", name=op.f("uq_support_canned_replies_title")),
    )
    op.create_table(
        "support_guest_attempts",
        sa.Column("at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("email_hash", sa.String(length=64), nullable=False),
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_guest_attempts")),
    )
    with op.batch_alter_table("support_guest_attempts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_support_guest_attempts_address_hash_at", ["address_hash", "at"], unique=False
        )
        batch_op.create_index(
            "ix_support_guest_attempts_email_hash_at", ["email_hash", "at"], unique=False
        )

    op.create_table(
        "support_tickets",
        sa.Column("public_id", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=True),
        sa.Column("requester_user_id", sa.String(length=32), nullable=True),
        sa.Column("requester_name", sa.String(length=200), nullable=False),
        sa.Column("requester_email", sa.String(length=320), nullable=False),
        sa.Column("department", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("assignee_user_id", sa.String(length=32), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("reply_token", sa.String(length=32), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("updated_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column(
            "last_customer_reply_at", imhost.db.types.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column("first_response_at", imhost.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", imhost.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("closed_at", imhost.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("due_at", imhost.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("merged_into_id", sa.String(length=32), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("rating_comment", sa.Text(), nullable=False),
        sa.Column("rated_at", imhost.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("change_count", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["assignee_user_id"],
            ["users.id"],
            name=op.f("fk_support_tickets_assignee_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["merged_into_id"],
            ["support_tickets.id"],
            name=op.f("fk_support_tickets_merged_into_id_support_tickets"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_support_tickets_organization_id_organizations"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["requester_user_id"],
            ["users.id"],
            name=op.f("fk_support_tickets_requester_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_tickets")),
        sa.UniqueConstraint("public_id", name=op.f("uq_support_tickets_public_id")),
        sa.UniqueConstraint("reply_token", name=op.f("uq_support_tickets_reply_token")),
    )
    with op.batch_alter_table("support_tickets", schema=None) as batch_op:
        batch_op.create_index(
            "ix_support_tickets_assignee_updated",
            ["assignee_user_id", "updated_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_support_tickets_department_updated",
            ["department", "updated_at", "id"],
            unique=False,
        )
        batch_op.create_index("ix_support_tickets_due_at", ["due_at"], unique=False)
        batch_op.create_index(
            "ix_support_tickets_org_updated", ["organization_id", "updated_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_support_tickets_requester_email", ["requester_email"], unique=False
        )
        batch_op.create_index(
            "ix_support_tickets_requester_user_id", ["requester_user_id"], unique=False
        )
        batch_op.create_index(
            "ix_support_tickets_resolved_at", ["status", "resolved_at"], unique=False
        )
        batch_op.create_index(
            "ix_support_tickets_status_updated", ["status", "updated_at", "id"], unique=False
        )
        batch_op.create_index("ix_support_tickets_updated", ["updated_at", "id"], unique=False)

    op.create_table(
        "support_ticket_changes",
        sa.Column("ticket_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("actor_user_id", sa.String(length=32), nullable=True),
        sa.Column("actor_label", sa.String(length=320), nullable=False),
        sa.Column("field", sa.String(length=32), nullable=False),
        sa.Column("old_value", sa.String(length=500), nullable=True),
        sa.Column("new_value", sa.String(length=500), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["support_tickets.id"],
            name=op.f("fk_support_ticket_changes_ticket_id_support_tickets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_ticket_changes")),
    )
    with op.batch_alter_table("support_ticket_changes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_support_ticket_changes_ticket_id"), ["ticket_id"], unique=False
        )

    op.create_table(
        "support_ticket_form_sent",
        sa.Column("context", sa.String(length=64), nullable=False),
        sa.Column("ticket_id", sa.String(length=32), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["support_tickets.id"],
            name=op.f("fk_support_ticket_form_sent_ticket_id_support_tickets"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_ticket_form_sent")),
        sa.UniqueConstraint("context", name=op.f("uq_support_ticket_form_sent_context")),
    )
    op.create_table(
        "support_ticket_messages",
        sa.Column("ticket_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("author_user_id", sa.String(length=32), nullable=True),
        sa.Column("author_name", sa.String(length=200), nullable=False),
        sa.Column("author_email", sa.String(length=320), nullable=False),
        sa.Column("from_staff", sa.Boolean(), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("email_message_id", sa.String(length=255), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_user_id"],
            ["users.id"],
            name=op.f("fk_support_ticket_messages_author_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["support_tickets.id"],
            name=op.f("fk_support_ticket_messages_ticket_id_support_tickets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_ticket_messages")),
    )
    with op.batch_alter_table("support_ticket_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_support_ticket_messages_email_message_id"),
            ["email_message_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_support_ticket_messages_ticket_id"), ["ticket_id"], unique=False
        )

    op.create_table(
        "support_ticket_attachments",
        sa.Column("ticket_id", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("storage_name", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["support_ticket_messages.id"],
            name=op.f("fk_support_ticket_attachments_message_id_support_ticket_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["support_tickets.id"],
            name=op.f("fk_support_ticket_attachments_ticket_id_support_tickets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_ticket_attachments")),
        sa.UniqueConstraint(
            "storage_name", name=op.f("uq_support_ticket_attachments_storage_name")
        ),
    )
    with op.batch_alter_table("support_ticket_attachments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_support_ticket_attachments_message_id"), ["message_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_support_ticket_attachments_ticket_id"), ["ticket_id"], unique=False
        )

    with op.batch_alter_table("outbound_emails", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("headers", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )


def downgrade() -> None:
    with op.batch_alter_table("outbound_emails", schema=None) as batch_op:
        batch_op.drop_column("headers")

    with op.batch_alter_table("support_ticket_attachments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_support_ticket_attachments_ticket_id"))
        batch_op.drop_index(batch_op.f("ix_support_ticket_attachments_message_id"))

    op.drop_table("support_ticket_attachments")
    with op.batch_alter_table("support_ticket_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_support_ticket_messages_ticket_id"))
        batch_op.drop_index(batch_op.f("ix_support_ticket_messages_email_message_id"))

    op.drop_table("support_ticket_messages")
    op.drop_table("support_ticket_form_sent")
    with op.batch_alter_table("support_ticket_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_support_ticket_changes_ticket_id"))

    op.drop_table("support_ticket_changes")
    with op.batch_alter_table("support_tickets", schema=None) as batch_op:
        batch_op.drop_index("ix_support_tickets_updated")
        batch_op.drop_index("ix_support_tickets_status_updated")
        batch_op.drop_index("ix_support_tickets_resolved_at")
        batch_op.drop_index("ix_support_tickets_requester_user_id")
        batch_op.drop_index("ix_support_tickets_requester_email")
        batch_op.drop_index("ix_support_tickets_org_updated")
        batch_op.drop_index("ix_support_tickets_due_at")
        batch_op.drop_index("ix_support_tickets_department_updated")
        batch_op.drop_index("ix_support_tickets_assignee_updated")

    op.drop_table("support_tickets")
    with op.batch_alter_table("support_guest_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_support_guest_attempts_email_hash_at")
        batch_op.drop_index("ix_support_guest_attempts_address_hash_at")

    op.drop_table("support_guest_attempts")
    op.drop_table("support_canned_replies")
