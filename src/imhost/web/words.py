"""Plain words for what customers and staff read: the one place the portal's and the console's
templates turn internal codes (metric codes, limits, payment methods, pricing models,
statuses, roles, e-mail kinds, dunning steps, audit events) into labels.

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


STATUS_WORDS: dict[str, str] = {
    **{code: words.capitalize() for code, words in SUBSCRIPTION_STATUS_LABELS.items()},
    "active": "Active",
    "suspended": "Suspended",
    "closed": "Closed",
    "draft": "Draft",
    "open": "Awaiting payment",
    "paid": "Paid",
    "void": "Void",
    "overdue": "Overdue",
    "uncollectible": "Uncollectible",
    "queued": "Waiting to be sent",
    "sent": "Sent",
    "delivered": "Delivered",
    "failed": "Failed",
}
"""Statuses of organizations, services, invoices, subscriptions, e-mails and deliveries."""

ROLE_WORDS: dict[str, str] = {
    "owner": "Owner",
    "admin": "Admin",
    "billing": "Billing",
    "technical": "Technical",
    "read-only": "Read-only",
    "read_only": "Read-only",
    "support": "Support",
}

EMAIL_KIND_WORDS: dict[str, str] = {
    "invoice": "Invoice",
    "invoice-paid": "Payment receipt",
    "invoice-reminder": "Payment reminder",
    "credit-note": "Credit note",
    "budget-alert": "Budget alert",
    "invitation": "Invitation",
    "verify-email": "E-mail address check",
    "password-reset": "Password reset",
    "sign-up": "Sign-up link",
    "sign-up-existing": "Sign-up attempt for a known address",
    "security-alert": "Security alert",
    "access-review": "Access review",
}

TRANSPORT_WORDS: dict[str, str] = {"smtp": "sent by SMTP", "outbox": "written to the outbox folder"}

_AUDIT_AREAS: dict[str, str] = {
    "xmpp": "XMPP",
    "org": "Organization",
    "mfa": "Two-factor",
    "login": "Sign-in",
    "access_review": "Access review",
    "catalog": "Catalog",
}


def _words_of(code: str) -> str:
    return code.replace("_", " ").replace("-", " ").strip()


def status_words(status: str | None) -> str:
    """``open`` (an invoice) as "Awaiting payment", ``budget_blocked`` as "Budget blocked"."""
    if not status:
        return "-"
    return STATUS_WORDS.get(status, _words_of(status).capitalize())


def role_words(role: str | None) -> str:
    if not role:
        return "-"
    return ROLE_WORDS.get(role, _words_of(role).capitalize())


def email_kind(kind: str | None) -> str:
    if not kind:
        return "Other"
    return EMAIL_KIND_WORDS.get(kind, _words_of(kind).capitalize())


def transport_words(transport: str | None) -> str:
    return TRANSPORT_WORDS.get(transport or "", _words_of(transport or ""))


def dunning_step(step: str) -> str:
    """``reminder:-3`` as "Reminder 3 days before the due date", ``late_fee`` as "Late fee"."""
    if step.startswith("reminder:"):
        try:
            days = int(step.partition(":")[2])
        except ValueError:
            return "Reminder"
        if days == 0:
            return "Reminder on the due date"
        when = "before" if days < 0 else "after"
        return f"Reminder {abs(days)} day{'' if abs(days) == 1 else 's'} {when} the due date"
    return {
        "late_fee": "Late fee",
        "suspend": "Service suspended",
        "terminate": "Subscription ended",
    }.get(step, _words_of(step).capitalize())


def audit_action(action: str) -> str:
    """``billing.plan_changed`` as "Billing: plan changed" (the code stays the filter's key)."""
    area, _, what = action.partition(".")
    if not what:
        return _words_of(area).capitalize()
    label = _AUDIT_AREAS.get(area, _words_of(area).capitalize())
    return f"{label}: {_words_of(what)}"


def metric_choice(code: str) -> tuple[str, str]:
    """A ``<select>`` option for a metric: its code as the value, its label as the text."""
    return code, metric_label(code)


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
    "status_words": status_words,
    "role_words": role_words,
    "email_kind": email_kind,
    "transport_words": transport_words,
    "dunning_step": dunning_step,
    "audit_action": audit_action,
    "metric_choice": metric_choice,
    "domain_status": domain_status,
    "record_state": record_state,
}
