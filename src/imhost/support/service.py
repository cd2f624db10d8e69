"""The help center's rules: categories, articles and their revisions, views, "was this
helpful?" votes and suggestions for ticket deflection.

Nothing here commits: the caller (a request, a CLI command, the start-up loader) owns the
transaction. Every change staff make is audited (``help.<action>``) and kept as a revision.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from imhost.accounts import audit
from imhost.accounts.audit import Actor
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput, NotFound, TooManyRequests
from imhost.support import markdown, search
from imhost.support.models import (
    ArticleStatus,
    HelpArticle,
    HelpArticleRevision,
    HelpCategory,
    HelpSuggestionEvent,
    HelpVote,
    Visibility,
)
from imhost.support.schemas import ArticleIn, CategoryIn

VOTES_PER_ADDRESS_PER_HOUR = 30
"""Votes one client address may cast in an hour (over all articles)."""
ADDRESS_KEPT_FOR = timedelta(hours=1)
"""How long the keyed hash of a voter's address is kept (the rate limit's window)."""

RESERVED_CATEGORY_SLUGS = frozenset({"search", "articles", "suggestions", "contact", "tickets"})
"""Paths under /help that are not categories."""


# --- categories -------------------------------------------------------------------------------


def list_categories(session: Session) -> list[HelpCategory]:
    return list(
        session.scalars(select(HelpCategory).order_by(HelpCategory.position, HelpCategory.title))
    )


def get_category(session: Session, slug: str) -> HelpCategory:
    category = session.scalar(select(HelpCategory).where(HelpCategory.slug == slug[:80]))
    if category is None:
        raise NotFound("There is no such help category.")
    return category


def save_category(
    session: Session, clock: Clock, data: CategoryIn, *, actor: Actor | None = None
) -> HelpCategory:
    """Create the category ``data.slug``, or update it when it exists."""
    if data.slug in RESERVED_CATEGORY_SLUGS:
        raise InvalidInput(
            "This address is used by the help center itself; choose another.", field="slug"
        )
    category = session.scalar(select(HelpCategory).where(HelpCategory.slug == data.slug))
    created = category is None
    if category is None:
        category = HelpCategory(slug=data.slug, created_at=clock.now())
        session.add(category)
    category.title = data.title
    category.description = data.description
    category.position = data.position
    session.flush()
    _audit(
        session,
        clock,
        actor,
        "category_created" if created else "category_updated",
        target_type="help_category",
        target_id=category.id,
        target_label=category.slug,
    )
    return category


# --- articles -----------------------------------------------------------------------------------


def content_hash(
    *, slug: str, category: str, title: str, summary: str, body: str, visibility: str
) -> str:
    """A fingerprint of what an article says (the shipped-articles loader compares these)."""
    digest = hashlib.sha256()
    for part in (slug, category, title, summary, body.replace("\r\n", "\n").strip(), visibility):
        digest.update(part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def article_hash(session: Session, article: HelpArticle) -> str:
    category = session.get(HelpCategory, article.category_id)
    return content_hash(
        slug=article.slug,
        category=category.slug if category else "",
        title=article.title,
        summary=article.summary,
        body=article.body,
        visibility=article.visibility,
    )


def list_articles(
    session: Session,
    *,
    category_id: str | None = None,
    include_drafts: bool = False,
    include_internal: bool = False,
    limit: int = 200,
    offset: int = 0,
) -> list[HelpArticle]:
    stmt = select(HelpArticle)
    if category_id is not None:
        stmt = stmt.where(HelpArticle.category_id == category_id)
    if not include_drafts:
        stmt = stmt.where(HelpArticle.status == ArticleStatus.PUBLISHED.value)
    if not include_internal:
        stmt = stmt.where(HelpArticle.visibility == Visibility.PUBLIC.value)
    stmt = stmt.order_by(HelpArticle.position, HelpArticle.title).limit(limit).offset(offset)
    return list(session.scalars(stmt))


def count_articles(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(HelpArticle)) or 0)


def popular_articles(session: Session, limit: int = 6) -> list[HelpArticle]:
    """The most read public, published articles."""
    return list(
        session.scalars(
            select(HelpArticle)
            .where(
                HelpArticle.status == ArticleStatus.PUBLISHED.value,
                HelpArticle.visibility == Visibility.PUBLIC.value,
            )
            .order_by(HelpArticle.views.desc(), HelpArticle.position, HelpArticle.title)
            .limit(limit)
        )
    )


def get_article(
    session: Session, slug: str, *, include_drafts: bool = False, include_internal: bool = False
) -> HelpArticle:
    """The article ``slug``; a draft or an internal article is "not found" unless asked for,
    so the public cannot even learn that it exists."""
    article = session.scalar(select(HelpArticle).where(HelpArticle.slug == slug[:120]))
    if (
        article is None
        or (not include_drafts and article.status != ArticleStatus.PUBLISHED.value)
        or (not include_internal and article.visibility != Visibility.PUBLIC.value)
    ):
        raise NotFound("There is no such help article.")
    return article


def get_article_by_id(session: Session, article_id: str) -> HelpArticle:
    article = session.get(HelpArticle, article_id[:32])
    if article is None:
        raise NotFound("There is no such help article.")
    return article


def _category_for(session: Session, slug: str) -> HelpCategory:
    category = session.scalar(select(HelpCategory).where(HelpCategory.slug == slug))
    if category is None:
        raise InvalidInput("Choose one of the existing categories.", field="category")
    return category


def _apply(session: Session, article: HelpArticle, data: ArticleIn, category: HelpCategory) -> None:
    article.slug = data.slug
    article.category_id = category.id
    article.title = data.title
    article.summary = data.summary
    article.body = data.body
    article.body_html = markdown.render(data.body)
    article.body_text = markdown.plain_text(article.body_html)
    article.visibility = data.visibility
    article.position = data.position


def _revise(
    session: Session, clock: Clock, article: HelpArticle, actor: Actor | None, change: str
) -> HelpArticleRevision:
    actor = actor or Actor.system()
    number = (
        session.scalar(
            select(func.max(HelpArticleRevision.number)).where(
                HelpArticleRevision.article_id == article.id
            )
        )
        or 0
    ) + 1
    revision = HelpArticleRevision(
        article_id=article.id,
        number=number,
        at=clock.now(),
        actor_user_id=actor.user_id,
        actor_label=actor.label,
        change=change[:200],
        category_id=article.category_id,
        slug=article.slug,
        title=article.title,
        summary=article.summary,
        body=article.body,
        status=article.status,
        visibility=article.visibility,
    )
    session.add(revision)
    return revision


def _set_status(article: HelpArticle, status: str, clock: Clock) -> None:
    article.status = status
    if status == ArticleStatus.PUBLISHED.value and article.published_at is None:
        article.published_at = clock.now()


def create_article(
    session: Session,
    clock: Clock,
    data: ArticleIn,
    *,
    actor: Actor | None = None,
    shipped_hash: str | None = None,
) -> HelpArticle:
    if session.scalar(select(HelpArticle.id).where(HelpArticle.slug == data.slug)) is not None:
        raise Conflict("Another article already has this address (slug).", field="slug")
    category = _category_for(session, data.category)
    actor = actor or Actor.system()
    now = clock.now()
    article = HelpArticle(
        created_at=now,
        updated_at=now,
        author_user_id=actor.user_id,
        author_label=actor.label,
        shipped_hash=shipped_hash,
        views=0,
    )
    _apply(session, article, data, category)
    _set_status(article, data.status, clock)
    session.add(article)
    session.flush()
    search.index_article(session, article)
    _revise(session, clock, article, actor, "created")
    _audit(session, clock, actor, "article_created", article=article, status=article.status)
    return article


def _changed_fields(article: HelpArticle, data: ArticleIn, category: HelpCategory) -> list[str]:
    pairs = {
        "address": (article.slug, data.slug),
        "category": (article.category_id, category.id),
        "title": (article.title, data.title),
        "summary": (article.summary, data.summary),
        "text": (article.body, data.body),
        "status": (article.status, data.status),
        "visibility": (article.visibility, data.visibility),
        "position": (article.position, data.position),
    }
    return [name for name, (old, new) in pairs.items() if old != new]


def update_article(
    session: Session,
    clock: Clock,
    article: HelpArticle,
    data: ArticleIn,
    *,
    actor: Actor | None = None,
    shipped_hash: str | None = None,
) -> list[str]:
    """Change every field of ``article`` to ``data``; the names of the fields that changed
    (nothing is written, revised or audited when none did)."""
    if data.slug != article.slug:
        taken = session.scalar(select(HelpArticle.id).where(HelpArticle.slug == data.slug))
        if taken is not None:
            raise Conflict("Another article already has this address (slug).", field="slug")
    category = _category_for(session, data.category)
    changed = _changed_fields(article, data, category)
    if not changed:
        return []
    _apply(session, article, data, category)
    _set_status(article, data.status, clock)
    article.updated_at = clock.now()
    article.shipped_hash = shipped_hash
    session.flush()
    search.index_article(session, article)
    _revise(session, clock, article, actor, "changed " + ", ".join(changed))
    _audit(session, clock, actor, "article_updated", article=article, changed=changed)
    return changed


def set_article_status(
    session: Session, clock: Clock, article: HelpArticle, status: str, *, actor: Actor | None
) -> bool:
    """Publish or unpublish; False when the article already had that status."""
    if status not in {s.value for s in ArticleStatus}:
        raise InvalidInput("Choose draft or published.", field="status")
    if article.status == status:
        return False
    _set_status(article, status, clock)
    article.updated_at = clock.now()
    session.flush()
    search.index_article(session, article)
    published = status == ArticleStatus.PUBLISHED.value
    _revise(session, clock, article, actor, "published" if published else "unpublished")
    _audit(
        session,
        clock,
        actor,
        "article_published" if published else "article_unpublished",
        article=article,
    )
    return True


def revisions(session: Session, article_id: str) -> list[HelpArticleRevision]:
    return list(
        session.scalars(
            select(HelpArticleRevision)
            .where(HelpArticleRevision.article_id == article_id)
            .order_by(HelpArticleRevision.number.desc())
        )
    )


def record_view(session: Session, article: HelpArticle) -> None:
    """Count one reading (an UPDATE in the database: concurrent readers never lose a count)."""
    session.execute(
        update(HelpArticle)
        .where(HelpArticle.id == article.id)
        .values(views=HelpArticle.views + 1)
        .execution_options(synchronize_session=False)
    )


# --- votes ------------------------------------------------------------------------------------


def keyed_hash(secret: str, kind: str, value: str) -> str:
    """A keyed hash of a visitor's cookie or address: comparable, never reversible."""
    return hmac.new(secret.encode(), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def vote(
    session: Session,
    clock: Clock,
    article: HelpArticle,
    *,
    helpful: bool,
    visitor: str,
    address: str,
    secret: str,
) -> HelpVote:
    """Record one visitor's answer (a second answer replaces the first).

    ``visitor`` is the visitor's cookie value, ``address`` the client address; only keyed
    hashes of both are stored, the address's only for :data:`ADDRESS_KEPT_FOR`. An address
    may vote :data:`VOTES_PER_ADDRESS_PER_HOUR` times an hour.
    """
    now = clock.now()
    window = now - ADDRESS_KEPT_FOR
    # Forget the addresses of older votes (the window is all the rate limit needs).
    session.execute(
        update(HelpVote)
        .where(HelpVote.at < window, HelpVote.address_hash.is_not(None))
        .values(address_hash=None)
        .execution_options(synchronize_session=False)
    )
    address_hash = keyed_hash(secret, "address", address)
    recent = session.scalar(
        select(func.count())
        .select_from(HelpVote)
        .where(HelpVote.address_hash == address_hash, HelpVote.at >= window)
    )
    if (recent or 0) >= VOTES_PER_ADDRESS_PER_HOUR:
        raise TooManyRequests(
            "Thank you, but we have had many answers from your network just now. "
            "Try again in an hour.",
            retry_after=int(ADDRESS_KEPT_FOR.total_seconds()),
        )
    voter_hash = keyed_hash(secret, "visitor", visitor)
    existing = session.scalar(
        select(HelpVote).where(HelpVote.article_id == article.id, HelpVote.voter_hash == voter_hash)
    )
    if existing is not None:
        existing.helpful = helpful
        existing.at = now
        existing.address_hash = address_hash
        session.flush()
        return existing
    row = HelpVote(
        article_id=article.id,
        voter_hash=voter_hash,
        helpful=helpful,
        at=now,
        address_hash=address_hash,
    )
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True)
class ArticleCounts:
    views: int = 0
    helpful_yes: int = 0
    helpful_no: int = 0
    suggestions_opened: int = 0


