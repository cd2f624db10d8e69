"""help center: categories, articles, revisions, votes, suggestion events, full-text index

The full-text index lives outside the mapped metadata (imhost.support.models): an FTS5 table
on SQLite (kept in sync by imhost.support.search), an expression GIN index on PostgreSQL.

Revision ID: 9e3552716236
Revises: 1d99cf6f131e
Create Date: 2026-12-03 08:17:11.396050
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import imhost.db.types

revision: str = "9e3552716236"
down_revision: str | None = "1d99cf6f131e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "help_categories",
        sa.Column("slug", sa.String(length=80), nullable=False),
        sa.Column("title", sa.String(length=120), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_help_categories")),
        sa.UniqueConstraint("slug", name=op.f("uq_help_categories_slug")),
    )
    op.create_table(
        "help_articles",
        sa.Column("slug", sa.String(length=120), nullable=False),
        sa.Column("category_id", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("summary", sa.String(length=500), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("visibility", sa.String(length=16), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("author_user_id", sa.String(length=32), nullable=True),
        sa.Column("author_label", sa.String(length=320), nullable=False),
        sa.Column("updated_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("published_at", imhost.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("views", sa.Integer(), nullable=False),
        sa.Column("shipped_hash", sa.String(length=64), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_user_id"],
            ["users.id"],
            name=op.f("fk_help_articles_author_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["category_id"],
            ["help_categories.id"],
            name=op.f("fk_help_articles_category_id_help_categories"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_help_articles")),
        sa.UniqueConstraint("slug", name=op.f("uq_help_articles_slug")),
    )
    with op.batch_alter_table("help_articles", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_help_articles_category_id"), ["category_id"], unique=False
        )
        batch_op.create_index(
            "ix_help_articles_status_visibility", ["status", "visibility"], unique=False
        )

    # The full-text index (the SQL is repeated here, as a migration must not change later).
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS help_article_fts USING fts5("
            "article_id UNINDEXED, audience, title, summary, body, "
            "tokenize = 'porter unicode61 remove_diacritics 2')"
        )
        op.execute(
            "CREATE TRIGGER IF NOT EXISTS help_article_fts_on_delete AFTER DELETE ON "
            "help_articles BEGIN DELETE FROM help_article_fts WHERE article_id = old.id; END"
        )
    elif op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE help_articles ADD COLUMN IF NOT EXISTS search_document tsvector "
            "GENERATED ALWAYS AS ("
            "(setweight(to_tsvector('english'::regconfig, title), 'A') || "
            "setweight(to_tsvector('english'::regconfig, summary), 'B') || "
            "setweight(to_tsvector('english'::regconfig, body_text), 'C'))) STORED"
        )
        op.execute(
            "CREATE INDEX IF NOT EXISTS ix_help_articles_search ON help_articles "
            "USING gin (search_document)"
        )

    op.create_table(
        "help_article_revisions",
        sa.Column("article_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("actor_user_id", sa.String(length=32), nullable=True),
        sa.Column("actor_label", sa.String(length=320), nullable=False),
        sa.Column("change", sa.String(length=200), nullable=False),
        sa.Column("category_id", sa.String(length=32), nullable=False),
        sa.Column("slug", sa.String(length=120), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("summary", sa.String(length=500), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("visibility", sa.String(length=16), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["help_articles.id"],
            name=op.f("fk_help_article_revisions_article_id_help_articles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_help_article_revisions")),
        sa.UniqueConstraint(
            "article_id", "number", name=op.f("uq_help_article_revisions_article_id_number")
        ),
    )
    with op.batch_alter_table("help_article_revisions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_help_article_revisions_article_id"), ["article_id"], unique=False
        )

    op.create_table(
        "help_suggestion_events",
        sa.Column("article_id", sa.String(length=32), nullable=False),
        sa.Column("context", sa.String(length=64), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["help_articles.id"],
            name=op.f("fk_help_suggestion_events_article_id_help_articles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_help_suggestion_events")),
    )
    with op.batch_alter_table("help_suggestion_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_help_suggestion_events_article_id"), ["article_id"], unique=False
        )

    op.create_table(
        "help_votes",
        sa.Column("article_id", sa.String(length=32), nullable=False),
        sa.Column("voter_hash", sa.String(length=64), nullable=False),
        sa.Column("helpful", sa.Boolean(), nullable=False),
        sa.Column("at", imhost.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("address_hash", sa.String(length=64), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["help_articles.id"],
            name=op.f("fk_help_votes_article_id_help_articles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_help_votes")),
        sa.UniqueConstraint(
            "article_id", "voter_hash", name=op.f("uq_help_votes_article_id_voter_hash")
        ),
    )
    with op.batch_alter_table("help_votes", schema=None) as batch_op:
        batch_op.create_index("ix_help_votes_address_hash_at", ["address_hash", "at"], unique=False)
        batch_op.create_index("ix_help_votes_at", ["at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("help_votes", schema=None) as batch_op:
        batch_op.drop_index("ix_help_votes_at")
        batch_op.drop_index("ix_help_votes_address_hash_at")

    op.drop_table("help_votes")
    with op.batch_alter_table("help_suggestion_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_help_suggestion_events_article_id"))

    op.drop_table("help_suggestion_events")
    with op.batch_alter_table("help_article_revisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_help_article_revisions_article_id"))

    op.drop_table("help_article_revisions")
    with op.batch_alter_table("help_articles", schema=None) as batch_op:
        batch_op.drop_index("ix_help_articles_status_visibility")
        batch_op.drop_index(batch_op.f("ix_help_articles_category_id"))

    op.execute("DROP TRIGGER IF EXISTS help_article_fts_on_delete")
    op.execute("DROP TABLE IF EXISTS help_article_fts")
    op.drop_table("help_articles")
    op.drop_table("help_categories")
