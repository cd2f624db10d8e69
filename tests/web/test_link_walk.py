"""Every link on every page leads somewhere: a walk of the portal (as an owner) and the console
(as a staff admin) that follows each same-site link it finds and meets no 404, no 5xx and no
JSON where a browser expects a page."""

from __future__ import annotations

import re
from collections import deque
from urllib.parse import urldefrag, urljoin, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import Organization, OrgRole, StaffRole
from imhost.kit.clock import FrozenClock, utc
from tests.factories import World, make_world
from tests.web.conftest import signed_in
from tests.web.test_email_links import _send_every_email

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
HREF = re.compile(r'<a [^>]*href="([^"]+)"')
LIMIT = 400  # pages per walk: enough for every kind of page, bounded in time


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    clock.set(utc(2026, 11, 1, 8))
    with session_factory() as session:
        world = make_world(session, clock)
        org = session.get(Organization, world.org.id)
        assert org is not None
        org.billing_email = world.members[OrgRole.OWNER].email
        session.commit()
        return world


def _walk(client: TestClient, start: str, base: str) -> dict[str, tuple[int, str]]:
    """Follow every same-site link from ``start``; each address with its status and type."""
    seen: dict[str, tuple[int, str]] = {}
    queue = deque([start])
    while queue and len(seen) < LIMIT:
        path = queue.popleft()
        if path in seen:
            continue
        answer = client.get(path, headers=HTML, follow_redirects=True)
        kind = answer.headers.get("content-type", "")
        seen[path] = (answer.status_code, kind)
        if not kind.startswith("text/html"):
            continue
        for href in HREF.findall(answer.text):
            url = urldefrag(urljoin(base + path, href.replace("&amp;", "&")))[0]
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or url.split("/")[2] != base.split("/")[2]:
                continue  # mailto:, xmpp:, another site
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            local = target.startswith(("/portal", "/console", "/api/v1/docs", "/static"))
            if local and target not in seen:
                queue.append(target)
    return seen


def _dead_ends(seen: dict[str, tuple[int, str]]) -> dict[str, tuple[int, str]]:
    return {
        path: (status, kind)
        for path, (status, kind) in seen.items()
        if status == 404 or status >= 500 or "json" in kind
    }


def test_every_link_of_the_portal_and_the_console_leads_to_a_page(
    app: FastAPI, world: World, clock: FrozenClock
) -> None:
    runtime = app.state.runtime
    _send_every_email(runtime, clock, world)  # invoices, payments, alerts, a review, e-mails
    base = runtime.settings.public_url.rstrip("/")
    owner = signed_in(app, world.members[OrgRole.OWNER])
    portal = _walk(owner, f"/portal/orgs/{world.org.slug}/", base)
    portal.update(_walk(owner, "/portal/account", base))
    assert len(portal) > 20, sorted(portal)
    assert _dead_ends(portal) == {}
    admin = signed_in(app, world.staff[StaffRole.ADMIN])
    console = _walk(admin, "/console/", base)
    assert len(console) > 20, sorted(console)
    assert _dead_ends(console) == {}
    # The walk reached the pages this issue was about.
    walked = set(portal) | set(console)
    assert "/api/v1/docs" in walked
    assert any(p.startswith("/portal/security/alerts/") for p in walked)
    assert any("/billing/invoices/" in p for p in walked)
