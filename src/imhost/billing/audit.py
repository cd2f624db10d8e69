"""Audit entries for billing actions (``billing.<action>``), one place for the API and console."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from imhost.accounts import audit
from imhost.accounts.audit import Actor
from imhost.kit.clock import Clock


def record(
    session: Session,
    clock: Clock,
    actor: Actor,
    action: str,
    *,
    organization_id: str | None,
    target_type: str,
    target_id: str,
    **details: Any,
) -> None:
    audit.record(
        session,
        clock,
        f"billing.{action}",
        actor=actor,
        organization_id=organization_id,
        target_type=target_type,
        target_id=target_id,
        **details,
    )
