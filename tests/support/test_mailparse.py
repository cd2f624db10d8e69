"""The inbound mail parser, on messages shaped like the ones real clients and servers send."""

from __future__ import annotations

import base64
from email.message import EmailMessage

from imhost.support import mailparse
from imhost.support.mailparse import html_to_text, parse, strip_quoted

SUPPORT = "support@imhost.example"


def raw(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


GMAIL_REPLY = raw(
    """Delivered-To: support+tk7q2m9xhd4a@imhost.example
Return-Path: <ana@example.org>
MIME-Version: 1.0
References: <first.IMH-7K3Q-2D9F@imhost.example> <reply2.IMH-7K3Q-2D9F@imhost.example>
In-Reply-To: <reply2.IMH-7K3Q-2D9F@imhost.example>
From: =?UTF-8?Q?Ana_Mar=C3=ADa?= <Ana@Example.org>
Date: Tue, 1 Dec 2026 10:02:11 +0100
Message-ID: <CAF=abc123@mail.gmail.com>
Subject: Re: [IMH-7K3Q-2D9F] Cannot log in from Conversations
To: imhost support <support+tk7q2m9xhd4a@imhost.example>
Content-Type: multipart/alternative; boundary="000000000000b1"

--000000000000b1
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

It works now, thank you!
I changed the port to 5223.

--=20
Ana Mar=C3=ADa
Example Org

On Mon, Nov 30, 2026 at 6:14 PM imhost support <support@imhost.example> wrote:

> Please try port 5223 with direct TLS.
>
> > old quoted line

--000000000000b1
Content-Type: text/html; charset="UTF-8"

<div dir="ltr">It works now, thank you!<br>I changed the port to 5223.</div>
<div class="gmail_quote"><blockquote>Please try port 5223</blockquote></div>

--000000000000b1--
"""
)


def test_gmail_reply_gives_sender_threading_keys_and_only_the_new_text() -> None:
    mail = parse(GMAIL_REPLY, support_address=SUPPORT)
    assert mail.sender == "ana@example.org"
    assert mail.sender_name == "Ana María"
    assert mail.message_id == "CAF=abc123@mail.gmail.com"
    assert mail.subject == "Re: [IMH-7K3Q-2D9F] Cannot log in from Conversations"
    assert mail.ticket_ids == ("IMH-7K3Q-2D9F",)
    assert mail.reply_tokens == ("tk7q2m9xhd4a",)
    assert mail.references == (
        "reply2.IMH-7K3Q-2D9F@imhost.example",
        "first.IMH-7K3Q-2D9F@imhost.example",
    )
    assert mail.reply == "It works now, thank you!\nI changed the port to 5223."
    assert "Ana María" in mail.body and "Please try port 5223" in mail.body
    assert mail.automated is None
    assert mail.attachments == ()


def test_bare_ticket_id_in_subject_is_found_and_normalised() -> None:
    assert mailparse.ticket_ids_in("re: imh-7k3q-2d9f still broken") == ("IMH-7K3Q-2D9F",)
    # O and I typed for 0 and 1 read as Crockford base 32 does
    assert mailparse.ticket_ids_in("Ticket IMH-7K3Q-2DOI") == ("IMH-7K3Q-2D01",)
    assert mailparse.ticket_ids_in("XIMH-7K3Q-2D9F and IMH-7K3Q-2D9FF") == ()
    assert mailparse.ticket_ids_in("IMH-UUUU-2D9F") == ()  # U is not in the alphabet


def test_reply_token_only_for_the_support_mailbox_and_from_envelope() -> None:
    recipients = (
        "support+abcdef12@imhost.example",
        "sales+zzzzzzzz@imhost.example",
        "support+abcdef12@other.example",
        "support+bad!token@imhost.example",
    )
    assert mailparse.reply_tokens(recipients, SUPPORT) == ("abcdef12",)
    message = raw("From: a@b.example\nTo: support@imhost.example\nSubject: hi\n\nhello\n")
    mail = parse(
        message, support_address=SUPPORT, envelope_recipients=("Support+Tok12345@imhost.example",)
    )
    assert mail.reply_tokens == ("tok12345",)
    assert mailparse.is_support_recipient("support+x@IMHOST.example", SUPPORT)
    assert not mailparse.is_support_recipient("supporter@imhost.example", SUPPORT)


OUTLOOK_REPLY = raw(
    """From: Bob Stone <bob@corp.example>
To: "support@imhost.example" <support@imhost.example>
Subject: RE: IMH-7K3Q-2D9F  invoice question
Thread-Topic: invoice question
Message-ID: <DM6PR@outlook.example>
Content-Type: text/plain; charset="iso-8859-1"
Content-Transfer-Encoding: 8bit

Yes, please send the corrected invoice.

Bob

________________________________
From: imhost support <support@imhost.example>
Sent: Monday, November 30, 2026 18:14
To: Bob Stone <bob@corp.example>
Subject: [IMH-7K3Q-2D9F] invoice question

Your invoice is attached.
"""
)


def test_outlook_reply_cuts_the_from_sent_block_and_decodes_latin1() -> None:
    mail = parse(OUTLOOK_REPLY, support_address=SUPPORT)
    assert mail.reply == "Yes, please send the corrected invoice.\n\nBob"
    assert mail.ticket_ids == ("IMH-7K3Q-2D9F",)
    assert mail.subject == "RE: IMH-7K3Q-2D9F invoice question"


def test_original_message_separator_and_interleaved_quotes() -> None:
    body = "Thanks.\n\n-----Original Message-----\nFrom: x\nold"
    assert strip_quoted(body) == "Thanks."
    interleaved = "> Which client?\nGajim 1.8\n> Which port?\n5222"
    assert strip_quoted(interleaved) == "Gajim 1.8\n5222"
    wrapped = (
        "Fine now.\n\nOn Mon, Nov 30, 2026 at 6:14 PM imhost support <\n"
        "support@imhost.example> wrote:\n> x"
    )
    assert strip_quoted(wrapped) == "Fine now."
    german = "Danke!\n\nAm 30.11.2026 um 18:14 schrieb imhost support:\n> x"
    assert strip_quoted(german) == "Danke!"
    assert strip_quoted("Done.\n\nSent from my iPhone") == "Done."


def test_a_message_that_is_only_quote_keeps_its_body_as_text() -> None:
    message = raw("From: a@b.example\nSubject: Fwd\n\n> only a quote\n")
    mail = parse(message, support_address=SUPPORT)
    assert mail.reply == ""
    assert mail.text == "> only a quote"


HTML_ONLY = raw(
    """From: carol@shop.example
To: support@imhost.example
Subject: =?utf-8?b?TG9naW4gcHJvYmxlbSDinJM=?=
Message-ID: <html-only@shop.example>
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8

<html><head><title>t</title><style>p{color:red}</style>
<script>alert('x')</script></head><body>
<p>Hello &amp; good day,</p><p>My <b>password</b> no longer works.<br>See
<a href="https://imhost.example/help">the guide</a> and <a href="javascript:alert(1)">this</a>.</p>
<blockquote><p>quoted text</p></blockquote>
<img src="https://tracker.example/p.gif" onerror="alert(2)">
</body></html>
"""
)


def test_html_only_mail_is_turned_into_safe_text() -> None:
    mail = parse(HTML_ONLY, support_address=SUPPORT)
    assert mail.subject == "Login problem ✓"
    assert (
        "alert" not in mail.body
        and "color" not in mail.body
        and "<" not in mail.body.replace("<https://imhost.example/help>", "")
    )
    assert "Hello & good day," in mail.body
    assert "My password no longer works." in mail.body
    assert "the guide <https://imhost.example/help>" in mail.body
    assert "> quoted text" in mail.body
    assert "quoted text" not in mail.reply
    assert "My password no longer works." in mail.reply


def test_html_to_text_keeps_paragraphs() -> None:
    assert html_to_text("<p>a</p><p>b</p><ul><li>one</li><li>two</li></ul>") == "a\n\nb\n\none\ntwo"


def test_attachments_are_found_with_safe_names_in_nested_multiparts() -> None:
    msg = EmailMessage()
    msg["From"] = "dan@example.net"
    msg["To"] = SUPPORT
    msg["Subject"] = "Screenshot of the error"
    msg["Message-ID"] = "<att@example.net>"
    msg.set_content("The error is in the picture.")
    msg.add_alternative("<p>The error is in the picture.</p>", subtype="html")
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
    msg.add_attachment(png, maintype="image", subtype="png", filename="../../etc/screen shot.png")
    msg.add_attachment(b"log line\n", maintype="text", subtype="plain", filename="client.log")
    inner = EmailMessage()
    inner["Subject"] = "forwarded"
    inner.set_content("inner")
    msg.add_attachment(inner)
    mail = parse(msg.as_bytes(), support_address=SUPPORT)
    assert mail.reply == "The error is in the picture."
    names = [(a.filename, a.content_type) for a in mail.attachments]
    assert names == [
        ("screen shot.png", "image/png"),
        ("client.log", "text/plain"),
        ("message-3.eml", "message/rfc822"),
    ]
    assert mail.attachments[0].data == png
    assert b"inner" in mail.attachments[2].data


def _headers(extra: str, sender: str = "eve@example.com", ctype: str = "text/plain") -> bytes:
    return raw(
        f"From: {sender}\nTo: {SUPPORT}\nSubject: Out of office\n{extra}"
        f"Content-Type: {ctype}\n\nI am away.\n"
    )


def test_auto_replies_bounces_and_lists_are_recognised() -> None:
    cases = {
        "Auto-Submitted: auto-replied\n": "auto-submitted (auto-replied)",
        "Auto-Submitted: auto-generated; owner-email=x@y\n": "auto-submitted (auto-generated)",
        "X-Autoreply: yes\n": "auto-reply",
        "Precedence: bulk\n": "precedence bulk",
        "Precedence: junk\n": "precedence junk",
        "List-Id: <users.lists.example>\n": "mailing list",
        "Return-Path: <>\n": "bounce",
    }
    for header, reason in cases.items():
        assert parse(_headers(header), support_address=SUPPORT).automated == reason, header
    assert parse(_headers("Auto-Submitted: no\n"), support_address=SUPPORT).automated is None
    assert parse(_headers(""), support_address=SUPPORT).automated is None
    assert (
        parse(_headers("", sender="MAILER-DAEMON@mx.example"), support_address=SUPPORT).automated
        == "bounce"
    )
    assert (
        parse(_headers("", sender="postmaster@mx.example"), support_address=SUPPORT).automated
        == "bounce"
    )


DSN = raw(
    """From: Mail Delivery System <MAILER-DAEMON@mx.example>
To: support@imhost.example
Subject: Undelivered Mail Returned to Sender
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

This is the mail system. I'm sorry to have to inform you that your message could not be delivered.
--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example
Final-Recipient: rfc822; gone@example.com
Action: failed
Status: 5.1.1
--B--
"""
)


def test_delivery_status_report_is_a_bounce() -> None:
    assert parse(DSN, support_address=SUPPORT).automated == "delivery report"
    # a report under another sender is still a report
    assert (
        parse(DSN.replace(b"MAILER-DAEMON@mx", b"relay@mx"), support_address=SUPPORT).automated
        == "delivery report"
    )


def test_malformed_mail_never_raises() -> None:
    for junk in (
        b"",
        b"\x00\xff\xfe",
        b"From: <<<>>>\nSubject:\n\n\xff\xfe",
        b"Content-Type: text/plain; charset=no-such-charset\nFrom: a@b.example\n\n\xe9t\xe9",
    ):
        mail = parse(junk, support_address=SUPPORT)
        assert mail.subject
        assert "\x00" not in mail.body


def test_base64_body_and_unknown_charset_fall_back_to_utf8() -> None:
    body = base64.b64encode("Grüße aus Köln".encode()).decode()
    message = raw(
        "From: x@y.example\nSubject: b64\nContent-Type: text/plain; charset=x-unknown\n"
        f"Content-Transfer-Encoding: base64\n\n{body}\n"
    )
    assert parse(message, support_address=SUPPORT).body == "Grüße aus Köln"
