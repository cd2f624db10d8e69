"""Payment gateways behind one interface (``base.PaymentGateway``).

``manual`` is built in: staff record bank transfers and refunds made by hand. A gateway such
as Stripe plugs in by subclassing ``PaymentGateway`` and registering an instance with
``register_gateway``.
"""

from __future__ import annotations

from imhost.billing.drivers.base import PaymentGateway
from imhost.billing.drivers.manual import ManualGateway
from imhost.kit.errors import InvalidInput

_GATEWAYS: dict[str, PaymentGateway] = {"manual": ManualGateway()}


def register_gateway(gateway: PaymentGateway) -> None:
    _GATEWAYS[gateway.name] = gateway


def unregister_gateway(name: str) -> None:
    """Forget a registered gateway (the built-in manual one stays)."""
    if name != "manual":
        _GATEWAYS.pop(name, None)


def checkout_gateway() -> PaymentGateway:
    """The gateway "Pay now" uses without a saved method: the first registered one that
    takes cards, else the manual one (bank transfer instructions)."""
    for gateway in _GATEWAYS.values():
        if gateway.saves_methods:
            return gateway
    return _GATEWAYS["manual"]


def saving_gateways() -> list[PaymentGateway]:
    """The registered gateways that can save payment methods."""
    return [g for g in _GATEWAYS.values() if g.saves_methods]


def get_gateway(name: str) -> PaymentGateway:
    try:
        return _GATEWAYS[name]
    except KeyError:
        raise InvalidInput(f"no payment gateway {name!r} is configured", field="driver") from None


__all__ = [
    "ManualGateway",
    "PaymentGateway",
    "checkout_gateway",
    "get_gateway",
    "register_gateway",
    "saving_gateways",
    "unregister_gateway",
]
