"""A typed in-process event bus.

Lower packages subscribe to events that higher packages publish (billing suspends a service;
hosting acts). Events are dataclasses; a subscription names the class, so a typo is a type
error, not a handler that silently never fires.

Handlers run synchronously in the publisher's transaction when given the same ``Session``
(``session`` argument), so the reaction commits or rolls back with the cause.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event. ``at`` is when it happened (from the publisher's clock)."""

    at: datetime


E = TypeVar("E", bound=Event)
Handler = Callable[[Any, Any], None]  # (event, session-or-None) -> None


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[type[Event], list[Handler]] = defaultdict(list)

    def subscribe(self, event_type: type[E], handler: Callable[[E, Any], None]) -> None:
        self._handlers[event_type].append(handler)

    def publish(self, event: Event, session: Any = None) -> None:
        """Call every handler of ``event``'s class and of its base classes, in order."""
        for cls in type(event).__mro__:
            for handler in self._handlers.get(cls, ()):  # type: ignore[call-overload]
                handler(event, session)


# --- Events published by the control plane's domains --------------------------------------


@dataclass(frozen=True, kw_only=True)
class MemberRemoved(Event):
    organization_id: str
    user_id: str


@dataclass(frozen=True, kw_only=True)
class OrganizationSuspended(Event):
    """Every hosted service of the organization must stop (dunning, staff action)."""

    organization_id: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class OrganizationReactivated(Event):
    organization_id: str


@dataclass(frozen=True, kw_only=True)
class SubscriptionChanged(Event):
    """The organization's plan (and so its limits) changed."""

    organization_id: str
    plan_id: str | None


@dataclass(frozen=True, kw_only=True)
class BudgetCapReached(Event):
    """A hard budget cap: the service must stop billable overage."""

    organization_id: str
    metric: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class InvoiceEvent(Event):
    organization_id: str
    invoice_id: str
    kind: str  # finalized, paid, voided, overdue


@dataclass(frozen=True, kw_only=True)
class PaymentEvent(Event):
    organization_id: str
    payment_id: str
    kind: str  # recorded, refunded




def make_bus() -> EventBus:
    return EventBus()
