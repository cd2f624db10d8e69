"""Ticket e-mails: the confirmation, staff replies and the resolution thread in mail clients
(Message-ID, In-Reply-To, References), answer to the ticket's own address (Reply-To), carry
working links; staff hear of new tickets and customer replies; every event is a webhook."""

from __future__ import annotations

from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.audit import Actor
from imhost.accounts.models import OrgRole, StaffRole
from imhost.config import load_settings
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock
from imhost.notify.mail import build_message
from imhost.notify.models import EmailAttachment, OutboundEmail, WebhookDelivery
from imhost.notify.webhooks import WebhookService
from imhost.runtime import Runtime, build_runtime
from imhost.support import tickets
from imhost.support.tickets import Author
from tests.factories import make_world


@pytest.fixture
def runtime(engine: Engine, clock: FrozenClock, tmp_path: Path) -> Runtime:
    settings = load_settings(
        data_dir=tmp_path / "data",
        secret_key="k" * 40,
        webhooks_allow_private=True,
        base_domain="im.example.net",
        public_url="https://im.example.net",
    )
    return build_runtime(settings, clock=clock, engine=engine)


def _messages(session: Session) -> dict[str, Message]:
    out: dict[str, Message] = {}
    for mail in session.scalars(select(OutboundEmail).order_by(OutboundEmail.created_at)):
        atts = list(
            session.scalars(select(EmailAttachment).where(EmailAttachment.email_id == mail.id))
        )
        raw = bytes(build_message(mail, atts, "imhost <noreply@im.example.net>"))
        out[f"{mail.kind}:{mail.to[0]}"] = message_from_bytes(raw)
    return out


def test_ticket_emails_thread_and_reply_to_the_ticket(
    runtime: Runtime, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    factory = runtime.session_factory
    with transaction(factory) as s:
        world = make_world(s, clock)
        WebhookService(allow_private=True).create_endpoint(
            s, clock, organization_id=world.org.id, url="http://127.0.0.1:9/hook"
        )
        owner = world.members[OrgRole.OWNER]
        ticket = tickets.open_ticket(
            s,
            clock,
            subject="Cannot log in",
            body="My client says the password is wrong.",
            requester=Author.of_user(owner),
            organization_id=world.org.id,
        )
        support = world.staff[StaffRole.SUPPORT]
        tickets.add_reply(s, clock, ticket, Author.of_user(support), "Try a reset.")
        tickets.set_status(s, clock, ticket, "resolved", actor=Actor.system())
        public_id, token = ticket.public_id, ticket.reply_token
    with factory() as s:
        mails = _messages(s)
        hooks = sorted(d.event_type for d in s.scalars(select(WebhookDelivery)))
    received = mails[f"ticket-received:{owner.email}"]
    reply = mails[f"ticket-reply:{owner.email}"]
    resolved = mails[f"ticket-resolved:{owner.email}"]
    root = f"<ticket.{public_id.lower()}@im.example.net>"
    assert received["Message-ID"] == root
    assert public_id in received["Subject"]
    for later in (reply, resolved):
        assert later["In-Reply-To"] == root and later["References"] == root
        assert later["Message-ID"] != root
    for mail in (received, reply, resolved):
        assert mail["Reply-To"] == f"support+{token}@im.example.net"
    body = received.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert f"https://im.example.net/portal/orgs/{world.org.slug}/support/tickets/{public_id}" in (
        body.decode()
    )
    resolved_body = resolved.get_payload(decode=True)
    assert isinstance(resolved_body, bytes)
    assert resolved_body.decode().count(f"/help/tickets/{public_id}/rate/") == 5
    # Staff (admin and support, nobody assigned yet) hear of the new ticket.
    assert "ticket-staff-notice:staff-admin@provider.example.com" in mails
    assert hooks == ["ticket.created", "ticket.staff_replied", "ticket.status_changed"]


def test_a_forged_header_is_refused(runtime: Runtime, clock: FrozenClock) -> None:
    with runtime.session_factory() as s, pytest.raises(ValueError):
        runtime.mailer.send(s, clock, "a@b.example", "x", "y", headers={"From": "ceo@bank"})
    with runtime.session_factory() as s, pytest.raises(ValueError):
        runtime.mailer.send(
            s, clock, "a@b.example", "x", "y", headers={"Reply-To": "a@b\r\nBcc: all@x"}
        )
