"""Assembles one process's shared parts: engine, sessions, event bus and its subscribers,
mail and webhooks, the sign-in flows. The web app, the worker and the CLI all start from here.

Layering: this module stands above the domain packages and notify, below web/worker/cli.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from imhost import events
from imhost.accounts.auth import AuthFlows
from imhost.billing.drivers import register_gateway
from imhost.billing.drivers.stripe import StripeGateway
from imhost.config import Settings
from imhost.db.engine import make_engine
from imhost.hosting import subscribers as hosting_subscribers
from imhost.kit.clock import Clock, SystemClock
from imhost.notify import accounts as notify_accounts
from imhost.notify import billing as notify_billing
from imhost.notify import domains as notify_domains
from imhost.notify import monitoring as notify_monitoring
from imhost.notify import sepa as notify_sepa
from imhost.notify.mail import QUEUED_KEY, MailDelivery, Mailer
from imhost.notify.webhooks import WebhookService
from imhost.support import notices as support_notices

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    engine: Engine
    session_factory: sessionmaker[Session]
    bus: events.EventBus
    mailer: Mailer
    mail_delivery: MailDelivery
    webhooks: WebhookService
    auth: AuthFlows
    secret_key: str
    xmpp: Any = None  # the running XmppServer, when this process runs one
    extras: dict[str, Any] = field(default_factory=dict)
    wake_delivery: Callable[[], None] | None = None
    """Set by the worker of this process: called (from any thread) after a commit that
    queued an e-mail or a webhook, so it is delivered at once rather than at the next tick."""

    def deliver_notifications(self) -> int:
        """Send queued e-mail and due webhooks (the worker calls this every tick and when a
        commit queued one). With nothing queued it costs one read of each queue; the HTTP
        client for webhooks is built only when one is due."""
        sent = self.mail_delivery.deliver_pending(self.session_factory)
        sent += self.webhooks.deliver_pending(self.session_factory, self.clock)
        return sent

    def _after_commit(self, session: Session) -> None:
        if session.info.pop(QUEUED_KEY, False) and self.wake_delivery is not None:
            self.wake_delivery()


def load_secret_key(settings: Settings) -> str:
    if settings.secret_key:
        return settings.secret_key
    path = settings.data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key


def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    engine: Engine | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Runtime:
    clock = clock or SystemClock()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = engine or make_engine(settings.resolved_database_url)
    bus = events.make_bus()
    factory = sessionmaker(
        bind=engine, expire_on_commit=False, info={"bus": bus, "clock": clock, "settings": settings}
    )
    mailer = Mailer(settings.mail_from)
    runtime = Runtime(
        settings=settings,
        clock=clock,
        engine=engine,
        session_factory=factory,
        bus=bus,
        mailer=mailer,
        mail_delivery=MailDelivery(
            smtp_url=settings.smtp_url,
            outbox_dir=settings.data_dir / "outbox",
            mail_from=settings.mail_from,
            clock=clock,
        ),
        webhooks=WebhookService(allow_private=settings.webhooks_allow_private),
        auth=AuthFlows(clock=clock, security=settings.security, sleep=sleep or time.sleep),
        secret_key=load_secret_key(settings),
    )
    event.listen(factory, "after_commit", runtime._after_commit)
    if settings.stripe.api_key is not None:
        register_gateway(StripeGateway(settings.stripe, clock))
    notify_accounts.register(
        bus, mailer, public_url=settings.public_url, provider_name=settings.provider_name
    )
    # The packages that subscribe to events, each by its own registration function.
    notify_billing.register_runtime(runtime)  # billing's own subscribers, then its e-mails
    notify_sepa.register_runtime(runtime)  # SEPA direct debit: mandates, notices, returns
    notify_domains.register_runtime(runtime)  # custom domains: webhooks
    notify_monitoring.register_runtime(runtime)  # staff alerts of monitoring's incidents
    hosting_subscribers.register_runtime(runtime)
    support_notices.register_runtime(runtime)  # ticket e-mails and ticket.* webhooks
    return runtime
