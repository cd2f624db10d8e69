"""The shipped articles: valid, loaded once, updated only while staff have not edited them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from imhost.accounts.audit import Actor
from imhost.kit.clock import FrozenClock
from imhost.kit.errors import InvalidInput
from imhost.support import search, service, shipped
from imhost.support.schemas import ArticleIn

REQUIRED_TOPICS = {
    "connect-a-client": [
        "5222",
        "5223",
        "xmpp-websocket",
        "Conversations",
        "Monal",
        "Siskin",
        "Dino",
        "Gajim",
    ],
    "keep-your-client-up-to-date": ["XEP-0092"],
    "firewalls-and-ports": ["5222", "5223", "443"],
    "login-problems": ["15 minutes", "suspended", "overdue", "hard cap"],
    "mfa-and-recovery-codes": ["recovery code", "ten"],
    "custom-domains-and-dns": ["_xmpp-client._tcp", "cannot yet"],
    "domain-renewal": ["nothing to renew"],
    "reading-your-invoice": ["usage", "rounded", "tax"],
    "budgets-and-caps": ["15 minutes", "hard cap"],
}


def test_every_shipped_file_parses_and_covers_its_topic() -> None:
    files = {p.stem: shipped.parse_article(p) for p in shipped.article_files(shipped.SHIPPED_DIR)}
    assert set(REQUIRED_TOPICS) <= set(files)
    categories = {c.slug for c in shipped.parse_categories(shipped.SHIPPED_DIR)}
    for slug, data in files.items():
        assert data.slug == slug and data.category in categories
        for word in REQUIRED_TOPICS.get(slug, []):
            assert word.lower() in data.body.lower(), (slug, word)


def test_the_shipped_pieces_reach_the_package_data() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["imhost"]
    assert "support/articles/*.md" in patterns and "support/articles/*.toml" in patterns


def test_loading_twice_creates_once_and_search_finds_them(db: Session, clock: FrozenClock) -> None:
    first = shipped.load_shipped(db, clock)
    db.commit()
    assert len(first.created) == len(shipped.article_files(shipped.SHIPPED_DIR))
    again = shipped.load_shipped(db, clock)
    assert (
        again.created == [] and again.updated == [] and len(again.unchanged) == len(first.created)
    )
    assert search.search(db, "recovery codes").hits[0].slug == "mfa-and-recovery-codes"
    assert search.search(db, "port 5223").total >= 2


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "articles"
    shutil.copytree(shipped.SHIPPED_DIR, target)
    return target


def test_a_new_shipped_version_updates_an_untouched_article_but_never_a_staff_edit(
    db: Session, clock: FrozenClock, tmp_path: Path
) -> None:
    folder = _copy(tmp_path)
    shipped.load_shipped(db, clock, folder)
    edited = service.get_article(db, "firewalls-and-ports")
    data = ArticleIn(
        slug=edited.slug,
        category="getting-started",
        title=edited.title,
        summary=edited.summary,
        body=edited.body + "\nOur office firewall: ask Bob.\n",
        status="published",
    )
    service.update_article(db, clock, edited, data, actor=Actor(label="staff"))
    untouched = service.get_article(db, "domain-renewal")
    service.set_article_status(db, clock, untouched, "draft", actor=Actor(label="staff"))
    db.commit()
    for name in ("firewalls-and-ports.md", "domain-renewal.md"):
        path = folder / name
        path.write_text(path.read_text() + "\nA new paragraph from a newer release.\n")
    report = shipped.load_shipped(db, clock, folder)
    assert report.updated == ["domain-renewal"] and report.kept == ["firewalls-and-ports"]
    renewed = service.get_article(db, "domain-renewal", include_drafts=True)
    assert "newer release" in renewed.body and renewed.status == "draft"
    assert "ask Bob" in service.get_article(db, "firewalls-and-ports").body


def test_export_then_import_round_trips(db: Session, clock: FrozenClock, tmp_path: Path) -> None:
    shipped.load_shipped(db, clock)
    written = shipped.export_directory(db, tmp_path / "out")
    assert written == service.count_articles(db)
    report = shipped.import_directory(db, clock, tmp_path / "out", actor=Actor(label="cli"))
    assert report.created == [] and report.updated == []


def test_a_malformed_file_is_refused_with_its_name(tmp_path: Path) -> None:
    (tmp_path / "bad.md").write_text("no front matter\n")
    with pytest.raises(InvalidInput, match=r"bad\.md"):
        shipped.parse_article(tmp_path / "bad.md")
    (tmp_path / "bad2.md").write_text('+++\nslug = "Bad Slug"\n+++\nx\n')
    with pytest.raises(InvalidInput, match=r"bad2\.md"):
        shipped.parse_article(tmp_path / "bad2.md")
