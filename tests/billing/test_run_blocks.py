"""The billing run commits invoices in blocks: one transaction per block, a savepoint each."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from imhost import events
from imhost.billing import service
from imhost.billing.flows import run_billing
from imhost.billing.models import Invoice, Subscription
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.kit.errors import InvalidInput
from imhost.metering.closing import close_period, closed_periods

from .factories import add_usage, make_org, make_plan, messages_per_unit


class Crash(BaseException):
    """A simulated kill: not an Exception, so nothing in the run catches it."""


def _customers(factory: sessionmaker[Session], clock: FrozenClock, count: int) -> None:
    with transaction(factory) as s:
        service.set_tax_rate(s, clock, "DE", "19")
        pv = make_plan(s, clock, components=[messages_per_unit("0.001", included="1000")])
        for i in range(count):
            org = make_org(s, clock, name=f"Org {i}", org_id=f"o{i}")
            service.start_subscription(s, clock, org.id, pv.id, subscription_id=f"s{i}")


def _numbers_by_subscription(factory: sessionmaker[Session]) -> dict[str, list[str]]:
    with factory() as s:
        rows = s.execute(
            select(Invoice.subscription_id, Invoice.number).order_by(Invoice.number)
        ).all()
    out: dict[str, list[str]] = {}
    for sub_id, number in rows:
        out.setdefault(sub_id or "", []).append(number or "")
    return out


def test_a_failing_subscription_is_rolled_back_alone_and_the_rest_of_its_block_commits(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    _customers(session_factory, clock, 5)
    with transaction(session_factory) as s:
        # Its plan is in EUR: invoicing it is refused (InvalidInput), mid-block.
        s.execute(update(Subscription).where(Subscription.id == "s2").values(currency="USD"))
    summary = run_billing(session_factory, clock, clock.now(), block_size=10)
    assert summary.invoices == 4
    assert [(f.subscription_id, f.organization_id) for f in summary.failures] == [("s2", "o2")]
    assert "EUR" in summary.failures[0].error
    numbers = _numbers_by_subscription(session_factory)
    assert "s2" not in numbers
    # Gapless: the failed invoice gave its number back.
    assert sorted(n for ns in numbers.values() for n in ns) == [
        f"INV-2026-{k:06d}" for k in range(1, 5)
    ]
    with session_factory() as s:
        failed = s.get(Subscription, "s2")
        assert failed is not None and failed.next_billing_at == utc(2026, 11, 1)


def test_a_kill_loses_only_the_block_in_flight(session_factory: sessionmaker[Session]) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    _customers(session_factory, clock, 7)
    calls = {"commits": 0}

    def fault(point: str) -> None:
        if point == "before_commit":
            calls["commits"] += 1
            if calls["commits"] == 3:
                raise Crash(point)

    with pytest.raises(Crash):
        run_billing(session_factory, clock, clock.now(), fault=fault, block_size=3)
    # Two blocks of three committed; the third (one invoice) was lost.
    assert sorted(_numbers_by_subscription(session_factory)) == ["s0", "s1", "s2", "s3", "s4", "s5"]
    summary = run_billing(session_factory, clock, clock.now(), block_size=3)
    assert summary.invoices == 1
    assert _numbers_by_subscription(session_factory)["s6"] == ["INV-2026-000007"]


def test_usage_is_read_and_the_period_closed_in_the_block_that_invoices_it(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    _customers(session_factory, clock, 3)
    run_billing(session_factory, clock, clock.now())
    clock.set(utc(2026, 11, 20))
    with transaction(session_factory) as s:
        for i in range(3):
            add_usage(s, clock, f"o{i}", utc(2026, 11, 10), 2000 + 1000 * i)
    clock.set(utc(2026, 12, 1, 0, 30))
    summary = run_billing(session_factory, clock, clock.now(), block_size=2)
    assert summary.invoices == 3 and summary.ok
    with session_factory() as s:
        invoices = {
            inv.organization_id: inv
            for inv in s.scalars(select(Invoice).where(Invoice.period_start == utc(2026, 12, 1)))
        }
        usage = {
            org: [ln.amount for ln in service.invoice_lines(s, inv.id) if ln.kind == "usage"]
            for org, inv in invoices.items()
        }
        closed = closed_periods(s, ["o0", "o1", "o2"])
    assert usage == {"o0": [Decimal("1.00")], "o1": [Decimal("2.00")], "o2": [Decimal("3.00")]}
    for org in ("o0", "o1", "o2"):
        assert closed[org] == [(utc(2026, 11, 1), utc(2026, 12, 1))]
    # Late usage for the closed period is refused now.
    with transaction(session_factory) as s, pytest.raises(AssertionError):
        add_usage(s, clock, "o0", utc(2026, 11, 15), 10)


def test_a_period_closed_already_with_another_end_fails_that_subscription_alone(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    _customers(session_factory, clock, 3)
    run_billing(session_factory, clock, clock.now())
    with transaction(session_factory) as s:
        close_period(s, "o0", utc(2026, 11, 1), utc(2026, 12, 1), clock)  # the same: fine
        close_period(s, "o1", utc(2026, 11, 1), utc(2026, 11, 20), clock)  # another end
    clock.set(utc(2026, 12, 1, 0, 30))
    summary = run_billing(session_factory, clock, clock.now())
    assert summary.invoices == 2
    assert [f.subscription_id for f in summary.failures] == ["s1"]
    assert "closed already" in summary.failures[0].error
    with session_factory() as s:
        closed = closed_periods(s, ["o0", "o1", "o2"])
    assert closed["o0"] == closed["o2"] == [(utc(2026, 11, 1), utc(2026, 12, 1))]
    assert closed["o1"] == [(utc(2026, 11, 1), utc(2026, 11, 20))]
    # s1 failed after taking its number (s0, s1, s2 in that order): s2 got it back, no gap.
    numbers = _numbers_by_subscription(session_factory)
    assert numbers["s0"][-1] == "INV-2026-000004" and numbers["s2"][-1] == "INV-2026-000005"
    assert numbers["s1"] == ["INV-2026-000002"]
    with session_factory() as s:
        failed = s.get(Subscription, "s1")
        assert failed is not None and failed.next_billing_at == utc(2026, 12, 1)


def test_an_invoice_event_handler_that_refuses_fails_that_subscription_alone(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    _customers(session_factory, clock, 4)
    bus = events.EventBus()
    seen: list[str] = []

    def on_invoice(event: events.InvoiceEvent, session: Session) -> None:
        # Handlers find the invoice and its lines written, in the run's transaction.
        invoice = session.get(Invoice, event.invoice_id)
        assert invoice is not None and service.invoice_lines(session, invoice.id)
        if event.organization_id == "o1":
            raise InvalidInput("o1 refuses its invoice")
        seen.append(event.organization_id)

    bus.subscribe(events.InvoiceEvent, on_invoice)
    factory = sessionmaker(
        bind=session_factory.kw["bind"], expire_on_commit=False, info={"bus": bus}
    )
    summary = run_billing(factory, clock, clock.now())
    assert summary.invoices == 3
    assert [(f.subscription_id, f.error) for f in summary.failures] == [
        ("s1", "o1 refuses its invoice")
    ]
    # The first try (events at the block's end) was rolled back; the second published each
    # invoice's event once, in its savepoint.
    assert seen[-3:] == ["o0", "o2", "o3"]
    assert sorted(_numbers_by_subscription(session_factory)) == ["s0", "s2", "s3"]


def test_max_invoices_stops_mid_block_and_progress_counts_what_is_committed(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    _customers(session_factory, clock, 5)
    calls: list[tuple[int, int, str]] = []
    summary = run_billing(
        session_factory,
        clock,
        clock.now(),
        max_invoices=3,
        block_size=2,
        progress=lambda done, total, sub_id: calls.append((done, total, sub_id)),
    )
    assert summary.invoices == 3
    assert sorted(_numbers_by_subscription(session_factory)) == ["s0", "s1", "s2"]
    assert calls == [(1, 5, "s0"), (2, 5, "s1"), (3, 5, "s2")]
    rest = run_billing(session_factory, clock, clock.now())
    assert rest.invoices == 2 and rest.invoice_numbers == ["INV-2026-000004", "INV-2026-000005"]
