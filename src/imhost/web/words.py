"""Plain words for what customers read: the one place the portal's templates turn internal
codes (metric codes, limits, payment methods, pricing models) into labels.

Each label lives in the package that owns the code (``metering.metrics``, ``catalog``,
``billing.payments``); this module makes them Jinja filters (``FILTERS``, installed by
``web.pages``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from imhost.billing.models import SUBSCRIPTION_STATUS_LABELS
from imhost.billing.payments import payment_method_label
from imhost.catalog.models import LIMIT_LABELS
from imhost.catalog.pricing import PriceSpec, parse_tiers, price_words
from imhost.domains.models import DOMAIN_STATUS_LABELS, RECORD_STATE_LABELS
from imhost.metering.metrics import metric_label, quantity_words


def limit_label(key: str) -> str:
    return LIMIT_LABELS.get(key, key.replace("_", " ").capitalize())


def subscription_status(status: str) -> str:
    return SUBSCRIPTION_STATUS_LABELS.get(status, status)


def quantity(value: Decimal | int | str | None, metric: str) -> str:
    """``2,013,300 messages``; ``-`` for nothing."""
    if value is None:
        return "-"
    return quantity_words(metric, Decimal(str(value)))


def component_prices(component: Any, currency: str) -> list[str]:
    """Every price of a plan's price component (a ``PriceComponentOut`` or a mapping), in
    plain words: included quantity, each tier, package, cap, minimum."""

    def get(name: str) -> Any:
        if isinstance(component, Mapping):
            return component.get(name)
        return getattr(component, name, None)

    def dec(value: Any) -> Decimal | None:
        return None if value is None else Decimal(str(value))

    spec = PriceSpec(
        model=str(get("pricing_model")),
        metric=str(get("metric")),
        currency=currency,
        unit_price=dec(get("unit_price")),
        tiers=parse_tiers(get("tiers")) if get("tiers") else (),
        package_size=dec(get("package_size")),
        included_quantity=dec(get("included_quantity")) or Decimal(0),
        cap=dec(get("cap")),
        minimum=dec(get("minimum")),
    )
    return price_words(spec)


def domain_status(status: str) -> str:
    return DOMAIN_STATUS_LABELS.get(status, status)


def record_state(state: str) -> str:
    return RECORD_STATE_LABELS.get(str(state), str(state))


FILTERS: dict[str, Callable[..., Any]] = {
    "metric_label": metric_label,
    "quantity": quantity,
    "limit_label": limit_label,
    "payment_method": payment_method_label,
    "subscription_status": subscription_status,
    "component_prices": component_prices,
    "domain_status": domain_status,
    "record_state": record_state,
}
