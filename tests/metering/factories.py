"""Test factories for metering."""

from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from imhost.accounts.models import Organization
from imhost.kit.clock import Clock
from imhost.metering.schemas import UsageIn

_keys = itertools.count(1)


def make_org(session: Session, clock: Clock, slug: str = "acme") -> Organization:
    org = Organization(name=slug.title(), slug=slug, created_at=clock.now())
    session.add(org)
    session.flush()
    return org


def usage(
    org: Organization | str | None,
    metric: str,
    bucket_start: datetime,
    quantity: int | str | Decimal,
    *,
    key: str | None = None,
    subject: str | None = None,
    service_id: str | None = "svc-1",
) -> UsageIn:
    org_id = org.id if isinstance(org, Organization) else org
    return UsageIn(
        organization_id=org_id,
        service_id=service_id,
        metric=metric,
        bucket_start=bucket_start,
        quantity=Decimal(quantity),
        subject=subject,
        idempotency_key=key or f"k-{next(_keys)}",
    )
