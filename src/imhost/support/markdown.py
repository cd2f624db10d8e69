"""Article Markdown to safe HTML, and to the plain text search indexes.

CommonMark (markdown-it-py) with raw HTML off and tables on, then sanitised by nh3 (the Rust
``ammonia`` sanitiser): only the tags and attributes below survive, links keep only http,
https and mailto targets and get ``rel="noopener noreferrer nofollow"``. Whatever an author
types, no script, event handler, style or ``javascript:`` link reaches a page.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache

import nh3
from markdown_it import MarkdownIt

ALLOWED_TAGS: frozenset[str] = frozenset(
    {
        "a",
        "blockquote",
        "br",
        "code",
        "em",
        "h2",
        "h3",
        "h4",
        "hr",
        "li",
        "ol",
        "p",
        "pre",
        "strong",
        "table",
        "tbody",
        "td",
        "th",
        "thead",
        "tr",
        "ul",
    }
)
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {"a": {"href", "title"}, "th": {"align"}, "td": {"align"}}
URL_SCHEMES: frozenset[str] = frozenset({"http", "https", "mailto"})

# h1 is the page's title: an article's own "# Heading" becomes h2, and h5/h6 become h4.
_HEADING_SHIFT = {"h1": "h2", "h5": "h4", "h6": "h4"}
_SPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable("table")
    return md


def sanitize(fragment: str) -> str:
    """Keep only the allowed tags, attributes and link schemes of ``fragment``."""
    return nh3.clean(
        fragment,
        tags=set(ALLOWED_TAGS),
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=set(URL_SCHEMES),
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def render(source: str) -> str:
    """The article's HTML, safe to put in a page as it is."""
    md = _parser()
    env: dict[str, object] = {}
    tokens = md.parse(_CONTROL.sub("", source), env)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = _HEADING_SHIFT.get(token.tag, token.tag)
    return sanitize(md.renderer.render(tokens, md.options, env))


def plain_text(rendered_html: str) -> str:
    """The words of rendered HTML (no tags, entities decoded, spaces collapsed): what search
    indexes and what snippets are cut from."""
    spaced = re.sub(r"<(?:/p|/h\d|/li|br|/td|/th|/pre|/blockquote)[^>]*>", " ", rendered_html)
    words = html.unescape(nh3.clean(spaced, tags=set()))
    return _SPACE.sub(" ", _CONTROL.sub("", words)).strip()


MARK_START = "\x02"
MARK_END = "\x03"
"""Markers the databases put around matched words (text never holds them: see ``_CONTROL``)."""


def highlight(snippet: str) -> str:
    """A snippet with its match markers as ``<mark>``: everything else escaped, and the
    result sanitised once more (only ``<mark>`` may remain)."""
    escaped = html.escape(snippet.replace("\x00", ""), quote=True)
    marked = escaped.replace(MARK_START, "<mark>").replace(MARK_END, "</mark>")
    return nh3.clean(marked, tags={"mark"}, attributes={})
