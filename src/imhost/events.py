"""A typed in-process event bus.

Lower packages subscribe to events that higher packages publish (billing suspends a service;
hosting acts). Events are dataclasses; a subscription names the class, so a typo is a type
error, not a handler that silently never fires.

Publish with ``events.publish(session, event)``: the bus travels with the unit of work
(``session.info["bus"]``). Handlers run synchronously in the publisher's transaction and get
the same ``Session``, so the reaction commits or rolls back with the cause (e-mails and
webhooks are queued in that transaction and sent after it commits).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
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
            for handler in self._handlers.get(cls, ()):
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
    """The organization's plan (and so its limits) changed.

    ``plan_id`` None: the subscription ended. ``plan_version_id`` and ``add_ons`` (add-on id
    to quantity) let hosting apply the exact limits, add-on deltas included.
    """

    organization_id: str
    plan_id: str | None
    plan_version_id: str | None = None
    add_ons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class BudgetCapReached(Event):
    """A hard budget cap: the service must stop billable overage."""

    organization_id: str
    metric: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class BudgetCapLifted(Event):
    """A hard budget cap no longer holds (a new period began, the budget was raised, its hard
    cap turned off or the budget removed): the service may carry billable usage again."""

    organization_id: str
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


@dataclass(frozen=True, kw_only=True)
class PaymentMethodChanged(Event):
    """A saved payment method was added, made the default or removed."""

    organization_id: str
    payment_method_id: str
    kind: str  # added, made_default, removed


@dataclass(frozen=True, kw_only=True)
class PaymentAttemptFailed(Event):
    """A charge through a gateway failed (declined card, returned debit)."""

    organization_id: str
    invoice_id: str
    attempt_id: str


def make_bus() -> EventBus:
    return EventBus()


def attach_bus(session_info: dict[str, Any], bus: EventBus) -> None:
    """Make ``bus`` the bus of sessions made with ``info=session_info``."""
    session_info["bus"] = bus


def publish(session: Any, event: Event) -> None:
    """Publish ``event`` on the bus that travels with ``session`` (``session.info['bus']``).

    This is how services publish: they take a Session, never a bus. The app and the worker
    build their sessionmaker with ``info={"bus": bus}``; a session without a bus (a bare
    script) publishes to nobody.
    """
    bus = session.info.get("bus") if session is not None else None
    if bus is not None:
        bus.publish(event, session)


# --- accounts ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class InvitationCreated(Event):
    """Carries the one-time token in memory only (it is stored hashed)."""

    organization_id: str
    organization_name: str
    email: str
    role: str
    token: str
    invited_by: str


@dataclass(frozen=True, kw_only=True)
class EmailVerificationRequested(Event):
    user_id: str
    email: str
    token: str


@dataclass(frozen=True, kw_only=True)
class PasswordResetRequested(Event):
    """Someone asked for a reset link for an existing account (sent to ``email``)."""

    user_id: str
    email: str
    token: str
    expires_minutes: int


@dataclass(frozen=True, kw_only=True)
class SignupRequested(Event):
    """A sign-up for an address with no account: the link finishes it."""

    email: str
    token: str


@dataclass(frozen=True, kw_only=True)
class SignupForExistingAccount(Event):
    """A sign-up for an address that has an account: tell its owner, not the requester."""

    email: str


@dataclass(frozen=True, kw_only=True)
class EmailChangeRequested(Event):
    """A person asked to change their address: the link to confirm goes to ``new_email``, a
    notice with a link to cancel goes to ``old_email``. Tokens in memory only."""

    user_id: str
    old_email: str
    new_email: str
    token: str
    cancel_token: str
    expires_hours: int


@dataclass(frozen=True, kw_only=True)
class OrganizationClosed(Event):
    """The owner closed the organization: its members are told (``recipients``)."""

    organization_id: str
    organization_name: str
    closed_by: str
    recipients: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class SecurityAlertRaised(Event):
    alert_id: str
    rule: str
    summary: str
    organization_id: str | None
    recipients: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class AccessReviewOpened(Event):
    review_id: str
    organization_id: str
    organization_name: str
    period_label: str
    recipients: tuple[str, ...]


# --- domains ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CustomDomainChanged(Event):
    """A customer's own domain for a hosted service was ``added``, ``verified`` (every record
    it needs is in DNS), ``failed`` (a check found a record missing or wrong after it was
    pending or verified; published once per fall, not per re-check) or ``removed``.

    Published by domains; notify sends the webhook. Hosting may react to ``verified`` once the
    engine can serve a second name for a host (docs/domains.md, "What verification gives").
    """

    organization_id: str
    domain_id: str
    service_id: str
    name: str
    kind: str  # added, verified, failed, removed


# --- monitoring -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MonitoringAlert(Event):
    """A grouped alert for the provider's staff: incidents that opened (``firing``), are still
    open (``repeat``) or resolved since the last alert. notify sends it by e-mail to
    ``recipients`` and posts it to the provider's webhooks (``monitoring.alert``)."""

    subject: str
    text: str
    firing: tuple[str, ...]
    repeat: tuple[str, ...]
    resolved: tuple[str, ...]
    recipients: tuple[str, ...]
    status_url: str = ""


