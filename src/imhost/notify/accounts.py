"""E-mails for account events: invitations, e-mail verification, security alerts, reviews."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from imhost import events
from imhost.kit.clock import Clock
from imhost.notify.mail import Mailer


def register(bus: events.EventBus, mailer: Mailer, *, public_url: str, provider_name: str) -> None:
    base = public_url.rstrip("/")

    def clock_of(session: Session) -> Clock:
        clock: Clock = session.info["clock"]
        return clock

    def on_invitation(event: events.InvitationCreated, session: Any) -> None:
        link = f"{base}/portal/invitations/{event.token}"
        mailer.send(
            session,
            clock_of(session),
            event.email,
            f"You are invited to {event.organization_name} on {provider_name}",
            (
                f"{event.invited_by} invited you to join {event.organization_name} as "
                f"{event.role}.\n\nAccept the invitation (the link works for 7 days):\n{link}\n\n"
                "If you did not expect this, ignore this message."
            ),
            organization_id=event.organization_id,
            kind="invitation",
        )

    def on_verification(event: events.EmailVerificationRequested, session: Any) -> None:
        link = f"{base}/portal/verify-email/{event.token}"
        mailer.send(
            session,
            clock_of(session),
            event.email,
            f"Confirm your e-mail address for {provider_name}",
            f"Confirm that this is your address by opening:\n{link}\n",
            kind="verify-email",
        )

    def on_alert(event: events.SecurityAlertRaised, session: Any) -> None:
        mailer.send(
            session,
            clock_of(session),
            list(event.recipients),
            f"Security alert: {event.rule.replace('-', ' ')}",
            (
                f"{event.summary}\n\nIf this was you, there is nothing to do. If not, change "
                f"your password and review your sessions and tokens at {base}/portal/security.\n"
            ),
            organization_id=event.organization_id,
            kind="security-alert",
        )

    def on_review(event: events.AccessReviewOpened, session: Any) -> None:
        mailer.send(
            session,
            clock_of(session),
            list(event.recipients),
            f"Access review {event.period_label} for {event.organization_name}",
            (
                f"It is time to review who has access to {event.organization_name}: members, "
                f"their roles, and API tokens, each with its last activity.\n\n"
                f"{base}/portal/security/reviews/{event.review_id}\n"
            ),
            organization_id=event.organization_id,
            kind="access-review",
        )

    bus.subscribe(events.InvitationCreated, on_invitation)
    bus.subscribe(events.EmailVerificationRequested, on_verification)
    bus.subscribe(events.SecurityAlertRaised, on_alert)
    bus.subscribe(events.AccessReviewOpened, on_review)
