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


def get_gateway(name: str) -> PaymentGateway:
    try:
        return _GATEWAYS[name]
    except KeyError:
        raise InvalidInput(f"no payment gateway {name!r} is configured", field="driver") from None


__all__ = ["ManualGateway", "PaymentGateway", "get_gateway", "register_gateway"]
