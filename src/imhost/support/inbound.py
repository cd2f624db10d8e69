"""Support e-mail in: an IMAP poller and an LMTP listener, both handing each message to one
:func:`deliver`.

``deliver`` decides what a parsed mail (:mod:`imhost.support.mailparse`) does to the tickets,
through the small :class:`TicketDesk` interface the tickets service is adapted to:

- a mail sent by a machine (auto-reply, bounce, list) is dropped: it never opens a ticket and
  is never answered, so two auto-responders cannot loop through us;
- a mail whose Message-ID is already on a ticket is a duplicate (a retried poll, a mail
  server's second delivery) and changes nothing;
- a mail that threads onto a ticket (reply token in the address, then In-Reply-To/References
  naming a mail imhost sent, then the ticket id in the subject) is added to it, if its sender
  may write on it; otherwise, and for a closed ticket, it opens a new ticket of its own, so a
  stranger who learns a ticket's id or address never writes into someone else's thread;
- anything else opens a ticket (the desk sends the confirmation with the id).

Attachments the tickets service refuses (too large, too many, a refused kind) do not lose the
mail: it is stored without them and says which files were left out.

The IMAP poller fetches UNSEEN mail with ``BODY.PEEK[]`` (nothing is marked before it is
handled), hands each to ``handle`` (which commits), then marks it ``\\Seen`` and moves it when a
processed mailbox is set. A crash between the two leaves the mail unseen; the next poll
delivers it again and ``deliver`` sees its Message-ID and does nothing.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import imaplib
import ipaddress
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from sqlalchemy.orm import Session, sessionmaker

from imhost.config import SupportMailSettings
from imhost.db.engine import transaction
from imhost.kit.errors import Conflict, InvalidInput
from imhost.support.mailparse import Attachment, InboundMail, is_support_recipient, parse

log = logging.getLogger(__name__)


# --- the tickets side -------------------------------------------------------------------------


class TicketRef(Protocol):
    @property
    def public_id(self) -> str: ...


class TicketDesk(Protocol):
    """What ``deliver`` needs from the tickets service (one transaction, owned by the caller).

    ``open_ticket`` and ``add_reply`` raise :class:`~imhost.kit.errors.InvalidInput` when the
    attachments are refused (before anything is stored), and ``add_reply`` raises
    :class:`~imhost.kit.errors.Conflict` for a closed ticket.
    """

    def knows_message(self, message_id: str) -> str | None:
        """The public id of the ticket holding a message with this Message-ID, if any."""
        ...

    def find_by_reply_token(self, token: str) -> TicketRef | None: ...

    def find_by_message_ids(self, message_ids: tuple[str, ...]) -> TicketRef | None:
        """The ticket one of these Message-IDs (sent or received by imhost) belongs to."""
        ...

    def find_by_public_id(self, public_id: str) -> TicketRef | None: ...

    def may_write(self, ticket: TicketRef, address: str) -> bool:
        """Whether the owner of ``address`` may add to ``ticket`` (its requester, a member of
        its organization, staff)."""
        ...

    def open_ticket(
        self, mail: InboundMail, body: str, attachments: tuple[Attachment, ...]
    ) -> TicketRef: ...

    def add_reply(
        self, ticket: TicketRef, mail: InboundMail, body: str, attachments: tuple[Attachment, ...]
    ) -> None: ...


class Outcome(enum.StrEnum):
    OPENED = "opened"
    REPLIED = "replied"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"


@dataclass(frozen=True)
class Delivery:
    outcome: Outcome
    public_id: str | None = None
    reason: str = ""


def message_key(mail: InboundMail, raw: bytes) -> str:
    """The idempotency key: the Message-ID, or a hash of the bytes when there is none."""
    if mail.message_id:
        return mail.message_id
    return f"sha256-{hashlib.sha256(raw).hexdigest()}@inbound.imhost"


def deliver(desk: TicketDesk, mail: InboundMail, *, key: str) -> Delivery:
    """Open a ticket from ``mail`` or add it to the ticket it answers (see module doc)."""
    if mail.automated:
        return Delivery(Outcome.IGNORED, reason=mail.automated)
    if not mail.sender:
        return Delivery(Outcome.IGNORED, reason="no sender address")
    mail = replace(mail, message_id=key)  # the desk stores it as the message's Message-ID
    known = desk.knows_message(key)
    if known is not None:
        return Delivery(Outcome.DUPLICATE, known, "already delivered")
    ticket = _thread_of(desk, mail)
    note = ""
    if ticket is not None:
        if desk.may_write(ticket, mail.sender):
            try:
                _with_attachments(lambda b, a: desk.add_reply(ticket, mail, b, a), mail)
                return Delivery(Outcome.REPLIED, ticket.public_id)
            except Conflict:
                note = f"(This mail answered ticket {ticket.public_id}, which is closed.)"
        else:
            note = (
                f"(This mail answered ticket {ticket.public_id}; its sender is not on that "
                "ticket, so it was opened as a ticket of its own.)"
            )
    opened = _with_attachments(lambda b, a: desk.open_ticket(mail, b, a), mail, note)
    return Delivery(Outcome.OPENED, opened.public_id, note)


def _thread_of(desk: TicketDesk, mail: InboundMail) -> TicketRef | None:
    for token in mail.reply_tokens:
        ticket = desk.find_by_reply_token(token)
        if ticket is not None:
            return ticket
    if mail.references:
        ticket = desk.find_by_message_ids(mail.references)
        if ticket is not None:
            return ticket
    for public_id in mail.ticket_ids:
        ticket = desk.find_by_public_id(public_id)
        if ticket is not None:
            return ticket
    return None


def _with_attachments(
    store: Callable[[str, tuple[Attachment, ...]], Any], mail: InboundMail, note: str = ""
) -> Any:
    body = mail.text or "(no text)"
    if note:
        body = f"{body}\n\n{note}"
    if not mail.attachments:
        return store(body, ())
    try:
        return store(body, mail.attachments)
    except InvalidInput as refused:
        names = ", ".join(a.filename for a in mail.attachments)
        left_out = f"(Attachments left out: {names}. {refused.detail})"
        return store(f"{body}\n\n{left_out}", ())


# --- IMAP -------------------------------------------------------------------------------------


class MailboxError(Exception):
    """The mailbox cannot be reached or read (the message says why, in plain words)."""


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True)
class ImapMailbox:
    host: str
    port: int
    security: str
    user: str
    password: str
    mailbox: str = "INBOX"
    processed_mailbox: str | None = None
    timeout: float = 30.0
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        if self.security not in {"tls", "starttls", "plain"}:
            raise InvalidInput("IMAP security must be tls, starttls or plain.")
        if self.security == "plain" and not _is_loopback(self.host):
            raise InvalidInput("Plain IMAP (without TLS) is allowed only to a loopback address.")

    @classmethod
    def from_settings(cls, settings: SupportMailSettings) -> ImapMailbox | None:
        if not settings.imap_host:
            return None
        if not settings.imap_user or settings.imap_password is None:
            raise InvalidInput("The support mailbox needs imap_user and imap_password.")
        port = settings.imap_port or (993 if settings.imap_security == "tls" else 143)
        return cls(
            host=settings.imap_host,
            port=port,
            security=settings.imap_security,
            user=settings.imap_user,
            password=settings.imap_password.get_secret_value(),
            mailbox=settings.imap_mailbox,
            processed_mailbox=settings.imap_processed_mailbox,
        )

    def connect(self) -> imaplib.IMAP4:
        context = self.ssl_context or ssl.create_default_context()
        try:
            client: imaplib.IMAP4
            if self.security == "tls":
                client = imaplib.IMAP4_SSL(
                    self.host, self.port, ssl_context=context, timeout=self.timeout
                )
            else:
                client = imaplib.IMAP4(self.host, self.port, timeout=self.timeout)
                if self.security == "starttls":
                    client.starttls(ssl_context=context)
            client.login(self.user, self.password)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailboxError(f"The support mailbox {self.host}:{self.port} refused us.") from exc
        return client


@dataclass
class PollReport:
    handled: int = 0
    failed: int = 0
    outcomes: list[Delivery] = field(default_factory=list)


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def poll_mailbox(
    mailbox: ImapMailbox, handle: Callable[[bytes], Delivery], *, limit: int = 100
) -> PollReport:
    """Deliver up to ``limit`` unseen messages of ``mailbox`` through ``handle``."""
    report = PollReport()
    client = mailbox.connect()
    try:
        typ, _ = client.select(_quote(mailbox.mailbox))
        if typ != "OK":
            raise MailboxError(f"The mailbox folder {mailbox.mailbox!r} cannot be opened.")
        typ, data = client.uid("SEARCH", "UNSEEN")
        uids = [u.decode() for u in data[0].split()] if typ == "OK" and data and data[0] else []
        typ, caps = client.capability()
        can_move = typ == "OK" and b"MOVE" in b" ".join(c for c in caps if isinstance(c, bytes))
        for uid in uids[:limit]:
            raw = _fetch(client, uid)
            if raw is None:
                continue
            try:
                outcome = handle(raw)
            except Exception:
                # Left unseen: the next poll tries again (a database that was away, say).
                log.exception("support mail %s could not be delivered", uid)
                report.failed += 1
                continue
            report.outcomes.append(outcome)
            report.handled += 1
            client.uid("STORE", uid, "+FLAGS", "(\\Seen)")
            if mailbox.processed_mailbox:
                target = _quote(mailbox.processed_mailbox)
                if can_move:
                    client.uid("MOVE", uid, target)
                else:
                    client.uid("COPY", uid, target)
                    client.uid("STORE", uid, "+FLAGS", "(\\Deleted)")
        if mailbox.processed_mailbox and not can_move:
            client.expunge()
    finally:
        try:
            client.logout()
        except (OSError, imaplib.IMAP4.error):
            log.debug("IMAP logout failed", exc_info=True)
    return report


def _fetch(client: imaplib.IMAP4, uid: str) -> bytes | None:
    typ, data = client.uid("FETCH", uid, "(BODY.PEEK[])")
    if typ != "OK":
        return None
    for item in data:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
            return item[1]
    return None


# --- LMTP -------------------------------------------------------------------------------------


class SupportLmtpHandler:
    """aiosmtpd handler: accepts recipients of the support address only, messages up to the
    size limit, and answers each recipient after ``handle`` has stored the mail (LMTP gives
    one status per recipient, RFC 2033; we store a message once for all of them)."""

    def __init__(
        self,
        support_address: str,
        handle: Callable[[bytes, tuple[str, ...]], Delivery],
        *,
        max_bytes: int,
    ) -> None:
        self.support_address = support_address
        self.handle = handle
        self.max_bytes = max_bytes

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if not is_support_recipient(address, self.support_address):
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", errors="replace")
        count = max(1, len(envelope.rcpt_tos))
        if len(content) > self.max_bytes:
            return "\r\n".join(["552 5.3.4 Message too big"] * count)
        try:
            await asyncio.to_thread(self.handle, content, tuple(envelope.rcpt_tos))
        except Exception:
            log.exception("support mail from LMTP could not be delivered")
            return "\r\n".join(["451 4.3.0 Try again later"] * count)
        return "\r\n".join(["250 2.0.0 Delivered"] * count)


class _LmtpController(Controller):
    def factory(self) -> LMTP:
        return LMTP(self.handler, **self.SMTP_kwargs)


def lmtp_listener(
    host: str,
    port: int,
    support_address: str,
    handle: Callable[[bytes, tuple[str, ...]], Delivery],
    *,
    max_bytes: int,
) -> Controller:
    """A started-on-demand LMTP listener (``.start()`` / ``.stop()``)."""
    handler = SupportLmtpHandler(support_address, handle, max_bytes=max_bytes)
    return _LmtpController(handler, hostname=host, port=port, data_size_limit=max_bytes)


def parse_and_deliver(
    desk: TicketDesk, raw: bytes, support_address: str, envelope: tuple[str, ...] = ()
) -> Delivery:
    """Parse ``raw`` and :func:`deliver` it (the caller owns the transaction)."""
    mail = parse(raw, support_address=support_address, envelope_recipients=envelope)
    return deliver(desk, mail, key=message_key(mail, raw))


def deliver_in_transaction(
    factory: sessionmaker[Session],
    desk_for: Callable[[Session], TicketDesk],
    support_address: str,
) -> Callable[[bytes, tuple[str, ...]], Delivery]:
    """A ``handle`` for the poller and the listener: each message in its own transaction
    (committed before the mailbox is told, so a crash after it is a duplicate, never a loss)."""

    def handle(raw: bytes, envelope: tuple[str, ...] = ()) -> Delivery:
        with transaction(factory, write=True) as session:
            return parse_and_deliver(desk_for(session), raw, support_address, envelope)

    return handle
