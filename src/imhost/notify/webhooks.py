"""Signed webhooks.

Each delivery is a POST of a JSON body with the headers
``Imhost-Event: <type>``, ``Imhost-Delivery: <id>`` and
``Imhost-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the endpoint secret>``.
A receiver recomputes the HMAC and rejects a timestamp older than five minutes (replays).
Failed deliveries are retried with exponential backoff (1 min, 2, 4, ... up to 8 attempts).
Endpoints must be https (or http) URLs on public addresses unless the provider allows private
targets (``IMHOST_WEBHOOKS_ALLOW_PRIVATE``), so a customer cannot make us probe our own network.
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

from imhost.db.engine import writer_session
from imhost.kit.clock import Clock
from imhost.kit.errors import InvalidInput, NotFound
from imhost.notify.mail import mark_queued
from imhost.notify.models import WebhookDelivery, WebhookEndpoint

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 8


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


def _check_url(url: str, *, allow_private: bool) -> str:
    url = url.strip()
    parsed = urlparse(url)
    if parsed.scheme not in ("https", "http") or not parsed.hostname or len(url) > 500:
        raise InvalidInput("a webhook URL is an http(s) URL of at most 500 characters", field="url")
    if not allow_private:
        try:
            infos = socket.getaddrinfo(
                parsed.hostname, parsed.port or 443, proto=socket.IPPROTO_TCP
            )
        except OSError:
            raise InvalidInput(f"cannot resolve {parsed.hostname}", field="url") from None
        for info in infos:
            addr = ipaddress.ip_address(info[4][0])
            if addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved:
                raise InvalidInput("webhook URLs must point at a public address", field="url")
    return url


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
    ) -> WebhookEndpoint:
        endpoint = WebhookEndpoint(
            created_at=clock.now(),
            organization_id=organization_id,
            url=_check_url(url, allow_private=self.allow_private),
            secret="whsec_" + secrets.token_urlsafe(24),
            event_types=sorted(set(event_types or [])),
        )
        session.add(endpoint)
        session.flush()
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

    def delete_endpoint(
        self, session: Session, organization_id: str | None, endpoint_id: str
    ) -> None:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        if endpoint is None or endpoint.organization_id != organization_id:
            raise NotFound("no such webhook endpoint")
        session.delete(endpoint)

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
                        stored.delivered_at = clock.now()
                        delivered += 1
                    else:
                        stored.last_error = error
                        if stored.attempts >= MAX_ATTEMPTS:
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


def _now_from(session: Session) -> Any:
    clock = session.info.get("clock")
    if clock is None:
        raise RuntimeError("enqueue needs a clock (pass clock= or put one in session.info)")
    return clock.now()
