"""The help center: public reading, search and suggestions; staff writing.

Anyone reads the public, published articles (``/api/v1/help/...``); drafts and internal
articles answer 404 there. The ticket form calls ``/help/suggestions`` while a subject is typed
and reports an opened suggestion with ``/help/suggestions/opened``. Staff with the
``support-admin`` area manage articles and categories under ``/api/v1/admin/help``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from imhost.accounts.permissions import Access, Scope
from imhost.kit.errors import InvalidInput
from imhost.support import search, service
from imhost.support.models import HelpArticle
from imhost.support.schemas import (
    ArticleFull,
    ArticleIn,
    ArticleOut,
    ArticleStaffOut,
    CategoryIn,
    CategoryOut,
    SearchHitOut,
    SearchOut,
    SuggestionOpenedIn,
)
from imhost.web.deps import Db, PageDep, Principal, Public, RuntimeDep, require

router = APIRouter(tags=["help center"])

HelpRead = Annotated[Principal, Depends(require("support-admin", Access.READ, scope=Scope.STAFF))]
HelpWrite = Annotated[Principal, Depends(require("support-admin", Access.WRITE, scope=Scope.STAFF))]

SearchText = Annotated[str, Query(min_length=1, max_length=500, description="What to look for.")]


def article_url(slug: str) -> str:
    return f"/help/articles/{slug}"


def _hits(results: search.SearchResults) -> SearchOut:
    return SearchOut(
        query=results.query,
        total=results.total,
        matched_all=results.matched_all,
        results=[
            SearchHitOut(
                slug=h.slug,
                title=h.title,
                summary=h.summary,
                url=article_url(h.slug),
                highlight=h.highlight,
                updated_at=h.updated_at,
            )
            for h in results.hits
        ],
    )


# --- public -------------------------------------------------------------------------------


@router.get("/help/categories", response_model=list[CategoryOut])
def list_categories(principal: Public, db: Db) -> list[CategoryOut]:
    return [CategoryOut.model_validate(c) for c in service.list_categories(db)]


@router.get("/help/articles", response_model=list[ArticleOut])
def list_articles(
    principal: Public,
    db: Db,
    page: PageDep,
    category: Annotated[str | None, Query(max_length=80)] = None,
) -> list[ArticleOut]:
    """Public, published articles (of one category, by its slug)."""
    category_id = service.get_category(db, category).id if category else None
    rows = service.list_articles(db, category_id=category_id, limit=page.limit, offset=page.offset)
    return [ArticleOut.model_validate(a) for a in rows]


@router.get("/help/articles/{slug}", response_model=ArticleFull)
def get_article(slug: str, principal: Public, db: Db) -> ArticleFull:
    return ArticleFull.model_validate(service.get_article(db, slug))


@router.get("/help/search", response_model=SearchOut)
def search_articles(
    principal: Public,
    db: Db,
    q: SearchText,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
    offset: Annotated[int, Query(ge=0, le=10_000)] = 0,
) -> SearchOut:
    """Public articles ranked by relevance; ``highlight`` is HTML with ``<mark>`` only."""
    return _hits(search.search(db, q, limit=limit, offset=offset))


@router.get("/help/suggestions", response_model=SearchOut)
def suggestions(
    principal: Public,
    db: Db,
    text: SearchText,
    limit: Annotated[int, Query(ge=1, le=10)] = 5,
) -> SearchOut:
    """Articles that may answer a ticket being written (any of its words, best first)."""
    hits = service.suggest_articles(db, text, limit)
    return _hits(search.SearchResults(query=text, terms=(), total=len(hits), hits=hits))


@router.post("/help/articles/{slug}/suggestion-opened", status_code=status.HTTP_204_NO_CONTENT)
def suggestion_opened(
    slug: str, principal: Public, db: Db, runtime: RuntimeDep, body: SuggestionOpenedIn
) -> None:
    """Count one opening of a suggested article (once per ticket form ``context``)."""
    article = service.get_article(db, slug)
    service.record_suggestion_opened(db, runtime.clock, article, context=body.context)


# --- staff --------------------------------------------------------------------------------


def _staff_out(db: Db, articles: list[HelpArticle]) -> list[ArticleStaffOut]:
    counts = service.article_counts(db, articles)
    out = []
    for a in articles:
        c = counts[a.id]
        out.append(
            ArticleStaffOut.model_validate(
                {
                    **ArticleFull.model_validate(a).model_dump(),
                    "views": c.views,
                    "helpful_yes": c.helpful_yes,
                    "helpful_no": c.helpful_no,
                    "suggestions_opened": c.suggestions_opened,
                }
            )
        )
    return out


@router.get("/admin/help/articles", response_model=list[ArticleStaffOut])
def admin_list_articles(principal: HelpRead, db: Db, page: PageDep) -> list[ArticleStaffOut]:
    """Every article, drafts and internal ones too, with views, votes and suggestion openings."""
    rows = service.list_articles(
        db, include_drafts=True, include_internal=True, limit=page.limit, offset=page.offset
    )
    return _staff_out(db, rows)


@router.post(
    "/admin/help/articles", response_model=ArticleStaffOut, status_code=status.HTTP_201_CREATED
)
def admin_create_article(
    principal: HelpWrite, db: Db, runtime: RuntimeDep, body: ArticleIn
) -> ArticleStaffOut:
    article = service.create_article(db, runtime.clock, body, actor=principal.actor)
    return _staff_out(db, [article])[0]


@router.get("/admin/help/articles/{article_id}", response_model=ArticleStaffOut)
def admin_get_article(article_id: str, principal: HelpRead, db: Db) -> ArticleStaffOut:
    return _staff_out(db, [service.get_article_by_id(db, article_id)])[0]


@router.put("/admin/help/articles/{article_id}", response_model=ArticleStaffOut)
def admin_update_article(
    article_id: str, principal: HelpWrite, db: Db, runtime: RuntimeDep, body: ArticleIn
) -> ArticleStaffOut:
    article = service.get_article_by_id(db, article_id)
    service.update_article(db, runtime.clock, article, body, actor=principal.actor)
    return _staff_out(db, [article])[0]


@router.post("/admin/help/articles/{article_id}/publish", response_model=ArticleStaffOut)
def admin_publish(
    article_id: str, principal: HelpWrite, db: Db, runtime: RuntimeDep
) -> ArticleStaffOut:
    article = service.get_article_by_id(db, article_id)
    service.set_article_status(db, runtime.clock, article, "published", actor=principal.actor)
    return _staff_out(db, [article])[0]


@router.post("/admin/help/articles/{article_id}/unpublish", response_model=ArticleStaffOut)
def admin_unpublish(
    article_id: str, principal: HelpWrite, db: Db, runtime: RuntimeDep
) -> ArticleStaffOut:
    article = service.get_article_by_id(db, article_id)
    service.set_article_status(db, runtime.clock, article, "draft", actor=principal.actor)
    return _staff_out(db, [article])[0]


@router.put("/admin/help/categories/{slug}", response_model=CategoryOut)
def admin_save_category(
    slug: str, principal: HelpWrite, db: Db, runtime: RuntimeDep, body: CategoryIn
) -> CategoryOut:
    """Create or update the category ``slug`` (the body's slug must match)."""
    if body.slug != slug:
        raise InvalidInput("The slug in the body must match the address.", field="slug")
    return CategoryOut.model_validate(
        service.save_category(db, runtime.clock, body, actor=principal.actor)
    )
