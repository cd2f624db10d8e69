"""Read an inbound support e-mail (RFC 5322) into what a ticket needs.

Pure functions over bytes, no I/O: who sent it, the subject, the plain body (an HTML-only
mail is turned into text, never rendered), the attachments, the keys that thread it onto an
existing ticket, the new part of a reply (quoted history and signature cut) and whether the
mail was sent by a machine (an auto-reply, a bounce, a list) and so must never open a ticket
or be answered.

Threading keys, strongest first (the caller decides how to use them):

1. a reply token in a recipient address, ``support+<token>@domain`` (To, Cc, Delivered-To,
   X-Original-To or the envelope recipients an LMTP/SMTP server hands over);
2. ``In-Reply-To`` / ``References`` naming a Message-ID that imhost sent;
3. the ticket's public id in the subject, ``[IMH-7K3Q-2D9F]`` or bare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.utils import getaddresses
from html.parser import HTMLParser

from imhost.kit.ids import normalize_code

TICKET_PREFIX = "IMH"
_TICKET_RE = re.compile(
    r"(?<![0-9A-Za-z])IMH-([0-9A-Za-z]{4})-([0-9A-Za-z]{4})(?![0-9A-Za-z])", re.I
)
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{6,80}$")
_MSGID_RE = re.compile(r"<([^<>\s]+)>")

_UNREADABLE = (MessageError, ValueError, TypeError, IndexError, AttributeError, LookupError)
"""What the email package raises on a header or structure it cannot read."""

MAX_SUBJECT = 200
NO_SUBJECT = "(no subject)"


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class InboundMail:
    """One parsed inbound message."""

    message_id: str | None
    """The Message-ID without angle brackets (the idempotency key), or None if absent."""
    sender: str
    """The From address, lower-cased ('' when there is no usable From)."""
    sender_name: str
    subject: str
    body: str
    """The whole plain-text body."""
    reply: str
    """The body with quoted history and signature cut: what is stored on the ticket."""
    attachments: tuple[Attachment, ...] = ()
    ticket_ids: tuple[str, ...] = ()
    """Ticket public ids found in the subject (normalised: ``IMH-7K3Q-2D9F``)."""
    reply_tokens: tuple[str, ...] = ()
    """Tokens of ``<local>+<token>@<domain>`` recipients of the support mailbox."""
    references: tuple[str, ...] = ()
    """Message-IDs from In-Reply-To then References (newest first), without brackets."""
    recipients: tuple[str, ...] = ()
    automated: str | None = None
    """Why this mail came from a machine (auto-reply, bounce, list), or None for a person."""
    defects: tuple[str, ...] = field(default=())

    @property
    def text(self) -> str:
        """What to store: the new part of the reply, or the whole body if nothing is left."""
        return self.reply or self.body


# --- entry point ------------------------------------------------------------------------------


def parse(
    raw: bytes,
    *,
    support_address: str,
    envelope_recipients: tuple[str, ...] = (),
) -> InboundMail:
    """Parse ``raw`` (the message as received) for the mailbox ``support_address``.

    ``envelope_recipients`` are the RCPT TO addresses when an LMTP/SMTP server delivers.
    Never raises on a malformed message: what cannot be read is left empty.
    """
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    name, sender = _from_address(msg)
    subject = _clean_subject(_header(msg, "Subject"))
    body_part = _body_part(msg)
    body = _part_text(body_part) if body_part is not None else ""
    attachments = tuple(_attachments(msg, body_part))
    recipients = _recipients(msg, envelope_recipients)
    return InboundMail(
        message_id=_first_msgid(_header(msg, "Message-ID")),
        sender=sender,
        sender_name=name,
        subject=subject,
        body=body,
        reply=strip_quoted(body),
        attachments=attachments,
        ticket_ids=ticket_ids_in(subject),
        reply_tokens=reply_tokens(recipients, support_address),
        references=_references(msg),
        recipients=recipients,
        automated=automated_reason(msg, sender),
        defects=tuple(type(d).__name__ for d in msg.defects),
    )


# --- headers ----------------------------------------------------------------------------------


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except _UNREADABLE:  # a header the policy cannot parse at all
        return ""
    return "" if value is None else str(value)


def _all_headers(msg: Message, name: str) -> list[str]:
    try:
        values = msg.get_all(name) or []
    except _UNREADABLE:
        return []
    return [str(v) for v in values]


def _from_address(msg: Message) -> tuple[str, str]:
    for raw_name, address in getaddresses(_all_headers(msg, "From")):
        address = address.strip().lower()
        if "@" in address and " " not in address:
            return raw_name.strip()[:200], address[:320]
    return "", ""


def _clean_subject(subject: str) -> str:
    subject = " ".join(subject.split())
    return subject[:MAX_SUBJECT] or NO_SUBJECT


def _first_msgid(value: str) -> str | None:
    found = _MSGID_RE.findall(value)
    if found:
        return str(found[0])[:998]
    value = value.strip()
    return value[:998] or None


def _references(msg: Message) -> tuple[str, ...]:
    ids: list[str] = []
    for value in _MSGID_RE.findall(_header(msg, "In-Reply-To")):
        ids.append(value)
    for value in reversed(_MSGID_RE.findall(_header(msg, "References"))):
        ids.append(value)
    seen: set[str] = set()
    out: list[str] = []
    for value in ids:
        if value not in seen:
            seen.add(value)
            out.append(value)
    return tuple(out[:50])


def _recipients(msg: Message, envelope: tuple[str, ...]) -> tuple[str, ...]:
    values: list[str] = []
    for name in ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To"):
        values.extend(_all_headers(msg, name))
    out: list[str] = [a.strip().lower() for a in envelope if a.strip()]
    for _, address in getaddresses(values):
        address = address.strip().lower()
        if "@" in address and address not in out:
            out.append(address)
    return tuple(out)


def ticket_ids_in(subject: str) -> tuple[str, ...]:
    """Ticket public ids in ``subject``, normalised (``imh-7k3q-2d9f`` -> ``IMH-7K3Q-2D9F``)."""
    out: list[str] = []
    for match in _TICKET_RE.finditer(subject):
        try:
            code = normalize_code(f"{match.group(1)}-{match.group(2)}")
        except ValueError:
            continue
        ticket = f"{TICKET_PREFIX}-{code}"
        if ticket not in out:
            out.append(ticket)
    return tuple(out)


def reply_tokens(recipients: tuple[str, ...], support_address: str) -> tuple[str, ...]:
    """Tokens of recipients ``<local>+<token>@<domain>`` where ``<local>@<domain>`` is the
    support address (case-insensitive)."""
    local, _, domain = support_address.strip().lower().partition("@")
    out: list[str] = []
    for address in recipients:
        rlocal, _, rdomain = address.rpartition("@")
        base, plus, token = rlocal.partition("+")
        if not plus or base.lower() != local or rdomain.lower() != domain:
            continue
        if _TOKEN_RE.match(token) and token not in out:
            out.append(token)
    return tuple(out)


def is_support_recipient(address: str, support_address: str) -> bool:
    """Whether ``address`` is the support mailbox or one of its ``+token`` forms."""
    local, _, domain = support_address.strip().lower().partition("@")
    rlocal, _, rdomain = address.strip().lower().rpartition("@")
    return rdomain == domain and rlocal.partition("+")[0] == local


# --- machines, not people ---------------------------------------------------------------------

_ROBOT_LOCALS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"})


def automated_reason(msg: Message, sender: str) -> str | None:
    """Why ``msg`` was sent by a machine, or None when a person wrote it.

    RFC 3834 section 5 (Auto-Submitted other than ``no``), the vendor headers auto-responders
    set (X-Autoreply, X-Autorespond, X-Auto-Response-Suppress is not enough on its own),
    Precedence bulk/junk/list, mailing lists (List-Id), delivery and disposition reports
    (RFC 3464 / 8098, ``multipart/report``), and bounce senders (mailer-daemon, postmaster,
    a null Return-Path).
    """
    auto = _header(msg, "Auto-Submitted").split(";")[0].strip().lower()
    if auto and auto != "no":
        return f"auto-submitted ({auto})"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-AutoReply-From"):
        if _header(msg, name):
            return "auto-reply"
    if _header(msg, "X-Auto-Response-Suppress").strip().lower() in {"all", "oof"} and _header(
        msg, "Thread-Topic"
    ).lower().startswith(("automatic reply", "out of office")):
        return "auto-reply"
    precedence = _header(msg, "Precedence").strip().lower()
    if precedence in {"bulk", "junk", "list", "auto_reply"}:
        return f"precedence {precedence}"
    if _header(msg, "List-Id") or _header(msg, "List-Unsubscribe"):
        return "mailing list"
    if msg.get_content_type() == "multipart/report":
        return "delivery report"
    for part in msg.walk():
        if part.get_content_type() in {
            "message/delivery-status",
            "message/disposition-notification",
            "message/feedback-report",
        }:
            return "delivery report"
    local = sender.partition("@")[0]
    if local in _ROBOT_LOCALS:
        return "bounce"
    if _header(msg, "Return-Path").strip() == "<>":
        return "bounce"
    return None


# --- bodies and attachments -------------------------------------------------------------------


def _body_part(msg: EmailMessage) -> EmailMessage | None:
    try:
        part = msg.get_body(preferencelist=("plain", "html"))
    except _UNREADABLE:
        return None
    if part is None and not msg.is_multipart() and msg.get_content_maintype() == "text":
        return msg
    return part if isinstance(part, EmailMessage) else None


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        text = payload.decode("utf-8", errors="replace")
    if part.get_content_type() == "text/html":
        text = html_to_text(text)
    return _tidy(text)


def _tidy(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    lines = [line.rstrip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if not line and out and not out[-1]:
            continue
        out.append(line)
    return "\n".join(out).strip("\n")


def _attachments(msg: Message, body_part: Message | None) -> list[Attachment]:
    found: list[Attachment] = []
    stack: list[Message] = [msg]
    index = 0
    while stack:
        part = stack.pop(0)
        if part is body_part:
            continue
        ctype = part.get_content_type()
        if ctype == "message/rfc822" or (part.is_multipart() and ctype.startswith("message/")):
            index += 1
            inner = part.get_payload()
            first = inner[0] if isinstance(inner, list) and inner else None
            data = first.as_bytes() if isinstance(first, Message) else b""
            found.append(Attachment(f"message-{index}.eml", "message/rfc822", data))
            continue
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                stack = [p for p in payload if isinstance(p, Message)] + stack
            continue
        disposition = (part.get_content_disposition() or "").lower()
        filename = part.get_filename()
        if ctype.startswith("text/") and disposition != "attachment" and not filename:
            continue  # another rendering of the body (the HTML of an alternative)
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        index += 1
        found.append(Attachment(_safe_filename(filename, index, ctype), ctype, payload))
    return found


def _safe_filename(name: str | None, index: int, ctype: str) -> str:
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c >= " " and c not in '"<>|:*?\x7f').strip(" .")
    if not name:
        extension = ctype.rsplit("/", 1)[-1].split("+")[0][:10] if "/" in ctype else "bin"
        name = f"attachment-{index}.{extension}"
    return name[:200]


class _TextFromHtml(HTMLParser):
    """HTML to plain text: keeps the words and line structure, drops everything that runs or
    hides (script, style, head, template), shows a link's address after its text, and marks
    quoted blocks with ``>`` so the quote cutter removes them like a plain-text quote."""

    _SKIP = frozenset({"script", "style", "head", "title", "template", "noscript", "svg"})
    _BLOCK = frozenset(
        {"p", "div", "br", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "hr", "pre"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = [""]
        self.skip = 0
        self.quote = 0
        self.links: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skip += 1
        elif tag == "blockquote":
            self.quote += 1
            self._newline()
        elif tag in self._BLOCK:
            self._newline()
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            self.links.append(href if href.startswith(("http://", "https://", "mailto:")) else None)
        elif tag == "li":
            self._newline()

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "blockquote":
            self.quote = max(0, self.quote - 1)
            self._newline()
        elif tag in self._BLOCK:
            self._newline()
        elif tag == "a" and self.links:
            href = self.links.pop()
            if href and not self.lines[-1].rstrip().endswith(href.removeprefix("mailto:")):
                self._write(f" <{href.removeprefix('mailto:')}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"br", "hr"}:
            self._newline()

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        self._write(re.sub(r"\s+", " ", data))

    def _write(self, text: str) -> None:
        if not self.lines[-1] and self.quote:
            self.lines[-1] = "> " * self.quote
        line = self.lines[-1]
        if (not line or line.endswith(" ")) and text.startswith(" "):
            text = text.lstrip()
        self.lines[-1] = line + text

    def _newline(self) -> None:
        self.lines[-1] = self.lines[-1].rstrip()
        self.lines.append("")


def html_to_text(html: str) -> str:
    """The readable text of ``html`` (never rendered, never trusted)."""
    parser = _TextFromHtml()
    parser.feed(html)
    parser.close()
    return _tidy("\n".join(line.strip() for line in parser.lines))


# --- quoted history and signatures ------------------------------------------------------------

_WROTE_RE = re.compile(
    r"^\s*(On|Am|Le|El|Il|Op)\b.{0,300}"
    r"\b(wrote|schrieb|a écrit|escribió|scritto|schreef)\b.{0,200}:\s*$",
    re.I,
)
_ORIGINAL_RE = re.compile(
    r"^\s*-{2,}\s*(Original Message|Ursprüngliche Nachricht|Forwarded message)\s*-{2,}\s*$", re.I
)
_OUTLOOK_RULE_RE = re.compile(r"^\s*_{10,}\s*$")
_HEADER_RE = re.compile(r"^\s*\*?(From|Von|De)\s*:\*?\s*\S", re.I)
_HEADER_NEXT_RE = re.compile(
    r"^\s*\*?(Sent|Date|Gesendet|Envoyé|To|An|À|Subject|Betreff|Objet|Cc)\s*:", re.I
)
_MOBILE_RE = re.compile(r"^\s*(Sent from my \w+|Get Outlook for \w+)", re.I)


def strip_quoted(body: str) -> str:
    """The new part of a reply: ``body`` up to quoted history, without ``>`` lines and without
    the signature (RFC 3676 section 4.3's ``-- `` delimiter)."""
    lines = body.split("\n")
    cut = len(lines)
    for i, line in enumerate(lines):
        pair = line + " " + lines[i + 1] if i + 1 < len(lines) else line
        if _WROTE_RE.match(line) or (_WROTE_RE.match(pair) and not line.startswith(">")):
            cut = i
            break
        if _ORIGINAL_RE.match(line):
            cut = i
            break
        if _HEADER_RE.match(line) and _outlook_block(lines, i):
            cut = i - 1 if i > 0 and _OUTLOOK_RULE_RE.match(lines[i - 1]) else i
            break
        if line == "-- " or line == "--" or _MOBILE_RE.match(line):
            cut = i
            break
    kept = [line for line in lines[:cut] if not line.lstrip().startswith(">")]
    return _tidy("\n".join(kept))


def _outlook_block(lines: list[str], start: int) -> bool:
    following = [line for line in lines[start + 1 : start + 6] if line.strip()]
    return sum(1 for line in following if _HEADER_NEXT_RE.match(line)) >= 2


def display_address(name: str, address: str) -> str:
    """``Name <address>`` for a header (quoted as RFC 5322 needs)."""
    local, _, domain = address.partition("@")
    return str(Address(display_name=name, username=local, domain=domain))
