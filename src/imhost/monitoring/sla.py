"""Service levels per plan and SLA credits.

When a billing period has closed, the uptime of each of the organization's hosted services
over that period is measured from state changes (maintenance excluded). Below the plan's
target, the credit schedule gives a share of the period's base fee; it is recorded as a
pending credit (source ``sla``) that the billing run puts on the next invoice. The pending
charge is keyed by service and period, so a rerun or a second node records it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import audit
from imhost.accounts.audit import Actor
from imhost.billing.charges import add_pending_charge
from imhost.billing.models import LineKind, PendingCharge, Subscription, SubscriptionStatus
from imhost.billing.periods import fmt, period_before
from imhost.billing.plans import load_plan_terms
from imhost.catalog.models import Plan
from imhost.db.engine import transaction
from imhost.hosting.models import HostedService
from imhost.kit.clock import Clock
from imhost.kit.errors import InvalidInput, NotFound
from imhost.kit.money import round_minor

from . import service as monitoring
from .models import PlanSla
from .runner import service_subject

HUNDRED = Decimal(100)


def _plain(value: Decimal) -> str:
    """99.90 -> 99.9, 10 -> 10 (never 1E+1)."""
    return f"{value.normalize():f}"


def _percent(text: str | Decimal, what: str) -> Decimal:
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise InvalidInput(f"{what} must be a number such as 99.9.") from None
    if not value.is_finite() or not Decimal(0) < value <= HUNDRED:
        raise InvalidInput(f"{what} must be above 0 and at most 100.")
    return value


def set_plan_sla(
    session: Session,
    clock: Clock,
    plan_id: str,
    *,
    target_percent: str | Decimal,
    credits: Sequence[tuple[str | Decimal, str | Decimal]],
    probe_interval_seconds: int | None = None,
    actor: Actor,
) -> PlanSla:
    """Set a plan's SLA: e.g. 99.9 with credits [(99.9, 10), (99, 25)]."""
    if session.get(Plan, plan_id) is None:
        raise NotFound("There is no such plan.")
    target = _percent(target_percent, "The promised uptime")
    tiers = []
    for below, share in credits:
        tiers.append(
            [str(_percent(below, "An uptime threshold")), str(_percent(share, "A credit"))]
        )
    if any(Decimal(below) > target for below, _ in tiers):
        raise InvalidInput("A credit threshold cannot be above the promised uptime.")
    if probe_interval_seconds is not None and probe_interval_seconds < 10:
        raise InvalidInput("Probes run at most every 10 seconds.")
    sla = session.get(PlanSla, plan_id) or PlanSla(plan_id=plan_id)
    sla.target_percent = target
    sla.credits = sorted(tiers, key=lambda t: Decimal(t[0]), reverse=True)
    sla.probe_interval_seconds = probe_interval_seconds
    session.add(sla)
    session.flush()
    audit.record(
        session,
        clock,
        "plan.sla_changed",
        actor=actor,
        target_type="plan",
        target_id=plan_id,
        target_percent=str(target),
        credits=sla.credits,
    )
    return sla


def credit_share(sla: PlanSla, uptime_percent: Decimal) -> Decimal:
    """The share of the fee credited (percent) for a measured uptime: the largest credit
    whose threshold the uptime is under; zero when the target is met."""
    if uptime_percent >= sla.target_percent:
        return Decimal(0)
    shares = [Decimal(share) for below, share in sla.credits if uptime_percent < Decimal(below)]
    return max(shares, default=Decimal(0))


@dataclass(frozen=True)
class SlaOutcome:
    service_id: str
    domain: str
    uptime_percent: Decimal
    minutes_down: int
    incidents: list[str]
    credit: Decimal
    charge: PendingCharge | None


def credit_period(
    session: Session,
    clock: Clock,
    subscription: Subscription,
    start: datetime,
    end: datetime,
) -> list[SlaOutcome]:
    """Measure each service of the subscription's organization over ``[start, end)`` and
    record the SLA credits due (once per service and period)."""
    terms = load_plan_terms(session, subscription.plan_version_id)
    sla = session.get(PlanSla, terms.plan_id)
    if sla is None or terms.base_fee <= 0:
        return []
    outcomes = []
    services = session.scalars(
        select(HostedService)
        .where(HostedService.organization_id == subscription.organization_id)
        .order_by(HostedService.domain)
    ).all()
    for svc in services:
        begin = max(start, svc.created_at)
        if begin >= end:
            continue
        subject = service_subject(svc.id)
        measured = monitoring.subject_uptime(session, subject, begin, end)
        percent = measured.percent
        share = credit_share(sla, percent)
        refs = [i.reference for i in monitoring.incidents_between(session, subject, begin, end)]
        charge = None
        amount = round_minor(terms.base_fee * share / HUNDRED, terms.currency)
        if amount > 0:
            incidents = ", ".join(refs) if refs else "none recorded"
            description = (
                f"SLA credit for {svc.domain}: {percent} % uptime measured, "
                f"{_plain(sla.target_percent)} % promised"
            )
            calculation = (
                f"{measured.minutes_down} minutes down from {begin:%Y-%m-%d %H:%M} to "
                f"{end:%Y-%m-%d %H:%M} UTC (planned maintenance not counted); incidents: "
                f"{incidents}; {_plain(share)} % of the base fee "
                f"{fmt(terms.base_fee, terms.currency)} {terms.currency} = "
                f"{fmt(amount, terms.currency)} {terms.currency}"
            )
            charge = add_pending_charge(
                session,
                subscription.organization_id,
                description,
                -amount,
                terms.currency,
                source="sla",
                reference=f"{svc.id}:{start:%Y%m%dT%H%M}",
                clock=clock,
                kind=LineKind.DISCOUNT.value,
                calculation=calculation,
                reason="service level not met",
                period_start=begin,
                period_end=end,
            )
        outcomes.append(
            SlaOutcome(svc.id, svc.domain, percent, measured.minutes_down, refs, amount, charge)
        )
    return outcomes


def scheduled_sla_credits(factory: sessionmaker[Session], clock: Clock) -> int:
    """For every subscription whose previous period has closed, record its SLA credits.
    Idempotent: run it as often as you like."""
    now = clock.now()
    with factory() as session:
        rows = session.execute(
            select(Subscription.id).where(
                Subscription.status != SubscriptionStatus.PAUSED.value,
                Subscription.current_period_start > Subscription.started_at,
                Subscription.current_period_start <= now,
            )
        ).all()
    recorded = 0
    for (subscription_id,) in rows:
        with transaction(factory, write=True) as session:
            sub = session.get(Subscription, subscription_id)
            if sub is None:
                continue
            end = sub.current_period_start
            start = max(period_before(end, sub.billing_anchor_day, sub.interval), sub.started_at)
            recorded += sum(1 for o in credit_period(session, clock, sub, start, end) if o.charge)
    return recorded
