"""Closing an organization: what it does, and doing it once.

Closing stops the business and keeps what the law keeps:

1. the subscription ends at once, by billing's own cancel-now rule (the unused part of the
   paid period is credited; the usage so far goes on a final invoice at the next billing run);
2. every hosted service is stopped and every XMPP account deleted, with its stored data;
3. the organization's API tokens are revoked and its open invitations withdrawn;
4. the organization becomes ``closed``: its members keep read access to its invoices (open
   ones stay payable; invoices are retained as tax law requires), sign-in lands on their list
   of organizations, and every member is told by e-mail.

The owner must have downloaded the data export within :data:`EXPORT_WINDOW` and type the
organization's name (and, in the portal and the API, their password). Closing an organization
that is closed already changes nothing (the same request retried is harmless).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts import audit
from imhost.accounts import service as accounts
from imhost.accounts import tokens as api_tokens
from imhost.accounts.audit import Actor, AuditAction
from imhost.accounts.models import Organization, OrgStatus
from imhost.billing import service as billing
from imhost.billing.models import InvoiceStatus
from imhost.billing.plans import load_plan_terms
from imhost.hosting import service as hosting
from imhost.hosting.models import ServiceStatus, XmppAccount
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput
from imhost.offboarding.export import exported_since

EXPORT_WINDOW = timedelta(days=1)
CLOSED_SERVICE_REASON = "This organization is closed; its service has stopped."
EXPORT_FIRST = (
    "Download the data export first (it holds your members, XMPP accounts, invoices, payments, "
    "usage and audit log); then close the organization within a day."
)


@dataclass(frozen=True)
class ClosePreview:
    """What closing would do now; nothing is applied."""

    organization_id: str
    plan_name: str | None
    subscription_credit: Decimal
    currency: str | None
    services: list[str]
    xmpp_accounts: int
    members: int
    open_invoices: int
    open_amounts: dict[str, Decimal]
    exported: bool


def preview_close(session: Session, clock: Clock, org: Organization) -> ClosePreview:
    sub = billing.current_subscription(session, org.id)
    plan_name, credit, currency = None, Decimal(0), None
    if sub is not None:
        plan_name = load_plan_terms(session, sub.plan_version_id).plan_name
        cancel = billing.preview_cancel(session, clock, org.id)
        credit, currency = cancel.now_credit, cancel.currency
    services = hosting.services_of(session, org.id)
    accounts_count = sum(hosting.count_accounts(session, s.id) for s in services)
    open_amounts: dict[str, Decimal] = {}
    open_count = 0
    for inv in billing.list_invoices(
        session, organization_id=org.id, status=InvoiceStatus.OPEN.value, limit=500
    ):
        if inv.amount_due > 0:
            open_count += 1
            open_amounts[inv.currency] = open_amounts.get(inv.currency, Decimal(0)) + inv.amount_due
    return ClosePreview(
        organization_id=org.id,
        plan_name=plan_name,
        subscription_credit=credit,
        currency=currency,
        services=[s.domain for s in services],
        xmpp_accounts=accounts_count,
        members=len(accounts.list_members(session, org.id)),
        open_invoices=open_count,
        open_amounts=open_amounts,
        exported=exported_since(session, org.id, clock.now() - EXPORT_WINDOW),
    )


def close_organization(
    session: Session, clock: Clock, org: Organization, *, confirm_name: str, actor: Actor
) -> bool:
    """Close ``org`` (the caller has checked the owner's password). True when it was closed
    now, False when it was closed already."""
    if org.status == OrgStatus.CLOSED.value:
        return False
    if confirm_name.strip() != org.name:
        raise InvalidInput(
            f"Type the organization's name exactly as it is shown: {org.name}",
            field="confirm_name",
        )
    now = clock.now()
    if not exported_since(session, org.id, now - EXPORT_WINDOW):
        raise Conflict(EXPORT_FIRST)
    # Claim the close: of two requests at once, one closes and the other finds it closed.
    claimed = session.execute(
        update(Organization)
        .where(Organization.id == org.id, Organization.status != OrgStatus.CLOSED.value)
        .values(status=OrgStatus.CLOSED.value)
        .execution_options(synchronize_session=False)
    )
    if int(getattr(claimed, "rowcount", 0) or 0) != 1:
        session.refresh(org)
        return False
    org.status = OrgStatus.CLOSED.value
    org.status_reason = f"Closed by {actor.label} on {now:%Y-%m-%d}."
    sub = billing.current_subscription(session, org.id)
    if sub is not None:
        billing.cancel_subscription(session, clock, org.id, at_period_end=False, actor=actor)
    deleted = 0
    for service in hosting.services_of(session, org.id):
        for account in list(
            session.scalars(select(XmppAccount).where(XmppAccount.service_id == service.id))
        ):
            hosting.delete_account(session, clock, service, account, actor=actor)
            deleted += 1
        if service.status != ServiceStatus.SUSPENDED.value or service.suspended_by != "staff":
            hosting.suspend_service(
                session, clock, service, CLOSED_SERVICE_REASON, actor=actor, source="organization"
            )
    for token in api_tokens.list_tokens(session, org.id):
        api_tokens.revoke_token(
            session, clock, token, actor=actor, reason="the organization is closed"
        )
    for invitation in accounts.list_invitations(session, clock, org.id):
        accounts.revoke_invitation(session, clock, org.id, invitation.id, actor=actor)
    members = accounts.list_members(session, org.id)
    audit.record(
        session,
        clock,
        AuditAction.ORG_CLOSED,
        actor=actor,
        organization_id=org.id,
        target_type="organization",
        target_id=org.id,
        target_label=org.name,
        subscription_cancelled=sub is not None,
        xmpp_accounts_deleted=deleted,
    )
    events.publish(
        session,
        events.OrganizationClosed(
            at=now,
            organization_id=org.id,
            organization_name=org.name,
            closed_by=actor.label,
            recipients=tuple(u.email for _, u in members),
        ),
    )
    return True
