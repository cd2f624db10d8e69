"""Charges waiting for the next invoice: one-off charges, domain fees, prorations."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imhost.accounts.audit import Actor
from imhost.accounts.models import Organization
from imhost.billing import audit
from imhost.billing.models import LineKind, PendingCharge
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput, NotFound
from imhost.kit.ids import new_id
from imhost.kit.money import check_currency, round_minor, to_decimal

CREDIT_SOURCES = frozenset({"proration", "sla"})
"""Sources whose pending charges may be credits (negative): prorations for unused time and
SLA credits from monitoring."""


def _org(session: Session, organization_id: str) -> Organization:
    org = session.get(Organization, organization_id)
    if org is None:
        raise NotFound(f"no organization {organization_id!r}", field="organization_id")
    return org


def _amount(amount: Decimal | str | int, currency: str) -> Decimal:
    try:
        check_currency(currency)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="currency") from None
    try:
        value = to_decimal(amount)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(str(exc), field="amount") from None
    rounded = round_minor(value, currency)
    if rounded != value:
        raise InvalidInput(
            f"{value} has more decimals than {currency} allows ({rounded} would be charged)",
            field="amount",
        )
    return rounded


def add_pending_charge(
    session: Session,
    organization_id: str,
    description: str,
    amount: Decimal | str,
    currency: str,
    source: str = "domain",
    reference: str | None = None,
    *,
    clock: Clock | None = None,
    at: datetime | None = None,
    kind: str | None = None,
    reason: str | None = None,
    created_by: str | None = None,
    calculation: str = "",
    taxable: bool = True,
    period_start: datetime | None = None,
    period_end: datetime | None = None,
) -> PendingCharge:
    """Record a charge for the organization's next invoice.

    ``(source, reference)`` identifies the charge: the same pair sent again returns the
    charge already recorded instead of charging twice (a different amount is refused).
    Positive amounts only, except for the sources in ``CREDIT_SOURCES`` (prorations for unused
    time, SLA credits).
    """
    org = _org(session, organization_id)
    value = _amount(amount, currency)
    if value < 0 and source not in CREDIT_SOURCES:
        raise InvalidInput(
            "a charge is a positive amount; give a credit with a credit note", field="amount"
        )
    if value == 0:
        raise InvalidInput("a charge of zero is not recorded", field="amount")
    description = description.strip()
    if not description or len(description) > 500:
        raise InvalidInput("a description is 1 to 500 characters", field="description")
    when = at or (clock.now() if clock is not None else None)
    if when is None:
        raise InvalidInput("a charge needs a time (clock or at)")
    reference = reference or new_id()
    existing = session.scalar(
        select(PendingCharge).where(
            PendingCharge.source == source, PendingCharge.reference == reference
        )
    )
    if existing is not None:
        if existing.amount != value or existing.currency != currency:
            raise Conflict(
                f"charge {source}:{reference} was recorded with {existing.amount} "
                f"{existing.currency}; it cannot change",
                field="reference",
            )
        return existing
    charge = PendingCharge(
        organization_id=org.id,
        kind=kind or (LineKind.DOMAIN.value if source == "domain" else LineKind.ONE_OFF.value),
        source=source,
        reference=reference,
        description=description,
        calculation=calculation,
        amount=value,
        currency=currency,
        taxable=taxable,
        reason=reason,
        created_by=created_by,
        period_start=period_start,
        period_end=period_end,
        created_at=when,
    )
    try:
        with session.begin_nested():
            session.add(charge)
    except IntegrityError:
        raise Conflict(f"charge {source}:{reference} is being recorded already") from None
    return charge


def check_one_off_charge(amount: Decimal | str, currency: str, description: str) -> Decimal:
    """The amount a one-off charge would be recorded with, or the reason it would be refused
    (as :func:`add_one_off_charge` refuses it), without recording anything: for asking
    staff to confirm a charge that can be made."""
    try:
        check_currency(currency)
    except ValueError:
        raise InvalidInput("Type a currency code such as EUR.", field="currency") from None
    value = _amount(amount, currency)
    if value <= 0:
        raise InvalidInput(
            "Type an amount above zero; to give money back, credit an invoice.", field="amount"
        )
    if not description.strip() or len(description.strip()) > 500:
        raise InvalidInput("Describe the charge in 1 to 500 characters.", field="description")
    return value


def add_one_off_charge(
    session: Session,
    clock: Clock,
    organization_id: str,
    *,
    description: str,
    amount: Decimal | str,
    currency: str,
    reason: str,
    created_by: str,
    actor: Actor | None = None,
) -> PendingCharge:
    """A charge staff add by hand (setup work, a migration service...). A reason is required."""
    if not reason.strip():
        raise InvalidInput("say why this charge is added", field="reason")
    charge = add_pending_charge(
        session,
        organization_id,
        description,
        amount,
        currency,
        source="staff",
        clock=clock,
        kind=LineKind.ONE_OFF.value,
        reason=reason.strip()[:500],
        created_by=created_by,
        calculation=f"one-off charge added by {created_by}: {reason.strip()[:200]}",
    )
    audit.record(
        session,
        clock,
        actor,
        "charge_added",
        organization_id=organization_id,
        target_type="pending_charge",
        target_id=charge.id,
        amount=str(charge.amount),
        currency=charge.currency,
        reason=reason,
    )
    return charge


def list_pending_charges(session: Session, organization_id: str) -> list[PendingCharge]:
    return list(
        session.scalars(
            select(PendingCharge)
            .where(
                PendingCharge.organization_id == organization_id,
                PendingCharge.invoice_id.is_(None),
            )
            .order_by(PendingCharge.created_at, PendingCharge.reference)
        )
    )


def remove_pending_charge(
    session: Session, clock: Clock, charge_id: str, *, actor: Actor | None = None
) -> None:
    charge = session.get(PendingCharge, charge_id)
    if charge is None:
        raise NotFound(f"no pending charge {charge_id!r}")
    if charge.invoice_id is not None:
        raise Conflict("this charge is on an invoice already; issue a credit note instead")
    session.delete(charge)
    session.flush()
    audit.record(
        session,
        clock,
        actor,
        "charge_removed",
        organization_id=charge.organization_id,
        target_type="pending_charge",
        target_id=charge_id,
    )


def charges_due(
    session: Session, organization_id: str, currency: str, until: datetime
) -> list[PendingCharge]:
    """Uninvoiced charges recorded up to ``until``, in a stable order."""
    return list(
        session.scalars(
            select(PendingCharge)
            .where(
                PendingCharge.organization_id == organization_id,
                PendingCharge.invoice_id.is_(None),
                PendingCharge.currency == currency,
                PendingCharge.created_at <= until,
            )
            .order_by(PendingCharge.created_at, PendingCharge.reference)
        )
    )
