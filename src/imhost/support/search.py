"""Full-text search of help articles, ranked by relevance, on SQLite and PostgreSQL.

- SQLite: the FTS5 table ``help_article_fts`` (porter stemming, unicode61 with diacritics
  folded), which this module keeps in sync with ``help_articles`` (``index_article``), ranked
  by ``bm25()`` with title > summary > body weights inside FTS5 (the public's filter, status
  and visibility, is part of the match), snippets from ``snippet()`` for the page's rows only.
- PostgreSQL: the stored generated tsvector column ``help_articles.search_document`` (title
  A, summary B, body C; kept by PostgreSQL itself) and its GIN index, ranked by ``ts_rank``,
  snippets from ``ts_headline`` for the page's rows only.

A query is never passed to either engine as typed: it is cut into words (letters and digits
only, at most :data:`MAX_TERMS` words of :data:`MAX_TERM_LENGTH` characters), each searched as
a prefix (``"word"*`` for FTS5, ``word:*`` for ``to_tsquery``). Quotes, operators, column
filters or FTS syntax in the query are therefore only separators, and nothing a visitor types
can make the search fail. Every word must match; when no article has them all, articles with
any of them are returned, still ranked.

Both engines return the same shape (:class:`SearchResults`); highlights are HTML in which only
``<mark>`` survives (:func:`imhost.support.markdown.highlight`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from imhost.kit.clock import ensure_utc
from imhost.support.markdown import MARK_END, MARK_START, highlight
from imhost.support.models import (
    FTS_TABLE,
    PG_SEARCH_COLUMN,
    PG_SEARCH_CONFIG,
    ArticleStatus,
    HelpArticle,
    Visibility,
)

MAX_QUERY_LENGTH = 200
MAX_TERMS = 8
MAX_TERM_LENGTH = 40
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class SearchHit:
    article_id: str
    slug: str
    title: str
    summary: str
    category_id: str
    status: str
    visibility: str
    updated_at: datetime
    rank: float
    highlight: str  # sanitised HTML: text and <mark> only


@dataclass(frozen=True)
class SearchResults:
    query: str
    terms: tuple[str, ...]
    total: int
    hits: list[SearchHit] = field(default_factory=list)
    matched_all: bool = True  # False: no article had every word; these have some of them


STOP_WORDS = frozenset(
    {
        "a",
        "about",
        "after",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "cannot",
        "could",
        "did",
        "do",
        "does",
        "doesn",
        "don",
        "for",
        "from",
        "get",
        "got",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "just",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "this",
        "to",
        "too",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "why",
        "will",
        "with",
        "won",
        "would",
        "you",
        "your",
    }
)
"""Words too common to suggest anything by (a ticket subject is a sentence, a search is not)."""


def query_terms(query: str, *, skip: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """The words searched for in ``query`` (lower case, unique, in order, none of ``skip``)."""
    words: list[str] = []
    for word in _WORD.findall(query[:MAX_QUERY_LENGTH].lower()):
        word = word[:MAX_TERM_LENGTH]
        if word not in words and word not in skip:
            words.append(word)
        if len(words) >= MAX_TERMS:
            break
    return tuple(words)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


# --- keeping the SQLite index in sync ---------------------------------------------------------

# SQL built from module constants only (never from input): every value is a bound parameter.
_COLUMNS = "(article_id, audience, title, summary, body)"
_DELETE_ONE = f"DELETE FROM {FTS_TABLE} WHERE article_id = :id"  # noqa: S608
_INSERT_ONE = f"INSERT INTO {FTS_TABLE} {_COLUMNS} VALUES (:id, :audience, :title, :summary, :body)"  # noqa: S608
_DELETE_ALL = f"DELETE FROM {FTS_TABLE}"  # noqa: S608
_INSERT_ALL = f"INSERT INTO {FTS_TABLE} {_COLUMNS} SELECT id, status || ' ' || visibility, title, summary, body_text FROM help_articles"  # noqa: E501, S608


def index_article(session: Session, article: HelpArticle) -> None:
    """Put ``article``'s current words and audience in the index (SQLite; PostgreSQL's
    generated column follows the row by itself)."""
    if _dialect(session) != "sqlite":
        return
    session.flush()
    session.execute(text(_DELETE_ONE), {"id": article.id})
    session.execute(
        text(_INSERT_ONE),
        {
            "id": article.id,
            "audience": f"{article.status} {article.visibility}",
            "title": article.title,
            "summary": article.summary,
            "body": article.body_text,
        },
    )


def unindex_article(session: Session, article_id: str) -> None:
    if _dialect(session) == "sqlite":
        session.execute(text(_DELETE_ONE), {"id": article_id})


def rebuild_index(session: Session) -> int:
    """Index every article afresh (SQLite); the number of articles indexed."""
    if _dialect(session) != "sqlite":
        return int(session.execute(text("SELECT count(*) FROM help_articles")).scalar_one())
    session.flush()
    session.execute(text(_DELETE_ALL))
    result = session.execute(text(_INSERT_ALL))
    return int(getattr(result, "rowcount", 0) or 0)


# --- searching --------------------------------------------------------------------------------


def _sqlite_words(terms: tuple[str, ...], *, any_word: bool) -> str:
    words = (" OR " if any_word else " ").join(f'"{t}"*' for t in terms)
    return f"{{title summary body}} : ({words})"


def _sqlite_match(
    terms: tuple[str, ...], *, any_word: bool, include_drafts: bool, include_internal: bool
) -> str:
    match = _sqlite_words(terms, any_word=any_word)
    if not include_drafts:
        match += f' AND audience : "{ArticleStatus.PUBLISHED.value}"'
    if not include_internal:
        match += f' AND audience : "{Visibility.PUBLIC.value}"'
    return match


def _pg_query(terms: tuple[str, ...], *, any_word: bool) -> str:
    return (" | " if any_word else " & ").join(f"{t}:*" for t in terms)


_ARTICLE_COLUMNS = (
    "a.id, a.slug, a.title, a.summary, a.category_id, a.status, a.visibility, a.updated_at"
)
_RANK = "bm25(0.0, 0.0, 10.0, 4.0, 1.0)"  # article id, audience, title, summary, body
_SQLITE_COUNT = f"SELECT count(*) FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :match"  # noqa: S608
_SQLITE_PAGE = (
    f"SELECT rowid, article_id, rank FROM {FTS_TABLE} "  # noqa: S608
    f"WHERE {FTS_TABLE} MATCH :match AND rank MATCH '{_RANK}' "
    "ORDER BY rank LIMIT :limit OFFSET :offset"
)
_SQLITE_SNIPPET = (
    f"SELECT snippet({FTS_TABLE}, 4, :start, :end, '…', 24) FROM {FTS_TABLE} "  # noqa: S608
    f"WHERE {FTS_TABLE} MATCH :match AND rowid = :rowid"
)


def _run_sqlite(
    session: Session, match: str, words: str, *, limit: int, offset: int
) -> tuple[int, list[SearchHit]]:
    """Count the matches, rank them inside FTS5 (only the page's rows leave it), then cut
    snippets for the page alone: snippets and the join cost per shown row, not per match."""
    total = int(session.execute(text(_SQLITE_COUNT), {"match": match}).scalar_one())
    if not total:
        return 0, []
    page = session.execute(
        text(_SQLITE_PAGE), {"match": match, "limit": limit, "offset": offset}
    ).all()
    if not page:
        return total, []
    ids = [row.article_id for row in page]
    rows = {
        r.id: r
        for r in session.execute(
            text(f"SELECT {_ARTICLE_COLUMNS} FROM help_articles a WHERE a.id IN :ids").bindparams(  # noqa: S608
                bindparam("ids", expanding=True)
            ),
            {"ids": ids},
        )
    }
    hits = []
    for entry in page:
        row = rows.get(entry.article_id)
        if row is None:
            continue
        snip = session.execute(
            text(_SQLITE_SNIPPET),
            # The words alone: the row is known, the audience needs no second look.
            {"match": words, "rowid": entry.rowid, "start": MARK_START, "end": MARK_END},
        ).scalar()
        hits.append(_hit(row, -float(entry.rank), str(snip or "")))
    return total, hits


def _run_pg(
    session: Session, query: str, *, where: str, params: dict[str, Any], limit: int, offset: int
) -> tuple[int, list[SearchHit]]:
    config = f"'{PG_SEARCH_CONFIG}'::regconfig"
    base = (
        f"FROM help_articles a, to_tsquery({config}, :q) AS q "
        f"WHERE a.{PG_SEARCH_COLUMN} @@ q{where}"
    )
    params = {**params, "q": query, "limit": limit, "offset": offset}
    total = int(session.execute(text(f"SELECT count(*) {base}"), params).scalar_one())
    if not total:
        return 0, []
    headline_options = (
        f'StartSel="{MARK_START}", StopSel="{MARK_END}", MaxWords=30, MinWords=12, '
        'MaxFragments=2, FragmentDelimiter=" … "'
    )
    rows = session.execute(
        text(
            f"SELECT page.*, ts_headline({config}, page.body_text, page.q, :options) AS snip "  # noqa: S608
            f"FROM (SELECT {_ARTICLE_COLUMNS}, a.body_text, q, "
            f"ts_rank(a.{PG_SEARCH_COLUMN}, q, 1) AS rank {base} "
            "ORDER BY rank DESC, a.title LIMIT :limit OFFSET :offset) AS page "
            "ORDER BY page.rank DESC, page.title"
        ),
        {**params, "options": headline_options},
    ).all()
    return total, [_hit(r, float(r.rank), str(r.snip or "")) for r in rows]


def _run(
    session: Session,
    terms: tuple[str, ...],
    *,
    any_word: bool,
    limit: int,
    offset: int,
    include_drafts: bool,
    include_internal: bool,
) -> tuple[int, list[SearchHit]]:
    if _dialect(session) == "sqlite":
        match = _sqlite_match(
            terms,
            any_word=any_word,
            include_drafts=include_drafts,
            include_internal=include_internal,
        )
        words = _sqlite_words(terms, any_word=any_word)
        return _run_sqlite(session, match, words, limit=limit, offset=offset)
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if not include_drafts:
        clauses.append("a.status = :published")
        params["published"] = ArticleStatus.PUBLISHED.value
    if not include_internal:
        clauses.append("a.visibility = :public")
        params["public"] = Visibility.PUBLIC.value
    where = "".join(f" AND {c}" for c in clauses)
    return _run_pg(
        session,
        _pg_query(terms, any_word=any_word),
        where=where,
        params=params,
        limit=limit,
        offset=offset,
    )


def _hit(row: Any, rank: float, snippet: str) -> SearchHit:
    updated = row.updated_at
    if not isinstance(updated, datetime):
        updated = datetime.fromisoformat(str(updated))
    return SearchHit(
        article_id=row.id,
        slug=row.slug,
        title=row.title,
        summary=row.summary,
        category_id=row.category_id,
        status=row.status,
        visibility=row.visibility,
        updated_at=ensure_utc(updated),
        rank=rank,
        highlight=highlight(snippet),
    )


def search(
    session: Session,
    query: str,
    *,
    limit: int = 10,
    offset: int = 0,
    include_drafts: bool = False,
    include_internal: bool = False,
    any_word: bool = False,
    skip: frozenset[str] = frozenset(),
) -> SearchResults:
    """Articles matching ``query``, most relevant first (public and published ones unless
    asked otherwise). ``any_word``: rank articles with any of the words (suggestions);
    ``skip``: words to leave out (:data:`STOP_WORDS` for sentences)."""
    terms = query_terms(query, skip=skip)
    if not terms:
        return SearchResults(query=query, terms=terms, total=0)
    limit = max(1, min(limit, 100))
    offset = max(0, min(offset, 10_000))
    options = {"include_drafts": include_drafts, "include_internal": include_internal}
    total, hits = _run(session, terms, any_word=any_word, limit=limit, offset=offset, **options)
    if total or any_word or len(terms) == 1:
        return SearchResults(query=query, terms=terms, total=total, hits=hits)
    total, hits = _run(session, terms, any_word=True, limit=limit, offset=offset, **options)
    return SearchResults(query=query, terms=terms, total=total, hits=hits, matched_all=False)
