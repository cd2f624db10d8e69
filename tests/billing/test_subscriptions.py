"""Subscriptions: anchors, trials, plan changes with proration, cancel, pause, resume."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost import events
from imhost.billing import service
from imhost.billing.flows import run_billing
from imhost.billing.models import Invoice, PendingCharge, Subscription
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.kit.errors import Conflict, InvalidInput, NotFound

from .factories import make_add_on, make_org, make_plan


def _lines(factory: sessionmaker[Session], period_start: object) -> list[tuple[str, Decimal, str]]:
    with factory() as s:
        inv = s.scalars(select(Invoice).where(Invoice.period_start == period_start)).one()
        return [(x.kind, x.amount, x.calculation) for x in service.invoice_lines(s, inv.id)]


def test_an_upgrade_mid_leap_february_credits_the_old_plan_and_charges_the_new_by_the_second(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2028, 2, 1, 9))
    with transaction(session_factory) as s:
        org = make_org(s, clock, org_id="o", country="US")
        business = make_plan(s, clock, base_fee="49.00")
        enterprise = make_plan(s, clock, name="Enterprise", base_fee="99.00")
        service.start_subscription(s, clock, org.id, business.id)
    run_billing(session_factory, clock, clock.now())

    clock.set(utc(2028, 2, 16))  # 14 of 29 days left
    with transaction(session_factory) as s:
        preview = service.preview_change(s, clock, "o", enterprise.id)
        assert s.scalars(select(PendingCharge)).all() == []  # a preview changes nothing
    assert [(x.amount, x.calculation) for x in preview.lines] == [
        (Decimal("-23.66"), "49.00 × 14 days / 29 days = 23.66"),
        (Decimal("47.79"), "99.00 × 14 days / 29 days = 47.79"),
    ]
    with transaction(session_factory) as s:
        applied = service.change_plan(s, clock, "o", enterprise.id)
    assert applied.lines == preview.lines

    clock.set(utc(2028, 3, 1, 1))
    run_billing(session_factory, clock, clock.now())
    lines = _lines(session_factory, utc(2028, 3, 1))
    assert [(k, a) for k, a, _ in lines] == [
        ("base_fee", Decimal("99.00")),
        ("proration", Decimal("-23.66")),
        ("proration", Decimal("47.79")),
        ("tax", Decimal("0.00")),
    ]


def test_a_change_to_another_currency_or_interval_or_an_unknown_plan_is_refused(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1))
    with transaction(session_factory) as s:
        org = make_org(s, clock)
        eur = make_plan(s, clock)
        usd = make_plan(s, clock, currency="USD")
        yearly = make_plan(s, clock, interval="yearly", base_fee="490.00")
        service.start_subscription(s, clock, org.id, eur.id)
        with pytest.raises(InvalidInput, match="EUR"):
            service.preview_change(s, clock, org.id, usd.id)
        with pytest.raises(InvalidInput, match="monthly"):
            service.preview_change(s, clock, org.id, yearly.id)
        with pytest.raises(NotFound, match="plan version"):
            service.change_plan(s, clock, org.id, "missing")
        with pytest.raises(Conflict):
            service.start_subscription(s, clock, org.id, eur.id)


def test_a_trial_bills_nothing_then_the_setup_fee_and_first_month_at_its_end(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 5, 14))
    with transaction(session_factory) as s:
        org = make_org(s, clock, org_id="t", country="US")
        pv = make_plan(s, clock, trial_days=14, setup_fee="25.00")
        sub = service.start_subscription(s, clock, org.id, pv.id)
        assert sub.status == "trialing" and sub.trial_end == utc(2026, 11, 19)
    assert run_billing(session_factory, clock, utc(2026, 11, 18)).invoices == 0
    clock.set(utc(2026, 11, 19, 1))
    run_billing(session_factory, clock, clock.now())
    lines = _lines(session_factory, utc(2026, 11, 19))
    assert [(k, a) for k, a, _ in lines] == [
        ("base_fee", Decimal("49.00")),
        ("setup_fee", Decimal("25.00")),
        ("tax", Decimal("0.00")),
    ]
    with session_factory() as s:
        sub2 = s.scalars(select(Subscription)).one()
        assert sub2.status == "active" and sub2.current_period_end == utc(2026, 12, 19)
    clock.set(utc(2026, 12, 19, 1))
    run_billing(session_factory, clock, clock.now())
    assert "setup_fee" not in [k for k, _, _ in _lines(session_factory, utc(2026, 12, 19))]


def test_an_anchor_later_in_the_month_prorates_the_short_first_period(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 20, 10))
    with transaction(session_factory) as s:
        org = make_org(s, clock, country="US")
        pv = make_plan(s, clock, base_fee="30.00")
        sub = service.start_subscription(s, clock, org.id, pv.id, anchor_day=1)
        assert sub.current_period_end == utc(2026, 12, 1)
    run_billing(session_factory, clock, clock.now())
    [(kind, amount, calc), _tax] = _lines(session_factory, utc(2026, 11, 20))
    assert kind == "base_fee" and amount == Decimal("11.00")  # 30.00 x 11 / 30 days
    assert "30.00 × 11 days / 30 days = 11.00" in calc


def test_cancel_at_period_end_makes_a_last_invoice_for_usage_only_and_ends(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    seen: list[events.Event] = []
    bus = events.make_bus()
    bus.subscribe(events.SubscriptionChanged, lambda e, s: seen.append(e))
    factory = sessionmaker(
        bind=session_factory.kw["bind"], expire_on_commit=False, info={"bus": bus}
    )
    with transaction(factory) as s:
        org = make_org(s, clock, org_id="c", country="US")
        pv = make_plan(s, clock)
        service.start_subscription(s, clock, org.id, pv.id)
    run_billing(factory, clock, clock.now())
    with transaction(factory) as s:
        service.cancel_subscription(s, clock, "c", at_period_end=True)
    clock.set(utc(2026, 12, 1, 1))
    run_billing(factory, clock, utc(2027, 3, 1))
    assert [k for k, _, _ in _lines(factory, utc(2026, 12, 1))] == ["tax"]
    with factory() as s:
        sub = s.scalars(select(Subscription)).one()
        assert sub.status == "canceled" and sub.next_billing_at is None
        assert s.query(Invoice).count() == 2
    assert [e.plan_id for e in seen if isinstance(e, events.SubscriptionChanged)][-1] is None


def test_cancel_at_once_credits_the_unused_base_fee_as_account_credit(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    with transaction(session_factory) as s:
        org = make_org(s, clock, org_id="x", country="US")
        pv = make_plan(s, clock, base_fee="30.00")
        service.start_subscription(s, clock, org.id, pv.id)
    run_billing(session_factory, clock, clock.now())
    with transaction(session_factory) as s:
        inv = s.scalars(select(Invoice)).one()
        service.record_payment(s, clock, inv.id, amount="30.00", currency="EUR")
    clock.set(utc(2026, 11, 21))  # 10 of 30 days unused: 10.00
    with transaction(session_factory) as s:
        service.cancel_subscription(s, clock, "x", at_period_end=False)
    run_billing(session_factory, clock, clock.now())
    with session_factory() as s:
        final = s.scalars(select(Invoice).where(Invoice.period_start == utc(2026, 11, 21))).one()
        assert final.total == 0
        assert service.credit_balance(s, "x", "EUR") == Decimal("10.00")
        assert s.scalars(select(Subscription)).one().status == "canceled"


def test_pause_skips_the_base_fee_and_resume_charges_the_rest_of_the_period(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    with transaction(session_factory) as s:
        org = make_org(s, clock, org_id="p", country="US")
        pv = make_plan(s, clock, base_fee="31.00")
        service.start_subscription(s, clock, org.id, pv.id)
    run_billing(session_factory, clock, clock.now())
    clock.set(utc(2026, 11, 20))
    with transaction(session_factory) as s:
        service.pause_subscription(s, clock, "p")
    clock.set(utc(2026, 12, 1, 1))
    run_billing(session_factory, clock, clock.now())
    assert "base_fee" not in [k for k, _, _ in _lines(session_factory, utc(2026, 12, 1))]
    clock.set(utc(2026, 12, 11))  # 21 of 31 days left: 31.00 x 21/31 = 21.00
    with transaction(session_factory) as s:
        service.resume_subscription(s, clock, "p")
        [charge] = service.list_pending_charges(s, "p")
    assert charge.amount == Decimal("21.00")


def test_add_ons_are_billed_in_advance_and_a_removed_add_on_is_credited_pro_rata(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1, 9))
    with transaction(session_factory) as s:
        org = make_org(s, clock, org_id="a", country="US")
        pv = make_plan(s, clock)
        support = make_add_on(s, clock, price="15.00")
        service.start_subscription(s, clock, org.id, pv.id, add_ons={support.id: 2})
        support_id = support.id
    run_billing(session_factory, clock, clock.now())
    assert ("add_on", Decimal("30.00"), "2 × 15.00 = 30.00") in _lines(
        session_factory, utc(2026, 11, 1)
    )
    clock.set(utc(2026, 11, 16))  # 15 of 30 days left
    with transaction(session_factory) as s:
        preview = service.change_plan(s, clock, "a", pv.id, add_ons={support_id: 1})
    assert [x.amount for x in preview.lines] == [Decimal("-7.50")]


def test_cancelling_at_once_at_the_first_second_of_a_paid_period_credits_it_all(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 30, 22))
    with transaction(session_factory) as s:
        org = make_org(s, clock, org_id="z", country="US")
        service.start_subscription(s, clock, org.id, make_plan(s, clock, base_fee="30.00").id)
    clock.set(utc(2026, 12, 30, 1))
    run_billing(session_factory, clock, clock.now())  # Nov 30 and Dec 30 invoiced
    with transaction(session_factory) as s:
        sub = s.scalars(select(Subscription)).one()
        assert sub.current_period_start == utc(2026, 12, 30)
    clock = FrozenClock(utc(2026, 12, 30))
    with transaction(session_factory) as s:
        service.cancel_subscription(s, clock, "z", at_period_end=False)
    summary = run_billing(session_factory, clock, clock.now())
    assert summary.ok and summary.invoices == 0  # nothing was used: nothing to invoice
    with session_factory() as s:
        assert service.credit_balance(s, "z", "EUR") == Decimal("30.00")
        assert s.scalars(select(Subscription)).one().status == "canceled"


def test_cancelling_right_after_a_mid_month_start_credits_no_more_than_was_paid(
    session_factory: sessionmaker[Session],
) -> None:
    # Started on 20 November, anchored on the 1st: the first invoice charges 11 of November's
    # 30 days (30.00 x 11/30 = 11.00, with 2 x 15.00 of add-ons: 11.00). Cancelled one day
    # later, 10 of those days are unused: 30.00 x 10/30 = 10.00 and 30.00 x 10/30 = 10.00,
    # not 30.00 x 10/11 = 27.27 each (the short period's own length as the denominator).
    clock = FrozenClock(utc(2026, 11, 20))
    with transaction(session_factory) as s:
        org = make_org(s, clock, org_id="m", country="US")
        pv = make_plan(s, clock, base_fee="30.00")
        support = make_add_on(s, clock, price="15.00")
        service.start_subscription(s, clock, org.id, pv.id, anchor_day=1, add_ons={support.id: 2})
    run_billing(session_factory, clock, clock.now())
    first = _lines(session_factory, utc(2026, 11, 20))
    assert [(k, a) for k, a, _ in first] == [
        ("base_fee", Decimal("11.00")),
        ("add_on", Decimal("11.00")),
        ("tax", Decimal("0.00")),
    ]
    paid = sum((a for _, a, _ in first), Decimal(0))
    clock.set(utc(2026, 11, 21))
    with transaction(session_factory) as s:
        service.cancel_subscription(s, clock, "m", at_period_end=False)
        credits = [c.amount for c in service.list_pending_charges(s, "m")]
        calcs = [c.calculation for c in service.list_pending_charges(s, "m")]
    assert credits == [Decimal("-10.00"), Decimal("-10.00")]
    assert calcs[0] == "30.00 × 10 days / 30 days = 10.00"
    assert -sum(credits, Decimal(0)) <= paid


def test_a_plan_change_and_a_resume_in_a_short_first_period_use_the_invoices_denominator(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 20))
    with transaction(session_factory) as s:
        org = make_org(s, clock, org_id="q", country="US")
        cheap = make_plan(s, clock, base_fee="30.00")
        dear = make_plan(s, clock, name="Enterprise", base_fee="60.00")
        service.start_subscription(s, clock, org.id, cheap.id, anchor_day=1)
    run_billing(session_factory, clock, clock.now())
    clock.set(utc(2026, 11, 25))  # 6 of November's 30 days left
    with transaction(session_factory) as s:
        preview = service.preview_change(s, clock, "q", dear.id)
    assert [x.amount for x in preview.lines] == [Decimal("-6.00"), Decimal("12.00")]

    # A subscription paused before its short first period was billed, resumed inside it.
    clock = FrozenClock(utc(2026, 12, 20))
    with transaction(session_factory) as s:
        org = make_org(s, clock, org_id="r", country="US")
        sub = service.start_subscription(s, clock, org.id, cheap.id, anchor_day=1)
        sub.status, sub.next_billing_at = "paused", sub.current_period_end
    clock.set(utc(2026, 12, 26))  # 6 of December's 31 days left: 30.00 x 6/31 = 5.81
    with transaction(session_factory) as s:
        service.resume_subscription(s, clock, "r")
        [charge] = service.list_pending_charges(s, "r")
    assert charge.amount == Decimal("5.81")
    assert charge.calculation == "30.00 × 6 days / 31 days = 5.81"


def test_a_calendar_quarterly_plan_bills_a_partial_first_quarter_then_whole_quarters(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 20, 10))
    with transaction(session_factory) as s:
        org = make_org(s, clock, org_id="cq", country="US")
        pv = make_plan(s, clock, base_fee="92.00", interval="calendar-quarterly")
        sub = service.start_subscription(s, clock, org.id, pv.id)
        assert (sub.current_period_start, sub.current_period_end) == (
            utc(2026, 11, 20),
            utc(2027, 1, 1),
        )
    run_billing(session_factory, clock, clock.now())
    [(kind, amount, calc), _tax] = _lines(session_factory, utc(2026, 11, 20))
    # 42 of the quarter's 92 days (October 31 + November 30 + December 31).
    assert (kind, amount) == ("base_fee", Decimal("42.00"))
    assert calc.endswith("92.00 × 42 days / 92 days = 42.00")
    assert calc.startswith("Base fee Business quarterly 2026-11-20 to 2027-01-01")
    clock.set(utc(2027, 1, 1, 1))
    run_billing(session_factory, clock, clock.now())
    [(kind, amount, calc), _tax] = _lines(session_factory, utc(2027, 1, 1))
    assert (kind, amount) == ("base_fee", Decimal("92.00"))
    assert calc == "base fee Business quarterly 2027-01-01 to 2027-04-01 = 92.00"
    with session_factory() as s:
        sub = s.scalars(select(Subscription)).one()
        assert sub.current_period_end == utc(2027, 4, 1)


def test_a_weekly_plan_runs_seven_days_and_refuses_a_chosen_anchor_day(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 12, 3, 10))
    with transaction(session_factory) as s:
        org = make_org(s, clock, org_id="wk", country="US")
        pv = make_plan(s, clock, base_fee="7.00", interval="every-2-weeks")
        with pytest.raises(InvalidInput, match="every 2 weeks is anchored on its start day"):
            service.start_subscription(s, clock, org.id, pv.id, anchor_day=1)
        sub = service.start_subscription(s, clock, org.id, pv.id)
        assert sub.current_period_end == utc(2026, 12, 17)
        assert sub.interval == "every-2-weeks"


def test_a_trial_ending_between_calendar_boundaries_starts_a_partial_first_paid_month(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 20, 10))
    with transaction(session_factory) as s:
        org = make_org(s, clock, org_id="tc", country="US")
        pv = make_plan(s, clock, base_fee="31.00", trial_days=14, interval="calendar-monthly")
        service.start_subscription(s, clock, org.id, pv.id)
    clock.set(utc(2026, 12, 4, 1))  # the trial ends on 4 December
    run_billing(session_factory, clock, clock.now())
    lines = _lines(session_factory, utc(2026, 12, 4))
    # 28 of December's 31 days: 31.00 x 28 days / 31 days = 28.00
    assert ("base_fee", Decimal("28.00")) in [(k, a) for k, a, _ in lines]
    with session_factory() as s:
        sub = s.scalars(select(Subscription)).one()
        assert (sub.status, sub.current_period_end) == ("active", utc(2027, 1, 1))
