"""Help center test objects."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from imhost.kit.clock import Clock
from imhost.support import service
from imhost.support.models import HelpArticle, HelpCategory
from imhost.support.schemas import ArticleIn, CategoryIn


def category(db: Session, clock: Clock, slug: str = "getting-started", **kw: Any) -> HelpCategory:
    return service.save_category(
        db, clock, CategoryIn(slug=slug, title=kw.pop("title", slug.title()), **kw)
    )


def article(db: Session, clock: Clock, slug: str, **kw: Any) -> HelpArticle:
    fields: dict[str, Any] = {
        "slug": slug,
        "category": "getting-started",
        "title": slug.replace("-", " ").capitalize(),
        "summary": "",
        "body": "",
        "status": "published",
    }
    fields.update(kw)
    return service.create_article(db, clock, ArticleIn(**fields))
