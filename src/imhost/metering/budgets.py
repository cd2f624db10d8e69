"""Budgets: an organization's monthly budget, its alert thresholds and optional hard cap.

The check that fires alerts and applies the cap runs as a job (:mod:`.tasks`).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.audit import Actor
from imhost.catalog.pricing import tidy_money
from imhost.kit.clock import Clock, SystemClock
from imhost.kit.errors import InvalidInput, NotFound
from imhost.kit.money import check_currency
from imhost.metering import audit, repository
from imhost.metering.models import Budget, BudgetAlert
from imhost.metering.schemas import BudgetIn


def get_budget(session: Session, organization_id: str) -> Budget | None:
    return repository.budget_of(session, organization_id)


def require_budget(session: Session, organization_id: str) -> Budget:
    budget = get_budget(session, organization_id)
    if budget is None:
        raise NotFound("this organization has no budget", field="budget")
    return budget


def _audit(
    session: Session, clock: Clock, budget: Budget, action: str, actor: Actor | None
) -> None:
    audit.record(
        session,
        clock,
        actor,
        action,
        organization_id=budget.organization_id,
        target_type="budget",
        target_id=budget.id,
        amount=str(tidy_money(budget.amount, budget.currency)),
        currency=budget.currency,
        thresholds=list(budget.thresholds),
        hard_cap=budget.hard_cap,
    )


def set_budget(
    session: Session,
    clock: Clock,
    organization_id: str,
    data: BudgetIn,
    *,
    actor: Actor | None = None,
) -> Budget:
    """Create or replace the organization's monthly budget (audited as ``usage.budget_created``
    or ``usage.budget_changed``, by ``actor``)."""
    try:
        check_currency(data.currency)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="currency") from None
    budget = get_budget(session, organization_id)
    created = budget is None
    if budget is None:
        budget = Budget(organization_id=organization_id, created_at=clock.now())
        session.add(budget)
    else:
        budget.updated_at = clock.now()
    budget.amount = data.amount
    budget.currency = data.currency
    budget.thresholds = list(data.thresholds)
    budget.hard_cap = data.hard_cap
    session.flush()
    _audit(session, clock, budget, "budget_created" if created else "budget_changed", actor)
    return budget


def delete_budget(
    session: Session,
    organization_id: str,
    clock: Clock | None = None,
    *,
    actor: Actor | None = None,
) -> None:
    """Remove the budget; a block its hard cap put on the service is lifted with it. Audited
    as ``usage.budget_deleted``, by ``actor``."""
    clock = clock or SystemClock()
    budget = require_budget(session, organization_id)
    _audit(session, clock, budget, "budget_deleted", actor)
    if budget.capped_since is not None:
        events.publish(
            session,
            events.BudgetCapLifted(
                at=clock.now(),
                organization_id=organization_id,
                reason="the budget was removed",
            ),
        )
    session.delete(budget)
    session.flush()


def budget_alerts(session: Session, budget_id: str, limit: int = 100) -> list[BudgetAlert]:
    """The thresholds crossed, newest period first."""
    return repository.budget_alerts(session, budget_id, limit)
