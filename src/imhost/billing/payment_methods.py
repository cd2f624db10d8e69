"""Saved payment methods, generic over gateways.

A method is saved at the gateway (the card number or IBAN never reaches imhost); imhost keeps
the gateway's id for it, the gateway's customer it belongs to, and a label a person reads.
Adding goes through the gateway's own page (``start_setup``); the gateway tells us the method
is saved, by its webhook or when the customer comes back (``save_from_gateway``), or an API
client attaches a method it collected with the gateway's own script (same function).

The first active method is the default; making another the default, or removing the default
(the newest other active method takes its place), keeps exactly one default while any active
method is left.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.audit import Actor
from imhost.accounts.models import Organization
from imhost.billing import audit
from imhost.billing.drivers import get_gateway
from imhost.billing.drivers.base import MethodSetup
from imhost.billing.models import GatewayCustomer, PaymentMethod, PaymentMethodStatus
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, NotFound

ACTIVE = PaymentMethodStatus.ACTIVE.value


def _lock_methods(session: Session, organization_id: str) -> None:
    """Serialize changes to one organization's methods (one default, even with two requests
    at once): ``FOR UPDATE`` on the organization on PostgreSQL, the write lock on SQLite."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(
            update(PaymentMethod)
            .where(PaymentMethod.organization_id == organization_id)
            .values(organization_id=PaymentMethod.organization_id)
            .execution_options(synchronize_session=False)
        )
    session.scalar(
        select(Organization.id).where(Organization.id == organization_id).with_for_update()
    )


def list_methods(
    session: Session, organization_id: str, *, include_removed: bool = False
) -> list[PaymentMethod]:
    query = select(PaymentMethod).where(PaymentMethod.organization_id == organization_id)
    if not include_removed:
        query = query.where(PaymentMethod.status == ACTIVE)
    return list(
        session.scalars(
            query.order_by(
                PaymentMethod.is_default.desc(), PaymentMethod.created_at.desc(), PaymentMethod.id
            )
        )
    )


def default_method(session: Session, organization_id: str) -> PaymentMethod | None:
    return session.scalar(
        select(PaymentMethod).where(
            PaymentMethod.organization_id == organization_id,
            PaymentMethod.status == ACTIVE,
            PaymentMethod.is_default.is_(True),
        )
    )


def get_method(session: Session, organization_id: str, method_id: str) -> PaymentMethod:
    method = session.get(PaymentMethod, method_id[:64])
    if method is None or method.organization_id != organization_id or method.status != ACTIVE:
        raise NotFound("There is no such payment method.")
    return method


def gateway_customer(
    session: Session, clock: Clock, organization_id: str, gateway_name: str
) -> str:
    """The organization's customer id at the gateway, created there on first use."""
    row = session.scalar(
        select(GatewayCustomer).where(
            GatewayCustomer.organization_id == organization_id,
            GatewayCustomer.gateway == gateway_name,
        )
    )
    if row is not None:
        return row.external_id
    org = session.get(Organization, organization_id)
    if org is None:
        raise NotFound("There is no such organization.")
    gateway = get_gateway(gateway_name)
    external_id = gateway.ensure_customer(
        organization_id=organization_id, name=org.name, email=org.billing_email
    )
    try:
        with session.begin_nested():
            session.add(
                GatewayCustomer(
                    organization_id=organization_id,
                    gateway=gateway_name,
                    external_id=external_id,
                    created_at=clock.now(),
                )
            )
    except IntegrityError:
        # Another request made it first; the gateway call was idempotent on the organization.
        existing = session.scalar(
            select(GatewayCustomer.external_id).where(
                GatewayCustomer.organization_id == organization_id,
                GatewayCustomer.gateway == gateway_name,
            )
        )
        return existing or external_id
    return external_id


def organization_of_customer(session: Session, gateway_name: str, customer_id: str) -> str | None:
    return session.scalar(
        select(GatewayCustomer.organization_id).where(
            GatewayCustomer.gateway == gateway_name, GatewayCustomer.external_id == customer_id
        )
    )


def start_setup(
    session: Session,
    clock: Clock,
    organization_id: str,
    gateway_name: str,
    *,
    return_url: str,
    actor: Actor | None = None,
) -> MethodSetup:
    """Start saving a method: the gateway's page to send the customer to."""
    gateway = get_gateway(gateway_name)
    if not gateway.saves_methods:
        raise Conflict(
            "Saving a card or a direct debit mandate is not available: no card payment "
            "provider is set up. Pay by bank transfer with the invoice number as the reference."
        )
    customer = gateway_customer(session, clock, organization_id, gateway_name)
    setup = gateway.start_method_setup(
        customer_external_id=customer, organization_id=organization_id, return_url=return_url
    )
    audit.record(
        session,
        clock,
        actor,
        "payment_method_setup_started",
        organization_id=organization_id,
        target_type="organization",
        target_id=organization_id,
        gateway=gateway_name,
    )
    return setup


