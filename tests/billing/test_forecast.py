"""The forecast of the next invoice equals, to the cent, the invoice the billing run makes at
the period's end when usage continues at the same pace (trial or not, setup fee, one-off
charges, tax at the customer's rate, account credit)."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.billing import service
from imhost.billing.flows import run_billing
from imhost.billing.forecast import InvoiceForecast, forecast_invoice
from imhost.billing.models import Invoice, InvoiceLine
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc

from .factories import add_usage, make_org, make_plan, messages_per_unit


def _customer(factory: sessionmaker[Session], clock: FrozenClock, *, trial_days: int = 0) -> str:
    with transaction(factory) as s:
        service.set_tax_rate(s, clock, "DE", "19")
        org = make_org(s, clock, org_id="o1", country="DE")
        pv = make_plan(
            s,
            clock,
            base_fee="19.00",
            setup_fee="10.00",
            trial_days=trial_days,
            components=[messages_per_unit("0.001", included="1000")],
        )
        service.start_subscription(s, clock, org.id, pv.id, subscription_id="s1")
        return org.id


def _forecast(factory: sessionmaker[Session], clock: FrozenClock) -> InvoiceForecast:
    with factory() as s:
        fc = forecast_invoice(s, clock, "o1")
    assert fc is not None
    return fc


def _invoice_at(factory: sessionmaker[Session], at: object) -> tuple[Invoice, list[InvoiceLine]]:
    with factory() as s:
        invoice = s.scalars(select(Invoice).where(Invoice.period_start == at)).one()
        return invoice, service.invoice_lines(s, invoice.id)


def _same(fc: InvoiceForecast, invoice: Invoice, lines: list[InvoiceLine]) -> None:
    assert fc.total == invoice.total
    assert fc.tax_total == invoice.tax_total
    assert fc.subtotal == invoice.subtotal
    assert [(x.kind, x.amount, x.calculation) for x in fc.lines] == [
        (x.kind, x.amount, x.calculation) for x in lines
    ]


def test_the_first_invoice_is_forecast_with_its_setup_fee_and_tax(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    _customer(session_factory, clock)
    fc = _forecast(session_factory, clock)
    # The reported case: 19.00 base fee + 10.00 setup fee + 19 % tax, not 19.00.
    assert fc.total == Decimal("34.51") and not fc.in_trial
    run_billing(session_factory, clock, clock.now())
    _same(fc, *_invoice_at(session_factory, utc(2026, 11, 1)))


def test_mid_period_forecast_equals_the_invoice_at_the_period_end(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    _customer(session_factory, clock)
    run_billing(session_factory, clock, clock.now())  # the opening invoice, setup fee paid
    clock.set(utc(2026, 11, 16))  # half of November
    with transaction(session_factory) as s:
        add_usage(s, clock, "o1", utc(2026, 11, 3, 10), 30_000)
        service.add_one_off_charge(
            s,
            clock,
            "o1",
            description="Migration of 40 accounts",
            amount="25.00",
            currency="EUR",
            reason="agreed by phone",
            created_by="staff@provider.example",
        )
        service.add_credit(
            s, clock, "o1", Decimal("5.00"), "EUR", kind="goodwill", description="goodwill"
        )
    fc = _forecast(session_factory, clock)
    assert fc.invoice_at == utc(2026, 12, 1) and fc.usage_billed
    assert fc.projection.projected["messages"] == 60_000
    # 59,000 billable messages at 0.001 + the base fee of December + the one-off charge,
    # then 19 % tax; no setup fee (billed on the first invoice).
    net = Decimal("59.00") + Decimal("19.00") + Decimal("25.00")
    assert fc.total == net + Decimal("19.57")
    assert not any(line.kind == "setup_fee" for line in fc.lines)
    assert fc.credit_applied == Decimal("5.00") and fc.amount_due == fc.total - 5

    clock.set(utc(2026, 11, 30))
    with transaction(session_factory) as s:  # the same pace in the second half
        add_usage(s, clock, "o1", utc(2026, 11, 20, 10), 30_000)
    clock.set(utc(2026, 12, 1, 0, 30))
    run_billing(session_factory, clock, clock.now())
    invoice, lines = _invoice_at(session_factory, utc(2026, 12, 1))
    _same(fc, invoice, lines)
    assert invoice.amount_due == fc.amount_due


def test_during_a_trial_usage_is_free_and_the_first_paid_invoice_is_forecast(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    _customer(session_factory, clock, trial_days=14)
    clock.set(utc(2026, 11, 8))
    with transaction(session_factory) as s:
        add_usage(s, clock, "o1", utc(2026, 11, 2, 10), 900_000)  # free in the trial
    fc = _forecast(session_factory, clock)
    assert fc.in_trial and fc.trial_end == utc(2026, 11, 15)
    assert fc.invoice_at == utc(2026, 11, 15) and not fc.usage_billed
    assert fc.projection.projected["messages"] == 1_800_000  # shown, not charged
    assert fc.total == Decimal("34.51")  # base fee + setup fee + tax, no usage
    assert not any(line.kind == "usage" for line in fc.lines)
    clock.set(utc(2026, 11, 15, 0, 5))
    run_billing(session_factory, clock, clock.now())
    _same(fc, *_invoice_at(session_factory, utc(2026, 11, 15)))


def test_no_subscription_no_forecast(session_factory: sessionmaker[Session]) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    with transaction(session_factory) as s:
        make_org(s, clock, org_id="o1")
    with session_factory() as s:
        assert forecast_invoice(s, clock, "o1") is None
