"""E-mail over real SMTP (aiosmtpd) or into the outbox folder; webhooks to a real HTTP server."""

from __future__ import annotations

import email
import json
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.kit.clock import FrozenClock
from imhost.notify.mail import MailDelivery, Mailer
from imhost.notify.models import OutboundEmail, WebhookDelivery
from imhost.notify.webhooks import WebhookService, verify_signature


class _Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[str, int, _Sink]]:
    sink = _Sink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield "127.0.0.1", port, sink
    finally:
        controller.stop()


def _queue(factory: sessionmaker[Session], clock: FrozenClock, **kw: Any) -> str:
    with factory() as s:
        mail = Mailer("imhost <noreply@provider.example.com>").send(
            s,
            clock,
            kw.pop("to", "a@example.com"),
            kw.pop("subject", "Hello"),
            kw.pop("text", "Body"),
            **kw,
        )
        assert mail is not None
        s.commit()
        return mail.id


def test_queued_mail_goes_out_over_smtp_once(
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
    smtp_server: tuple[str, int, _Sink],
    tmp_path: Path,
) -> None:
    host, port, sink = smtp_server
    _queue(
        session_factory,
        clock,
        to=["a@example.com", "b@example.com"],
        subject="Invoice INV-1",
        text="Your invoice",
        attachments=[("INV-1.pdf", b"%PDF-1.4 test", "application/pdf")],
    )
    delivery = MailDelivery(
        smtp_url=f"smtp://{host}:{port}",
        outbox_dir=tmp_path,
        mail_from="imhost <noreply@provider.example.com>",
        clock=clock,
    )
    assert delivery.deliver_pending(session_factory) == 1
    assert delivery.deliver_pending(session_factory) == 0  # never twice
    assert len(sink.messages) == 1
    sender, rcpts, raw = sink.messages[0]
    msg = email.message_from_bytes(raw)
    assert sender == "noreply@provider.example.com" and sorted(rcpts) == [
        "a@example.com",
        "b@example.com",
    ]
    assert msg["Subject"] == "Invoice INV-1"
    assert [p.get_filename() for p in msg.walk() if p.get_filename()] == ["INV-1.pdf"]
    assert not list(tmp_path.iterdir())


def test_without_smtp_mail_is_written_to_the_outbox(
    session_factory: sessionmaker[Session], clock: FrozenClock, tmp_path: Path
) -> None:
    mail_id = _queue(session_factory, clock, subject="Welcome")
    delivery = MailDelivery(
        smtp_url=None, outbox_dir=tmp_path / "outbox", mail_from="x <x@example.com>", clock=clock
    )
    assert delivery.deliver_pending(session_factory) == 1
    files = list((tmp_path / "outbox").glob("*.eml"))
    assert len(files) == 1 and mail_id in files[0].name
    assert email.message_from_bytes(files[0].read_bytes())["Subject"] == "Welcome"


def test_an_unreachable_smtp_server_is_retried_then_marked_failed(
    session_factory: sessionmaker[Session], clock: FrozenClock, tmp_path: Path
) -> None:
    mail_id = _queue(session_factory, clock)
    delivery = MailDelivery(
        smtp_url="smtp://127.0.0.1:1",
        outbox_dir=tmp_path,
        mail_from="x <x@example.com>",
        clock=clock,
    )
    for _ in range(5):
        assert delivery.deliver_pending(session_factory) == 0
    with session_factory() as s:
        mail = s.get(OutboundEmail, mail_id)
        assert (
            mail is not None and mail.status == "failed" and mail.attempts == 5 and mail.last_error
        )


def test_bad_smtp_url_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="smtp://"):
        MailDelivery(smtp_url="http://x", outbox_dir=Path("."), mail_from="x", clock=FrozenClock())


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"received": [], "status": 200})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    finally:
        server.shutdown()


def test_webhooks_are_signed_and_retried_with_backoff(
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
    receiver: tuple[str, type[_Receiver]],
) -> None:
    url, handler = receiver
    service = WebhookService(allow_private=True)
    with session_factory() as s:
        endpoint = service.create_endpoint(
            s, clock, organization_id="org1", url=url, event_types=["invoice.finalized"]
        )
        secret = endpoint.secret
        assert (
            service.enqueue(
                s, "org1", "invoice.finalized", {"number": "INV-2026-000001"}, clock=clock
            )
            == 1
        )
        assert (
            service.enqueue(s, "org1", "payment.recorded", {"x": 1}, clock=clock) == 0
        )  # not subscribed
        assert (
            service.enqueue(s, "org2", "invoice.finalized", {"x": 1}, clock=clock) == 0
        )  # other customer
        s.commit()
    handler.status = 500
    assert service.deliver_pending(session_factory, clock) == 0
    assert service.deliver_pending(session_factory, clock) == 0  # not due yet: backoff
    clock.advance(61)
    handler.status = 200
    assert service.deliver_pending(session_factory, clock) == 1
    assert len(handler.received) == 2
    headers, body = handler.received[-1]
    assert verify_signature(secret, headers["Imhost-Signature"], body, int(clock.now().timestamp()))
    assert not verify_signature(
        secret, headers["Imhost-Signature"], body + b" ", int(clock.now().timestamp())
    )
    assert not verify_signature(
        secret, headers["Imhost-Signature"], body, int(clock.now().timestamp()) + 3600
    )
    assert json.loads(body)["data"] == {"number": "INV-2026-000001"}


