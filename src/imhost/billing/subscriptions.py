"""Subscriptions: start, change plan with proration, cancel, pause and resume.

Proration is by the second (docs/billing.md, "Proration"): when the plan changes at moment
``c`` of a paid period ``[s, e)``, the customer is credited the old price for the unused
seconds ``e - c`` and charged the new price for the same seconds, each over the real length
of the full period that ends at ``e`` (``periods.full_period``: longer than ``e - s`` in a
shorter first period, the same denominator as the first invoice's base fee). Both lines go
on the next invoice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.audit import Actor
from imhost.accounts.models import Organization, OrgStatus
from imhost.billing import audit, repository
from imhost.billing.charges import add_pending_charge
from imhost.billing.credits import add_credit
from imhost.billing.models import LineKind, Subscription, SubscriptionAddOn, SubscriptionStatus
from imhost.billing.periods import (
    ProrationSplit,
    charge_for_part,
    day_start,
    first_boundary_after,
    fmt,
    fmt_date,
    full_period,
    interval_of,
    period_end,
    split_at,
)
from imhost.billing.plans import PlanTerms, check_add_on_fits, load_add_on, load_plan_terms
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput, NotFound

LIVE = (SubscriptionStatus.TRIALING.value, SubscriptionStatus.ACTIVE.value, "paused")


def get_subscription(session: Session, subscription_id: str) -> Subscription:
    sub = session.get(Subscription, subscription_id)
    if sub is None:
        raise NotFound(f"no subscription {subscription_id!r}")
    return sub


def current_subscription(session: Session, organization_id: str) -> Subscription | None:
    """The organization's live subscription (trialing, active or paused), if any."""
    return session.scalar(
        select(Subscription)
        .where(Subscription.organization_id == organization_id, Subscription.status.in_(LIVE))
        .order_by(Subscription.created_at.desc())
    )


def require_subscription(session: Session, organization_id: str) -> Subscription:
    sub = current_subscription(session, organization_id)
    if sub is None:
        raise NotFound("the organization has no subscription")
    return sub


def add_ons_of(session: Session, subscription_id: str) -> dict[str, int]:
    rows = session.scalars(
        select(SubscriptionAddOn)
        .where(SubscriptionAddOn.subscription_id == subscription_id)
        .order_by(SubscriptionAddOn.add_on_id)
    ).all()
    return {r.add_on_id: r.quantity for r in rows}


def _check_add_ons(session: Session, add_ons: dict[str, int], plan: PlanTerms) -> None:
    for add_on_id, quantity in add_ons.items():
        if not 0 <= quantity <= 1000:
            raise InvalidInput("an add-on quantity is 0 to 1000", field="add_ons")
        check_add_on_fits(load_add_on(session, add_on_id), plan)


def refuse_if_closed(session: Session, organization_id: str) -> None:
    """A closed organization pays what it owes and nothing more: no new subscription, plan,
    add-on or resumed period (its invoices stay payable, ``payments``)."""
    org = session.get(Organization, organization_id)
    if org is not None and org.status == OrgStatus.CLOSED.value:
        raise Conflict("this organization is closed: its subscription cannot be changed")


