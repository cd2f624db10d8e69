"""The billing run: one invoice per period, gapless numbers, idempotent and resumable."""

from __future__ import annotations

import random
import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.billing import service
from imhost.billing.flows import run_billing
from imhost.billing.models import Invoice, InvoiceLine, Subscription
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc

from .factories import add_usage, make_org, make_plan, messages_per_unit


def _setup_customer(
    factory: sessionmaker[Session], clock: FrozenClock, *, org_id: str, sub_id: str
) -> None:
    with transaction(factory) as s:
        service.set_tax_rate(s, clock, "DE", "19")
        org = make_org(s, clock, name=f"Org {org_id}", org_id=org_id)
        pv = make_plan(s, clock, components=[messages_per_unit("0.001", included="1000")])
        service.start_subscription(s, clock, org.id, pv.id, subscription_id=sub_id)


def test_first_run_bills_the_opening_period_in_advance(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    _setup_customer(session_factory, clock, org_id="o1", sub_id="s1")
    summary = run_billing(session_factory, clock, clock.now())
    assert summary.invoices == 1 and summary.ok
    with session_factory() as s:
        invoice = s.scalars(select(Invoice)).one()
        lines = service.invoice_lines(s, invoice.id)
    assert invoice.number == "INV-2026-000001"
    assert [line.kind for line in lines] == ["base_fee", "tax"]
    assert lines[0].calculation == "base fee Business monthly 2026-11-01 to 2026-12-01 = 49.00"
    assert lines[1].calculation == "19 % of 49.00 = 9.31"
    assert invoice.total == Decimal("58.31")
    assert invoice.period_start == utc(2026, 11, 1) and invoice.period_end == utc(2026, 12, 1)


def test_period_end_bills_usage_in_arrears_and_next_base_fee_in_advance(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    _setup_customer(session_factory, clock, org_id="o1", sub_id="s1")
    run_billing(session_factory, clock, clock.now())
    clock.set(utc(2026, 11, 20))
    with transaction(session_factory) as s:
        add_usage(s, clock, "o1", utc(2026, 11, 10, 12), 3500)
    clock.set(utc(2026, 12, 1, 0, 30))
    summary = run_billing(session_factory, clock, clock.now())
    assert summary.invoices == 1
    with session_factory() as s:
        invoice = s.scalars(select(Invoice).where(Invoice.period_start == utc(2026, 12, 1))).one()
        lines = service.invoice_lines(s, invoice.id)
        sub = s.get(Subscription, "s1")
        assert sub is not None
    usage = [line for line in lines if line.kind == "usage"]
    assert len(usage) == 1 and usage[0].metric == "messages"
    assert usage[0].amount == Decimal("2.50")  # (3500 - 1000 included) x 0.001
    assert usage[0].period_start == utc(2026, 11, 1) and usage[0].period_end == utc(2026, 12, 1)
    assert invoice.number == "INV-2026-000002"
    assert invoice.total == Decimal("51.50") + Decimal("9.79")
    assert sub.current_period_start == utc(2026, 12, 1)
    assert sub.next_billing_at == utc(2027, 1, 1)


def test_running_twice_makes_no_second_invoice(session_factory: sessionmaker[Session]) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    _setup_customer(session_factory, clock, org_id="o1", sub_id="s1")
    first = run_billing(session_factory, clock, utc(2027, 2, 1))
    second = run_billing(session_factory, clock, utc(2027, 2, 1))
    assert first.invoices == 4  # Nov (opening), Dec, Jan, Feb
    assert second.invoices == 0
    with session_factory() as s:
        numbers = s.scalars(select(Invoice.number).order_by(Invoice.number)).all()
    assert numbers == ["INV-2026-000001", "INV-2026-000002", "INV-2027-000001", "INV-2027-000002"]


INVOICE_FIELDS = (
    "number",
    "status",
    "currency",
    "period_start",
    "period_end",
    "usage_period_start",
    "usage_period_end",
    "issued_at",
    "due_at",
    "subtotal",
    "tax_total",
    "total",
    "amount_paid",
    "tax_note",
)


class Crash(BaseException):
    """A simulated kill: not an Exception, so nothing in the run catches it."""


def _snapshot(factory: sessionmaker[Session]) -> list[dict[str, Any]]:
    with factory() as s:
        out = []
        for inv in s.scalars(select(Invoice).order_by(Invoice.number)):
            lines = s.scalars(
                select(InvoiceLine)
                .where(InvoiceLine.invoice_id == inv.id)
                .order_by(InvoiceLine.position)
            ).all()
            out.append(
                {
                    "org": inv.organization_id,
                    "sub": inv.subscription_id,
                    **{c: getattr(inv, c) for c in INVOICE_FIELDS},
                    "lines": [
                        (
                            ln.position,
                            ln.kind,
                            ln.description,
                            ln.calculation,
                            ln.quantity,
                            ln.amount,
                            ln.metric,
                        )
                        for ln in lines
                    ],
                }
            )
        return out


def _world(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    for i in range(4):
        _setup_customer(factory, clock, org_id=f"org{i}", sub_id=f"sub{i}")
        clock.advance(timedelta(days=3))
    clock.set(utc(2026, 12, 20))
    with transaction(factory) as s:
        for i in range(4):
            add_usage(s, clock, f"org{i}", utc(2026, 11, 15 + i), 1500 + 250 * i)
            add_usage(s, clock, f"org{i}", utc(2026, 12, 15 + i), 2000 + 100 * i)
            service.add_one_off_charge(
                s,
                clock,
                f"org{i}",
                description="Migration help",
                amount="20.00",
                currency="EUR",
                reason="imported the old server",
                created_by="staff@provider.example",
            )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_run_killed_at_a_random_point_and_rerun_matches_an_uninterrupted_run(
    session_factory: sessionmaker[Session], seed: int
) -> None:
    as_of = utc(2027, 2, 10)
    clock = FrozenClock(utc(2026, 11, 1, 9))
    _world(session_factory, clock)
    run_billing(session_factory, clock, as_of)
    expected = _snapshot(session_factory)
    assert len(expected) >= 12

    # Same world again, from an empty database.
    _wipe(session_factory)
    clock = FrozenClock(utc(2026, 11, 1, 9))
    _world(session_factory, clock)
    rng = random.Random(seed)
    points = [
        "lines_drafted",
        "draft_written",
        "finalized",
        "credit_applied",
        "period_closed",
        "advanced",
        "before_commit",
    ]
    crashes = 0
    for _ in range(50):
        target_calls = rng.randint(1, 40)
        calls = {"n": 0}

        def fault(point: str, calls: dict[str, int] = calls, target: int = target_calls) -> None:
            assert point in points
            calls["n"] += 1
            if calls["n"] == target:
                raise Crash(point)

        try:
            # Small blocks, so that a kill lands inside a block as well as between blocks
            # (a kill loses the block in flight); the uninterrupted run above used one block.
            run_billing(session_factory, clock, as_of, fault=fault, block_size=3)
        except Crash:
            crashes += 1
            continue
        break
    assert crashes >= 1
    assert _snapshot(session_factory) == expected


def _wipe(factory: sessionmaker[Session]) -> None:
    from imhost.db.registry import load_models

    metadata = load_models()
    with transaction(factory) as s:
        for table in reversed(metadata.sorted_tables):
            s.execute(table.delete())


def test_two_runs_at_the_same_time_make_each_invoice_once(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    for i in range(6):
        _setup_customer(session_factory, clock, org_id=f"c{i}", sub_id=f"s{i}")
    as_of = utc(2027, 1, 5)
    results: list[object] = []

    def run() -> None:
        try:
            results.append(run_billing(session_factory, clock, as_of))
        except Exception as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(not isinstance(r, Exception) for r in results), results
    with session_factory() as s:
        numbers = s.scalars(select(Invoice.number)).all()
    assert len(numbers) == 18 == len(set(numbers))  # 6 customers x (Nov, Dec, Jan)
    assert sorted(n.split("-")[-1] for n in numbers if n.startswith("INV-2026")) == [
        f"{k:06d}" for k in range(1, 13)
    ]


def test_a_reverse_charge_invoice_carries_the_legal_note_and_no_tax(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    with transaction(session_factory) as s:
        service.set_tax_rate(s, clock, "FR", "20", "TVA")
        org = make_org(s, clock, org_id="fr", country="FR", tax_id="FR40303265045")
        service.start_subscription(s, clock, org.id, make_plan(s, clock).id)
    run_billing(session_factory, clock, clock.now())
    with session_factory() as s:
        invoice = s.scalars(select(Invoice)).one()
        tax_line = service.invoice_lines(s, invoice.id)[-1]
    assert invoice.total == Decimal("49.00") and invoice.tax_total == 0
    assert invoice.tax_note is not None and "Reverse charge" in invoice.tax_note
    assert invoice.customer_tax_id == "FR40303265045"
    assert tax_line.calculation == "reverse charge: 0 % of 49.00 = 0.00"


def test_tax_inclusive_prices_keep_the_total_and_state_the_tax_inside(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    with transaction(session_factory) as s:
        service.update_profile(s, clock, prices_include_tax=True)
        service.set_tax_rate(s, clock, "DE", "19")
        org = make_org(s, clock, org_id="de", country="DE")
        service.start_subscription(s, clock, org.id, make_plan(s, clock, base_fee="119.00").id)
    run_billing(session_factory, clock, clock.now())
    with session_factory() as s:
        invoice = s.scalars(select(Invoice)).one()
    assert invoice.total == Decimal("119.00")
    assert invoice.tax_total == Decimal("19.00") and invoice.subtotal == Decimal("100.00")
    assert invoice.prices_include_tax
