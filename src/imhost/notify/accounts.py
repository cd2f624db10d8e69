"""E-mails for account events: invitations, e-mail verification, password resets, sign-ups,
security alerts, reviews."""

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

    def on_password_reset(event: events.PasswordResetRequested, session: Any) -> None:
        link = f"{base}/portal/reset-password/{event.token}"
        mailer.send(
            session,
            clock_of(session),
            event.email,
            f"Choose a new password for {provider_name}",
            (
                "Somebody (we hope you) asked to choose a new password for your account.\n\n"
                f"Choose it here (the link works once, for {event.expires_minutes} minutes):\n"
                f"{link}\n\n"
                "Choosing a new password signs you out everywhere. If you did not ask for "
                "this, ignore this message: your password stays as it is.\n"
            ),
            kind="password-reset",
        )

    def on_signup(event: events.SignupRequested, session: Any) -> None:
        link = f"{base}/portal/sign-up/{event.token}"
        mailer.send(
            session,
            clock_of(session),
            event.email,
            f"Finish signing up for {provider_name}",
            (
                f"Open this link to finish signing up (it works once, for 24 hours):\n{link}\n\n"
                "If you did not sign up, ignore this message: no account is made without it.\n"
            ),
            kind="sign-up",
        )

    def on_signup_existing(event: events.SignupForExistingAccount, session: Any) -> None:
        mailer.send(
            session,
            clock_of(session),
            event.email,
            f"You already have an account at {provider_name}",
            (
                "Somebody (we hope you) tried to sign up with this e-mail address, but you "
                "already have an account.\n\n"
                f"Sign in: {base}/portal/sign-in\n"
                f"Forgot your password? Choose a new one: {base}/portal/forgot-password\n\n"
                "If this was not you, there is nothing to do.\n"
            ),
            kind="sign-up-existing",
        )

    def on_alert(event: events.SecurityAlertRaised, session: Any) -> None:
        mailer.send(
            session,
            clock_of(session),
            list(event.recipients),
            f"Security alert: {event.rule.replace('-', ' ')}",
            (
                f"{event.summary}\n\nIf this was you, there is nothing to do. If not, change "
                "your password and review your sessions and tokens. The alert and what to do:\n"
                f"{base}/portal/security/alerts/{event.alert_id}\n"
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

    def on_email_change(event: events.EmailChangeRequested, session: Any) -> None:
        mailer.send(
            session,
            clock_of(session),
            event.new_email,
            f"Confirm your new e-mail address for {provider_name}",
            (
                f"Somebody (we hope you) asked to use this address, {event.new_email}, for "
                f"the account {event.old_email} at {provider_name}.\n\n"
                f"Confirm it here (the link works once, for {event.expires_hours} hours):\n"
                f"{base}/portal/account/email/{event.token}\n\n"
                "Until it is confirmed, the account keeps its old address. If you did not ask "
                "for this, ignore this message.\n"
            ),
            kind="email-change",
        )
        mailer.send(
            session,
            clock_of(session),
            event.old_email,
            f"Your e-mail address at {provider_name} is about to change",
            (
                f"Somebody asked to change the e-mail address of your account {event.old_email} "
                f"to {event.new_email}. Nothing changes until the link sent to the new address "
                "is opened.\n\n"
                "If this was not you, stop the change here and then change your password:\n"
                f"{base}/portal/account/email/cancel/{event.cancel_token}\n"
            ),
            kind="email-change-notice",
        )

    def on_org_closed(event: events.OrganizationClosed, session: Any) -> None:
        if not event.recipients:
            return
        mailer.send(
            session,
            clock_of(session),
            list(event.recipients),
            f"{event.organization_name} is closed",
            (
                f"{event.closed_by} closed the organization {event.organization_name} at "
                f"{provider_name}.\n\n"
                "Its XMPP service has stopped and its XMPP accounts are deleted; its "
                "subscription has ended. Its invoices stay available, and open ones can still "
                "be paid:\n"
                f"{base}/portal/orgs\n"
            ),
            organization_id=event.organization_id,
            kind="org-closed",
        )

    bus.subscribe(events.EmailChangeRequested, on_email_change)
    bus.subscribe(events.OrganizationClosed, on_org_closed)
    bus.subscribe(events.InvitationCreated, on_invitation)
    bus.subscribe(events.EmailVerificationRequested, on_verification)
    bus.subscribe(events.PasswordResetRequested, on_password_reset)
    bus.subscribe(events.SignupRequested, on_signup)
    bus.subscribe(events.SignupForExistingAccount, on_signup_existing)
    bus.subscribe(events.SecurityAlertRaised, on_alert)
    bus.subscribe(events.AccessReviewOpened, on_review)
