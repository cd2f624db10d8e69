"""Threat monitoring: rules that turn audit events into security alerts.

Each rule looks at one audit event as it is written and may raise an alert, which is stored
(listed for the organization's owners and for staff) and published as ``SecurityAlertRaised``
so that notify e-mails the affected user or the owners.

Rules (docs/security.md):
- ``failed-login-burst``: 10 failed logins for one account within 15 minutes, counting the
  attempts refused during a lockout (once a window).
- ``new-login-location``: a login from an address or client never seen for that user.
- ``token-new-address``: an API token used from an address it was never used from.
- ``mfa-disabled``: a person turned off their second factor.
- ``new-owner``: somebody became an owner of an organization.
- ``email-change-reported``: the old address stopped a change of the e-mail address (the
  person says it was not them: somebody may know their password).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.models import AuditEvent, Membership, OrgRole, SecurityAlert, User
from imhost.kit.clock import Clock

BURST_THRESHOLD = 10
BURST_WINDOW = timedelta(minutes=15)


def _owners_emails(session: Session, organization_id: str | None) -> list[str]:
    if not organization_id:
        return []
    stmt = (
        select(User.email)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.organization_id == organization_id, Membership.role == OrgRole.OWNER)
    )
    return list(session.scalars(stmt))


def _user_email(session: Session, user_id: str | None) -> list[str]:
    if not user_id:
        return []
    email = session.scalar(select(User.email).where(User.id == user_id))
    return [email] if email else []


def _raise(
    session: Session,
    clock: Clock,
    event: AuditEvent,
    *,
    rule: str,
    severity: str,
    summary: str,
    user_id: str | None,
    recipients: list[str],
) -> SecurityAlert:
    alert = SecurityAlert(
        created_at=clock.now(),
        rule=rule,
        severity=severity,
        organization_id=event.organization_id,
        user_id=user_id,
        summary=summary,
        audit_event_id=event.id,
    )
    session.add(alert)
    session.flush()
    events.publish(
        session,
        events.SecurityAlertRaised(
            at=clock.now(),
            alert_id=alert.id,
            rule=rule,
            summary=summary,
            organization_id=event.organization_id,
            recipients=tuple(dict.fromkeys(recipients)),
        ),
    )
    return alert


def evaluate(session: Session, clock: Clock, event: AuditEvent) -> SecurityAlert | None:
    action = event.action
    if action in ("login.failed", "login.locked_out") and event.target_id:
        since = event.at - BURST_WINDOW
        failures = session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(
                AuditEvent.action.in_(("login.failed", "login.locked_out")),
                AuditEvent.target_id == event.target_id,
                AuditEvent.at >= since,
            )
        )
        if failures == BURST_THRESHOLD:
            return _raise(
                session,
                clock,
                event,
                rule="failed-login-burst",
                severity="high",
                summary=(
                    f"{BURST_THRESHOLD} failed sign-in attempts for {event.target_label} within "
                    f"{int(BURST_WINDOW.total_seconds() // 60)} minutes "
                    f"(last from {event.address})."
                ),
                user_id=event.target_id,
                recipients=_user_email(session, event.target_id),
            )
    elif action == "login.succeeded" and event.details.get("new_location"):
        return _raise(
            session,
            clock,
            event,
            rule="new-login-location",
            severity="medium",
            summary=(
                f"{event.target_label} signed in from a new address or client: "
                f"{event.address} ({event.details.get('client', 'unknown client')})."
            ),
            user_id=event.target_id,
            recipients=_user_email(session, event.target_id),
        )
    elif action == "token.used_new_address":
        return _raise(
            session,
            clock,
            event,
            rule="token-new-address",
            severity="medium",
            summary=f"API token {event.target_label} was used from a new address {event.address}.",
            user_id=None,
            recipients=_owners_emails(session, event.organization_id),
        )
    elif action == "mfa.disabled":
        return _raise(
            session,
            clock,
            event,
            rule="mfa-disabled",
            severity="high",
            summary=f"Two-factor authentication was turned off for {event.target_label}.",
            user_id=event.target_id,
            recipients=_user_email(session, event.target_id)
            + _owners_emails(session, event.organization_id),
        )
    elif action == "email.change_cancelled":
        return _raise(
            session,
            clock,
            event,
            rule="email-change-reported",
            severity="high",
            summary=(
                f"A change of the e-mail address of {event.target_label} to "
                f"{event.details.get('new_email', 'another address')} was stopped from the "
                "notice sent to the old address. If you did not ask for it, change your "
                "password and end your other sessions."
            ),
            user_id=event.target_id,
            recipients=_user_email(session, event.target_id),
        )
    elif action == "org.owner_added":
        return _raise(
            session,
            clock,
            event,
            rule="new-owner",
            severity="high",
            summary=f"{event.target_label} became an owner of the organization.",
            user_id=event.target_id,
            recipients=_owners_emails(session, event.organization_id),
        )
    return None


def list_alerts(
    session: Session,
    *,
    organization_id: str | None,
    user_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[SecurityAlert], int]:
    """Alerts of an organization, or about one person (``user_id``), newest first."""
    stmt = select(SecurityAlert)
    if organization_id is not None:
        stmt = stmt.where(SecurityAlert.organization_id == organization_id)
    if user_id is not None:
        stmt = stmt.where(SecurityAlert.user_id == user_id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(
        stmt.order_by(SecurityAlert.created_at.desc(), SecurityAlert.id).limit(limit).offset(offset)
    )
    return list(rows), total
