"""Ticket pages: a member opens a ticket with a file and follows the thread; another
organization's ticket is a 404; read-only members only read; files are served as downloads
that nothing renders; the public contact form refuses robots, hurry and floods; a guest
follows a ticket by its signed link; the resolution e-mail's rating link works."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.audit import Actor
from imhost.accounts.models import OrgRole
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock
from imhost.runtime import Runtime
from imhost.support import tickets
from imhost.support.ticket_models import Ticket
from tests.factories import World, make_world
from tests.web.conftest import signed_in

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
STAMP = re.compile(r'name="stamp" value="([^"]+)"')
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        world = make_world(session, clock)
        session.commit()
        return world


def _token(page: str) -> str:
    found = CSRF.search(page)
    assert found, page[:500]
    return found.group(1)


def test_a_member_opens_a_ticket_with_a_file_and_follows_it(
    app: FastAPI, world: World, runtime: Runtime
) -> None:
    owner = signed_in(app, world.members[OrgRole.TECHNICAL])
    base = f"/portal/orgs/{world.org.slug}/support/tickets"
    form = owner.get(f"{base}/new")
    assert form.status_code == 200
    token = _token(form.text)
    refused = owner.post(
        base,
        data={"csrf_token": token, "subject": "", "message": "x", "department": "technical"},
    )
    assert refused.status_code == 422 and "Write the subject" in refused.text
    sent = owner.post(
        base,
        data={
            "csrf_token": token,
            "subject": "Login fails on Conversations",
            "message": "Since this morning nobody can log in.",
            "department": "technical",
        },
        files=[("attachments", ("shot.png", PNG, "image/png"))],
        follow_redirects=False,
    )
    assert sent.status_code == 303, sent.text[:300]
    url = sent.headers["location"]
    public_id = url.rsplit("/", 1)[-1]
    page = owner.get(url)
    assert "Since this morning nobody can log in." in page.text and public_id in page.text
    listing = owner.get(base)
    assert public_id in listing.text
    link = re.search(rf'href="({re.escape(url)}/files/[0-9a-f]+)"', page.text)
    assert link
    got = owner.get(link.group(1))
    assert got.status_code == 200 and got.content == PNG
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-disposition"].startswith('attachment; filename="shot.png"')
    assert got.headers["x-content-type-options"] == "nosniff"
    # Replies, then closes and reopens it.
    reply = owner.post(f"{url}/reply", data={"csrf_token": token, "message": "Still broken."})
    assert reply.status_code == 200 and "Still broken." in reply.text
    assert owner.post(f"{url}/close", data={"csrf_token": token}).status_code == 200
    assert "This ticket is closed" in owner.get(url).text
    assert owner.post(f"{url}/reopen", data={"csrf_token": token}).status_code == 200
    # An outsider gets a 404 for the ticket and for its file, whatever they try.
    outsider = signed_in(app, world.outsider)
    other_base = f"/portal/orgs/{world.other_org.slug}/support/tickets/{public_id}"
    assert outsider.get(other_base).status_code == 404
    assert outsider.get(f"{other_base}/files/{'f' * 32}").status_code == 404
    assert outsider.get(url).status_code == 404


def test_read_only_members_read_but_do_not_write(
    app: FastAPI, world: World, runtime: Runtime
) -> None:
    with transaction(runtime.session_factory) as s:
        ticket = tickets.open_ticket(
            s,
            runtime.clock,
            subject="Question",
            body="Hello",
            requester=tickets.Author.of_user(world.members[OrgRole.OWNER]),
            organization_id=world.org.id,
        )
        public_id = ticket.public_id
    reader = signed_in(app, world.members[OrgRole.READ_ONLY])
    url = f"/portal/orgs/{world.org.slug}/support/tickets/{public_id}"
    page = reader.get(url)
    assert page.status_code == 200 and "Send the reply" not in page.text
    token = _token(page.text)
    assert (
        reader.post(f"{url}/reply", data={"csrf_token": token, "message": "x"}).status_code == 403
    )


def test_contact_form_refuses_robots_hurry_and_floods(
    app: FastAPI, world: World, runtime: Runtime, clock: FrozenClock
) -> None:
    guest = TestClient(app, raise_server_exceptions=False)

    def fill(**extra: str) -> dict[str, str]:
        page = guest.get("/help/contact")
        assert page.status_code == 200
        data = {
            "csrf_token": _token(page.text),
            "stamp": STAMP.search(page.text).group(1),  # type: ignore[union-attr]
            "name": "Gina Guest",
            "email": "gina@guest.example",
            "subject": "Pricing question",
            "message": "Do you host for schools?",
            "department": "billing",
        }
        data.update(extra)
        return data

    fast = guest.post("/help/contact", data=fill())
    assert fast.status_code == 422 and "faster than a person" in fast.text
    data = fill()
    clock.advance(timedelta(seconds=10))
    robot = guest.post("/help/contact", data={**data, "website": "http://spam.example"})
    assert robot.status_code == 422
    sent = guest.post("/help/contact", data=data, follow_redirects=False)
    assert sent.status_code == 303
    follow = sent.headers["location"]
    assert re.fullmatch(r"/help/tickets/IMH-[0-9A-Z]{4}-[0-9A-Z]{4}/[0-9a-f]{32}", follow)
    thread = guest.get(follow)
    assert "Do you host for schools?" in thread.text
    assert (
        guest.post(
            f"{follow}/reply", data={"csrf_token": _token(thread.text), "message": "And unis?"}
        ).status_code
        == 200
    )
    tampered = follow[:-1] + ("0" if follow[-1] != "0" else "1")
    assert guest.get(tampered).status_code == 404
    for _ in range(2):
        data = fill()
        clock.advance(timedelta(seconds=10))
        assert guest.post("/help/contact", data=data, follow_redirects=False).status_code == 303
    data = fill()
    clock.advance(timedelta(seconds=10))
    flood = guest.post("/help/contact", data=data)
    assert flood.status_code == 429 and "wait an hour" in flood.text
    with runtime.session_factory() as s:
        assert len(list(s.scalars(select(Ticket)))) == 3


def test_the_rating_link_records_the_score_and_takes_a_comment(
    app: FastAPI, world: World, runtime: Runtime
) -> None:
    with transaction(runtime.session_factory) as s:
        ticket = tickets.open_ticket(
            s,
            runtime.clock,
            subject="Question",
            body="Hello",
            requester=tickets.Author.guest("Gina", "gina@guest.example"),
        )
        tickets.set_status(s, runtime.clock, ticket, "resolved", actor=Actor.system())
        link = (
            f"/help/tickets/{ticket.public_id}/rate/4/"
            f"{tickets.rating_signature(runtime.secret_key, ticket, 4)}"
        )
        forged = f"/help/tickets/{ticket.public_id}/rate/5/{'0' * 32}"
        ticket_id = ticket.id
    guest = TestClient(app, raise_server_exceptions=False)
    assert guest.get(forged).status_code == 404
    page = guest.get(link)
    assert page.status_code == 200 and "4 out of 5" in page.text
    saved = guest.post(link, data={"csrf_token": _token(page.text), "comment": "Fast, thanks"})
    assert saved.status_code == 200
    with runtime.session_factory() as s:
        stored = s.get(Ticket, ticket_id)
        assert stored is not None and (stored.rating, stored.rating_comment) == (4, "Fast, thanks")
