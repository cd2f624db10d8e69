"""Test factories for the catalog."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from imhost.catalog import service
from imhost.catalog.models import Plan
from imhost.catalog.schemas import AddOnIn, PlanCreate
from imhost.kit.clock import Clock


def plan_data(code: str = "team", **overrides: Any) -> PlanCreate:
    version: dict[str, Any] = {
        "currency": "EUR",
        "base_fee": "19.00",
        "setup_fee": "10.00",
        "trial_days": 7,
        "limits": {"max_xmpp_accounts": 50, "max_custom_domains": 2},
        "components": [
            {
                "metric": "messages",
                "pricing_model": "graduated",
                "tiers": [
                    {"up_to": 1000, "unit_price": "0"},
                    {"up_to": None, "unit_price": "0.002"},
                ],
            },
            {"metric": "traffic_gb", "pricing_model": "per_unit", "unit_price": "0.05"},
        ],
    }
    version.update(overrides.pop("version", {}))
    raw: dict[str, Any] = {"code": code, "name": code.title(), "version": version}
    raw.update(overrides)
    return PlanCreate.model_validate(raw)


def create_plan(session: Session, clock: Clock, code: str = "team", **overrides: Any) -> Plan:
    return service.create_plan(session, clock, plan_data(code, **overrides))


def addon_data(code: str = "extra-domain", **overrides: Any) -> AddOnIn:
    raw: dict[str, Any] = {
        "code": code,
        "name": "Extra domain",
        "kind": "extra_domain",
        "currency": "EUR",
        "price": "3.00",
        "limit_deltas": {"max_custom_domains": 1},
    }
    raw.update(overrides)
    return AddOnIn.model_validate(raw)
