"""Articles: sanitised Markdown, revisions and audit of every change, drafts and internal
articles hidden from the public, votes one per visitor and rate-limited, suggestions counted."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost.accounts.audit import Actor
from imhost.accounts.models import AuditEvent
from imhost.kit.clock import FrozenClock
from imhost.kit.errors import Conflict, InvalidInput, NotFound, TooManyRequests
from imhost.support import markdown, service
from imhost.support.models import HelpVote
from imhost.support.schemas import ArticleIn
from tests.support.factories import article, category

EDITOR = Actor(user_id=None, label="editor@provider.example")


@pytest.mark.parametrize(
    ("source", "forbidden"),
    [
        ("<script>alert(1)</script>", "<script"),
        ('<img src=x onerror="alert(1)">', "<img"),
        ("[click](javascript:alert(1))", 'href="javascript'),
        ("[click](JaVaScRiPt:alert(1))", 'href="javascript'),
        ("<javascript:alert(1)>", 'href="javascript'),
        ("[x](data:text/html;base64,PHNjcmlwdD4=)", 'href="data'),
        ('<a href="https://x" onclick="steal()">x</a>', "<a href"),
        ("<iframe src=https://evil.example></iframe>", "<iframe"),
        ("<style>body{display:none}</style>", "<style"),
        ("![pic](https://evil.example/t.png)", "<img"),
    ],
)
def test_markdown_never_lets_markup_or_script_through(source: str, forbidden: str) -> None:
    html = markdown.render(source)
    assert forbidden.lower() not in html.lower()
    assert re.search(r"<[^>]*\son\w+\s*=", html) is None  # no event handler on any tag


def test_markdown_renders_the_usual_elements_and_safe_links() -> None:
    html = markdown.render(
        "# Title\n\nSome **bold** and `code`.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "[docs](https://example.org/x)\n"
    )
    assert "<h2>Title</h2>" in html  # the page's own title is the only h1
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert "<table>" in html and "<td>1</td>" in html
    assert 'href="https://example.org/x"' in html and 'rel="noopener noreferrer nofollow"' in html
    assert markdown.plain_text(html).startswith("Title Some bold and code.")


def test_every_change_is_a_revision_and_an_audit_entry(db: Session, clock: FrozenClock) -> None:
    category(db, clock)
    a = service.create_article(
        db,
        clock,
        ArticleIn(slug="ports", category="getting-started", title="Ports", body="5222"),
        actor=EDITOR,
    )
    assert a.status == "draft" and a.author_label == EDITOR.label
    clock.advance(timedelta(hours=1))
    changed = service.update_article(
        db,
        clock,
        a,
        ArticleIn(slug="ports", category="getting-started", title="Ports", body="5222 and 5223"),
        actor=EDITOR,
    )
    assert changed == ["text"] and a.updated_at == clock.now()
    nothing = service.update_article(
        db,
        clock,
        a,
        ArticleIn(slug="ports", category="getting-started", title="Ports", body="5222 and 5223"),
        actor=EDITOR,
    )
    assert nothing == []
    assert service.set_article_status(db, clock, a, "published", actor=EDITOR)
    assert not service.set_article_status(db, clock, a, "published", actor=EDITOR)
    db.commit()
    revs = service.revisions(db, a.id)
    assert [(r.number, r.change) for r in revs] == [
        (3, "published"),
        (2, "changed text"),
        (1, "created"),
    ]
    assert revs[1].body == "5222 and 5223" and revs[2].body == "5222"
    actions = list(
        db.scalars(
            select(AuditEvent.action).where(AuditEvent.target_id == a.id).order_by(AuditEvent.at)
        )
    )
    assert sorted(actions) == sorted(
        ["help.article_created", "help.article_updated", "help.article_published"]
    )


def test_a_taken_slug_or_unknown_category_is_refused(db: Session, clock: FrozenClock) -> None:
    category(db, clock)
    article(db, clock, "ports")
    with pytest.raises(Conflict):
        article(db, clock, "ports")
    with pytest.raises(InvalidInput):
        article(db, clock, "other", category="nope")


def test_the_public_never_sees_drafts_or_internal_articles(db: Session, clock: FrozenClock) -> None:
    category(db, clock)
    article(db, clock, "draft", status="draft")
    article(db, clock, "internal", visibility="internal")
    article(db, clock, "public")
    for slug in ("draft", "internal", "missing"):
        with pytest.raises(NotFound):
            service.get_article(db, slug)
    assert service.get_article(db, "internal", include_internal=True).slug == "internal"
    assert [a.slug for a in service.list_articles(db)] == ["public"]


def test_one_vote_per_visitor_which_may_change(db: Session, clock: FrozenClock) -> None:
    category(db, clock)
    a = article(db, clock, "ports")
    for helpful in (True, True, False):
        service.vote(db, clock, a, helpful=helpful, visitor="v1", address="10.0.0.1", secret="k")
    service.vote(db, clock, a, helpful=True, visitor="v2", address="10.0.0.2", secret="k")
    db.commit()
    counts = service.article_counts(db, [a])[a.id]
    assert (counts.helpful_yes, counts.helpful_no) == (1, 1)
    stored = list(db.scalars(select(HelpVote)))
    assert all("10.0.0" not in (v.address_hash or "") and v.voter_hash != "v1" for v in stored)


def test_votes_are_rate_limited_per_address_and_addresses_forgotten(
    db: Session, clock: FrozenClock
) -> None:
    category(db, clock)
    a = article(db, clock, "ports")
    for i in range(service.VOTES_PER_ADDRESS_PER_HOUR):
        service.vote(db, clock, a, helpful=True, visitor=f"v{i}", address="10.0.0.9", secret="k")
    with pytest.raises(TooManyRequests):
        service.vote(db, clock, a, helpful=True, visitor="late", address="10.0.0.9", secret="k")
    service.vote(db, clock, a, helpful=True, visitor="other", address="10.0.0.10", secret="k")
    clock.advance(service.ADDRESS_KEPT_FOR + timedelta(seconds=1))
    service.vote(db, clock, a, helpful=False, visitor="late", address="10.0.0.9", secret="k")
    db.commit()
    kept = [v for v in db.scalars(select(HelpVote)) if v.address_hash is not None]
    assert len(kept) == 1  # only the vote inside the window keeps its address hash


def test_views_and_suggestion_openings_are_counted(db: Session, clock: FrozenClock) -> None:
    category(db, clock)
    a = article(db, clock, "ports", title="Ports to open", body="Open 5222.")
    service.record_view(db, a)
    service.record_view(db, a)
    service.record_suggestion_opened(db, clock, a, context="form1")
    db.commit()
    db.refresh(a)
    counts = service.article_counts(db, [a])[a.id]
    assert (counts.views, counts.suggestions_opened) == (2, 1)
    assert service.suggestions_opened(db) == 1
    assert [h.slug for h in service.suggest_articles(db, "which ports must I open?", 3)] == [
        "ports"
    ]
    # Only common words: nothing to suggest by.
    assert service.suggest_articles(db, "it does not work for me", 3) == []
