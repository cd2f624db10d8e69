"""How the SLA alert pass notifies: e-mail to every staff member and a webhook."""

from __future__ import annotations

from sqlalchemy.orm import Session

from imhost.accounts.service import list_staff
from imhost.kit.clock import Clock
from imhost.notify.mail import Mailer
from imhost.notify.webhooks import WebhookService
from imhost.support.sla_service import RunningTarget, SlaNotifier


def sla_notifier(clock: Clock, mailer: Mailer, webhooks: WebhookService) -> SlaNotifier:
    def notify(session: Session, target: RunningTarget, kind: str, subject: str, text: str) -> None:
        staff = [user.email for user in list_staff(session)]
        if staff:
            mailer.send(session, clock, staff, subject, text, kind=f"sla_{kind}")
        webhooks.enqueue(  # staff's alert: the provider's own endpoints, not the customer's
            session,
            None,
            f"ticket.sla_{kind}",
            {"ticket": target.public_id, "target": target.target, "due_at": target.due_at},
            clock=clock,
        )

    return notify
