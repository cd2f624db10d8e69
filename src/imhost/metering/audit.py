"""Audit entries for usage actions (``usage.<action>``).

Written by the metering function that does the action (``budgets.set_budget``,
``budgets.delete_budget``, ``closing.set_late_usage_policy``, ``ingestion.ingest_by_staff``),
never by a web handler, so that the API, the portal, the console and the CLI audit alike. Each
such function takes ``actor`` (who acts; the system when not given). The engine's direct path
(:func:`imhost.metering.ingestion.ingest_engine_batch`) and a customer's own ingestion write
none.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from imhost.accounts import audit
from imhost.accounts.audit import Actor
from imhost.kit.clock import Clock


def record(
    session: Session,
    clock: Clock,
    actor: Actor | None,
    action: str,
    *,
    organization_id: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    **details: Any,
) -> None:
    audit.record(
        session,
        clock,
        f"usage.{action}",
        actor=actor or Actor.system(),
        organization_id=organization_id,
        target_type=target_type,
        target_id=target_id,
        **details,
    )