def save_from_gateway(
    session: Session,
    clock: Clock,
    organization_id: str,
    gateway_name: str,
    method_external_id: str,
    *,
    actor: Actor | None = None,
) -> PaymentMethod:
    """Save the method the gateway holds under ``method_external_id`` (idempotent).

    The gateway describes it; a method that belongs to another customer than the
    organization's is refused, so nobody can attach someone else's card.
    """
    gateway = get_gateway(gateway_name)
    described = gateway.describe_method(method_external_id[:128])
    customer = gateway_customer(session, clock, organization_id, gateway_name)
    if described.customer_external_id not in (None, customer):
        raise NotFound("There is no such payment method.")
    return add_method(
        session,
        clock,
        organization_id,
        gateway=gateway_name,
        external_id=described.external_id,
        customer_external_id=described.customer_external_id or customer,
        kind=described.kind,
        label=described.label,
        actor=actor,
    )


def add_method(
    session: Session,
    clock: Clock,
    organization_id: str,
    *,
    gateway: str,
    external_id: str,
    label: str,
    kind: str = "card",
    customer_external_id: str | None = None,
    make_default: bool = False,
    actor: Actor | None = None,
) -> PaymentMethod:
    """Keep a method the gateway saved. The same gateway id twice is kept once."""
    _lock_methods(session, organization_id)
    existing = session.scalar(
        select(PaymentMethod).where(
            PaymentMethod.gateway == gateway, PaymentMethod.external_id == external_id
        )
    )
    if existing is not None:
        if existing.organization_id != organization_id:
            raise Conflict("This payment method belongs to another account.")
        if existing.status == ACTIVE:
            return existing
    first = default_method(session, organization_id) is None
    now = clock.now()
    if existing is not None:
        method = existing
        method.status = ACTIVE
        method.removed_at = None
        method.label = label[:200]
    else:
        method = PaymentMethod(
            organization_id=organization_id,
            gateway=gateway,
            external_id=external_id[:128],
            customer_external_id=customer_external_id,
            kind=kind[:32],
            label=label[:200],
            is_default=False,
            status=ACTIVE,
            created_at=now,
        )
        session.add(method)
    session.flush()
    if first or make_default:
        _make_default(session, method)
    _changed(session, clock, method, "added")
    audit.record(
        session,
        clock,
        actor,
        "payment_method_added",
        organization_id=organization_id,
        target_type="payment_method",
        target_id=method.id,
        label=method.label,
        gateway=gateway,
    )
    return method


def _changed(session: Session, clock: Clock, method: PaymentMethod, kind: str) -> None:
    events.publish(
        session,
        events.PaymentMethodChanged(
            at=clock.now(),
            organization_id=method.organization_id,
            payment_method_id=method.id,
            kind=kind,
        ),
    )


def _make_default(session: Session, method: PaymentMethod) -> None:
    for other in session.scalars(
        select(PaymentMethod).where(
            PaymentMethod.organization_id == method.organization_id,
            PaymentMethod.is_default.is_(True),
            PaymentMethod.id != method.id,
        )
    ):
        other.is_default = False
    session.flush()
    method.is_default = True
    session.flush()


def set_default(
    session: Session,
    clock: Clock,
    organization_id: str,
    method_id: str,
    *,
    actor: Actor | None = None,
) -> PaymentMethod:
    _lock_methods(session, organization_id)
    method = get_method(session, organization_id, method_id)
    session.refresh(method)
    if not method.is_default:
        _make_default(session, method)
        _changed(session, clock, method, "made_default")
        audit.record(
            session,
            clock,
            actor,
            "payment_method_made_default",
            organization_id=organization_id,
            target_type="payment_method",
            target_id=method.id,
            label=method.label,
        )
    return method


def remove_method(
    session: Session,
    clock: Clock,
    organization_id: str,
    method_id: str,
    *,
    actor: Actor | None = None,
) -> PaymentMethod:
    """Remove a method: the gateway forgets it, and the newest other becomes the default."""
    _lock_methods(session, organization_id)
    method = get_method(session, organization_id, method_id)
    session.refresh(method)
    get_gateway(method.gateway).detach_method(method.external_id)
    _remove(session, clock, method, actor=actor)
    return method


def forget_method(
    session: Session,
    clock: Clock,
    organization_id: str,
    *,
    gateway: str,
    external_id: str,
    actor: Actor | None = None,
) -> PaymentMethod | None:
    """Remove the method the gateway withdrew itself (a revoked direct debit mandate),
    without asking the gateway; None when no such active method is kept."""
    _lock_methods(session, organization_id)
    method = session.scalar(
        select(PaymentMethod).where(
            PaymentMethod.organization_id == organization_id,
            PaymentMethod.gateway == gateway,
            PaymentMethod.external_id == external_id,
            PaymentMethod.status == ACTIVE,
        )
    )
    if method is None:
        return None
    _remove(session, clock, method, actor=actor)
    return method


def _remove(session: Session, clock: Clock, method: PaymentMethod, *, actor: Actor | None) -> None:
    organization_id = method.organization_id
    was_default = method.is_default
    method.status = PaymentMethodStatus.REMOVED.value
    method.is_default = False
    method.removed_at = clock.now()
    session.flush()
    if was_default:
        successor = session.scalar(
            select(PaymentMethod)
            .where(PaymentMethod.organization_id == organization_id, PaymentMethod.status == ACTIVE)
            .order_by(PaymentMethod.created_at.desc(), PaymentMethod.id)
            .limit(1)
        )
        if successor is not None:
            _make_default(session, successor)
    _changed(session, clock, method, "removed")
    audit.record(
        session,
        clock,
        actor,
        "payment_method_removed",
        organization_id=organization_id,
        target_type="payment_method",
        target_id=method.id,
        label=method.label,
    )
