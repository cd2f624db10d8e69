"""The public help center (``/help``): categories, search, articles, "Was this helpful?".

No sign-in is needed and no JavaScript: every page is server-rendered with the site's styles
and CSP. Drafts and internal articles answer 404 here. A signed-in visitor sees the usual
header. The vote form is a plain POST with the double-submit CSRF token of public forms; the
visitor is known by a random cookie (only its keyed hash is stored).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from sqlalchemy.orm import Session
from starlette.responses import Response

from imhost.accounts.models import StaffRole, User
from imhost.accounts.sessions import COOKIE_NAME, lookup_session
from imhost.kit.errors import DomainError, InvalidInput
from imhost.runtime import Runtime
from imhost.support import search, service
from imhost.web.deps import Db, Principal, RuntimeDep
from imhost.web.pages import Form, Nav, PageNo, nav_for, page_public, redirect, render

router = APIRouter(include_in_schema=False)

PublicPage = Annotated[Principal, Depends(page_public())]
VISITOR_COOKIE = "imhost_help_visitor"
VISITOR_MAX_AGE = 365 * 24 * 3600
SEARCH_PAGE_SIZE = 10

Slug = Annotated[str, PathParam(min_length=1, max_length=120)]


def visitor_nav(request: Request, db: Session, runtime: Runtime) -> Nav:
    """The header of a signed-in visitor (public pages need no sign-in but show it)."""
    cookie = request.cookies.get(COOKIE_NAME)
    web = lookup_session(db, runtime.clock, runtime.settings.security, cookie) if cookie else None
    user = db.get(User, web.user_id) if web is not None else None
    if web is None or user is None or not user.is_active or not web.mfa_verified:
        return Nav(section="Help")
    staff_role = StaffRole(user.staff_role) if user.staff_role else None
    return nav_for(db, Principal(user=user, web_session=web, staff_role=staff_role), section="Help")


def _page(
    request: Request,
    db: Session,
    runtime: Runtime,
    template: str,
    context: dict[str, object],
    *,
    status_code: int = 200,
    error: DomainError | None = None,
) -> Response:
    ctx = {"nav": visitor_nav(request, db, runtime), "categories": service.list_categories(db)}
    ctx.update(context)
    return render(request, template, ctx, db=db, status_code=status_code, error=error)


@router.get("/help")
def help_home(request: Request, principal: PublicPage, db: Db, runtime: RuntimeDep) -> Response:
    articles = service.list_articles(db)
    by_category: dict[str, list[object]] = {}
    for a in articles:
        by_category.setdefault(a.category_id, []).append(a)
    return _page(
        request,
        db,
        runtime,
        "help/index.html",
        {
            "title": "Help center",
            "by_category": by_category,
            "popular": service.popular_articles(db, 6),
        },
    )


@router.get("/help/search")
def help_search(
    request: Request,
    principal: PublicPage,
    db: Db,
    runtime: RuntimeDep,
    pg: PageNo,
    q: Annotated[str, Query(max_length=2000)] = "",
) -> Response:
    pg = type(pg)(pg.page, SEARCH_PAGE_SIZE)
    results = search.search(db, q, limit=SEARCH_PAGE_SIZE, offset=pg.offset)
    return _page(
        request,
        db,
        runtime,
        "help/search.html",
        {
            "title": f"Search: {q.strip()[:60]}" if q.strip() else "Search the help center",
            "q": q.strip()[:200],
            "results": results,
            "pg": pg.with_total(results.total),
        },
    )


@router.get("/help/articles/{slug}")
def help_article(
    request: Request,
    slug: Slug,
    principal: PublicPage,
    db: Db,
    runtime: RuntimeDep,
    source: Annotated[str, Query(alias="from", max_length=20)] = "",
    context: Annotated[str, Query(alias="ctx", max_length=64, pattern=r"^[A-Za-z0-9_-]*$")] = "",
) -> Response:
    article = service.get_article(db, slug)
    service.record_view(db, article)
    if source == "suggestion":
        service.record_suggestion_opened(db, runtime.clock, article, context=context or None)
    category = next((c for c in service.list_categories(db) if c.id == article.category_id), None)
    related = [
        a for a in service.list_articles(db, category_id=article.category_id) if a.id != article.id
    ]
    return _page(
        request,
        db,
        runtime,
        "help/article.html",
        {
            "title": article.title,
            "article": article,
            "category": category,
            "related": related[:5],
            "voted": request.query_params.get("voted") == "1",
        },
    )


@router.post("/help/articles/{slug}/vote")
def help_vote(
    request: Request, slug: Slug, principal: PublicPage, db: Db, runtime: RuntimeDep, form: Form
) -> Response:
    article = service.get_article(db, slug)
    answer = str(form.get("helpful", ""))
    if answer not in ("yes", "no"):
        raise InvalidInput("Choose yes or no.", field="helpful")
    visitor = request.cookies.get(VISITOR_COOKIE, "")
    if not visitor or len(visitor) > 64:
        visitor = secrets.token_urlsafe(24)
    service.vote(
        db,
        runtime.clock,
        article,
        helpful=answer == "yes",
        visitor=visitor,
        address=principal.address or "unknown",
        secret=runtime.secret_key,
    )
    # The article's vote box says thank you (no flash as well: it would say it twice).
    response = redirect(request, f"/help/articles/{article.slug}?voted=1#vote")
    response.set_cookie(
        VISITOR_COOKIE,
        visitor,
        max_age=VISITOR_MAX_AGE,
        httponly=True,
        samesite="lax",
        secure=runtime.settings.security.cookie_secure,
        path="/help",
    )
    return response


@router.get("/help/{category_slug}")
def help_category(
    request: Request,
    category_slug: Annotated[str, PathParam(min_length=1, max_length=80)],
    principal: PublicPage,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    category = service.get_category(db, category_slug)
    return _page(
        request,
        db,
        runtime,
        "help/category.html",
        {
            "title": category.title,
            "category": category,
            "articles": service.list_articles(db, category_id=category.id),
        },
    )
