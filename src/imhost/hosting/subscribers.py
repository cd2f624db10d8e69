"""Hosting's reactions to the business events of higher packages (billing, accounts, metering).

Handlers run in the publisher's transaction; the engine learns the result after it commits.

- ``OrganizationSuspended``: every service of the organization is suspended with the event's
  reason (sessions closed with ``policy-violation`` and that text; logins refused with
  ``account-disabled`` and that text).
- ``OrganizationReactivated``: the services it had suspended come back (a service staff
  suspended on its own stays suspended).
- ``SubscriptionChanged``: the plan's limits are copied to the organization's services. The
  event names the plan; its limits are those of the plan's current version (the newest one
  not superseded). If the event someday carries ``plan_version_id``, that version is used.
- ``BudgetCapReached``: the services are stopped with the cap's reason (no billable overage)
  until staff reactivate them or the block is lifted.
- ``BudgetCapLifted``: the budget block is lifted (a new period, a raised or removed budget);
  a service suspended for another reason stays suspended.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.audit import Actor
from imhost.accounts.models import Organization
from imhost.catalog.models import AddOn, PlanLimits, PlanVersion
from imhost.db.engine import transaction
from imhost.hosting import service as hosting
from imhost.hosting.models import ServiceStatus
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput

if TYPE_CHECKING:  # runtime stands above hosting: type only
    from imhost.runtime import Runtime

log = logging.getLogger(__name__)

E = TypeVar("E", bound=events.Event)

BILLING = Actor(label="billing")
BUDGET_TEXT = (
    "This service is paused: the organization reached its budget cap ({metric}). "
    "An administrator of the organization can raise the cap."
)


def plan_limits(
    session: Session, plan_id: str, plan_version_id: str | None = None
) -> PlanLimits | None:
    """Limits of ``plan_version_id``, else of the plan's current (newest) version."""
    if plan_version_id:
        version = session.get(PlanVersion, plan_version_id)
        return version.limits if version is not None else None
    version = session.scalars(
        select(PlanVersion)
        .where(PlanVersion.plan_id == plan_id, PlanVersion.superseded_at.is_(None))
        .order_by(PlanVersion.created_at.desc(), PlanVersion.version.desc())
        .limit(1)
    ).first()
    return version.limits if version is not None else None


def on_organization_suspended(
    session: Session, clock: Clock, event: events.OrganizationSuspended
) -> None:
    reason = event.reason or "this service is suspended; contact your provider"
    for service in hosting.services_of(session, event.organization_id):
        if service.suspended_by == "staff":
            continue  # already stopped by staff, who alone bring it back
        hosting.suspend_service(
            session, clock, service, reason, actor=Actor.system(), source="organization"
        )


def on_organization_reactivated(
    session: Session, clock: Clock, event: events.OrganizationReactivated
) -> None:
    for service in hosting.services_of(session, event.organization_id):
        if service.status == ServiceStatus.SUSPENDED.value and service.suspended_by != "staff":
            hosting.reactivate_service(session, clock, service, actor=Actor.system())


def on_subscription_changed(
    session: Session, clock: Clock, event: events.SubscriptionChanged
) -> None:
    if event.plan_id is None:
        return  # the subscription ended: dunning/staff decide about the service, not limits
    limits = plan_limits(session, event.plan_id, event.plan_version_id)
    if limits is None:
        log.warning("plan %s has no current version; limits left as they are", event.plan_id)
        return
    deltas: dict[str, int] = {}
    for add_on_id, quantity in event.add_ons.items():
        add_on = session.get(AddOn, add_on_id)
        for name, delta in (add_on.limit_deltas if add_on else {}).items():
            deltas[name] = deltas.get(name, 0) + int(delta) * quantity
    if deltas:
        limits = limits.plus(deltas)
    for service in hosting.services_of(session, event.organization_id):
        hosting.change_plan_limits(session, clock, service, limits, actor=BILLING)


def on_budget_cap_reached(session: Session, clock: Clock, event: events.BudgetCapReached) -> None:
    reason = event.reason or BUDGET_TEXT.format(metric=event.metric)
    for service in hosting.services_of(session, event.organization_id):
        hosting.block_for_budget(session, clock, service, reason[:500], actor=BILLING)


def on_budget_cap_lifted(session: Session, clock: Clock, event: events.BudgetCapLifted) -> None:
    for service in hosting.services_of(session, event.organization_id):
        hosting.lift_budget_block(session, clock, service, actor=BILLING)


def _handler(
    runtime: Runtime, react: Callable[[Session, Clock, E], None]
) -> Callable[[E, Any], None]:
    def handle(event: E, session: Any) -> None:
        if isinstance(session, Session):
            react(session, runtime.clock, event)
            return
        with transaction(runtime.session_factory) as own:
            react(own, runtime.clock, event)

    return handle


def provision_first_service(
    session: Session, clock: Clock, event: events.SubscriptionChanged, *, base_domain: str
) -> None:
    """A customer's first subscription gets its service on ``<slug>.<base domain>`` at once
    (ARCHITECTURE.md, the main flow); a custom domain can follow once its DNS is verified."""
    if event.plan_id is None or hosting.services_of(session, event.organization_id):
        return
    org = session.get(Organization, event.organization_id)
    if org is None:
        return
    limits = plan_limits(session, event.plan_id, event.plan_version_id)
    try:
        hosting.create_service(
            session, clock, org, base_domain=base_domain, limits=limits, actor=BILLING
        )
    except (Conflict, InvalidInput) as exc:
        # Never fail the subscription over it: staff can create the service by hand.
        log.warning("no service provisioned for %s: %s", org.slug, exc.detail)


def register_runtime(runtime: Runtime) -> None:
    bus = runtime.bus
    base_domain = runtime.settings.base_domain

    def provision(session: Session, clock: Clock, event: events.SubscriptionChanged) -> None:
        provision_first_service(session, clock, event, base_domain=base_domain)

    bus.subscribe(events.SubscriptionChanged, _handler(runtime, provision))
    bus.subscribe(events.OrganizationSuspended, _handler(runtime, on_organization_suspended))
    bus.subscribe(events.OrganizationReactivated, _handler(runtime, on_organization_reactivated))
    bus.subscribe(events.SubscriptionChanged, _handler(runtime, on_subscription_changed))
    bus.subscribe(events.BudgetCapReached, _handler(runtime, on_budget_cap_reached))
    bus.subscribe(events.BudgetCapLifted, _handler(runtime, on_budget_cap_lifted))