def start_subscription(
    session: Session,
    clock: Clock,
    organization_id: str,
    plan_version_id: str,
    *,
    add_ons: dict[str, int] | None = None,
    anchor_day: int | None = None,
    with_trial: bool = True,
    subscription_id: str | None = None,
    actor: Actor | None = None,
) -> Subscription:
    """Subscribe an organization to a plan version.

    Periods start at 00:00 UTC of the start day. With a trial, the trial is the first period
    and the anchor becomes the trial's last day + 1. Without one, the first period runs to
    the next anchor day (a shorter first period is prorated on the first invoice), and its
    base fee and the setup fee are billed by the next billing run.
    """
    refuse_if_closed(session, organization_id)
    org = session.get(Organization, organization_id)
    if org is None:
        raise NotFound(f"no organization {organization_id!r}", field="organization_id")
    if current_subscription(session, organization_id) is not None:
        raise Conflict("the organization has a subscription already; change its plan instead")
    plan = load_plan_terms(session, plan_version_id)
    iv = interval_of(plan.interval)
    add_ons = {k: v for k, v in (add_ons or {}).items() if v}
    _check_add_ons(session, add_ons, plan)
    now = clock.now()
    start = day_start(now)
    if anchor_day is not None and anchor_day != start.day:
        if not 1 <= anchor_day <= 31:
            raise InvalidInput("the billing anchor is a day of the month, 1 to 31", field="anchor")
        if iv.months == 0:
            raise InvalidInput(
                f"a plan billed {iv.words} is anchored on its start day; "
                "a calendar-aligned plan bills from Mondays",
                field="anchor_day",
            )
        if iv.calendar:
            raise InvalidInput(
                f"a plan billed {iv.description} is anchored on the calendar, not on a day "
                "you choose",
                field="anchor_day",
            )
    trial_end = None
    if with_trial and plan.trial_days > 0:
        trial_end = start + timedelta(days=plan.trial_days)
        status = SubscriptionStatus.TRIALING.value
        anchor = 1 if iv.calendar and iv.months else trial_end.day
        end = trial_end
        next_billing = trial_end
    else:
        status = SubscriptionStatus.ACTIVE.value
        if iv.calendar:
            anchor = 1 if iv.months else start.day
            end = period_end(start, anchor, iv)  # the next calendar boundary
        else:
            anchor = anchor_day or start.day
            end = (
                period_end(start, anchor, iv)
                if anchor == start.day
                else first_boundary_after(start, anchor, iv)
            )
        next_billing = start
    sub = Subscription(
        organization_id=organization_id,
        plan_version_id=plan.plan_version_id,
        currency=plan.currency,
        interval=iv.code,
        status=status,
        billing_anchor_day=anchor,
        started_at=now,
        current_period_start=start,
        current_period_end=end,
        next_billing_at=next_billing,
        trial_end=trial_end,
        created_at=now,
    )
    if subscription_id is not None:
        sub.id = subscription_id
    session.add(sub)
    session.flush()
    for add_on_id, quantity in sorted(add_ons.items()):
        session.add(
            SubscriptionAddOn(
                subscription_id=sub.id, add_on_id=add_on_id, quantity=quantity, created_at=now
            )
        )
    session.flush()
    events.publish(
        session,
        events.SubscriptionChanged(
            at=now,
            organization_id=organization_id,
            plan_id=plan.plan_id,
            plan_version_id=sub.plan_version_id,
            add_ons=add_ons_of(session, sub.id),
        ),
    )
    audit.record(
        session,
        clock,
        actor,
        "subscription_started",
        organization_id=organization_id,
        target_type="subscription",
        target_id=sub.id,
        plan_version_id=sub.plan_version_id,
    )
    return sub


# --- plan changes -----------------------------------------------------------------------


@dataclass(frozen=True)
class ProrationLine:
    description: str
    amount: Decimal
    calculation: str


@dataclass(frozen=True)
class ChangePreview:
    """What a plan change costs now; nothing is applied."""

    subscription_id: str
    from_plan_version_id: str
    to_plan_version_id: str
    at: datetime
    currency: str
    lines: list[ProrationLine]

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))


def _addon_price(session: Session, add_on_id: str) -> tuple[str, Decimal]:
    terms = load_add_on(session, add_on_id)
    return terms.name, terms.price


def preview_change(
    session: Session,
    clock: Clock,
    organization_id: str,
    plan_version_id: str,
    *,
    add_ons: dict[str, int] | None = None,
) -> ChangePreview:
    """The proration lines a change to ``plan_version_id`` (and ``add_ons``) would make now."""
    sub = require_subscription(session, organization_id)
    return _preview(session, clock, sub, plan_version_id, add_ons)