def article_counts(session: Session, articles: list[HelpArticle]) -> dict[str, ArticleCounts]:
    """What staff see of each article: readings, votes and suggestion openings."""
    ids = [a.id for a in articles]
    if not ids:
        return {}
    votes = {
        row.article_id: (int(row.yes or 0), int(row.no or 0))
        for row in session.execute(
            select(
                HelpVote.article_id,
                func.sum(case((HelpVote.helpful.is_(True), 1), else_=0)).label("yes"),
                func.sum(case((HelpVote.helpful.is_(False), 1), else_=0)).label("no"),
            )
            .where(HelpVote.article_id.in_(ids))
            .group_by(HelpVote.article_id)
        )
    }
    opened: dict[str, int] = {
        article_id: int(n)
        for article_id, n in session.execute(
            select(HelpSuggestionEvent.article_id, func.count())
            .where(HelpSuggestionEvent.article_id.in_(ids))
            .group_by(HelpSuggestionEvent.article_id)
        )
    }
    return {
        a.id: ArticleCounts(
            views=a.views,
            helpful_yes=votes.get(a.id, (0, 0))[0],
            helpful_no=votes.get(a.id, (0, 0))[1],
            suggestions_opened=int(opened.get(a.id, 0)),
        )
        for a in articles
    }


