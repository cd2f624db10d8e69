"""SLA credits: the uptime over a closed billing period, from state changes with maintenance
excluded, turns into one exact credit line on the next invoice."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.audit import Actor
from imhost.billing import service as billing
from imhost.billing.flows import run_billing
from imhost.billing.models import Invoice, InvoiceLine, PendingCharge
from imhost.db.engine import transaction
from imhost.hosting import service as hosting
from imhost.kit.clock import FrozenClock, utc
from imhost.kit.errors import InvalidInput
from imhost.monitoring import rules, sla
from imhost.monitoring import service as monitoring
from imhost.monitoring.models import PlanSla
from imhost.monitoring.probes import ProbeResult, Step
from imhost.monitoring.runner import service_subject
from tests.billing.factories import make_org, make_plan

STAFF = Actor(label="ops@provider.test")
POLICY = rules.Policy(down_after=1, up_after=1)


def _probe(session: Session, clock: FrozenClock, subject: str, ok: bool, at: datetime) -> None:
    clock.set(at)
    step = Step("connect", ok, 0.003, "" if ok else "the connection was refused")
    monitoring.record_result(
        session, clock, subject, "xmpp-starttls", ProbeResult("x", [step]), policy=POLICY
    )


def test_a_breach_credits_the_next_invoice_exactly_once(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    clock.set(utc(2026, 3, 1))
    with transaction(session_factory) as s:
        org = make_org(s, clock)
        pv = make_plan(s, clock, base_fee="49.00")
        sla.set_plan_sla(
            s,
            clock,
            pv.plan_id,
            target_percent="99.9",
            credits=[("99.9", "10"), ("99", "25")],
            actor=STAFF,
        )
        billing.start_subscription(s, clock, org.id, pv.id, anchor_day=1, with_trial=False)
        svc = hosting.create_service(s, clock, org, base_domain="im.test", domain="acme.example")
        subject = service_subject(svc.id)
        org_id = org.id
        # March (44640 min): down 10:00-11:00 on the 5th (60 min) and 02:00-02:40 on the 9th,
        # 30 of those 40 minutes in a planned maintenance window.
        _probe(s, clock, subject, True, utc(2026, 3, 1, 0, 1))
        _probe(s, clock, subject, False, utc(2026, 3, 5, 10))
        _probe(s, clock, subject, True, utc(2026, 3, 5, 11))
        monitoring.create_maintenance(
            s,
            clock,
            title="Upgrade",
            subjects=[subject],
            timezone="UTC",
            local_start=datetime(2026, 3, 9, 2, 10),
            duration_minutes=60,
            actor=STAFF,
        )
        _probe(s, clock, subject, False, utc(2026, 3, 9, 2))
        _probe(s, clock, subject, True, utc(2026, 3, 9, 2, 40))
        monitoring.settle_incidents(s, clock)
        clock.set(utc(2026, 3, 31, 23, 59))
    # The period closes; the billing run moves the subscription on, then the SLA job runs.
    clock.set(utc(2026, 4, 1, 0, 5))
    run_billing(session_factory, clock, clock.now())
    assert sla.scheduled_sla_credits(session_factory, clock) == 1
    assert sla.scheduled_sla_credits(session_factory, clock) == 1  # the same charge again
    with session_factory() as s:
        [charge] = s.scalars(select(PendingCharge).where(PendingCharge.source == "sla")).all()
        # measured: 44640 - 60 = 44580 minutes; down 60 + 10 = 70; (44580-70)/44580 = 99.842 %
        assert charge.amount == Decimal("-4.90")  # 10 % of 49.00
        assert charge.description == (
            "SLA credit for acme.example: 99.842 % uptime measured, 99.9 % promised"
        )
        assert charge.calculation.startswith("70 minutes down from 2026-03-01 00:00 to 2026-04-01")
        assert charge.calculation.endswith("10 % of the base fee 49.00 EUR = 4.90 EUR")
        assert "INC-" in charge.calculation
    clock.set(utc(2026, 5, 1, 0, 5))
    run_billing(session_factory, clock, clock.now())
    with session_factory() as s:
        may = s.scalars(
            select(Invoice).where(Invoice.organization_id == org_id).order_by(Invoice.created_at)
        ).all()[-1]
        lines = s.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == may.id)).all()
        credit = [ln for ln in lines if ln.description.startswith("SLA credit")]
        assert len(credit) == 1 and credit[0].amount == Decimal("-4.90")
    assert sla.scheduled_sla_credits(session_factory, clock) == 0  # April: no downtime


def test_credit_schedule_and_validation(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    with transaction(session_factory) as s:
        pv = make_plan(s, clock)
        row = sla.set_plan_sla(
            s,
            clock,
            pv.plan_id,
            target_percent="99.95",
            credits=[("99", "25"), ("99.95", "10"), ("95", "50")],
            actor=STAFF,
        )
        assert sla.credit_share(row, Decimal("99.950")) == 0
        assert sla.credit_share(row, Decimal("99.949")) == 10
        assert sla.credit_share(row, Decimal("98.999")) == 25
        assert sla.credit_share(row, Decimal("12")) == 50
        for bad in ("abc", "101", "0", "NaN"):
            with pytest.raises(InvalidInput):
                sla.set_plan_sla(s, clock, pv.plan_id, target_percent=bad, credits=[], actor=STAFF)
        with pytest.raises(InvalidInput):
            sla.set_plan_sla(
                s, clock, pv.plan_id, target_percent="99", credits=[("99.5", "10")], actor=STAFF
            )
        assert s.get(PlanSla, pv.plan_id) is not None
