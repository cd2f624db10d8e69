"""Tickets: random readable ids, the status a reply leads to, internal notes, merged
duplicates, the history of every change, the auto-close job, ratings, canned replies,
attachments checked by content, the guest form's anti-abuse and the queue's pages."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost.accounts.audit import Actor
from imhost.accounts.models import AuditEvent, StaffRole
from imhost.config import Settings
from imhost.kit.clock import FrozenClock
from imhost.kit.errors import Conflict, InvalidInput, TooManyRequests
from imhost.support import tickets
from imhost.support.attachments import AttachmentIn, sniff_kind
from imhost.support.models import HelpSuggestionEvent
from imhost.support.ticket_models import Ticket, TicketAttachment, TicketMessage
from imhost.support.tickets import Author
from tests.factories import World, make_world

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
SECRET = "s" * 40


@pytest.fixture
def world(db: Session, clock: FrozenClock, tmp_path: Path) -> World:
    db.info["settings"] = Settings(data_dir=tmp_path)
    return make_world(db, clock)


def customer(world: World) -> Author:
    return Author.of_user(world.members[next(iter(world.members))])


def agent(world: World) -> Author:
    return Author.of_user(world.staff[StaffRole.SUPPORT])


def open_one(db: Session, clock: FrozenClock, world: World, **kw: object) -> Ticket:
    args: dict[str, object] = {
        "subject": "Cannot log in",
        "body": "My client says the password is wrong.",
        "requester": customer(world),
        "organization_id": world.org.id,
    }
    args.update(kw)
    return tickets.open_ticket(db, clock, **args)  # type: ignore[arg-type]


def test_public_ids_are_random_crockford_and_found_however_typed(
    db: Session, clock: FrozenClock, world: World
) -> None:
    ids = {open_one(db, clock, world).public_id for _ in range(20)}
    assert len(ids) == 20
    for public_id in ids:
        assert re.fullmatch(r"IMH-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}", public_id)
    one = sorted(ids)[0]
    typed = one.lower().replace("0", "o").replace("1", "l")
    found = tickets.find_ticket_by_public_id(db, typed)
    assert found is not None and found.public_id == one
    assert tickets.find_ticket_by_public_id(db, one.replace("-", "")) is not None
    assert tickets.find_ticket_by_public_id(db, "IMH-UUUU-UUUU") is None
    assert tickets.find_ticket_by_public_id(db, "'; drop table") is None


def test_a_clashing_public_id_is_drawn_again(
    db: Session, clock: FrozenClock, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = open_one(db, clock, world)
    draws = iter([first.public_id, first.public_id, "IMH-AAAA-BBBB"])
    monkeypatch.setattr(tickets, "new_public_id", lambda: next(draws))
    second = open_one(db, clock, world)
    assert second.public_id == "IMH-AAAA-BBBB"
    assert db.get(Ticket, first.id) is not None  # the caller's transaction survived


def test_reply_token_finds_the_ticket_in_any_case(
    db: Session, clock: FrozenClock, world: World
) -> None:
    ticket = open_one(db, clock, world)
    assert re.fullmatch(r"[0-9a-f]{32}", ticket.reply_token)
    found = tickets.find_ticket_by_reply_token(db, ticket.reply_token.upper())
    assert found is not None and found.id == ticket.id
    assert tickets.find_ticket_by_reply_token(db, "nope") is None


def test_replies_move_the_status_and_notes_stay_internal(
    db: Session, clock: FrozenClock, world: World
) -> None:
    ticket = open_one(db, clock, world)
    assert ticket.status == "new"
    clock.advance(timedelta(minutes=5))
    tickets.add_reply(db, clock, ticket, agent(world), "Try resetting it.", via="staff")
    assert ticket.status == "waiting_on_customer"
    assert ticket.first_response_at == clock.now()
    clock.advance(timedelta(minutes=1))
    tickets.add_reply(db, clock, ticket, agent(world), "Customer seems new.", internal=True)
    assert ticket.status == "waiting_on_customer"
    clock.advance(timedelta(minutes=1))
    with pytest.raises(InvalidInput):
        tickets.add_reply(db, clock, ticket, customer(world), "sneaky", internal=True)
    tickets.add_reply(db, clock, ticket, customer(world), "Still broken.", via="email")
    assert ticket.status == "waiting_on_staff"
    public = tickets.messages(db, ticket, include_notes=False)
    every = tickets.messages(db, ticket, include_notes=True)
    assert [m.body for m in public] == [
        "My client says the password is wrong.",
        "Try resetting it.",
        "Still broken.",
    ]
    assert len(every) == 4
    kinds = [e.action for e in db.scalars(select(AuditEvent).order_by(AuditEvent.at))]
    assert "ticket.opened" in kinds and "ticket.note_added" in kinds
    assert "ticket.customer_replied" in kinds


def test_a_mail_delivered_twice_is_added_once(
    db: Session, clock: FrozenClock, world: World
) -> None:
    ticket = open_one(db, clock, world)
    a = tickets.add_reply(
        db, clock, ticket, customer(world), "Hi", via="email", email_message_id="<x@mail>"
    )
    b = tickets.add_reply(
        db, clock, ticket, customer(world), "Hi", via="email", email_message_id="<x@mail>"
    )
    assert a.id == b.id
    assert len(tickets.messages(db, ticket, include_notes=True)) == 2


def test_a_closed_ticket_takes_no_reply_and_can_be_reopened(
    db: Session, clock: FrozenClock, world: World
) -> None:
    ticket = open_one(db, clock, world)
    who = customer(world).actor()
    tickets.close(db, clock, ticket, actor=who)
    with pytest.raises(tickets.TicketClosed):
        tickets.add_reply(db, clock, ticket, customer(world), "Again")
    tickets.reopen(db, clock, ticket, actor=who)
    assert ticket.status == "waiting_on_staff" and ticket.closed_at is None
    with pytest.raises(Conflict):
        tickets.reopen(db, clock, ticket, actor=who)


def test_every_change_is_in_the_history_with_who_and_when(
    db: Session, clock: FrozenClock, world: World
) -> None:
    ticket = open_one(db, clock, world)
    staff = world.staff[StaffRole.SUPPORT]
    actor = Actor(user_id=staff.id, label=staff.email)
    clock.advance(timedelta(minutes=1))
    tickets.assign(db, clock, ticket, staff.id, actor=actor)
    tickets.set_priority(db, clock, ticket, "high", actor=actor)
    tickets.set_tags(db, clock, ticket, "Login, xmpp login", actor=actor)
    tickets.set_status(db, clock, ticket, "resolved", actor=actor)
    changes = [(c.field, c.old_value, c.new_value) for c in tickets.history(db, ticket)]
    assert changes == [
        ("created", None, "new"),
        ("assignee", None, staff.email),
        ("priority", "normal", "high"),
        ("tags", "", "login xmpp"),
        ("status", "new", "resolved"),
    ]
    assert all(c.actor_label == staff.email for c in tickets.history(db, ticket)[1:])
    with pytest.raises(InvalidInput):
        tickets.assign(db, clock, ticket, customer(world).user_id, actor=actor)
    with pytest.raises(InvalidInput):
        tickets.set_tags(db, clock, ticket, "<script>", actor=actor)


def test_merge_moves_messages_and_the_duplicate_points_to_the_survivor(
    db: Session, clock: FrozenClock, world: World
) -> None:
    survivor = open_one(db, clock, world, subject="Login broken")
    duplicate = open_one(
        db, clock, world, subject="Login still broken", attachments=[AttachmentIn("s.png", PNG)]
    )
    actor = agent(world).actor()
    tickets.merge(db, clock, duplicate, survivor, actor=actor)
    assert duplicate.merged_into_id == survivor.id and duplicate.status == "closed"
    bodies = [m.ticket_id for m in db.scalars(select(TicketMessage))]
    assert set(bodies) == {survivor.id}
    assert {a.ticket_id for a in db.scalars(select(TicketAttachment))} == {survivor.id}
    # A reply to the duplicate (an old e-mail thread) lands on the survivor.
    message = tickets.add_reply(db, clock, duplicate, customer(world), "Any news?")
    assert message.ticket_id == survivor.id
    assert "merged_from" in [c.field for c in tickets.history(db, survivor)]
    with pytest.raises(Conflict):
        tickets.merge(db, clock, duplicate, survivor, actor=actor)
    with pytest.raises(InvalidInput):
        tickets.merge(db, clock, survivor, survivor, actor=actor)
    other = tickets.open_ticket(
        db,
        clock,
        subject="Other org",
        body="x",
        requester=Author.of_user(world.outsider),
        organization_id=world.other_org.id,
    )
    with pytest.raises(InvalidInput):
        tickets.merge(db, clock, other, survivor, actor=actor)


def test_resolved_tickets_close_after_the_configured_days_once(
    db: Session, clock: FrozenClock, world: World
) -> None:
    ticket = open_one(db, clock, world)
    recent = open_one(db, clock, world)
    tickets.set_status(db, clock, ticket, "resolved", actor=Actor.system())
    clock.advance(timedelta(days=3))
    tickets.set_status(db, clock, recent, "resolved", actor=Actor.system())
    clock.advance(timedelta(days=3, hours=23))
    assert tickets.close_resolved(db, clock, days=7) == 0
    clock.advance(timedelta(hours=1))
    assert tickets.close_resolved(db, clock, days=7) == 1
    assert ticket.status == "closed" and recent.status == "resolved"
    assert tickets.close_resolved(db, clock, days=7) == 0


def test_rating_needs_a_resolved_ticket_and_a_score_from_1_to_5(
    db: Session, clock: FrozenClock, world: World
) -> None:
    ticket = open_one(db, clock, world)
    with pytest.raises(Conflict):
        tickets.rate(db, clock, ticket, 5)
    tickets.set_status(db, clock, ticket, "resolved", actor=Actor.system())
    with pytest.raises(InvalidInput):
        tickets.rate(db, clock, ticket, 9)
    tickets.rate(db, clock, ticket, 4, "Quick, thanks")
    assert (ticket.rating, ticket.rating_comment) == (4, "Quick, thanks")
    sig = tickets.rating_signature(SECRET, ticket, 4)
    assert tickets.check_rating_signature(SECRET, ticket, 4, sig)
    assert not tickets.check_rating_signature(SECRET, ticket, 5, sig)


def test_canned_replies_fill_known_placeholders_only_and_never_evaluate() -> None:
    body = "Hi {customer_name}, about {ticket_id}: {agent_name}. {customer_name.__class__} {x}"
    out = tickets.render_canned(
        body, {"customer_name": "{agent_name}", "ticket_id": "IMH-1", "agent_name": "Ann"}
    )
    assert out == "Hi {agent_name}, about IMH-1: Ann. {customer_name.__class__} {x}"


def test_unknown_placeholder_is_refused_when_saving(
    db: Session, clock: FrozenClock, world: World
) -> None:
    with pytest.raises(InvalidInput):
        tickets.save_canned(db, clock, title="T", body="{nope}", actor=Actor.system())
    saved = tickets.save_canned(
        db, clock, title="Reset", body="Hello {customer_name}", actor=Actor.system()
    )
    assert tickets.list_canned(db) == [saved]


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (PNG, "image"),
        (b"\xff\xd8\xff\xe0rest", "image"),
        (b"GIF89a....", "image"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image"),
        (b"%PDF-1.7\n", "pdf"),
        (b"PK\x03\x04zipdata", "zip"),
        ("log line é\n".encode(), "text"),
        (b"MZ\x90\x00", None),
        (b"\x7fELF\x02", None),
        (b"#!/bin/sh\nrm -rf /", None),
        (b"<html><script>alert(1)</script>", None),
        (b"  <!DOCTYPE html>", None),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', None),
        (b"<svg onload=alert(1)>", None),
        (b"\x00\x01binary", None),
    ],
)
def test_attachment_kind_is_read_from_the_content(content: bytes, kind: str | None) -> None:
    assert sniff_kind(content) == kind


def test_attachments_are_checked_and_stored_under_random_names(
    db: Session, clock: FrozenClock, world: World, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match="picture, PDF, text or zip"):
        open_one(db, clock, world, attachments=[AttachmentIn("invoice.pdf", b"MZ\x90\x00")])
    with pytest.raises(InvalidInput, match="at most 5"):
        open_one(db, clock, world, attachments=[AttachmentIn(f"{i}.png", PNG) for i in range(6)])
    db.info["settings"] = Settings(data_dir=tmp_path, support={"attachment_max_bytes": 2048})
    with pytest.raises(InvalidInput, match="larger than"):
        open_one(db, clock, world, attachments=[AttachmentIn("big.png", PNG + b"0" * 4096)])
    ticket = open_one(
        db, clock, world, attachments=[AttachmentIn("../../etc/screen\x00shot.png", PNG)]
    )
    (att,) = tickets.attachments_by_message(db, ticket).values()
    assert att[0].filename == "screenshot.png"
    stored = tmp_path / "attachments" / att[0].storage_name
    assert stored.read_bytes() == PNG
    assert "screenshot" not in att[0].storage_name


def test_guest_form_refuses_fast_forged_and_repeated_submissions(
    db: Session, clock: FrozenClock
) -> None:
    stamp = tickets.form_stamp(SECRET, clock.now())
    with pytest.raises(InvalidInput, match="faster than a person"):
        tickets.check_form_stamp(SECRET, stamp, clock.now(), min_seconds=3)
    clock.advance(timedelta(seconds=5))
    tickets.check_form_stamp(SECRET, stamp, clock.now(), min_seconds=3)
    with pytest.raises(InvalidInput, match="expired"):
        tickets.check_form_stamp(SECRET, stamp[:-1] + "0", clock.now(), min_seconds=3)
    limits = {"per_email": 2, "per_address": 3}
    for _ in range(2):
        tickets.check_guest_rate(
            db, clock, SECRET, email="g@x.example", address="203.0.113.9", **limits
        )
    with pytest.raises(TooManyRequests):
        tickets.check_guest_rate(
            db, clock, SECRET, email="G@x.example", address="203.0.113.10", **limits
        )
    tickets.check_guest_rate(
        db, clock, SECRET, email="h@x.example", address="203.0.113.9", **limits
    )
    with pytest.raises(TooManyRequests):
        tickets.check_guest_rate(
            db, clock, SECRET, email="i@x.example", address="203.0.113.9", **limits
        )
    clock.advance(timedelta(hours=1, seconds=1))
    tickets.check_guest_rate(
        db, clock, SECRET, email="g@x.example", address="203.0.113.9", **limits
    )


def test_queue_pages_by_keyset_and_views(db: Session, clock: FrozenClock, world: World) -> None:
    staff = world.staff[StaffRole.SUPPORT]
    made = []
    for i in range(7):
        clock.advance(timedelta(minutes=1))
        made.append(open_one(db, clock, world, subject=f"T{i}"))
    clock.advance(timedelta(minutes=1))
    tickets.assign(db, clock, made[0], staff.id, actor=Actor.system())
    seen: list[str] = []
    cursor = None
    while True:
        page = tickets.queue(db, clock, view="all", cursor=cursor, limit=3)
        seen += [t.subject for t in page.tickets]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ["T0", "T6", "T5", "T4", "T3", "T2", "T1"]  # T0 changed last (assigned)
    mine = tickets.queue(db, clock, view="mine", viewer_user_id=staff.id)
    assert [t.subject for t in mine.tickets] == ["T0"]
    unassigned = tickets.queue(db, clock, view="unassigned")
    assert len(unassigned.tickets) == 6
    made[3].due_at = clock.now() + timedelta(hours=1)
    made[4].due_at = clock.now() + timedelta(days=2)
    db.flush()
    assert [t.subject for t in tickets.queue(db, clock, view="breaching").tickets] == ["T3"]
    with pytest.raises(InvalidInput):
        tickets.queue(db, clock, cursor="garbage")


def test_deflection_counts_forms_with_an_opened_suggestion_and_no_ticket(
    db: Session, clock: FrozenClock, world: World
) -> None:
    from tests.support.factories import article, category

    category(db, clock)
    art = article(db, clock, "reset-password")
    for ctx in ("ctx-sent", "ctx-left"):
        db.add(HelpSuggestionEvent(article_id=art.id, context=ctx, created_at=clock.now()))
    db.flush()
    open_one(db, clock, world, form_context="ctx-sent")
    assert tickets.deflection_count(db) == 1