# --- suggestions (ticket deflection) ----------------------------------------------------------


def suggest_articles(session: Session, text: str, limit: int = 5) -> list[search.SearchHit]:
    """Public, published articles that may answer ``text`` (a ticket's subject as it is
    typed): any of its words but the most common ones ("my", "the", "not"), best first."""
    return search.search(
        session, text, limit=max(1, min(limit, 10)), any_word=True, skip=search.STOP_WORDS
    ).hits


def record_suggestion_opened(
    session: Session, clock: Clock, article: HelpArticle, *, context: str | None = None
) -> HelpSuggestionEvent:
    """A suggested article was opened from the ticket form (``context``: the form's token;
    the same article opened again from the same form counts once)."""
    if context:
        seen = session.scalar(
            select(HelpSuggestionEvent).where(
                HelpSuggestionEvent.article_id == article.id,
                HelpSuggestionEvent.context == context,
            )
        )
        if seen is not None:
            return seen
    event = HelpSuggestionEvent(article_id=article.id, created_at=clock.now(), context=context)
    session.add(event)
    session.flush()
    return event


def suggestions_opened(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(HelpSuggestionEvent)) or 0)


# --- audit ------------------------------------------------------------------------------------


def _audit(
    session: Session,
    clock: Clock,
    actor: Actor | None,
    action: str,
    *,
    article: HelpArticle | None = None,
    target_type: str = "help_article",
    target_id: str | None = None,
    target_label: str | None = None,
    **details: Any,
) -> None:
    audit.record(
        session,
        clock,
        f"help.{action}",
        actor=actor or Actor.system(),
        target_type=target_type,
        target_id=article.id if article is not None else target_id,
        target_label=article.slug if article is not None else target_label,
        **details,
    )
