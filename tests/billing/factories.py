"""Test objects for billing: organizations, plans, usage."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from imhost.accounts.models import Organization
from imhost.catalog.models import AddOn, Plan, PlanVersion, PriceComponent
from imhost.kit.clock import Clock
from imhost.kit.ids import new_id, slugify
from imhost.metering.ingestion import EngineUsage, ingest_engine_batch


def make_org(
    session: Session,
    clock: Clock,
    *,
    name: str = "Acme",
    country: str | None = "DE",
    tax_id: str | None = None,
    org_id: str | None = None,
    email: str | None = "billing@acme.example",
) -> Organization:
    org = Organization(
        id=org_id or new_id(),
        name=name,
        slug=f"{slugify(name)}-{new_id()[:6]}",
        country=country,
        tax_id=tax_id,
        billing_email=email,
        created_at=clock.now(),
    )
    session.add(org)
    session.flush()
    return org


def make_plan(
    session: Session,
    clock: Clock,
    *,
    name: str = "Business",
    base_fee: str = "49.00",
    setup_fee: str = "0",
    trial_days: int = 0,
    currency: str = "EUR",
    interval: str = "monthly",
    components: list[dict[str, Any]] | None = None,
    plan: Plan | None = None,
    version: int = 1,
) -> PlanVersion:
    """A plan version; ``components`` are PriceComponent fields (metric, pricing_model, ...)."""
    if plan is None:
        plan = Plan(code=f"{slugify(name)}-{new_id()[:6]}", name=name, created_at=clock.now())
        session.add(plan)
        session.flush()
    pv = PlanVersion(
        plan_id=plan.id,
        version=version,
        currency=currency,
        billing_interval=interval,
        base_fee=Decimal(base_fee),
        setup_fee=Decimal(setup_fee),
        trial_days=trial_days,
        created_at=clock.now(),
    )
    session.add(pv)
    session.flush()
    for position, comp in enumerate(components or []):
        data = {
            "included_quantity": Decimal(0),
            **comp,
        }
        session.add(
            PriceComponent(plan_version_id=pv.id, currency=currency, position=position, **data)
        )
    session.flush()
    return pv


def messages_per_unit(unit_price: str = "0.001", included: str = "0") -> dict[str, Any]:
    return {
        "metric": "messages",
        "pricing_model": "per_unit",
        "unit_price": Decimal(unit_price),
        "included_quantity": Decimal(included),
    }


def make_add_on(
    session: Session,
    clock: Clock,
    *,
    name: str = "Premium support",
    price: str = "10.00",
    currency: str = "EUR",
    interval: str = "monthly",
    kind: str = "premium_support",
    limit_deltas: dict[str, int] | None = None,
) -> AddOn:
    add_on = AddOn(
        code=f"{slugify(name)}-{new_id()[:6]}",
        name=name,
        kind=kind,
        currency=currency,
        price=Decimal(price),
        billing_interval=interval,
        limit_deltas=limit_deltas or {},
        created_at=clock.now(),
    )
    session.add(add_on)
    session.flush()
    return add_on


def add_usage(
    session: Session,
    clock: Clock,
    organization_id: str,
    at: datetime,
    quantity: int | str,
    *,
    metric: str = "messages",
    key: str | None = None,
) -> None:
    result = ingest_engine_batch(
        session,
        [
            EngineUsage(
                organization_id=organization_id,
                metric=metric,
                bucket_start=at,
                quantity=Decimal(quantity),
                idempotency_key=key or new_id(),
            )
        ],
        clock=clock,
    )
    assert not result.rejected, result.rejected
