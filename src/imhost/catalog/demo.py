"""Demo data of the catalog for ``imhost serve --demo`` (called by ``cli/demo.py``): the
default plans and a few add-ons. Idempotent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from imhost.accounts.models import Organization
from imhost.catalog import repository as repo
from imhost.catalog import service
from imhost.catalog.schemas import AddOnIn

if TYPE_CHECKING:
    from imhost.runtime import Runtime

DEMO_ADDONS: tuple[dict[str, Any], ...] = (
    {
        "code": "premium-support",
        "name": "Premium support",
        "description": "Answers within 4 hours, around the clock.",
        "kind": "premium_support",
        "price": "49.00",
    },
    {
        "code": "extra-domain",
        "name": "Extra custom domain",
        "kind": "extra_domain",
        "price": "3.00",
        "limit_deltas": {"max_custom_domains": 1},
    },
    {
        "code": "message-archive",
        "name": "Message archive",
        "description": "Server-side archive of every conversation (XEP-0313).",
        "kind": "message_archive",
        "price": "9.00",
    },
)


def seed(
    session: Session, runtime: Runtime, org: Organization, saved: dict[str, str], logins: Any
) -> None:
    clock = runtime.clock
    service.seed_default_plans(session, clock, currency="EUR")
    for raw in DEMO_ADDONS:
        data = AddOnIn.model_validate({"currency": "EUR", **raw})
        if repo.addon_by_code(session, data.code, data.currency) is None:
            service.create_addon(session, clock, data)
