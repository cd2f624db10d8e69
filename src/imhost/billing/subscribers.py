"""Billing's reactions to events of packages left of it (domains' fees)."""

from __future__ import annotations

from typing import Any

from imhost import events
from imhost.billing.charges import add_pending_charge

_REGISTERED = "_imhost_billing_subscribed"


def on_domain_fee(event: events.DomainFeeIncurred, session: Any) -> None:
    """Record the fee for the next invoice; the same ``reference`` twice counts once."""
    add_pending_charge(
        session,
        event.organization_id,
        event.description,
        event.amount,
        event.currency,
        source="domain",
        reference=event.reference,
        at=event.at,
    )


def register(bus: events.EventBus) -> None:
    """Subscribe billing's handlers to ``bus`` (once, however often it is called)."""
    if getattr(bus, _REGISTERED, False):
        return
    setattr(bus, _REGISTERED, True)
    bus.subscribe(events.DomainFeeIncurred, on_domain_fee)


def register_runtime(runtime: Any) -> None:
    register(runtime.bus)
