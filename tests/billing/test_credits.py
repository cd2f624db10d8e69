"""Coupons, payments, credit notes, refunds, numbering and late fees."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.billing import service
from imhost.billing.flows import run_billing
from imhost.billing.models import BillingProfile, CreditNote, Invoice, Refund
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.kit.errors import Conflict, InvalidInput, NotFound

from .factories import make_org, make_plan


def _subscribed(factory: sessionmaker[Session], clock: FrozenClock, base_fee: str = "50.00") -> str:
    with transaction(factory) as s:
        org = make_org(s, clock, org_id="c1", country="US")
        pv = make_plan(s, clock, base_fee=base_fee)
        service.start_subscription(s, clock, org.id, pv.id)
    return "c1"


def _totals(factory: sessionmaker[Session]) -> list[Decimal]:
    with factory() as s:
        return list(s.scalars(select(Invoice.total).order_by(Invoice.issued_at)))


@pytest.mark.parametrize(
    ("duration", "periods", "expected"),
    [
        ("once", None, ["50.00", "50.00", "50.00", "50.00"]),
        ("repeating", 2, ["40.00", "50.00", "50.00", "50.00"]),
        ("forever", None, ["40.00", "40.00", "40.00", "40.00"]),
    ],
)
def test_a_coupon_applies_for_its_duration(
    session_factory: sessionmaker[Session],
    duration: str,
    periods: int | None,
    expected: list[str],
) -> None:
    clock = FrozenClock(utc(2026, 10, 20))
    with transaction(session_factory) as s:
        service.create_coupon(
            s,
            clock,
            code="save20",
            kind="percent",
            percent_off="20",
            duration=duration,
            duration_periods=periods,
        )
    clock.set(utc(2026, 10, 31, 12))
    with transaction(session_factory) as s:
        org = make_org(s, clock, org_id="c1", country="US")
        pv = make_plan(s, clock, base_fee="50.00")
        service.start_subscription(s, clock, org.id, pv.id, anchor_day=1)
        service.apply_coupon(s, clock, "c1", "SAVE20")
    clock.set(utc(2027, 2, 1, 1))
    run_billing(session_factory, clock, clock.now())
    # Every coupon applies first to the short first day of October: 50.00 x 1/31 = 1.61,
    # 20 % off = 0.32, so 1.29; "once" ends there, "repeating 2" applies once more.
    assert _totals(session_factory) == [Decimal("1.29")] + [Decimal(x) for x in expected]


def test_coupon_limits_and_currency_are_enforced(session_factory: sessionmaker[Session]) -> None:
    clock = FrozenClock(utc(2026, 11, 1))
    with transaction(session_factory) as s:
        service.create_coupon(
            s, clock, code="ONE", kind="amount", amount_off="5", currency="USD", duration="once"
        )
        service.create_coupon(
            s,
            clock,
            code="SOLO",
            kind="percent",
            percent_off="10",
            duration="once",
            max_redemptions=1,
        )
        with pytest.raises(InvalidInput, match="currency"):
            service.create_coupon(
                s, clock, code="X", kind="amount", amount_off="5", duration="once"
            )
        with pytest.raises(InvalidInput, match="percent_off"):
            service.create_coupon(
                s, clock, code="Y", kind="percent", percent_off="120", duration="once"
            )
        a = make_org(s, clock, org_id="a")
        b = make_org(s, clock, org_id="b")
        pv = make_plan(s, clock)
        service.start_subscription(s, clock, a.id, pv.id)
        service.start_subscription(s, clock, b.id, pv.id)
        with pytest.raises(InvalidInput, match="USD"):
            service.apply_coupon(s, clock, "a", "ONE")
        service.apply_coupon(s, clock, "a", "SOLO")
        with pytest.raises(Conflict, match="fully redeemed"):
            service.apply_coupon(s, clock, "b", "SOLO")
        with pytest.raises(NotFound):
            service.apply_coupon(s, clock, "b", "NOPE")


def test_partial_payments_then_an_overpayment_turn_the_rest_into_credit(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    _subscribed(session_factory, clock)
    run_billing(session_factory, clock, clock.now())
    with transaction(session_factory) as s:
        inv = s.scalars(select(Invoice)).one()
        service.record_payment(s, clock, inv.id, amount="20.00", currency="EUR")
        assert inv.status == "open" and inv.amount_due == Decimal("30.00")
        service.record_payment(s, clock, inv.id, amount="35.00", currency="EUR")
        assert inv.status == "paid" and inv.amount_due == 0
        assert service.credit_balance(s, "c1", "EUR") == Decimal("5.00")
        with pytest.raises(InvalidInput):
            service.record_payment(s, clock, inv.id, amount="-1", currency="EUR")
        with pytest.raises(InvalidInput, match="decimals"):
            service.record_payment(s, clock, inv.id, amount="1.001", currency="EUR")
    # The credit pays part of the next invoice by itself.
    clock.set(utc(2026, 12, 1, 1))
    run_billing(session_factory, clock, clock.now())
    with session_factory() as s:
        nxt = s.scalars(select(Invoice).where(Invoice.period_start == utc(2026, 12, 1))).one()
        assert nxt.amount_paid == Decimal("5.00") and nxt.amount_due == Decimal("45.00")
        assert service.credit_balance(s, "c1", "EUR") == 0


def test_a_full_credit_note_on_a_paid_invoice_becomes_credit_and_can_be_refunded(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    _subscribed(session_factory, clock)
    run_billing(session_factory, clock, clock.now())
    with transaction(session_factory) as s:
        inv = s.scalars(select(Invoice)).one()
        payment = service.record_payment(s, clock, inv.id, amount="50.00", currency="EUR")
        note = service.issue_credit_note(s, clock, inv.id, reason="service outage")
        assert note.number == "CN-2026-000001"
        assert note.total == Decimal("50.00") and note.to_credit == Decimal("50.00")
        assert service.credit_balance(s, "c1", "EUR") == Decimal("50.00")
        with pytest.raises(Conflict, match="fully credited"):
            service.issue_credit_note(s, clock, inv.id, reason="again")
        service.refund_credit(s, clock, payment.id, amount="30.00", reason="customer asked")
        assert service.credit_balance(s, "c1", "EUR") == Decimal("20.00")
        with pytest.raises(InvalidInput, match=r"at most 20\.00 EUR"):
            service.refund_credit(s, clock, payment.id, amount="20.01", reason="too much")
        assert s.scalars(select(Refund)).one().amount == Decimal("30.00")


def test_a_credit_note_per_line_on_an_unpaid_invoice_reduces_what_is_due(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    with transaction(session_factory) as s:
        service.set_tax_rate(s, clock, "DE", "19")
        org = make_org(s, clock, org_id="c1", country="DE")
        pv = make_plan(s, clock, base_fee="50.00")
        service.start_subscription(s, clock, org.id, pv.id)
    run_billing(session_factory, clock, clock.now())
    with transaction(session_factory) as s:
        inv = s.scalars(select(Invoice)).one()
        assert inv.total == Decimal("59.50")
        base = service.invoice_lines(s, inv.id)[0]
        note = service.issue_credit_note(
            s, clock, inv.id, reason="half month of downtime", lines={base.id: "25.00"}
        )
        assert note.total == Decimal("29.75")  # 25.00 + 19 % tax on it
        assert inv.amount_due == Decimal("29.75")
        assert service.credit_balance(s, "c1", "EUR") == 0
        with pytest.raises(InvalidInput, match="left to credit"):
            service.issue_credit_note(s, clock, inv.id, reason="x", lines={base.id: "25.01"})
        tax_line = service.invoice_lines(s, inv.id)[-1]
        with pytest.raises(InvalidInput, match="not a creditable line"):
            service.issue_credit_note(s, clock, inv.id, reason="x", lines={tax_line.id: "1"})
        assert len(s.scalars(select(CreditNote)).all()) == 1


def test_numbers_are_gapless_per_year_in_the_providers_format(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    with transaction(session_factory) as s:
        service.update_profile(s, clock, invoice_number_format="ACME/{year}/{seq:04d}")
        with pytest.raises(InvalidInput):
            service.update_profile(s, clock, invoice_number_format="INV-{year}-{customer}")
        with pytest.raises(InvalidInput):
            service.update_profile(s, clock, invoice_number_format="INV-{year}")
    _subscribed(session_factory, clock)
    run_billing(session_factory, clock, utc(2027, 3, 1, 1))
    with session_factory() as s:
        numbers = s.scalars(select(Invoice.number).order_by(Invoice.issued_at)).all()
    assert numbers == [
        "ACME/2026/0001",
        "ACME/2026/0002",
        "ACME/2027/0001",
        "ACME/2027/0002",
        "ACME/2027/0003",
    ]


def test_late_fees_take_a_percentage_with_a_minimum_or_a_flat_amount() -> None:
    profile = BillingProfile(
        late_fee_percent=Decimal("5"), late_fee_minimum=Decimal("5.00"), late_fee_flat=None
    )
    small = service.late_fee(profile, Decimal("40.00"), "EUR")
    assert small.amount == Decimal("5.00")
    assert small.calculation == "5 % of 40.00 = 2.00, below the minimum of 5.00: 5.00"
    large = service.late_fee(profile, Decimal("250.10"), "EUR")
    assert large.amount == Decimal("12.51")  # 12.505 rounds half up
    flat = BillingProfile(late_fee_flat=Decimal("7.50"), late_fee_minimum=Decimal(0))
    assert service.late_fee(flat, Decimal("1000"), "EUR").amount == Decimal("7.50")


def test_void_keeps_the_number_and_releases_its_pending_charges(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 10, 31, 9))
    _subscribed(session_factory, clock)
    with transaction(session_factory) as s:
        service.add_one_off_charge(
            s,
            clock,
            "c1",
            description="Data import",
            amount="80.00",
            currency="EUR",
            reason="migration",
            created_by="staff@x",
        )
    clock.set(utc(2026, 11, 30, 1))
    run_billing(session_factory, clock, clock.now())
    with transaction(session_factory) as s:
        inv = s.scalars(select(Invoice).where(Invoice.period_start == utc(2026, 11, 30))).one()
        assert [x.kind for x in service.invoice_lines(s, inv.id)][:2] == ["base_fee", "one_off"]
        service.void_invoice(s, clock, inv.id, "wrong import price")
        assert inv.status == "void" and inv.number == "INV-2026-000002"
        assert [c.amount for c in service.list_pending_charges(s, "c1")] == [Decimal("80.00")]
        with pytest.raises(Conflict):
            service.record_payment(s, clock, inv.id, amount="1.00", currency="EUR")