def _preview(
    session: Session,
    clock: Clock,
    sub: Subscription,
    plan_version_id: str,
    add_ons: dict[str, int] | None,
) -> ChangePreview:
    now = clock.now()
    old = load_plan_terms(session, sub.plan_version_id)
    new = load_plan_terms(session, plan_version_id)
    if new.currency != sub.currency:
        raise InvalidInput(
            f"the subscription is billed in {sub.currency}; pick the plan's {sub.currency} "
            f"price book, not {new.currency}",
            field="plan_version_id",
        )
    if interval_of(new.interval) != interval_of(sub.interval):
        raise InvalidInput(
            f"the subscription is billed {interval_of(sub.interval).adjective}; switching to "
            f"{interval_of(new.interval).adjective} is done by cancelling at period end and "
            "subscribing again",
            field="plan_version_id",
        )
    current_add_ons = add_ons_of(session, sub.id)
    wanted = current_add_ons if add_ons is None else {k: v for k, v in add_ons.items() if v}
    _check_add_ons(session, wanted, new)
    if plan_version_id == sub.plan_version_id and wanted == current_add_ons:
        raise InvalidInput("this is the current plan already", field="plan_version_id")
    lines: list[ProrationLine] = []
    prorate = (
        sub.status == SubscriptionStatus.ACTIVE.value
        and sub.period_base_billed
        and sub.current_period_start <= now < sub.current_period_end
    )
    if prorate:
        s, e, cur = sub.current_period_start, sub.current_period_end, sub.currency
        window = f"{fmt_date(now)} to {fmt_date(e)}"

        def piece(label: str, price: Decimal, sign: int) -> None:
            if price == 0:
                return
            split = split_at(price, cur, s, now, e, full=paid_period(sub))
            lines.append(
                ProrationLine(
                    description=f"{label}, {window}",
                    amount=split.unused * sign,
                    calculation=split.unused_calculation(cur),
                )
            )

        if plan_version_id != sub.plan_version_id:
            piece(f"Unused time on {old.plan_name} (credit)", old.base_fee, -1)
            piece(f"Remaining time on {new.plan_name}", new.base_fee, +1)
        for add_on_id in sorted(set(current_add_ons) | set(wanted)):
            delta = wanted.get(add_on_id, 0) - current_add_ons.get(add_on_id, 0)
            if delta == 0:
                continue
            name, price = _addon_price(session, add_on_id)
            if delta < 0:
                piece(f"Unused time on {-delta} × {name} (credit)", price * -delta, -1)
            else:
                piece(f"Remaining time on {delta} × {name}", price * delta, +1)
    return ChangePreview(
        subscription_id=sub.id,
        from_plan_version_id=sub.plan_version_id,
        to_plan_version_id=plan_version_id,
        at=now,
        currency=sub.currency,
        lines=lines,
    )


