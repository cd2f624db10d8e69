"""What billing needs from the catalog, read in one place."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost.catalog.intervals import parse_interval
from imhost.catalog.models import AddOn, Plan, PlanVersion, PriceComponent
from imhost.catalog.pricing import PriceSpec
from imhost.kit.errors import InvalidInput, NotFound


@dataclass(frozen=True)
class PlanTerms:
    plan_version_id: str
    plan_id: str
    plan_name: str
    version: int
    currency: str
    interval: str
    base_fee: Decimal
    setup_fee: Decimal
    trial_days: int
    specs: tuple[PriceSpec, ...]


@dataclass(frozen=True)
class AddOnTerms:
    add_on_id: str
    name: str
    currency: str
    interval: str
    price: Decimal


def load_plan_terms(session: Session, plan_version_id: str) -> PlanTerms:
    row = session.execute(
        select(PlanVersion, Plan)
        .join(Plan, Plan.id == PlanVersion.plan_id)
        .where(PlanVersion.id == plan_version_id)
    ).first()
    if row is None:
        raise NotFound(f"no plan version {plan_version_id!r}", field="plan_version_id")
    version, plan = row
    components = session.scalars(
        select(PriceComponent)
        .where(PriceComponent.plan_version_id == plan_version_id)
        .order_by(PriceComponent.position, PriceComponent.metric)
    ).all()
    return PlanTerms(
        plan_version_id=version.id,
        plan_id=plan.id,
        plan_name=plan.name,
        version=version.version,
        currency=version.currency,
        interval=version.billing_interval,
        base_fee=version.base_fee,
        setup_fee=version.setup_fee,
        trial_days=version.trial_days,
        specs=tuple(c.to_spec() for c in components),
    )


def load_add_on(session: Session, add_on_id: str) -> AddOnTerms:
    add_on = session.get(AddOn, add_on_id)
    if add_on is None:
        raise NotFound(f"no add-on {add_on_id!r}", field="add_on_id")
    return AddOnTerms(
        add_on_id=add_on.id,
        name=add_on.name,
        currency=add_on.currency,
        interval=add_on.billing_interval,
        price=add_on.price,
    )


def check_add_on_fits(add_on: AddOnTerms, plan: PlanTerms) -> None:
    if add_on.currency != plan.currency:
        raise InvalidInput(
            f"add-on {add_on.name!r} is priced in {add_on.currency}, the plan in "
            f"{plan.currency}; pick the add-on's {plan.currency} price",
            field="add_ons",
        )
    add_on_iv, plan_iv = parse_interval(add_on.interval), parse_interval(plan.interval)
    if (add_on_iv.count, add_on_iv.unit) != (plan_iv.count, plan_iv.unit):
        raise InvalidInput(
            f"add-on {add_on.name!r} is billed {add_on_iv.words}, the plan {plan_iv.words}",
            field="add_ons",
        )
