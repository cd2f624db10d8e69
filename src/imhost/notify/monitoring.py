"""Monitoring alerts to the provider's staff: an e-mail to each admin and support member and a
``monitoring.alert`` post to the provider's webhooks (grouping and rate limits are decided by
``monitoring/alerts.py`` before the event is published)."""

from __future__ import annotations

from typing import Any

from imhost import events
from imhost.kit.clock import Clock
from imhost.notify.mail import Mailer
from imhost.notify.webhooks import WebhookService


def alert_payload(event: events.MonitoringAlert) -> dict[str, Any]:
    return {
        "subject": event.subject,
        "text": event.text,
        "firing": list(event.firing),
        "repeat": list(event.repeat),
        "resolved": list(event.resolved),
        "status_url": event.status_url,
        "at": event.at.isoformat(),
    }


def register(bus: events.EventBus, mailer: Mailer, webhooks: WebhookService) -> None:
    def on_alert(event: events.MonitoringAlert, session: Any) -> None:
        clock: Clock = session.info["clock"]
        if event.recipients:
            mailer.send(
                session,
                clock,
                list(event.recipients),
                event.subject,
                event.text,
                kind="monitoring-alert",
            )
        webhooks.enqueue(session, None, "monitoring.alert", alert_payload(event), clock=clock)

    bus.subscribe(events.MonitoringAlert, on_alert)


def register_runtime(runtime: Any) -> None:
    register(runtime.bus, runtime.mailer, runtime.webhooks)