def change_plan(
    session: Session,
    clock: Clock,
    organization_id: str,
    plan_version_id: str,
    *,
    add_ons: dict[str, int] | None = None,
    changed_by: str | None = None,
    actor: Actor | None = None,
    audit_action: str = "plan_changed",
    audit_details: dict[str, str | int] | None = None,
    proration_tag: str = "change",
) -> ChangePreview:
    """Upgrade or downgrade now; the proration lines wait for the next invoice.

    ``audit_action`` and ``audit_details`` name the change in the audit log when it is not a
    plan change (an add-on added or removed, ``billing.add_ons``); ``proration_tag`` goes
    into the proration lines' references, so two different changes made at the same instant
    are two charges while the same change sent again is one."""
    refuse_if_closed(session, organization_id)
    sub = require_subscription(session, organization_id)
    _lock(session, sub)
    preview = _preview(session, clock, sub, plan_version_id, add_ons)
    for index, line in enumerate(preview.lines):
        add_pending_charge(
            session,
            organization_id,
            line.description,
            line.amount,
            sub.currency,
            source="proration",
            reference=_proration_ref(sub, preview.at, proration_tag, index),
            at=preview.at,
            kind=LineKind.PRORATION.value,
            calculation=line.calculation,
            created_by=changed_by,
            period_start=preview.at,
            period_end=sub.current_period_end,
        )
    if add_ons is not None:
        wanted = {k: v for k, v in add_ons.items() if v}
        for row in session.scalars(
            select(SubscriptionAddOn).where(SubscriptionAddOn.subscription_id == sub.id)
        ):
            session.delete(row)
        session.flush()
        for add_on_id, quantity in sorted(wanted.items()):
            session.add(
                SubscriptionAddOn(
                    subscription_id=sub.id,
                    add_on_id=add_on_id,
                    quantity=quantity,
                    created_at=preview.at,
                )
            )
    if plan_version_id != sub.plan_version_id:
        # Usage until now stays at the old prices (billing.usage_rating).
        repository.record_plan_change(
            session, sub.id, preview.at, sub.plan_version_id, plan_version_id
        )
    sub.plan_version_id = plan_version_id
    session.flush()
    new = load_plan_terms(session, plan_version_id)
    events.publish(
        session,
        events.SubscriptionChanged(
            at=preview.at,
            organization_id=organization_id,
            plan_id=new.plan_id,
            plan_version_id=plan_version_id,
            add_ons=add_ons_of(session, sub.id),
        ),
    )
    audit.record(
        session,
        clock,
        actor,
        audit_action,
        organization_id=organization_id,
        target_type="subscription",
        target_id=preview.subscription_id,
        from_plan_version_id=preview.from_plan_version_id,
        to_plan_version_id=preview.to_plan_version_id,
        proration=str(preview.total),
        **(audit_details or {}),
    )
    return preview


def _proration_ref(sub: Subscription, at: datetime, what: str, index: int) -> str:
    """Identifies a proration line; also its order among charges made at the same moment."""
    return f"{sub.id}:{at:%Y%m%dT%H%M%S.%f}:{what}:{index:03d}"


def paid_period(sub: Subscription) -> tuple[datetime, datetime]:
    """The full period the current period is (a part of): the denominator of its prorations,
    the same as its invoice's (``periods.full_period``)."""
    return full_period(
        sub.current_period_start, sub.current_period_end, sub.billing_anchor_day, sub.interval
    )


def _lock(session: Session, sub: Subscription) -> None:
    session.execute(
        select(Subscription.id).where(Subscription.id == sub.id).with_for_update()
    ).all()
    session.refresh(sub)


# --- cancel, pause, resume --------------------------------------------------------------


def cancel_subscription(
    session: Session,
    clock: Clock,
    organization_id: str,
    *,
    at_period_end: bool = True,
    actor: Actor | None = None,
) -> Subscription:
    """Cancel at the end of the paid period, or at once.

    At once: the unused seconds of the paid period are credited (base fee and add-ons) and
    a final invoice for the usage so far is made by the next billing run; a subscription
    whose first period was not billed yet simply ends.
    """
    sub = require_subscription(session, organization_id)
    _lock(session, sub)
    now = clock.now()
    sub.canceled_at = now
    audit.record(
        session,
        clock,
        actor,
        "subscription_canceled",
        organization_id=organization_id,
        target_type="subscription",
        target_id=sub.id,
        at_period_end=at_period_end,
    )
    if at_period_end:
        sub.cancel_at_period_end = True
        session.flush()
        return sub
    unbilled = sub.next_billing_at == sub.current_period_start
    if sub.status == SubscriptionStatus.TRIALING.value or unbilled:
        _end(session, sub, now)
        return sub
    if now <= sub.current_period_start:
        # Not a second of the paid period was used, and the previous period's usage is on
        # its invoice already: the whole period is credited to the account, nothing is left
        # to invoice.
        if sub.period_base_billed:
            s, e = sub.current_period_start, sub.current_period_end
            for label, price in _period_prices(session, sub):
                paid = charge_for_part(price, sub.currency, s, e, paid_period(sub)).amount
                if paid > 0:
                    add_credit(
                        session,
                        clock,
                        organization_id,
                        paid,
                        sub.currency,
                        kind="cancellation",
                        description=f"{label}, {fmt_date(sub.current_period_start)} to "
                        f"{fmt_date(sub.current_period_end)}, cancelled before it began",
                    )
        _end(session, sub, now)
        return sub
    if sub.period_base_billed and sub.current_period_start <= now < sub.current_period_end:
        e, cur = sub.current_period_end, sub.currency
        for index, label, split in _unused_parts(session, sub, now):
            add_pending_charge(
                session,
                organization_id,
                f"Unused time on {label} (credit), {fmt_date(now)} to {fmt_date(e)}",
                -split.unused,
                cur,
                source="proration",
                reference=_proration_ref(sub, now, "cancel", index),
                at=now,
                kind=LineKind.PRORATION.value,
                calculation=split.unused_calculation(cur),
                period_start=now,
                period_end=e,
            )
    sub.cancel_at_period_end = True
    sub.current_period_end = max(now, sub.current_period_start)
    sub.next_billing_at = sub.current_period_end
    session.flush()
    return sub


