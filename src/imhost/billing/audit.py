"""Audit entries for billing actions (``billing.<action>``).

Written by the billing function that does the action (``start_subscription``, ``void_invoice``,
...), never by a web handler, so that the API, the portal, the console and the CLI audit alike.
Each such function takes ``actor`` (who acts; the system when not given).
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
    organization_id: str | None,
    target_type: str,
    target_id: str,
    **details: Any,
) -> None:
    audit.record(
        session,
        clock,
        f"billing.{action}",
        actor=actor or Actor.system(),
        organization_id=organization_id,
        target_type=target_type,
        target_id=target_id,
        **details,
    )
