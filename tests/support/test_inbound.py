"""Support e-mail in: deliver's rules, the IMAP poller against a real dovecot on loopback and
the LMTP listener with smtplib's LMTP client.

The tickets service is reached through ``TicketDesk``; ``MemoryDesk`` below keeps tickets in
memory with the same rules the tickets service documents (a repeated Message-ID is stored
once, a closed ticket takes no reply, refused attachments raise before anything is stored,
opening a ticket sends the confirmation with its id)."""

from __future__ import annotations

import imaplib
import smtplib
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import AuditEvent
from imhost.kit.clock import FrozenClock
from imhost.kit.errors import Conflict, InvalidInput
from imhost.support import inbound
from imhost.support.inbound import Delivery, ImapMailbox, Outcome, deliver, message_key
from imhost.support.mailparse import Attachment, InboundMail, parse
from tests.support.dovecot import Dovecot, dovecot_missing, running_dovecot

SUPPORT = "support@imhost.example"


@dataclass
class MemoryTicket:
    public_id: str
    requester: str
    reply_token: str
    closed: bool = False
    messages: list[tuple[str, str, tuple[Attachment, ...], str]] = field(default_factory=list)
    sent_ids: list[str] = field(default_factory=list)


@dataclass
class MemoryDesk:
    tickets: list[MemoryTicket] = field(default_factory=list)
    confirmations: list[tuple[str, str]] = field(default_factory=list)
    max_attachment_bytes: int = 1000

    def knows_message(self, message_id: str) -> str | None:
        for ticket in self.tickets:
            if any(m[3] == message_id for m in ticket.messages):
                return ticket.public_id
        return None

    def find_by_reply_token(self, token: str) -> MemoryTicket | None:
        return next((t for t in self.tickets if t.reply_token == token), None)

    def find_by_message_ids(self, message_ids: tuple[str, ...]) -> MemoryTicket | None:
        for ticket in self.tickets:
            if set(message_ids) & (set(ticket.sent_ids) | {m[3] for m in ticket.messages}):
                return ticket
        return None

    def find_by_public_id(self, public_id: str) -> MemoryTicket | None:
        return next((t for t in self.tickets if t.public_id == public_id), None)

    def may_write(self, ticket: MemoryTicket, address: str) -> bool:
        return address == ticket.requester

    def _check(self, attachments: tuple[Attachment, ...]) -> None:
        for a in attachments:
            if len(a.data) > self.max_attachment_bytes:
                raise InvalidInput(f"{a.filename} is larger than the limit.")

    def open_ticket(
        self, mail: InboundMail, body: str, attachments: tuple[Attachment, ...]
    ) -> MemoryTicket:
        self._check(attachments)
        n = len(self.tickets) + 1
        ticket = MemoryTicket(f"IMH-AAAA-000{n}", mail.sender, f"token{n:04d}abcd")
        ticket.messages.append((mail.sender, body, attachments, mail.message_id or ""))
        ticket.sent_ids.append(f"confirm.{ticket.public_id}@imhost.example")
        self.tickets.append(ticket)
        self.confirmations.append((mail.sender, f"[{ticket.public_id}] {mail.subject}"))
        return ticket

    def add_reply(
        self,
        ticket: MemoryTicket,
        mail: InboundMail,
        body: str,
        attachments: tuple[Attachment, ...],
    ) -> None:
        if ticket.closed:
            raise Conflict("closed")
        self._check(attachments)
        ticket.messages.append((mail.sender, body, attachments, mail.message_id or ""))


def handle_with(desk: MemoryDesk):  # type: ignore[no-untyped-def]
    def handle(raw: bytes, envelope: tuple[str, ...] = ()) -> Delivery:
        return inbound.parse_and_deliver(desk, raw, SUPPORT, envelope)  # type: ignore[arg-type]

    return handle


