"""Webhooks for custom domains: ``domain.added``, ``domain.verified``,
``domain.verification_failed`` and ``domain.removed`` (docs/domains.md)."""

from __future__ import annotations

from typing import Any

from imhost import events
from imhost.domains.names import display_name
from imhost.notify.webhooks import WebhookService

WEBHOOK_TYPES = {
    "added": "domain.added",
    "verified": "domain.verified",
    "failed": "domain.verification_failed",
    "removed": "domain.removed",
}


def domain_payload(event: events.CustomDomainChanged) -> dict[str, Any]:
    return {
        "id": event.domain_id,
        "name": event.name,
        "display_name": display_name(event.name),
        "service_id": event.service_id,
        "change": event.kind,
        "at": event.at.isoformat(),
    }


def register(bus: events.EventBus, webhooks: WebhookService) -> None:
    def on_domain(event: events.CustomDomainChanged, session: Any) -> None:
        webhooks.enqueue(
            session,
            event.organization_id,
            WEBHOOK_TYPES[event.kind],
            domain_payload(event),
            clock=session.info.get("clock"),
        )

    bus.subscribe(events.CustomDomainChanged, on_domain)


def register_runtime(runtime: Any) -> None:
    register(runtime.bus, runtime.webhooks)
