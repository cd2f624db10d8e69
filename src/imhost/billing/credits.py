"""Account credit (a ledger) and coupons."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imhost.accounts.audit import Actor
from imhost.billing import audit, repository
from imhost.billing.composition import CouponTerms
from imhost.billing.models import (
    Coupon,
    CouponRedemption,
    CreditLedgerEntry,
    Subscription,
    SubscriptionStatus,
)
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput, NotFound
from imhost.kit.money import check_currency, round_minor, to_decimal

# --- account credit ---------------------------------------------------------------------


def credit_balance(session: Session, organization_id: str, currency: str) -> Decimal:
    """The organization's account credit in ``currency``: the sum of its ledger entries."""
    return repository.credit_sum(session, organization_id, currency)


def credit_balances(session: Session, organization_id: str) -> dict[str, Decimal]:
    rows = session.execute(
        select(CreditLedgerEntry.currency, CreditLedgerEntry.amount).where(
            CreditLedgerEntry.organization_id == organization_id
        )
    ).all()
    out: dict[str, Decimal] = {}
    for currency, amount in rows:
        out[currency] = out.get(currency, Decimal(0)) + amount
    return out


def add_credit(
    session: Session,
    clock: Clock,
    organization_id: str,
    amount: Decimal,
    currency: str,
    *,
    kind: str,
    description: str,
    invoice_id: str | None = None,
    payment_id: str | None = None,
    credit_note_id: str | None = None,
    created_by: str | None = None,
) -> CreditLedgerEntry:
    """Add (positive) or use (negative) account credit. Refuses to go below zero."""
    check_currency(currency)
    amount = round_minor(amount, currency)
    if amount == 0:
        raise InvalidInput("a credit entry of zero changes nothing", field="amount")
    if amount < 0 and credit_balance(session, organization_id, currency) + amount < 0:
        raise Conflict(
            f"account credit is {credit_balance(session, organization_id, currency)} "
            f"{currency}; {-amount} cannot be used"
        )
    entry = CreditLedgerEntry(
        organization_id=organization_id,
        currency=currency,
        amount=amount,
        kind=kind,
        description=description,
        invoice_id=invoice_id,
        payment_id=payment_id,
        credit_note_id=credit_note_id,
        created_by=created_by,
        created_at=clock.now(),
    )
    session.add(entry)
    session.flush()
    return entry


def credit_history(session: Session, organization_id: str) -> list[CreditLedgerEntry]:
    return list(
        session.scalars(
            select(CreditLedgerEntry)
            .where(CreditLedgerEntry.organization_id == organization_id)
            .order_by(CreditLedgerEntry.created_at, CreditLedgerEntry.id)
        )
    )


# --- coupons ----------------------------------------------------------------------------

COUPON_KINDS = ("percent", "amount")
COUPON_DURATIONS = ("once", "repeating", "forever")


def create_coupon(
    session: Session,
    clock: Clock,
    *,
    code: str,
    kind: str,
    duration: str,
    percent_off: Decimal | str | None = None,
    amount_off: Decimal | str | None = None,
    currency: str | None = None,
    duration_periods: int | None = None,
    max_redemptions: int | None = None,
    redeem_by: datetime | None = None,
    name: str = "",
    actor: Actor | None = None,
) -> Coupon:
    code = code.strip().upper()
    if not code or len(code) > 64 or not all(c.isalnum() or c in "-_" for c in code):
        raise InvalidInput("a coupon code is 1 to 64 letters, digits, - or _", field="code")
    if kind not in COUPON_KINDS:
        raise InvalidInput("a coupon is 'percent' or 'amount'", field="kind")
    if duration not in COUPON_DURATIONS:
        raise InvalidInput("duration is once, repeating or forever", field="duration")
    pct = to_decimal(percent_off) if percent_off is not None else None
    amt = to_decimal(amount_off) if amount_off is not None else None
    if kind == "percent":
        if pct is None or not Decimal(0) < pct <= Decimal(100):
            raise InvalidInput("percent_off is more than 0 and at most 100", field="percent_off")
        amt, currency = None, None
    else:
        if amt is None or amt <= 0:
            raise InvalidInput("amount_off is a positive amount", field="amount_off")
        if currency is None:
            raise InvalidInput("an amount coupon needs its currency", field="currency")
        try:
            check_currency(currency)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="currency") from None
        amt = round_minor(amt, currency)
        pct = None
    if duration == "repeating":
        if duration_periods is None or not 1 <= duration_periods <= 120:
            raise InvalidInput(
                "a repeating coupon runs for 1 to 120 periods", field="duration_periods"
            )
    else:
        duration_periods = None
    if redeem_by is not None and redeem_by.tzinfo is None:
        raise InvalidInput("redeem_by needs a time zone", field="redeem_by")
    if max_redemptions is not None and max_redemptions < 1:
        raise InvalidInput("max_redemptions is at least 1", field="max_redemptions")
    if session.scalar(select(Coupon.id).where(Coupon.code == code)) is not None:
        raise Conflict(f"coupon {code} exists already", field="code")
    coupon = Coupon(
        code=code,
        name=name.strip()[:200],
        kind=kind,
        percent_off=pct,
        amount_off=amt,
        currency=currency,
        duration=duration,
        duration_periods=duration_periods,
        max_redemptions=max_redemptions,
        redeem_by=redeem_by,
        created_at=clock.now(),
    )
    session.add(coupon)
    session.flush()
    audit.record(
        session,
        clock,
        actor,
        "coupon_created",
        organization_id=None,
        target_type="coupon",
        target_id=coupon.id,
        code=coupon.code,
    )
    return coupon


def get_coupon(session: Session, coupon_id: str) -> Coupon:
    coupon = session.get(Coupon, coupon_id)
    if coupon is None:
        raise NotFound(f"no coupon {coupon_id!r}")
    return coupon


