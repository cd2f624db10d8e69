"""Add-ons on a live subscription, one at a time: what the plan offers, what a change would
cost now and per period, and the change itself.

A change sets the *quantity* of one add-on (0 removes it), never adds to it: a request sent
twice (a browser retrying a POST) finds the quantity already set and changes nothing, so it
charges nothing twice. The change takes effect at once, through the same rule as a plan
change (``subscriptions.change_plan``): the remaining time of the paid period is charged for
what is added and credited for what is removed, by the second, on the next invoice; the
limits of the hosted services follow through ``SubscriptionChanged``.

An add-on that raises limits (``limit_deltas``: extra accounts, storage, a custom domain) can
be taken several times; one that does not (premium support, a message archive) once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy.orm import Session

from imhost.accounts.audit import Actor
from imhost.billing.models import Subscription
from imhost.billing.plans import check_add_on_fits, load_add_on, load_plan_terms
from imhost.billing.subscriptions import (
    ProrationLine,
    _lock,
    add_ons_of,
    change_plan,
    preview_change,
    require_subscription,
)
from imhost.catalog import service as catalog
from imhost.catalog.models import AddOn
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, DomainError, InvalidInput, NotFound

MAX_QUANTITY = 1000


@dataclass(frozen=True)
class OfferedAddOn:
    """One add-on as the organization may see it: the catalog's terms and how many it has."""

    id: str
    code: str
    name: str
    description: str
    price: Decimal
    currency: str
    interval: str
    limit_deltas: dict[str, int]
    quantity: int
    on_sale: bool

    @property
    def stackable(self) -> bool:
        """Whether more than one can be taken (it raises limits)."""
        return bool(self.limit_deltas)

    @property
    def max_quantity(self) -> int:
        return MAX_QUANTITY if self.stackable else 1

    @property
    def recurring(self) -> Decimal:
        return self.price * self.quantity


@dataclass(frozen=True)
class AddOnChange:
    """What setting one add-on's quantity does: now (prorated lines on the next invoice) and
    from the next period on (the recurring price)."""

    add_on: OfferedAddOn
    from_quantity: int
    to_quantity: int
    currency: str
    lines: list[ProrationLine] = field(default_factory=list)

    @property
    def now_total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))

    @property
    def recurring(self) -> Decimal:
        """The add-on's price per period once changed."""
        return self.add_on.price * self.to_quantity

    @property
    def adds(self) -> bool:
        return self.to_quantity > self.from_quantity


def _offered(add_on: AddOn, quantity: int) -> OfferedAddOn:
    return OfferedAddOn(
        id=add_on.id,
        code=add_on.code,
        name=add_on.name,
        description=add_on.description,
        price=add_on.price,
        currency=add_on.currency,
        interval=add_on.billing_interval,
        limit_deltas=dict(add_on.limit_deltas or {}),
        quantity=quantity,
        on_sale=add_on.is_active,
    )


def _live(session: Session, organization_id: str) -> Subscription:
    """The live subscription (trialing, active or paused); none is a plain 404."""
    return require_subscription(session, organization_id)


def offered_add_ons(session: Session, organization_id: str) -> list[OfferedAddOn]:
    """The add-ons the subscription's plan can take (on sale, same currency and interval),
    and those it has (a retired one it keeps), each with its quantity."""
    sub = _live(session, organization_id)
    plan = load_plan_terms(session, sub.plan_version_id)
    have = add_ons_of(session, sub.id)
    out: list[OfferedAddOn] = []
    for add_on in catalog.list_addons(session, active_only=False, currency=plan.currency):
        if not add_on.is_active and add_on.id not in have:
            continue
        try:
            check_add_on_fits(load_add_on(session, add_on.id), plan)
        except DomainError:
            continue
        out.append(_offered(add_on, have.get(add_on.id, 0)))
    return sorted(out, key=lambda a: (a.quantity == 0, a.name))


def _target(
    session: Session, organization_id: str, add_on_id: str, quantity: int
) -> tuple[Subscription, OfferedAddOn, dict[str, int]]:
    sub = _live(session, organization_id)
    offered = {a.id: a for a in offered_add_ons(session, organization_id)}
    add_on = offered.get(add_on_id)
    if add_on is None:
        raise NotFound("this add-on is not offered with your plan", field="add_on")
    if not 0 <= quantity <= add_on.max_quantity:
        raise InvalidInput(
            f"{add_on.name} can be taken once."
            if add_on.max_quantity == 1
            else f"Choose a quantity from 0 to {add_on.max_quantity}.",
            field="quantity",
        )
    if quantity > add_on.quantity and not add_on.on_sale:
        raise InvalidInput(f"{add_on.name} is no longer sold; you can only remove it.")
    wanted = add_ons_of(session, sub.id)
    wanted[add_on.id] = quantity
    return sub, add_on, {k: v for k, v in wanted.items() if v}


def preview_add_on(
    session: Session, clock: Clock, organization_id: str, add_on_id: str, quantity: int
) -> AddOnChange:
    """What setting ``add_on_id`` to ``quantity`` would charge or credit now; nothing changes.
    The same quantity as now is refused (there is nothing to preview)."""
    sub, add_on, wanted = _target(session, organization_id, add_on_id, quantity)
    if quantity == add_on.quantity:
        raise Conflict(
            f"You have {quantity} × {add_on.name} already." if quantity else "You do not have it.",
            field="quantity",
        )
    preview = preview_change(session, clock, organization_id, sub.plan_version_id, add_ons=wanted)
    return AddOnChange(add_on, add_on.quantity, quantity, preview.currency, preview.lines)


def set_add_on(
    session: Session,
    clock: Clock,
    organization_id: str,
    add_on_id: str,
    quantity: int,
    *,
    actor: Actor | None = None,
) -> AddOnChange | None:
    """Set the quantity of one add-on now (audited ``billing.add_on_changed``). Returns None
    when it already is ``quantity``: nothing is charged or recorded again."""
    sub = _live(session, organization_id)
    _lock(session, sub)
    sub, add_on, wanted = _target(session, organization_id, add_on_id, quantity)
    if quantity == add_on.quantity:
        return None
    preview = change_plan(
        session,
        clock,
        organization_id,
        sub.plan_version_id,
        add_ons=wanted,
        changed_by=actor.label if actor is not None else None,
        actor=actor,
        audit_action="add_on_changed",
        proration_tag=f"add-on:{add_on.id}:{add_on.quantity}-{quantity}",
        audit_details={
            "add_on_id": add_on.id,
            "add_on": add_on.name,
            "from_quantity": add_on.quantity,
            "to_quantity": quantity,
        },
    )
    return AddOnChange(add_on, add_on.quantity, quantity, preview.currency, preview.lines)