@dataclass(frozen=True)
class CancelPreview:
    """What cancelling would do; nothing is applied.

    ``period_end``: when a cancel at the end of the period takes effect. ``now_lines``: the
    credit a cancel at once gives (negative amounts), by the same rule as
    :func:`cancel_subscription`.
    """

    subscription_id: str
    at: datetime
    period_end: datetime
    currency: str
    now_lines: list[ProrationLine]

    @property
    def now_credit(self) -> Decimal:
        return -sum((line.amount for line in self.now_lines), Decimal(0))


def preview_cancel(session: Session, clock: Clock, organization_id: str) -> CancelPreview:
    """The credit :func:`cancel_subscription` would give if it cancelled at once now."""
    sub = require_subscription(session, organization_id)
    now = clock.now()
    s, e, cur = sub.current_period_start, sub.current_period_end, sub.currency
    lines: list[ProrationLine] = []
    unbilled = sub.next_billing_at == sub.current_period_start
    billed = (
        sub.status != SubscriptionStatus.TRIALING.value and not unbilled and sub.period_base_billed
    )
    if billed and now < e:
        at = max(now, s)
        for _, label, split in _unused_parts(session, sub, at):
            lines.append(
                ProrationLine(
                    description=f"Unused time on {label} (credit), {fmt_date(at)} to {fmt_date(e)}",
                    amount=-split.unused,
                    calculation=split.unused_calculation(cur),
                )
            )
    return CancelPreview(
        subscription_id=sub.id, at=now, period_end=e, currency=cur, now_lines=lines
    )


def _period_prices(session: Session, sub: Subscription) -> list[tuple[str, Decimal]]:
    """What a period of ``sub`` charges, by label: the plan's base fee, then each add-on
    (quantity × price)."""
    plan = load_plan_terms(session, sub.plan_version_id)
    prices: list[tuple[str, Decimal]] = [(plan.plan_name, plan.base_fee)]
    for add_on_id, qty in add_ons_of(session, sub.id).items():
        name, price = _addon_price(session, add_on_id)
        prices.append((f"{qty} × {name}", price * qty))
    return prices


def _unused_parts(
    session: Session, sub: Subscription, at: datetime
) -> list[tuple[int, str, ProrationSplit]]:
    """The base fee's and each add-on's unused part of the paid period from ``at`` (index,
    label, split), those worth something: what a cancel at once credits, and what its
    preview shows (one rule for both)."""
    s, e = sub.current_period_start, sub.current_period_end
    parts = []
    for index, (label, price) in enumerate(_period_prices(session, sub)):
        if price == 0:
            continue
        split = split_at(price, sub.currency, s, at, e, full=paid_period(sub))
        if split.unused != 0:
            parts.append((index, label, split))
    return parts


def _end(session: Session, sub: Subscription, at: datetime) -> None:
    sub.status = SubscriptionStatus.CANCELED.value
    sub.ended_at = at
    sub.next_billing_at = None
    session.flush()
    events.publish(
        session,
        events.SubscriptionChanged(at=at, organization_id=sub.organization_id, plan_id=None),
    )


