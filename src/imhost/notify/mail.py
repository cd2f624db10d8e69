"""E-mail: queued in the caller's transaction, delivered after commit.

``Mailer.send`` (used by event subscribers) only queues. ``deliver_pending`` sends what is
queued: over SMTP when ``IMHOST_SMTP_URL`` is set (``smtp://user:pass@host:port`` with
STARTTLS when the server offers it, or ``smtps://`` for implicit TLS), otherwise it writes
each message as an ``.eml`` file into ``<data dir>/outbox/`` where staff can read it (the
console lists it). Failed sends are retried up to ``MAX_ATTEMPTS`` times.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import unquote, urlparse

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.db.engine import writer_session
from imhost.kit.clock import Clock
from imhost.kit.errors import NotFound
from imhost.notify.models import EmailAttachment, OutboundEmail

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
QUEUED_KEY = "notify.queued"
"""In ``session.info`` once the session queued an e-mail or a webhook: after its commit the
runtime wakes this process's worker (``Runtime.wake_delivery``)."""


def mark_queued(session: Session) -> None:
    session.info[QUEUED_KEY] = True


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None
    password: str | None
    implicit_tls: bool

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        parsed = urlparse(url)
        if parsed.scheme not in ("smtp", "smtps") or not parsed.hostname:
            raise ValueError("IMHOST_SMTP_URL must look like smtp://user:pass@host:587")
        implicit = parsed.scheme == "smtps"
        return cls(
            host=parsed.hostname,
            port=parsed.port or (465 if implicit else 25),
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            implicit_tls=implicit,
        )


class Mailer:
    """Queues messages in the current session (``send``) for delivery after commit."""

    def __init__(self, mail_from: str) -> None:
        self.mail_from = mail_from

    def send(
        self,
        session: Session,
        clock: Clock,
        to: str | Sequence[str],
        subject: str,
        text: str,
        html: str | None = None,
        attachments: Sequence[tuple[str, bytes, str]] = (),
        *,
        organization_id: str | None = None,
        kind: str = "",
        headers: dict[str, str] | None = None,
    ) -> OutboundEmail | None:
        """Queue one e-mail. ``headers`` may set ``Message-ID``, ``In-Reply-To``,
        ``References`` and ``Reply-To`` (threading, RFC 5322 section 3.6.4); others are
        refused so no caller can forge ``From`` or inject a header."""
        recipients = [to] if isinstance(to, str) else [r for r in to if r]
        recipients = list(dict.fromkeys(r.strip() for r in recipients if r and r.strip()))
        if not recipients:
            return None
        mail = OutboundEmail(
            created_at=clock.now(),
            to=recipients,
            subject=subject.replace("\n", " ").strip()[:300],
            text=text,
            html=html,
            organization_id=organization_id,
            kind=kind,
            headers=_checked_headers(headers or {}),
        )
        session.add(mail)
        session.flush()
        mark_queued(session)
        for filename, content, content_type in attachments:
            session.add(
                EmailAttachment(
                    email_id=mail.id, filename=filename, content=content, content_type=content_type
                )
            )
        return mail


THREADING_HEADERS = ("Message-ID", "In-Reply-To", "References", "Reply-To")


