"""Console: the help center's articles (list with views, votes and suggestion openings; the
Markdown editor with a server-rendered preview; publish and unpublish; revisions) and its
categories. Reading needs ``support-admin`` read, changing it ``support-admin`` write; every
change is a revision and an audit entry (``imhost.support.service``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.responses import Response

from imhost.accounts.permissions import Access, Scope
from imhost.kit.errors import DomainError
from imhost.support import markdown, service
from imhost.support.models import HelpArticle
from imhost.support.schemas import MAX_BODY, ArticleIn, CategoryIn
from imhost.web.deps import Db, Principal, RuntimeDep
from imhost.web.pages import (
    Form,
    FormErrors,
    invalid_form,
    page_require,
    redirect,
    render,
    text,
    values_of,
)

router = APIRouter(prefix="/console/help", include_in_schema=False)

HelpRead = Annotated[
    Principal, Depends(page_require("support-admin", Access.READ, scope=Scope.STAFF))
]
HelpWrite = Annotated[
    Principal, Depends(page_require("support-admin", Access.WRITE, scope=Scope.STAFF))
]
ArticleId = Annotated[str, PathParam(min_length=1, max_length=32)]

ARTICLE_FIELDS = {
    "slug",
    "category",
    "title",
    "summary",
    "body",
    "status",
    "visibility",
    "position",
}
CATEGORY_FIELDS = {"slug", "title", "description", "position"}
SECTION = "Help center"


def _article_form(form: FormData) -> ArticleIn:
    values: dict[str, Any] = {
        name: text(form, name, max_length=500) for name in ARTICLE_FIELDS - {"body"}
    }
    body = form.get("body", "")
    values["body"] = (
        str(body)[: MAX_BODY + 1].replace("\r\n", "\n") if isinstance(body, str) else ""
    )
    values["position"] = values["position"] or "0"
    try:
        return ArticleIn.model_validate(values)
    except ValidationError as exc:
        raise invalid_form(exc, ARTICLE_FIELDS) from None


def _values(article: HelpArticle, category_slug: str) -> dict[str, str]:
    return {
        "slug": article.slug,
        "category": category_slug,
        "title": article.title,
        "summary": article.summary,
        "body": article.body,
        "status": article.status,
        "visibility": article.visibility,
        "position": str(article.position),
    }


@router.get("")
def articles(request: Request, principal: HelpRead, db: Db) -> Response:
    rows = service.list_articles(db, include_drafts=True, include_internal=True, limit=10_000)
    return render(
        request,
        "console/help_articles.html",
        {
            "title": SECTION,
            "articles": rows,
            "counts": service.article_counts(db, rows),
            "categories": service.list_categories(db),
            "opened_total": service.suggestions_opened(db),
            "values": {},
            "errors": FormErrors(),
        },
        principal=principal,
        db=db,
        section=SECTION,
    )


def _editor(
    request: Request,
    principal: Principal,
    db: Db,
    *,
    article: HelpArticle | None,
    values: dict[str, str],
    errors: FormErrors | None = None,
    preview: str | None = None,
    error: DomainError | None = None,
) -> Response:
    categories = service.list_categories(db)
    return render(
        request,
        "console/help_article.html",
        {
            "title": article.title if article else "New article",
            "article": article,
            "values": values,
            "errors": errors or FormErrors(),
            "preview": preview,
            "category_options": [(c.slug, c.title) for c in categories],
            "revisions": service.revisions(db, article.id)[:20] if article else [],
            "counts": service.article_counts(db, [article])[article.id] if article else None,
        },
        principal=principal,
        db=db,
        section=SECTION,
        error=error,
    )


@router.get("/new")
def new_article(request: Request, principal: HelpWrite, db: Db) -> Response:
    categories = service.list_categories(db)
    values = {"status": "draft", "visibility": "public", "position": "0"}
    if categories:
        values["category"] = categories[0].slug
    return _editor(request, principal, db, article=None, values=values)


@router.post("/new")
def create_article(
    request: Request, principal: HelpWrite, db: Db, runtime: RuntimeDep, form: Form
) -> Response:
    values = values_of(form)
    try:
        data = _article_form(form)
        if form.get("action") == "preview":
            preview = markdown.render(data.body)
            return _editor(request, principal, db, article=None, values=values, preview=preview)
        article = service.create_article(db, runtime.clock, data, actor=principal.actor)
    except DomainError as exc:
        errors = FormErrors.of(exc, ARTICLE_FIELDS)
        return _editor(
            request, principal, db, article=None, values=values, errors=errors, error=exc
        )
    return redirect(request, f"/console/help/articles/{article.id}", "Article created.")


@router.get("/articles/{article_id}")
def edit_article(request: Request, article_id: ArticleId, principal: HelpRead, db: Db) -> Response:
    article = service.get_article_by_id(db, article_id)
    category = next(
        (c.slug for c in service.list_categories(db) if c.id == article.category_id), ""
    )
    return _editor(
        request,
        principal,
        db,
        article=article,
        values=_values(article, category),
        preview=article.body_html,
    )


@router.post("/articles/{article_id}")
def save_article(
    request: Request,
    article_id: ArticleId,
    principal: HelpWrite,
    db: Db,
    runtime: RuntimeDep,
    form: Form,
) -> Response:
    article = service.get_article_by_id(db, article_id)
    values = values_of(form)
    try:
        data = _article_form(form)
        if form.get("action") == "preview":
            preview = markdown.render(data.body)
            return _editor(request, principal, db, article=article, values=values, preview=preview)
        changed = service.update_article(db, runtime.clock, article, data, actor=principal.actor)
    except DomainError as exc:
        errors = FormErrors.of(exc, ARTICLE_FIELDS)
        return _editor(
            request, principal, db, article=article, values=values, errors=errors, error=exc
        )
    message = "Article saved." if changed else "Nothing had changed."
    return redirect(request, f"/console/help/articles/{article.id}", message)


@router.post("/articles/{article_id}/publish")
def publish(
    request: Request, article_id: ArticleId, principal: HelpWrite, db: Db, runtime: RuntimeDep
) -> Response:
    article = service.get_article_by_id(db, article_id)
    service.set_article_status(db, runtime.clock, article, "published", actor=principal.actor)
    return redirect(request, f"/console/help/articles/{article.id}", "Article published.")


@router.post("/articles/{article_id}/unpublish")
def unpublish(
    request: Request, article_id: ArticleId, principal: HelpWrite, db: Db, runtime: RuntimeDep
) -> Response:
    article = service.get_article_by_id(db, article_id)
    service.set_article_status(db, runtime.clock, article, "draft", actor=principal.actor)
    return redirect(
        request, f"/console/help/articles/{article.id}", "Article unpublished: now a draft."
    )


@router.post("/categories")
def save_category(
    request: Request, principal: HelpWrite, db: Db, runtime: RuntimeDep, form: Form
) -> Response:
    values = {name: text(form, name, max_length=500) for name in CATEGORY_FIELDS}
    values["position"] = values["position"] or "0"
    try:
        try:
            data = CategoryIn.model_validate(values)
        except ValidationError as exc:
            raise invalid_form(exc, CATEGORY_FIELDS) from None
        service.save_category(db, runtime.clock, data, actor=principal.actor)
    except DomainError as exc:
        rows = service.list_articles(db, include_drafts=True, include_internal=True, limit=10_000)
        return render(
            request,
            "console/help_articles.html",
            {
                "title": SECTION,
                "articles": rows,
                "counts": service.article_counts(db, rows),
                "categories": service.list_categories(db),
                "opened_total": service.suggestions_opened(db),
                "values": values,
                "errors": FormErrors.of(exc, CATEGORY_FIELDS),
            },
            principal=principal,
            db=db,
            section=SECTION,
            error=exc,
        )
    return redirect(request, "/console/help", f"Category {data.title} saved.")