# --- billing ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DomainFeeIncurred(Event):
    """A domain registration, renewal or transfer to charge on the next invoice.

    Published by domains (left of billing); billing subscribes and records a pending charge.
    ``reference`` is unique per fee (e.g. ``renewal:<order id>``) so a repeat counts once.
    """

    organization_id: str
    description: str
    amount: Decimal
    currency: str
    reference: str


@dataclass(frozen=True, kw_only=True)
class DunningReminderDue(Event):
    """An unpaid invoice reached a reminder step (days relative to its due date)."""

    organization_id: str
    invoice_id: str
    step: str
    days_from_due: int


@dataclass(frozen=True, kw_only=True)
class CreditNoteIssued(Event):
    organization_id: str
    credit_note_id: str
    invoice_id: str


@dataclass(frozen=True, kw_only=True)
class SepaMandateEvent(Event):
    """A customer gave (``signed``) or withdrew (``revoked``) a SEPA direct debit mandate."""

    organization_id: str
    mandate_id: str
    kind: str  # signed, revoked


@dataclass(frozen=True, kw_only=True)
class DirectDebitEvent(Event):
    """A SEPA collection of an invoice was ``scheduled`` (the pre-notification is due),
    ``collected`` (the bank statement shows the money) or ``returned`` (the debtor's bank
    sent it back; ``reason`` is the ISO 20022 return reason code, e.g. AC04)."""

    organization_id: str
    collection_id: str
    kind: str  # scheduled, collected, returned
    reason: str | None = None


# --- metering ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BudgetThresholdCrossed(Event):
    """The forecast of a customer's next invoice crossed one of its budget's alert thresholds.

    Published once per budget, period and threshold (metering records each crossing).
    ``threshold`` is a percentage of ``budget_amount``; ``amount`` is the forecast that
    crossed it, in ``currency``, of the invoice made at ``invoice_at``. notify turns it into
    an e-mail to the organization's owners and billing contacts.
    """

    organization_id: str
    budget_id: str
    threshold: int
    amount: Decimal
    budget_amount: Decimal
    currency: str
    period_start: datetime | None = None
    period_end: datetime | None = None
    invoice_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class TicketEvent(Event):
    """Something happened to a support ticket (sent as the ``ticket.<kind>`` webhook).

    ``kind``: created, customer_replied, staff_replied, note_added, status_changed,
    assigned, priority_changed, tags_changed, merged, rated. ``message_id`` names the message
    of a reply; ``status`` is the ticket's status after the change.
    """

    ticket_id: str
    public_id: str
    organization_id: str | None
    kind: str
    status: str
    message_id: str | None = None
    actor_user_id: str | None = None