def _checked_headers(headers: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        if name not in THREADING_HEADERS:
            raise ValueError(f"the header {name} cannot be set by a sender")
        if "\n" in value or "\r" in value:
            raise ValueError("a header value cannot span lines")
        out[name] = value
    return out


def build_message(
    mail: OutboundEmail, attachments: Sequence[EmailAttachment], mail_from: str
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = ", ".join(mail.to)
    msg["Subject"] = mail.subject
    msg["Date"] = formatdate(mail.created_at.timestamp(), usegmt=True)
    extra = mail.headers or {}
    msg["Message-ID"] = extra.get("Message-ID") or make_msgid(idstring=mail.id, domain="imhost")
    for name in ("In-Reply-To", "References", "Reply-To"):
        if extra.get(name):
            msg[name] = extra[name]
    msg.set_content(mail.text)
    if mail.html:
        msg.add_alternative(mail.html, subtype="html")
    for att in attachments:
        maintype, _, subtype = att.content_type.partition("/")
        msg.add_attachment(
            att.content, maintype=maintype, subtype=subtype or "octet-stream", filename=att.filename
        )
    return msg


class MailDelivery:
    """Sends queued e-mail. One instance per process; safe to call repeatedly."""

    def __init__(
        self, *, smtp_url: str | None, outbox_dir: Path, mail_from: str, clock: Clock
    ) -> None:
        self.smtp = SmtpTarget.parse(smtp_url) if smtp_url else None
        self.outbox_dir = outbox_dir
        self.mail_from = mail_from
        self.clock = clock

    def _send_smtp(self, msg: EmailMessage) -> None:
        assert self.smtp is not None
        target = self.smtp
        context = ssl.create_default_context()
        if target.implicit_tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                target.host, target.port, timeout=30, context=context
            )
        else:
            client = smtplib.SMTP(target.host, target.port, timeout=30)
        with client:
            client.ehlo()
            if not target.implicit_tls and client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
            if target.username:
                client.login(target.username, target.password or "")
            client.send_message(msg)

    def _write_outbox(self, mail: OutboundEmail, msg: EmailMessage) -> str:
        self.outbox_dir.mkdir(parents=True, exist_ok=True)
        stamp = mail.created_at.strftime("%Y%m%dT%H%M%S")
        path = self.outbox_dir / f"{stamp}-{mail.id}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(bytes(msg))
        tmp.replace(path)
        return path.name

    def deliver_pending(self, factory: sessionmaker[Session], limit: int = 100) -> int:
        """Deliver up to ``limit`` queued messages; returns how many were sent."""
        sent = 0
        with factory() as session:
            ids = list(
                session.scalars(
                    select(OutboundEmail.id)
                    .where(OutboundEmail.status == "queued")
                    .order_by(OutboundEmail.created_at, OutboundEmail.id)
                    .limit(limit)
                )
            )
        for mail_id in ids:
            # Read, then send with no transaction open (SMTP can take seconds), then record
            # the outcome in a short write: no database lock is held across the network.
            with factory() as session:
                mail = session.get(OutboundEmail, mail_id)
                if mail is None or mail.status != "queued":
                    continue
                atts = list(
                    session.scalars(
                        select(EmailAttachment).where(EmailAttachment.email_id == mail.id)
                    )
                )
                msg = build_message(mail, atts, self.mail_from)
                session.expunge(mail)
            error: Exception | None = None
            transport = outbox_file = None
            try:
                if self.smtp is not None:
                    self._send_smtp(msg)
                    transport = "smtp"
                else:
                    outbox_file = self._write_outbox(mail, msg)
                    transport = "outbox"
            except (OSError, smtplib.SMTPException) as exc:
                error = exc
            with writer_session(factory) as session:
                stored = session.get(OutboundEmail, mail_id)
                if stored is None or stored.status != "queued":
                    continue
                stored.attempts += 1
                if error is not None:
                    stored.last_error = str(error)[:500]
                    if stored.attempts >= MAX_ATTEMPTS:
                        stored.status = "failed"
                    log.warning(
                        "e-mail %s not sent (attempt %d): %s", mail_id, stored.attempts, error
                    )
                else:
                    stored.transport = transport
                    if outbox_file is not None:
                        stored.outbox_file = outbox_file
                    stored.status = "sent"
                    stored.sent_at = self.clock.now()
                    sent += 1
                session.commit()
        return sent


def list_outbox(session: Session, *, limit: int = 50, offset: int = 0) -> list[OutboundEmail]:
    stmt = select(OutboundEmail).order_by(OutboundEmail.created_at.desc(), OutboundEmail.id)
    return list(session.scalars(stmt.limit(limit).offset(offset)))


def get_email(session: Session, email_id: str) -> OutboundEmail:
    mail = session.get(OutboundEmail, email_id)
    if mail is None:
        raise NotFound("no such e-mail")
    return mail
