"""Managing webhook endpoints (notify.webhooks.WebhookService): the URL rules, the event list,
a test event to one endpoint, a new secret that signs from then on, sending a delivery again,
disabling, deleting; each change audited, and a request sent twice acting once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.audit import Actor
from imhost.accounts.models import AuditEvent
from imhost.kit.clock import FrozenClock
from imhost.kit.errors import Conflict, InvalidInput, NotFound
from imhost.notify.models import WebhookDelivery
from imhost.notify.webhooks import TEST_EVENT, WebhookService, verify_signature


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]]
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


ANN = Actor(user_id="u1", label="ann@example.com")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("javascript:alert(1)", "full https:// address"),
        ("ftp://example.com/x", "full https:// address"),
        ("http://example.com/hook", "Use an https:// address"),
        ("https://user:secret@example.com/x", "Leave the user name and password out"),
        ("https://10.1.2.3/x", "public internet"),
        ("https://127.0.0.1/x", "public internet"),
        ("https://[::1]/x", "public internet"),
        ("https://169.254.169.254/latest/meta-data", "public internet"),
        ("https://[fe80::1]/x", "public internet"),
        ("https://0.0.0.0/x", "public internet"),
        ("https://example.com:99999/x", "not a valid web address"),
        ("https://" + "a" * 500 + ".com/", "at most 500 characters"),
        ("", "Enter the address"),
    ],
)
def test_hostile_or_private_urls_are_refused_in_plain_words(
    session_factory: sessionmaker[Session], clock: FrozenClock, url: str, words: str
) -> None:
    with session_factory() as s, pytest.raises(InvalidInput) as err:
        WebhookService(allow_private=False).create_endpoint(s, clock, organization_id="o", url=url)
    assert words in err.value.detail and err.value.field == "url"


def test_plain_http_is_for_loopback_only_and_only_where_private_targets_are_allowed(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    lab = WebhookService(allow_private=True)
    with session_factory() as s:
        assert lab.create_endpoint(s, clock, organization_id="o", url="http://127.0.0.1:8080/h")
        assert lab.create_endpoint(s, clock, organization_id="o", url="http://localhost/h")
        with pytest.raises(InvalidInput, match="https://"):
            lab.create_endpoint(s, clock, organization_id="o", url="http://10.0.0.5/h")
        assert lab.create_endpoint(s, clock, organization_id="o", url="https://10.0.0.5/h")


def test_only_known_events_can_be_chosen(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    service = WebhookService(allow_private=True)
    with session_factory() as s:
        with pytest.raises(InvalidInput) as err:
            service.create_endpoint(
                s, clock, organization_id="o", url="https://h.test/", event_types=["evil.thing"]
            )
        assert err.value.field == "event_types" and "evil.thing" in err.value.detail


def test_a_test_event_goes_to_that_endpoint_only_once_and_is_signed(
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
    receiver: tuple[str, type[_Receiver]],
) -> None:
    url, handler = receiver
    service = WebhookService(allow_private=True)
    with session_factory() as s:
        one = service.create_endpoint(
            s, clock, organization_id="o", url=url, event_types=["invoice.paid"], actor=ANN
        )
        service.create_endpoint(s, clock, organization_id="o", url=url + "/other")
        first = service.send_test(s, clock, "o", one.id, actor=ANN)
        again = service.send_test(s, clock, "o", one.id, actor=ANN)  # the form sent twice
        assert again.id == first.id
        secret, one_id = one.secret, one.id
        s.commit()
    assert service.deliver_pending(session_factory, clock) == 1
    [(headers, body)] = handler.received
    assert headers["Imhost-Event"] == TEST_EVENT and headers["Imhost-Delivery"] == first.id
    assert verify_signature(secret, headers["Imhost-Signature"], body, int(clock.now().timestamp()))
    with session_factory() as s:
        [shown] = service.recent_deliveries(s, "o", one_id)
        assert (shown.status, shown.attempts, shown.response_status) == ("delivered", 1, 200)
        actions = [e.action for e in s.scalars(select(AuditEvent).order_by(AuditEvent.at))]
        assert actions.count("webhook.test_sent") == 1 and "webhook.created" in actions


def test_a_new_secret_signs_from_then_on(
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
    receiver: tuple[str, type[_Receiver]],
) -> None:
    url, handler = receiver
    service = WebhookService(allow_private=True)
    with session_factory() as s:
        endpoint = service.create_endpoint(s, clock, organization_id="o", url=url)
        old = endpoint.secret
        new = service.rotate_secret(s, clock, "o", endpoint.id, actor=ANN).secret
        assert new != old and new.startswith("whsec_")
        service.send_test(s, clock, "o", endpoint.id)
        s.commit()
    service.deliver_pending(session_factory, clock)
    [(headers, body)] = handler.received
    now = int(clock.now().timestamp())
    assert verify_signature(new, headers["Imhost-Signature"], body, now)
    assert not verify_signature(old, headers["Imhost-Signature"], body, now)
    with session_factory() as s:
        [rotated] = s.scalars(
            select(AuditEvent).where(AuditEvent.action == "webhook.secret_rotated")
        ).all()
        assert rotated.actor_user_id == "u1" and new not in str(rotated.details)


def test_a_failed_delivery_is_sent_again_on_request_once(
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
    receiver: tuple[str, type[_Receiver]],
) -> None:
    url, handler = receiver
    service = WebhookService(allow_private=True)
    with session_factory() as s:
        endpoint = service.create_endpoint(s, clock, organization_id="o", url=url)
        service.enqueue(s, "o", "invoice.paid", {"number": "INV-1"}, clock=clock)
        endpoint_id = endpoint.id
        s.commit()
    handler.status = 503
    service.deliver_pending(session_factory, clock)
    with session_factory() as s:
        [delivery] = service.recent_deliveries(s, "o", endpoint_id)
        assert (delivery.status, delivery.response_status) == ("queued", 503)
        delivery.status = "failed"  # as after the last attempt
        s.commit()
        delivery_id = delivery.id
    handler.status = 200
    with session_factory() as s:
        service.redeliver(s, clock, "o", endpoint_id, delivery_id, actor=ANN)
        service.redeliver(s, clock, "o", endpoint_id, delivery_id, actor=ANN)  # sent twice
        s.commit()
    assert service.deliver_pending(session_factory, clock) == 1
    assert len(handler.received) == 2  # the failed try, then the one asked for
    assert handler.received[0][1] == handler.received[1][1]  # the same event, the same body
    with session_factory() as s:
        stored = s.get(WebhookDelivery, delivery_id)
        assert stored is not None and (stored.status, stored.attempts) == ("delivered", 2)
        audit = s.scalars(
            select(AuditEvent).where(AuditEvent.action == "webhook.redelivered")
        ).all()
        assert len(audit) == 1
        with pytest.raises(NotFound):
            service.redeliver(s, clock, "other-org", endpoint_id, delivery_id)


def test_a_disabled_endpoint_gets_no_events_and_a_deleted_one_takes_its_history(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    service = WebhookService(allow_private=True)
    with session_factory() as s:
        endpoint = service.create_endpoint(s, clock, organization_id="o", url="https://h.test/")
        service.enqueue(s, "o", "invoice.paid", {"n": 1}, clock=clock)
        service.set_active(s, clock, "o", endpoint.id, False, actor=ANN)
        service.set_active(s, clock, "o", endpoint.id, False, actor=ANN)  # no second record
        assert service.enqueue(s, "o", "invoice.paid", {"n": 2}, clock=clock) == 0
        with pytest.raises(Conflict):
            service.send_test(s, clock, "o", endpoint.id)
        with pytest.raises(NotFound):
            service.delete_endpoint(s, "someone-else", endpoint.id, clock=clock)
        service.delete_endpoint(s, "o", endpoint.id, clock=clock, actor=ANN)
        s.commit()
        assert s.scalars(select(WebhookDelivery)).all() == []
        actions = [e.action for e in s.scalars(select(AuditEvent))]
        assert actions.count("webhook.disabled") == 1 and "webhook.deleted" in actions


def test_every_event_the_platform_sends_can_be_chosen() -> None:
    """The portal's list names every event type queued anywhere (``webhooks.enqueue``): an
    event missing from it could not be chosen and would reach only endpoints taking all."""
    import re
    from pathlib import Path

    from imhost.notify.webhooks import EVENT_TYPES

    src = Path(__file__).resolve().parents[2] / "src" / "imhost"
    sent: set[str] = set()
    for path in src.rglob("*.py"):
        text = path.read_text()
        for call in re.finditer(r"\.enqueue\(\s*\w+,\s*([\w.]+),\s*(f?)\"([^\"]+)\"", text):
            owner, is_f, name = call.group(1), call.group(2), call.group(3)
            if owner == "None":  # the provider's own endpoints (monitoring.alert), not a list
                continue
            sent.add(name.split("{")[0] + "*" if is_f else name)
    prefixes = {n for n in sent if n.endswith("*")}
    assert sent - prefixes <= set(EVENT_TYPES), sent - prefixes - set(EVENT_TYPES)
    for prefix in prefixes:
        assert any(e.startswith(prefix[:-1]) for e in EVENT_TYPES), prefix
    assert len(sent) >= 5  # the search found the calls