def list_coupons(session: Session) -> list[Coupon]:
    return list(session.scalars(select(Coupon).order_by(Coupon.code)))


def update_coupon(
    session: Session,
    clock: Clock,
    coupon_id: str,
    *,
    name: str | None = None,
    active: bool | None = None,
    max_redemptions: int | None = None,
    redeem_by: datetime | None = None,
    actor: Actor | None = None,
) -> Coupon:
    """Only what does not change past discounts can change: name, active, limits."""
    coupon = get_coupon(session, coupon_id)
    if name is not None:
        coupon.name = name.strip()[:200]
    if active is not None:
        coupon.active = active
    if max_redemptions is not None:
        if max_redemptions < redemption_count(session, coupon.id):
            raise InvalidInput(
                "max_redemptions is below the redemptions already made", field="max_redemptions"
            )
        coupon.max_redemptions = max_redemptions
    if redeem_by is not None:
        if redeem_by.tzinfo is None:
            raise InvalidInput("redeem_by needs a time zone", field="redeem_by")
        coupon.redeem_by = redeem_by
    session.flush()
    audit.record(  # the fields given (None ones are left out of the record)
        session,
        clock,
        actor,
        "coupon_updated",
        organization_id=None,
        target_type="coupon",
        target_id=coupon.id,
        name=name,
        active=active,
        max_redemptions=max_redemptions,
        redeem_by=redeem_by.isoformat() if redeem_by else None,
    )
    return coupon


def delete_coupon(
    session: Session, clock: Clock, coupon_id: str, *, actor: Actor | None = None
) -> None:
    """A coupon never redeemed is deleted; one redeemed is deactivated (history stays)."""
    coupon = get_coupon(session, coupon_id)
    if redemption_count(session, coupon.id):
        coupon.active = False
    else:
        session.delete(coupon)
    session.flush()
    audit.record(
        session,
        clock,
        actor,
        "coupon_deleted",
        organization_id=None,
        target_type="coupon",
        target_id=coupon_id,
    )


def redemption_count(session: Session, coupon_id: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(CouponRedemption)
            .where(CouponRedemption.coupon_id == coupon_id)
        )
        or 0
    )


def apply_coupon(
    session: Session,
    clock: Clock,
    organization_id: str,
    code: str,
    *,
    actor: Actor | None = None,
) -> CouponRedemption:
    """Attach a coupon to the organization's subscription; it applies from the next invoice."""
    now = clock.now()
    coupon = session.scalar(select(Coupon).where(Coupon.code == code.strip().upper()))
    if coupon is None or not coupon.active:
        raise NotFound(f"coupon {code!r} does not exist or is no longer offered", field="code")
    if coupon.redeem_by is not None and now > coupon.redeem_by:
        raise InvalidInput(f"coupon {coupon.code} expired", field="code")
    if coupon.max_redemptions is not None and (
        redemption_count(session, coupon.id) >= coupon.max_redemptions
    ):
        raise Conflict(f"coupon {coupon.code} has been fully redeemed", field="code")
    sub = session.scalar(
        select(Subscription)
        .where(
            Subscription.organization_id == organization_id,
            Subscription.status != SubscriptionStatus.CANCELED.value,
        )
        .with_for_update()
    )
    if sub is None:
        raise NotFound("the organization has no subscription to apply a coupon to")
    if coupon.currency is not None and coupon.currency != sub.currency:
        raise InvalidInput(
            f"coupon {coupon.code} is worth an amount in {coupon.currency}; "
            f"the subscription is billed in {sub.currency}",
            field="code",
        )
    if session.scalar(
        select(CouponRedemption.id).where(
            CouponRedemption.coupon_id == coupon.id,
            CouponRedemption.organization_id == organization_id,
        )
    ):
        raise Conflict(f"coupon {coupon.code} was already redeemed", field="code")
    if sub.coupon_redemption_id is not None:
        current = session.get(CouponRedemption, sub.coupon_redemption_id)
        if current is not None and current.ended_at is None:
            raise Conflict("the subscription has a coupon already; one at a time", field="code")
    redemption = CouponRedemption(
        coupon_id=coupon.id,
        organization_id=organization_id,
        subscription_id=sub.id,
        created_at=now,
    )
    session.add(redemption)
    session.flush()
    sub.coupon_redemption_id = redemption.id
    session.flush()
    audit.record(
        session,
        clock,
        actor,
        "coupon_applied",
        organization_id=organization_id,
        target_type="coupon",
        target_id=redemption.coupon_id,
        code=code,
    )
    return redemption


def coupon_for_invoice(
    session: Session, sub: Subscription
) -> tuple[CouponRedemption, CouponTerms] | None:
    """The coupon that applies to the subscription's next invoice, if any."""
    if sub.coupon_redemption_id is None:
        return None
    redemption = session.get(CouponRedemption, sub.coupon_redemption_id)
    if redemption is None or redemption.ended_at is not None:
        return None
    coupon = session.get(Coupon, redemption.coupon_id)
    if coupon is None:
        return None
    terms = CouponTerms(
        code=coupon.code,
        kind=coupon.kind,
        percent_off=coupon.percent_off,
        amount_off=coupon.amount_off,
    )
    return redemption, terms


def coupon_used(session: Session, redemption: CouponRedemption, at: datetime) -> None:
    """Count one period of a redemption, ending it when its duration is over."""
    coupon = session.get(Coupon, redemption.coupon_id)
    redemption.periods_applied += 1
    if coupon is not None and (
        coupon.duration == "once"
        or (
            coupon.duration == "repeating"
            and redemption.periods_applied >= (coupon.duration_periods or 1)
        )
    ):
        redemption.ended_at = at
    session.flush()