def mail(
    subject: str = "Cannot connect",
    body: str = "My client says the server is unreachable.",
    *,
    sender: str = "ana@example.org",
    to: str = SUPPORT,
    message_id: str = "<m1@example.org>",
    extra: dict[str, str] | None = None,
    attachment: tuple[str, bytes] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    for name, value in (extra or {}).items():
        msg[name] = value
    msg.set_content(body)
    if attachment:
        msg.add_attachment(
            attachment[1], maintype="application", subtype="pdf", filename=attachment[0]
        )
    return msg.as_bytes()


def run(desk: MemoryDesk, raw: bytes) -> Delivery:
    parsed = parse(raw, support_address=SUPPORT)
    return deliver(desk, parsed, key=message_key(parsed, raw))  # type: ignore[arg-type]


# --- deliver ----------------------------------------------------------------------------------


def test_a_new_mail_opens_a_ticket_and_its_confirmation_names_the_id() -> None:
    desk = MemoryDesk()
    result = run(desk, mail())
    assert result.outcome is Outcome.OPENED
    assert desk.confirmations == [("ana@example.org", f"[{result.public_id}] Cannot connect")]


def test_replies_thread_by_token_by_references_and_by_subject() -> None:
    desk = MemoryDesk()
    first = run(desk, mail())
    ticket = desk.tickets[0]
    by_token = mail(
        subject="Re: hello",
        to=f"support+{ticket.reply_token}@imhost.example",
        message_id="<m2@example.org>",
        body="Token reply",
    )
    by_refs = mail(
        subject="Re: hello",
        message_id="<m3@example.org>",
        body="Refs reply",
        extra={"In-Reply-To": f"<confirm.{ticket.public_id}@imhost.example>"},
    )
    by_subject = mail(
        subject=f"Re: [{ticket.public_id.lower()}] x",
        message_id="<m4@example.org>",
        body="Subject reply\n\nOn Mon, Nov 30 support wrote:\n> quoted",
    )
    for raw in (by_token, by_refs, by_subject):
        assert run(desk, raw) == Delivery(Outcome.REPLIED, first.public_id)
    assert [m[1] for m in ticket.messages[1:]] == ["Token reply", "Refs reply", "Subject reply"]
    assert len(desk.tickets) == 1


def test_the_same_mail_twice_is_stored_once() -> None:
    desk = MemoryDesk()
    first = run(desk, mail())
    assert run(desk, mail()) == Delivery(Outcome.DUPLICATE, first.public_id, "already delivered")
    assert len(desk.tickets) == 1 and len(desk.confirmations) == 1
    # without a Message-ID, the bytes are the key
    raw = mail(message_id="").replace(b"Message-ID: \n", b"")
    assert run(desk, raw).outcome is Outcome.OPENED
    assert run(desk, raw).outcome is Outcome.DUPLICATE


def test_auto_replies_and_bounces_never_open_or_answer() -> None:
    desk = MemoryDesk()
    run(desk, mail())
    token = desk.tickets[0].reply_token
    ooo = mail(
        subject="Automatic reply: [IMH-AAAA-0001]",
        message_id="<ooo@example.org>",
        to=f"support+{token}@imhost.example",
        extra={"Auto-Submitted": "auto-replied"},
    )
    bounce = mail(sender="MAILER-DAEMON@mx.example", message_id="<b@mx.example>")
    assert run(desk, ooo) == Delivery(Outcome.IGNORED, reason="auto-submitted (auto-replied)")
    assert run(desk, bounce).outcome is Outcome.IGNORED
    assert len(desk.tickets[0].messages) == 1 and len(desk.confirmations) == 1


def test_a_stranger_on_a_thread_gets_a_ticket_of_their_own() -> None:
    desk = MemoryDesk()
    run(desk, mail())
    token = desk.tickets[0].reply_token
    stranger = mail(
        sender="mallory@evil.example",
        to=f"support+{token}@imhost.example",
        message_id="<s@evil.example>",
        body="Let me in",
    )
    result = run(desk, stranger)
    assert result.outcome is Outcome.OPENED
    assert result.public_id != desk.tickets[0].public_id
    assert len(desk.tickets[0].messages) == 1
    assert "its sender is not on that ticket" in desk.tickets[1].messages[0][1]


def test_a_reply_to_a_closed_ticket_opens_a_new_one() -> None:
    desk = MemoryDesk()
    run(desk, mail())
    desk.tickets[0].closed = True
    result = run(desk, mail(subject="Re: [IMH-AAAA-0001] x", message_id="<late@example.org>"))
    assert result.outcome is Outcome.OPENED and result.public_id == "IMH-AAAA-0002"
    assert "IMH-AAAA-0001, which is closed" in desk.tickets[1].messages[0][1]


def test_refused_attachments_do_not_lose_the_mail() -> None:
    desk = MemoryDesk(max_attachment_bytes=10)
    result = run(desk, mail(attachment=("big.pdf", b"%PDF-1.4" + b"x" * 100)))
    assert result.outcome is Outcome.OPENED
    _sender, body, attachments, _ = desk.tickets[0].messages[0]
    assert attachments == ()
    assert "Attachments left out: big.pdf. big.pdf is larger than the limit." in body


def test_plain_imap_is_refused_off_loopback() -> None:
    with pytest.raises(InvalidInput, match="loopback"):
        ImapMailbox("mail.example.net", 143, "plain", "u", "p")
    ImapMailbox("127.0.0.1", 143, "plain", "u", "p")


# --- a real dovecot ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    reason = dovecot_missing()
    if reason:
        pytest.skip(reason)
    # dovecot's own users (auth, mail) must reach the folder: not under pytest's 0700 tmp
    with (
        tempfile.TemporaryDirectory(prefix="imhost-dovecot-") as folder,
        running_dovecot(Path(folder)) as server,
    ):
        yield server


def _append(server: Dovecot, raw: bytes) -> None:
    client = imaplib.IMAP4(server.host, server.port)
    client.login(server.user, server.password)
    typ, _ = client.append("INBOX", None, None, raw)
    assert typ == "OK"
    client.logout()


def _count(server: Dovecot, folder: str, criteria: str) -> int:
    client = imaplib.IMAP4(server.host, server.port)
    client.login(server.user, server.password)
    client.select(folder)
    _, data = client.uid("SEARCH", criteria)
    client.logout()
    return len(data[0].split())


def _mailbox(server: Dovecot, processed: str | None = "Processed") -> ImapMailbox:
    return ImapMailbox(
        server.host, server.port, "plain", server.user, server.password, processed_mailbox=processed
    )


def test_imap_poll_opens_threads_ignores_and_moves(dovecot: Dovecot) -> None:
    desk = MemoryDesk(max_attachment_bytes=100_000)
    pdf = b"%PDF-1.4\n" + b"0" * 200
    _append(dovecot, mail(message_id="<i1@example.org>", attachment=("report.pdf", pdf)))
    report = inbound.poll_mailbox(_mailbox(dovecot), handle_with(desk))
    assert [o.outcome for o in report.outcomes] == [Outcome.OPENED]
    ticket = desk.tickets[0]
    assert desk.confirmations[0][1].startswith(f"[{ticket.public_id}]")
    assert ticket.messages[0][2] == (Attachment("report.pdf", "application/pdf", pdf),)
    _append(
        dovecot,
        mail(
            subject=f"Re: [{ticket.public_id}] Cannot connect",
            message_id="<i2@example.org>",
            body="Fixed, thanks",
        ),
    )
    _append(
        dovecot,
        mail(
            subject="Out of office",
            message_id="<i3@example.org>",
            extra={"Auto-Submitted": "auto-replied"},
        ),
    )
    report = inbound.poll_mailbox(_mailbox(dovecot), handle_with(desk))
    assert [o.outcome for o in report.outcomes] == [Outcome.REPLIED, Outcome.IGNORED]
    assert ticket.messages[1][1] == "Fixed, thanks"
    assert len(desk.tickets) == 1 and len(desk.confirmations) == 1
    assert _count(dovecot, "INBOX", "ALL") == 0
    assert _count(dovecot, "Processed", "SEEN") == 3
    assert inbound.poll_mailbox(_mailbox(dovecot), handle_with(desk)).handled == 0


def test_imap_crash_before_flagging_does_not_duplicate(dovecot: Dovecot) -> None:
    desk = MemoryDesk()
    _append(dovecot, mail(message_id="<crash@example.org>"))
    handle = handle_with(desk)

    def store_then_crash(raw: bytes) -> Delivery:
        handle(raw)  # stored (committed), then the process dies before \Seen
        raise RuntimeError("power cut")

    report = inbound.poll_mailbox(_mailbox(dovecot, None), store_then_crash)
    assert report.failed == 1 and len(desk.tickets) == 1
    assert _count(dovecot, "INBOX", "UNSEEN") == 1
    report = inbound.poll_mailbox(_mailbox(dovecot, None), handle)
    assert [o.outcome for o in report.outcomes] == [Outcome.DUPLICATE]
    assert len(desk.tickets) == 1 and len(desk.confirmations) == 1
    assert _count(dovecot, "INBOX", "UNSEEN") == 0


def test_imap_wrong_password_is_a_plain_error(dovecot: Dovecot) -> None:
    box = ImapMailbox(dovecot.host, dovecot.port, "plain", dovecot.user, "wrong")
    with pytest.raises(inbound.MailboxError, match="refused"):
        inbound.poll_mailbox(box, handle_with(MemoryDesk()))


# --- LMTP -------------------------------------------------------------------------------------


@pytest.fixture
def lmtp() -> Iterator[tuple[MemoryDesk, int]]:
    desk = MemoryDesk(max_attachment_bytes=100_000)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = inbound.lmtp_listener(
        "127.0.0.1", port, SUPPORT, handle_with(desk), max_bytes=64 * 1024
    )
    controller.start()
    try:
        yield desk, port
    finally:
        controller.stop()


def test_lmtp_opens_replies_and_refuses_other_recipients(lmtp: tuple[MemoryDesk, int]) -> None:
    desk, port = lmtp
    client = smtplib.LMTP("127.0.0.1", port)
    try:
        pdf = b"%PDF-1.4\n" + b"1" * 100
        client.sendmail("ana@example.org", [SUPPORT], mail(attachment=("a.pdf", pdf)))
        ticket = desk.tickets[0]
        assert desk.confirmations == [("ana@example.org", f"[{ticket.public_id}] Cannot connect")]
        assert ticket.messages[0][2][0].data == pdf
        client.sendmail(
            "ana@example.org",
            [f"support+{ticket.reply_token}@imhost.example"],
            mail(subject="Re: hi", message_id="<l2@example.org>", body="More info"),
        )
        assert ticket.messages[1][1] == "More info"
        client.sendmail(
            "ana@example.org",
            [SUPPORT],
            mail(message_id="<l3@example.org>", extra={"Precedence": "junk"}),
        )
        assert len(desk.tickets) == 1
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("ana@example.org", ["root@imhost.example"], mail(message_id="<x@y>"))
        with pytest.raises(smtplib.SMTPException):
            client.sendmail(
                "ana@example.org", [SUPPORT], mail(message_id="<big@y>", body="x" * 100_000)
            )
        assert len(desk.tickets) == 1
    finally:
        client.close()


def test_each_message_is_committed_in_its_own_transaction(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    """The desk writes through the session it is given: a message that fails rolls back its
    own writes only, and the poller leaves it for the next poll."""
    from imhost.accounts import audit

    desk = MemoryDesk()

    class AuditedDesk(MemoryDesk):
        def __init__(self, session: Session) -> None:
            super().__init__(desk.tickets, desk.confirmations)
            self.session = session

        def open_ticket(
            self, mail: InboundMail, body: str, attachments: tuple[Attachment, ...]
        ) -> MemoryTicket:
            audit.record(self.session, clock, "test.mail_in", target_label=mail.subject)
            if "fail" in mail.subject:
                raise RuntimeError("the database went away")
            return super().open_ticket(mail, body, attachments)

    handle = inbound.deliver_in_transaction(session_factory, AuditedDesk, SUPPORT)  # type: ignore[arg-type]
    assert handle(mail(subject="first"), ()).outcome is Outcome.OPENED
    with pytest.raises(RuntimeError):
        handle(mail(subject="fail", message_id="<f@example.org>"), ())
    with session_factory() as s:
        labels = list(
            s.scalars(select(AuditEvent.target_label).where(AuditEvent.action == "test.mail_in"))
        )
    assert labels == ["first"]