def test_webhook_urls_must_be_public_unless_allowed(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    from imhost.kit.errors import InvalidInput

    with session_factory() as s:
        for url in (
            "http://127.0.0.1/x",
            "http://10.1.2.3/x",
            "ftp://example.com/x",
            "http://[::1]/x",
        ):
            with pytest.raises(InvalidInput):
                WebhookService(allow_private=False).create_endpoint(
                    s, clock, organization_id="o", url=url
                )


def _another_write(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    """What the rest of the platform does meanwhile: another connection commits a write."""
    from datetime import timedelta

    from imhost.worker.models import JobLease

    with factory() as s:
        s.add(JobLease(name=f"elsewhere-{clock.now().timestamp()}", next_run_at=clock.now()))
        s.commit()
    clock.advance(timedelta(seconds=1))


def test_a_webhook_is_recorded_even_when_others_wrote_during_its_request(
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
    receiver: tuple[str, type[_Receiver]],
) -> None:
    """Issue 9: the delivery read its row, posted (up to 10 s) inside that transaction, then
    wrote; on SQLite any commit by another connection meanwhile made the write fail with
    "database is locked" (the worker's log, every few seconds under load)."""
    url, handler = receiver
    service = WebhookService(allow_private=True)
    with session_factory() as s:
        service.create_endpoint(
            s, clock, organization_id="org1", url=url, event_types=["invoice.finalized"]
        )
        service.enqueue(s, "org1", "invoice.finalized", {"n": 1}, clock=clock)
        s.commit()

    def do_post(self: _Receiver) -> None:
        _another_write(session_factory, clock)
        _Receiver.do_POST(self)

    handler.do_POST = do_post  # type: ignore[method-assign]
    assert service.deliver_pending(session_factory, clock) == 1
    assert len(handler.received) == 1


def test_an_email_is_recorded_even_when_others_wrote_while_it_was_sent(
    session_factory: sessionmaker[Session], clock: FrozenClock, tmp_path: Path
) -> None:
    """The same for e-mail: written to the outbox (or sent over SMTP) with no transaction
    open, then recorded in a short write."""
    mail_id = _queue(session_factory, clock)
    delivery = MailDelivery(
        smtp_url=None, outbox_dir=tmp_path / "outbox", mail_from="x@example.com", clock=clock
    )
    write_outbox = delivery._write_outbox

    def slow_outbox(mail: OutboundEmail, msg: Any) -> str:
        _another_write(session_factory, clock)
        return write_outbox(mail, msg)

    delivery._write_outbox = slow_outbox  # type: ignore[method-assign]
    assert delivery.deliver_pending(session_factory) == 1
    with session_factory() as s:
        stored = s.get(OutboundEmail, mail_id)
        assert stored is not None and stored.status == "sent"


def test_nothing_due_builds_no_http_client(
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 16: the idle worker built an HTTP client and its TLS context every tick."""
    import httpx

    service = WebhookService(allow_private=True)
    with session_factory() as s:
        service.create_endpoint(s, clock, organization_id="org1", url="http://127.0.0.1:9/")
        assert service.enqueue(s, "org1", "invoice.finalized", {"n": 1}, clock=clock) == 1
        s.commit()
    with session_factory() as s:
        delivery = s.scalars(select(WebhookDelivery)).one()
        delivery.next_attempt_at = clock.now() + timedelta(minutes=5)  # backing off
        s.commit()
    built: list[object] = []
    real_client = httpx.Client

    def client(*args: Any, **kw: Any) -> Any:
        built.append(1)
        return real_client(*args, **kw)

    monkeypatch.setattr(httpx, "Client", client)
    assert service.deliver_pending(session_factory, clock) == 0
    assert built == []
    clock.advance(timedelta(minutes=5))
    assert service.deliver_pending(session_factory, clock) == 0  # due: tried, refused
    assert built == [1]
