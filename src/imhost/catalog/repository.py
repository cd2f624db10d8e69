"""Queries of the catalog tables."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost.catalog.models import AddOn, Plan, PlanVersion, PriceComponent


def plan_by_code(session: Session, code: str) -> Plan | None:
    return session.scalars(select(Plan).where(Plan.code == code)).one_or_none()


def plan_by_id(session: Session, plan_id: str) -> Plan | None:
    return session.get(Plan, plan_id)


def plans(session: Session, *, public_only: bool) -> Sequence[Plan]:
    query = select(Plan).where(Plan.archived_at.is_(None)).order_by(Plan.position, Plan.code)
    if public_only:
        query = query.where(Plan.is_public.is_(True))
    return session.scalars(query).all()


def versions_of(
    session: Session, plan_ids: Sequence[str], *, current_only: bool, currency: str | None = None
) -> Sequence[PlanVersion]:
    if not plan_ids:
        return []
    query = select(PlanVersion).where(PlanVersion.plan_id.in_(plan_ids))
    if current_only:
        query = query.where(PlanVersion.superseded_at.is_(None))
    if currency:
        query = query.where(PlanVersion.currency == currency)
    return session.scalars(
        query.order_by(PlanVersion.plan_id, PlanVersion.currency, PlanVersion.version)
    ).all()


def current_version(
    session: Session, plan_id: str, currency: str, billing_interval: str
) -> PlanVersion | None:
    return session.scalars(
        select(PlanVersion).where(
            PlanVersion.plan_id == plan_id,
            PlanVersion.currency == currency,
            PlanVersion.billing_interval == billing_interval,
            PlanVersion.superseded_at.is_(None),
        )
    ).one_or_none()


def latest_version_number(session: Session, plan_id: str) -> int:
    numbers = session.scalars(
        select(PlanVersion.version).where(PlanVersion.plan_id == plan_id)
    ).all()
    return max(numbers, default=0)


def components_of(session: Session, version_ids: Sequence[str]) -> Sequence[PriceComponent]:
    if not version_ids:
        return []
    return session.scalars(
        select(PriceComponent)
        .where(PriceComponent.plan_version_id.in_(version_ids))
        .order_by(PriceComponent.plan_version_id, PriceComponent.position)
    ).all()


def addon_by_code(session: Session, code: str, currency: str) -> AddOn | None:
    return session.scalars(
        select(AddOn).where(AddOn.code == code, AddOn.currency == currency)
    ).one_or_none()


def addons(session: Session, *, active_only: bool, currency: str | None = None) -> Sequence[AddOn]:
    query = select(AddOn).order_by(AddOn.code, AddOn.currency)
    if active_only:
        query = query.where(AddOn.is_active.is_(True))
    if currency:
        query = query.where(AddOn.currency == currency)
    return session.scalars(query).all()