def undo_cancel(
    session: Session, clock: Clock, organization_id: str, *, actor: Actor | None = None
) -> Subscription:
    """Keep a subscription set to end at the end of its period (audited as
    ``billing.subscription_cancel_undone``, by ``actor``)."""
    refuse_if_closed(session, organization_id)
    sub = require_subscription(session, organization_id)
    if not sub.cancel_at_period_end or sub.next_billing_at != sub.current_period_end:
        raise Conflict("the subscription is not set to end at the end of its period")
    if sub.canceled_at is not None and sub.current_period_end == sub.canceled_at:
        raise Conflict("a subscription cancelled at once cannot be resumed; subscribe again")
    sub.cancel_at_period_end = False
    sub.canceled_at = None
    session.flush()
    audit.record(
        session,
        clock,
        actor,
        "subscription_cancel_undone",
        organization_id=organization_id,
        target_type="subscription",
        target_id=sub.id,
    )
    return sub


def pause_subscription(
    session: Session, clock: Clock, organization_id: str, *, actor: Actor | None = None
) -> Subscription:
    """Pause: the paid period runs out, then no base fee or add-on is billed until resumed.

    Usage is still billed. The current paid period is not refunded.
    """
    sub = require_subscription(session, organization_id)
    if sub.status != SubscriptionStatus.ACTIVE.value:
        raise Conflict(f"only an active subscription can be paused (this one is {sub.status})")
    sub.status = SubscriptionStatus.PAUSED.value
    sub.paused_at = clock.now()
    session.flush()
    events.publish(
        session,
        events.SubscriptionChanged(
            at=clock.now(),
            organization_id=organization_id,
            plan_id=load_plan_terms(session, sub.plan_version_id).plan_id,
            plan_version_id=sub.plan_version_id,
            add_ons=add_ons_of(session, sub.id),
        ),
    )
    audit.record(
        session,
        clock,
        actor,
        "subscription_paused",
        organization_id=organization_id,
        target_type="subscription",
        target_id=sub.id,
    )
    return sub


def resume_subscription(
    session: Session, clock: Clock, organization_id: str, *, actor: Actor | None = None
) -> Subscription:
    """Resume a paused subscription; an unbilled current period is charged pro rata."""
    refuse_if_closed(session, organization_id)
    sub = require_subscription(session, organization_id)
    if sub.status != SubscriptionStatus.PAUSED.value:
        raise Conflict("the subscription is not paused")
    _lock(session, sub)
    now = clock.now()
    s, e, cur = sub.current_period_start, sub.current_period_end, sub.currency
    if not sub.period_base_billed and s <= now < e and sub.next_billing_at == e:
        for index, (label, price) in enumerate(_period_prices(session, sub)):
            if price == 0:
                continue
            split = split_at(price, cur, s, now, e, full=paid_period(sub))
            if split.unused == 0:
                continue
            add_pending_charge(
                session,
                organization_id,
                f"{label} from resumption, {fmt_date(now)} to {fmt_date(e)}",
                split.unused,
                cur,
                source="proration",
                reference=_proration_ref(sub, now, "resume", index),
                at=now,
                kind=LineKind.PRORATION.value,
                calculation=split.unused_calculation(cur),
                period_start=now,
                period_end=e,
            )
        sub.period_base_billed = True
    sub.status = SubscriptionStatus.ACTIVE.value
    sub.paused_at = None
    session.flush()
    events.publish(
        session,
        events.SubscriptionChanged(
            at=now,
            organization_id=organization_id,
            plan_id=load_plan_terms(session, sub.plan_version_id).plan_id,
            plan_version_id=sub.plan_version_id,
            add_ons=add_ons_of(session, sub.id),
        ),
    )
    audit.record(
        session,
        clock,
        actor,
        "subscription_resumed",
        organization_id=organization_id,
        target_type="subscription",
        target_id=sub.id,
    )
    return sub


def describe_amount(amount: Decimal, currency: str) -> str:
    return f"{fmt(amount, currency)} {currency}"
