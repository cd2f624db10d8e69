"""Tables of the help center: categories, articles, their revisions, "was this helpful?"
votes and the suggestion events of ticket deflection.

The full-text index is not a mapped table: on SQLite it is the FTS5 table
``help_article_fts`` (kept in sync by :mod:`imhost.support.search`), on PostgreSQL an
expression GIN index ``ix_help_articles_search`` over the article's weighted tsvector. Both are
created with the ``help_articles`` table (the ``after_create`` hook below, and the migration).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.schema import Table

from imhost.db.base import Base, CreatedMixin, IdMixin
from imhost.db.types import UtcDateTime


class ArticleStatus(enum.StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"


class Visibility(enum.StrEnum):
    PUBLIC = "public"  # anyone, signed in or not
    INTERNAL = "internal"  # staff only


class HelpCategory(IdMixin, CreatedMixin, Base):
    """A group of articles, shown in ``position`` order on /help."""

    __tablename__ = "help_categories"

    slug: Mapped[str] = mapped_column(String(80), unique=True)
    title: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(String(500), default="")
    position: Mapped[int] = mapped_column(Integer, default=0)


class HelpArticle(IdMixin, CreatedMixin, Base):
    """One article: Markdown source, its sanitised HTML and its plain text (what search
    indexes), who wrote it and when it last changed."""

    __tablename__ = "help_articles"

    slug: Mapped[str] = mapped_column(String(120), unique=True)
    category_id: Mapped[str] = mapped_column(ForeignKey("help_categories.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(String(500), default="")
    body: Mapped[str] = mapped_column(Text, default="")
    body_html: Mapped[str] = mapped_column(Text, default="")
    body_text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default=ArticleStatus.DRAFT.value)
    visibility: Mapped[str] = mapped_column(String(16), default=Visibility.PUBLIC.value)
    position: Mapped[int] = mapped_column(Integer, default=0)
    author_user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    author_label: Mapped[str] = mapped_column(String(320), default="")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    views: Mapped[int] = mapped_column(Integer, default=0)
    # The content hash of the shipped version last loaded (None: written by staff). The
    # loader updates a shipped article only while its content still has this hash.
    shipped_hash: Mapped[str | None] = mapped_column(String(64), default=None)

    __table_args__ = (Index("ix_help_articles_status_visibility", "status", "visibility"),)


class HelpArticleRevision(IdMixin, Base):
    """What an article looked like after each change, who made it and when."""

    __tablename__ = "help_article_revisions"

    article_id: Mapped[str] = mapped_column(
        ForeignKey("help_articles.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    actor_user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    actor_label: Mapped[str] = mapped_column(String(320), default="system")
    change: Mapped[str] = mapped_column(String(200))
    category_id: Mapped[str] = mapped_column(String(32))
    slug: Mapped[str] = mapped_column(String(120))
    title: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    visibility: Mapped[str] = mapped_column(String(16))

    __table_args__ = (UniqueConstraint("article_id", "number"),)


class HelpVote(IdMixin, Base):
    """One visitor's answer to "Was this helpful?" for one article (a visitor may change it).

    ``voter_hash`` is a keyed hash of the visitor's cookie; ``address_hash`` a keyed hash of
    the client address, kept only for the rate limit's window and then cleared.
    """

    __tablename__ = "help_votes"

    article_id: Mapped[str] = mapped_column(ForeignKey("help_articles.id", ondelete="CASCADE"))
    voter_hash: Mapped[str] = mapped_column(String(64))
    helpful: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    address_hash: Mapped[str | None] = mapped_column(String(64), default=None)

    __table_args__ = (
        UniqueConstraint("article_id", "voter_hash"),
        Index("ix_help_votes_address_hash_at", "address_hash", "at"),
        Index("ix_help_votes_at", "at"),
    )


class HelpSuggestionEvent(IdMixin, CreatedMixin, Base):
    """An article suggested beside the ticket form was opened (ticket deflection)."""

    __tablename__ = "help_suggestion_events"

    article_id: Mapped[str] = mapped_column(
        ForeignKey("help_articles.id", ondelete="CASCADE"), index=True
    )
    # An opaque token the ticket form passes along (to tell later whether the ticket was sent).
    context: Mapped[str | None] = mapped_column(String(64), default=None)


# --- the full-text index (not mapped; see the module docstring) ---------------------------------

FTS_TABLE = "help_article_fts"
PG_SEARCH_COLUMN = "search_document"
PG_SEARCH_INDEX = "ix_help_articles_search"
PG_SEARCH_CONFIG = "english"


def pg_search_vector(alias: str = "") -> str:
    """The weighted document vector (title A, summary B, body C) over ``alias``'s columns."""
    p = f"{alias}." if alias else ""
    config = f"'{PG_SEARCH_CONFIG}'::regconfig"
    return (
        f"(setweight(to_tsvector({config}, {p}title), 'A') || "
        f"setweight(to_tsvector({config}, {p}summary), 'B') || "
        f"setweight(to_tsvector({config}, {p}body_text), 'C'))"
    )


SEARCH_INDEX_NAMES: tuple[str, ...] = (FTS_TABLE, PG_SEARCH_COLUMN, PG_SEARCH_INDEX)
"""Schema objects outside the mapped metadata (the schema comparison skips them)."""


def search_index_ddl(dialect: str) -> list[str]:
    """The statements that create the full-text index on ``dialect``.

    SQLite: an FTS5 table; ``audience`` holds the words ``published``/``draft`` and
    ``public``/``internal`` so that the public's filter is part of the full-text match.
    PostgreSQL: a stored generated tsvector column (ranking reads it instead of parsing the
    text again) with a GIN index.
    """
    if dialect == "sqlite":
        return [
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5("
            "article_id UNINDEXED, audience, title, summary, body, "
            "tokenize = 'porter unicode61 remove_diacritics 2')",
            # Whatever deletes an article (the service, a cascade, a test's cleanup) takes its
            # words out of the index.
            f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_on_delete AFTER DELETE ON help_articles "  # noqa: S608
            f"BEGIN DELETE FROM {FTS_TABLE} WHERE article_id = old.id; END",
        ]
    if dialect == "postgresql":
        return [
            f"ALTER TABLE help_articles ADD COLUMN IF NOT EXISTS {PG_SEARCH_COLUMN} tsvector "
            f"GENERATED ALWAYS AS ({pg_search_vector()}) STORED",
            f"CREATE INDEX IF NOT EXISTS {PG_SEARCH_INDEX} ON help_articles "
            f"USING gin ({PG_SEARCH_COLUMN})",
        ]
    return []


def drop_search_index_ddl(dialect: str) -> list[str]:
    if dialect == "sqlite":
        return [
            f"DROP TRIGGER IF EXISTS {FTS_TABLE}_on_delete",
            f"DROP TABLE IF EXISTS {FTS_TABLE}",
        ]
    return []


@event.listens_for(HelpArticle.__table__, "after_create")
def _create_search_index(target: Table, connection: Connection, **_: object) -> None:
    from sqlalchemy import text

    for statement in search_index_ddl(connection.dialect.name):
        connection.execute(text(statement))


@event.listens_for(HelpArticle.__table__, "before_drop")
def _drop_search_index(target: Table, connection: Connection, **_: object) -> None:
    from sqlalchemy import text

    for statement in drop_search_index_ddl(connection.dialect.name):
        connection.execute(text(statement))
