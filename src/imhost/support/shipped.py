"""Articles as Markdown files: the ones shipped with imhost, and import/export of a folder.

A folder holds ``categories.toml`` (``[[category]]`` tables: slug, title, description,
position) and one ``<slug>.md`` per article: TOML front matter between ``+++`` lines (slug,
category, title, summary, position, and optionally status and visibility), then the Markdown.

The shipped articles (``imhost/support/articles/``) are loaded at every start
(:func:`load_shipped`), which is idempotent and never overwrites staff's work: an article is
created when its slug is new; a shipped article is updated to a newer shipped text only while
staff have not edited it (its ``shipped_hash`` is cleared by any edit), and it keeps whatever
status staff gave it; categories staff changed are kept.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost.accounts.audit import Actor
from imhost.kit.clock import Clock
from imhost.kit.errors import InvalidInput
from imhost.support import service
from imhost.support.models import HelpArticle, HelpCategory
from imhost.support.schemas import ArticleIn, CategoryIn

SHIPPED_DIR = Path(__file__).parent / "articles"
CATEGORIES_FILE = "categories.toml"
FENCE = "+++"
SHIPPED_ACTOR = Actor(label="imhost (shipped article)")


@dataclass
class LoadReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # edited by staff: left as they are


def parse_article(path: Path) -> ArticleIn:
    """One article file; :class:`InvalidInput` naming the file when it is malformed."""
    raw = path.read_text(encoding="utf-8").replace("\r\n", "\n")
    if not raw.startswith(FENCE + "\n"):
        raise InvalidInput(f"{path.name}: an article starts with a '+++' front matter line.")
    front, sep, body = raw[len(FENCE) + 1 :].partition("\n" + FENCE + "\n")
    if not sep:
        raise InvalidInput(f"{path.name}: the front matter has no closing '+++' line.")
    try:
        meta = tomllib.loads(front)
        return ArticleIn.model_validate({**meta, "body": body.strip("\n") + "\n"})
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path.name}: the front matter is not valid TOML ({exc}).") from None
    except ValidationError as exc:
        where = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:3])
        raise InvalidInput(f"{path.name}: check {where}.") from None


def parse_categories(directory: Path) -> list[CategoryIn]:
    path = directory / CATEGORIES_FILE
    if not path.exists():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return [CategoryIn.model_validate(c) for c in data.get("category", [])]
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise InvalidInput(f"{CATEGORIES_FILE}: not a valid list of categories ({exc}).") from None


def article_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.md") if p.is_file())


def _hash(data: ArticleIn) -> str:
    return service.content_hash(
        slug=data.slug,
        category=data.category,
        title=data.title,
        summary=data.summary,
        body=data.body,
        visibility=data.visibility,
    )


def load_shipped(session: Session, clock: Clock, directory: Path = SHIPPED_DIR) -> LoadReport:
    """Load the shipped categories and articles (see the module docstring)."""
    report = LoadReport()
    for category in parse_categories(directory):
        exists = session.scalar(select(HelpCategory.id).where(HelpCategory.slug == category.slug))
        if exists is None:
            service.save_category(session, clock, category, actor=SHIPPED_ACTOR)
    for path in article_files(directory):
        data = parse_article(path).model_copy(update={"status": "published"})
        shipped = _hash(data)
        article = session.scalar(select(HelpArticle).where(HelpArticle.slug == data.slug))
        if article is None:
            service.create_article(session, clock, data, actor=SHIPPED_ACTOR, shipped_hash=shipped)
            report.created.append(data.slug)
        elif article.shipped_hash == shipped:
            report.unchanged.append(data.slug)
        elif article.shipped_hash is not None and (
            service.article_hash(session, article) == article.shipped_hash
        ):
            # Not edited since the last shipped version: take the new one, keep its status.
            keep_status = data.model_copy(update={"status": article.status})
            service.update_article(
                session, clock, article, keep_status, actor=SHIPPED_ACTOR, shipped_hash=shipped
            )
            report.updated.append(data.slug)
        else:
            report.kept.append(data.slug)
    return report


def import_directory(
    session: Session, clock: Clock, directory: Path, *, actor: Actor
) -> LoadReport:
    """Create or update the categories and articles of ``directory`` (a staff action: what is
    in the files wins)."""
    if not directory.is_dir():
        raise InvalidInput(f"{directory} is not a folder.")
    report = LoadReport()
    for category in parse_categories(directory):
        service.save_category(session, clock, category, actor=actor)
    for path in article_files(directory):
        data = parse_article(path)
        article = session.scalar(select(HelpArticle).where(HelpArticle.slug == data.slug))
        if article is None:
            service.create_article(session, clock, data, actor=actor)
            report.created.append(data.slug)
        elif service.update_article(session, clock, article, data, actor=actor):
            report.updated.append(data.slug)
        else:
            report.unchanged.append(data.slug)
    return report


def _toml_value(value: str | int) -> str:
    # A JSON string is a valid TOML basic string (same escapes).
    return json.dumps(value) if isinstance(value, str) else str(value)


def export_directory(session: Session, directory: Path) -> int:
    """Write every category and article (drafts and internal ones too) to ``directory``;
    the number of articles written."""
    directory.mkdir(parents=True, exist_ok=True)
    categories = service.list_categories(session)
    slugs = {c.id: c.slug for c in categories}
    lines: list[str] = []
    for c in categories:
        lines += ["[[category]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in _category_fields(c)]
        lines.append("")
    (directory / CATEGORIES_FILE).write_text("\n".join(lines), encoding="utf-8")
    articles = service.list_articles(
        session, include_drafts=True, include_internal=True, limit=1_000_000
    )
    for a in articles:
        meta: list[tuple[str, str | int]] = [
            ("slug", a.slug),
            ("category", slugs.get(a.category_id, "")),
            ("title", a.title),
            ("summary", a.summary),
            ("position", a.position),
            ("status", a.status),
            ("visibility", a.visibility),
        ]
        front = "\n".join(f"{k} = {_toml_value(v)}" for k, v in meta)
        body = a.body.rstrip("\n") + "\n"
        (directory / f"{a.slug}.md").write_text(f"{FENCE}\n{front}\n{FENCE}\n\n{body}", "utf-8")
    return len(articles)


def _category_fields(c: HelpCategory) -> list[tuple[str, str | int]]:
    return [
        ("slug", c.slug),
        ("title", c.title),
        ("description", c.description),
        ("position", c.position),
    ]
