"""Signed webhooks.

Each delivery is a POST of a JSON body with the headers
``Imhost-Event: <type>``, ``Imhost-Delivery: <id>`` and
``Imhost-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the endpoint secret>``.
A receiver recomputes the HMAC and rejects a timestamp older than five minutes (replays).
Failed deliveries are retried with exponential backoff (1 min, 2, 4, ... up to 8 attempts).
Endpoints must be https URLs on public addresses, so a customer cannot make us probe our own
network; a provider that allows private targets (``IMHOST_WEBHOOKS_ALLOW_PRIVATE``, for
development and labs) may also use plain http to a loopback address (``http://127.0.0.1:8080``).

Owners manage their endpoints through :class:`WebhookService` (the API and the portal call the
same functions): create (the secret is returned once), rotate the secret, send a test event,
list recent deliveries and send one again, disable/enable, delete. Each change is audited
(``webhook.*``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import audit
from imhost.accounts.audit import Actor
from imhost.db.engine import writer_session
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput, NotFound
from imhost.notify.mail import mark_queued
from imhost.notify.models import WebhookDelivery, WebhookEndpoint

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 8
RECENT_DELIVERIES = 20

EVENT_TYPES: dict[str, str] = {
    "invoice.finalized": "An invoice is issued",
    "invoice.paid": "An invoice is paid",
    "invoice.voided": "An invoice is voided",
    "invoice.reminder": "A payment reminder is sent",
    "payment.recorded": "A payment is received",
    "payment.refunded": "A payment is refunded",
    "payment.failed": "A card payment fails",
    "payment_method.added": "A payment method is added",
    "payment_method.made_default": "A payment method becomes the default",
    "payment_method.removed": "A payment method is removed",
    "sepa_mandate.signed": "A direct debit mandate is given",
    "sepa_mandate.revoked": "A direct debit mandate is withdrawn",
    "direct_debit.scheduled": "A direct debit is announced",
    "direct_debit.collected": "A direct debit is collected",
    "direct_debit.returned": "A direct debit is returned by the bank",
    "credit_note.issued": "A credit note is issued",
    "domain.added": "A custom domain is added to a service",
    "domain.verified": "A custom domain passes its DNS check",
    "domain.verification_failed": "A custom domain fails its DNS check",
    "domain.removed": "A custom domain is removed",
    "ticket.created": "A support ticket is opened",
    "ticket.customer_replied": "A support ticket gets a reply from your side",
    "ticket.staff_replied": "Support answers a ticket",
    "ticket.status_changed": "A support ticket changes status",
    "ticket.assigned": "A support ticket is assigned to someone in support",
    "ticket.priority_changed": "A support ticket's priority changes",
    "ticket.tags_changed": "A support ticket's tags change",
    "ticket.merged": "A support ticket is merged into another",
    "ticket.rated": "A resolved support ticket is rated",
}
"""The events an endpoint can subscribe to, each with what it means in plain words (the
portal's list; ``notify.billing`` queues them)."""

TEST_EVENT = "webhook.test"
"""Sent to one endpoint on request (``send_test``), whatever events it subscribes to."""

DELIVERY_STATUS_WORDS: dict[str, str] = {
    "queued": "waiting to be sent",
    "delivered": "delivered",
    "failed": "failed (no more attempts)",
}


def event_words(event_type: str) -> str:
    """What an event type means, for people (``invoice.paid``: "An invoice is paid")."""
    if event_type == TEST_EVENT:
        return "Test event"
    return EVENT_TYPES.get(event_type, event_type)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(secret: str, header: str, body: bytes, now: int, tolerance: int = 300) -> bool:
    """What a receiver does; used by our tests and offered to integrators."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        ts = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(now - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), header)


_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(url: str, *, allow_private: bool) -> str:
    """An endpoint URL we may post to, or ``InvalidInput`` saying why not in plain words."""
    url = url.strip()
    if not url:
        raise InvalidInput("Enter the address to send events to.", field="url")
    if len(url) > 500:
        raise InvalidInput("Use an address of at most 500 characters.", field="url")
    try:
        parsed = urlparse(url)
        host = parsed.hostname or ""
        port = parsed.port
    except ValueError:
        raise InvalidInput("This is not a valid web address.", field="url") from None
    scheme = parsed.scheme.lower()
    if scheme not in ("https", "http") or not host:
        raise InvalidInput(
            "Enter a full https:// address, such as https://example.com/hooks.", field="url"
        )
    if parsed.username is not None or parsed.password is not None:
        raise InvalidInput(
            "Leave the user name and password out of the address; check the signature instead.",
            field="url",
        )
    if scheme == "http" and not (allow_private and _is_loopback(host)):
        raise InvalidInput(
            "Use an https:// address: events are sent only over an encrypted connection.",
            field="url",
        )
    if not allow_private:
        try:
            infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
        except OSError:
            raise InvalidInput(f"The name {host} could not be found.", field="url") from None
        for info in infos:
            addr = ipaddress.ip_address(info[4][0])
            if (
                addr.is_private
                or addr.is_loopback
                or addr.is_link_local
                or addr.is_reserved
                or addr.is_multicast
                or addr.is_unspecified
            ):
                raise InvalidInput(
                    "The address must be reachable on the public internet, not a private, "
                    "local or reserved one.",
                    field="url",
                )
    return url


def _check_events(event_types: list[str] | None) -> list[str]:
    chosen = sorted(set(event_types or []))
    unknown = [e for e in chosen if e not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(
            "Choose events from the list offered; unknown: " + ", ".join(unknown[:5]) + ".",
            field="event_types",
        )
    return chosen


def _audit(
    session: Session,
    clock: Clock,
    endpoint: WebhookEndpoint,
    change: str,
    actor: Actor | None,
    **details: Any,
) -> None:
    audit.record(
        session,
        clock,
        f"webhook.{change}",
        actor=actor or Actor.system(),
        organization_id=endpoint.organization_id,
        target_type="webhook",
        target_id=endpoint.id,
        target_label=endpoint.url[:320],
        **details,
    )


class WebhookService:
    def __init__(self, *, allow_private: bool = False) -> None:
        self.allow_private = allow_private

    def create_endpoint(
        self,
        session: Session,
        clock: Clock,
        *,
        organization_id: str | None,
        url: str,
        event_types: list[str] | None = None,
        actor: Actor | None = None,
    ) -> WebhookEndpoint:
        """A new endpoint with its signing secret (the caller shows it once). No events
        chosen: every event."""
        endpoint = WebhookEndpoint(
            created_at=clock.now(),
            organization_id=organization_id,
            url=_check_url(url, allow_private=self.allow_private),
            secret=_new_secret(),
            event_types=_check_events(event_types),
        )
        session.add(endpoint)
        session.flush()
        _audit(session, clock, endpoint, "created", actor)
        return endpoint

    def list_endpoints(
        self, session: Session, organization_id: str | None
    ) -> list[WebhookEndpoint]:
        stmt = select(WebhookEndpoint).where(
            WebhookEndpoint.organization_id.is_(None)
            if organization_id is None
            else WebhookEndpoint.organization_id == organization_id
        )
        return list(session.scalars(stmt.order_by(WebhookEndpoint.created_at)))

    def get_endpoint(
        self, session: Session, organization_id: str | None, endpoint_id: str
    ) -> WebhookEndpoint:
        """The organization's endpoint (another organization's is "not found")."""
        endpoint = session.get(WebhookEndpoint, endpoint_id[:64])
        if endpoint is None or endpoint.organization_id != organization_id:
            raise NotFound("no such webhook endpoint")
        return endpoint

    def delete_endpoint(
        self,
        session: Session,
        organization_id: str | None,
        endpoint_id: str,
        *,
        clock: Clock | None = None,
        actor: Actor | None = None,
    ) -> None:
        """Delete the endpoint and its delivery history."""
        endpoint = self.get_endpoint(session, organization_id, endpoint_id)
        if clock is not None:
            _audit(session, clock, endpoint, "deleted", actor)
        for delivery in session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
        ):
            session.delete(delivery)
        session.delete(endpoint)
        session.flush()

    def rotate_secret(
        self,
        session: Session,
        clock: Clock,
        organization_id: str | None,
        endpoint_id: str,
        *,
        actor: Actor | None = None,
    ) -> WebhookEndpoint:
        """A new signing secret (returned once); deliveries from now on are signed with it."""
        endpoint = self.get_endpoint(session, organization_id, endpoint_id)
        endpoint.secret = _new_secret()
        session.flush()
        _audit(session, clock, endpoint, "secret_rotated", actor)
        return endpoint

    def set_active(
        self,
        session: Session,
        clock: Clock,
        organization_id: str | None,
        endpoint_id: str,
        active: bool,
        *,
        actor: Actor | None = None,
    ) -> WebhookEndpoint:
        """Disable (no new events are queued for it) or enable again. Setting what already
        holds changes and records nothing."""
        endpoint = self.get_endpoint(session, organization_id, endpoint_id)
        if endpoint.active != active:
            endpoint.active = active
            session.flush()
            _audit(session, clock, endpoint, "enabled" if active else "disabled", actor)
        return endpoint

    def send_test(
        self,
        session: Session,
        clock: Clock,
        organization_id: str | None,
        endpoint_id: str,
        *,
        actor: Actor | None = None,
    ) -> WebhookDelivery:
        """Queue a test event for this endpoint only. One waiting already is returned rather
        than a second one queued (a form sent twice sends one test)."""
        endpoint = self.get_endpoint(session, organization_id, endpoint_id)
        if not endpoint.active:
            raise Conflict("This endpoint is disabled; enable it to send a test event.")
        waiting = session.scalar(
            select(WebhookDelivery).where(
                WebhookDelivery.endpoint_id == endpoint.id,
                WebhookDelivery.event_type == TEST_EVENT,
                WebhookDelivery.status == "queued",
            )
        )
        if waiting is not None:
            return waiting
        now = clock.now()
        delivery = WebhookDelivery(
            created_at=now,
            endpoint_id=endpoint.id,
            event_type=TEST_EVENT,
            payload={"test": True, "sent_at": now.isoformat(), "endpoint_id": endpoint.id},
            next_attempt_at=now,
        )
        session.add(delivery)
        session.flush()
        mark_queued(session)
        _audit(session, clock, endpoint, "test_sent", actor)
        return delivery

    def recent_deliveries(
        self,
        session: Session,
        organization_id: str | None,
        endpoint_id: str,
        *,
        limit: int = RECENT_DELIVERIES,
    ) -> list[WebhookDelivery]:
        """The endpoint's latest deliveries, newest first."""
        endpoint = self.get_endpoint(session, organization_id, endpoint_id)
        return list(
            session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.endpoint_id == endpoint.id)
                .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
                .limit(limit)
            )
        )

    def redeliver(
        self,
        session: Session,
        clock: Clock,
        organization_id: str | None,
        endpoint_id: str,
        delivery_id: str,
        *,
        actor: Actor | None = None,
    ) -> WebhookDelivery:
        """Send a delivered or failed event again, now: the same delivery (same id, body and
        event) is queued once more; its attempts keep counting. One still waiting is left as
        it is (a form sent twice queues it once)."""
        endpoint = self.get_endpoint(session, organization_id, endpoint_id)
        delivery = session.get(WebhookDelivery, delivery_id[:64])
        if delivery is None or delivery.endpoint_id != endpoint.id:
            raise NotFound("no such delivery")
        if delivery.status == "queued":
            return delivery
        if not endpoint.active:
            raise Conflict("This endpoint is disabled; enable it to send the event again.")
        delivery.status = "queued"
        delivery.next_attempt_at = clock.now()
        delivery.delivered_at = None
        session.flush()
        mark_queued(session)
        _audit(
            session,
            clock,
            endpoint,
            "redelivered",
            actor,
            delivery_id=delivery.id,
            event_type=delivery.event_type,
        )
        return delivery

    def enqueue(
        self,
        session: Session,
        organization_id: str | None,
        event_type: str,
        payload: dict[str, Any],
        *,
        clock: Clock | None = None,
    ) -> int:
        """Queue ``payload`` for every active endpoint of the organization and of the provider."""
        stmt = select(WebhookEndpoint).where(
            WebhookEndpoint.active.is_(True),
            or_(
                WebhookEndpoint.organization_id.is_(None),
                WebhookEndpoint.organization_id == organization_id,
            )
            if organization_id
            else WebhookEndpoint.organization_id.is_(None),
        )
        count = 0
        for endpoint in session.scalars(stmt):
            if endpoint.event_types and event_type not in endpoint.event_types:
                continue
            now = clock.now() if clock else None
            session.add(
                WebhookDelivery(
                    created_at=now or _now_from(session),
                    endpoint_id=endpoint.id,
                    event_type=event_type,
                    payload=json.loads(json.dumps(payload, default=str)),
                    next_attempt_at=now or _now_from(session),
                )
            )
            count += 1
        session.flush()
        if count:
            mark_queued(session)
        return count

    def deliver_pending(
        self,
        factory: sessionmaker[Session],
        clock: Clock,
        *,
        client: httpx.Client | None = None,
        limit: int = 100,
    ) -> int:
        now = clock.now()
        delivered = 0
        with factory() as session:
            ids = list(
                session.scalars(
                    select(WebhookDelivery.id)
                    .where(
                        WebhookDelivery.status == "queued", WebhookDelivery.next_attempt_at <= now
                    )
                    .order_by(WebhookDelivery.created_at)
                    .limit(limit)
                )
            )
        if not ids:
            return 0  # nothing due: no HTTP client (and no TLS context) is built
        # httpx (which imports its command line's rich and pygments) is loaded by the first
        # delivery, not by every process.
        import httpx

        own_client = client is None
        http = client or httpx.Client(timeout=10.0, follow_redirects=False)
        try:
            for delivery_id in ids:
                # Read, then post with no transaction open (an endpoint may take its 10 s),
                # then record the outcome in a short write: no lock is held across the network.
                with factory() as session:
                    delivery = session.get(WebhookDelivery, delivery_id)
                    if delivery is None or delivery.status != "queued":
                        continue
                    endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
                    if endpoint is None:
                        continue
                    url, secret = endpoint.url, endpoint.secret
                    event_type = delivery.event_type
                    body = json.dumps(
                        {"id": delivery.id, "type": delivery.event_type, "data": delivery.payload},
                        separators=(",", ":"),
                    ).encode()
                ts = int(clock.now().timestamp())
                status: int | None = None
                try:
                    resp = http.post(
                        url,
                        content=body,
                        headers={
                            "Content-Type": "application/json",
                            "Imhost-Event": event_type,
                            "Imhost-Delivery": delivery_id,
                            "Imhost-Signature": sign(secret, ts, body),
                        },
                    )
                    status = resp.status_code
                    ok = 200 <= resp.status_code < 300
                    error = None if ok else f"HTTP {resp.status_code}"
                except httpx.HTTPError as exc:
                    ok, error = False, str(exc)[:500] or type(exc).__name__
                with writer_session(factory) as session:
                    stored = session.get(WebhookDelivery, delivery_id)
                    if stored is None or stored.status != "queued":
                        continue
                    stored.attempts += 1
                    if status is not None:
                        stored.response_status = status
                    if ok:
                        stored.status = "delivered"
                        stored.last_error = None
                        stored.delivered_at = clock.now()
                        delivered += 1
                    else:
                        stored.last_error = error
                        if stored.attempts >= MAX_ATTEMPTS or stored.event_type == TEST_EVENT:
                            stored.status = "failed"
                        else:
                            stored.next_attempt_at = clock.now() + timedelta(
                                minutes=2 ** (stored.attempts - 1)
                            )
                    session.commit()
        finally:
            if own_client:
                http.close()
        return delivered


def _new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(24)


def _now_from(session: Session) -> Any:
    clock = session.info.get("clock")
    if clock is None:
        raise RuntimeError("enqueue needs a clock (pass clock= or put one in session.info)")
    return clock.now()
