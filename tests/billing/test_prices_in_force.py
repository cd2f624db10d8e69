"""Usage is rated at the prices in force when it happened, not at the plan's at period end."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.billing import service
from imhost.billing.flows import run_billing
from imhost.billing.models import Invoice
from imhost.billing.plans import PlanTerms
from imhost.billing.usage_rating import PricePart, price_parts, rate_usage
from imhost.catalog.pricing import PriceSpec
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc

from .factories import add_usage, make_org, make_plan, messages_per_unit


def _usage_lines(factory: sessionmaker[Session]) -> list[tuple[Decimal, Decimal, str]]:
    with factory() as s:
        inv = s.scalars(select(Invoice).where(Invoice.period_start == utc(2026, 12, 1))).one()
        return [
            (x.quantity, x.amount, x.calculation)
            for x in service.invoice_lines(s, inv.id)
            if x.kind == "usage"
        ]


def test_switching_to_a_cheap_plan_late_in_the_period_keeps_the_usage_before_at_the_old_prices(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1))
    with transaction(session_factory) as s:
        make_org(s, clock, org_id="o", country="US")
        dear = make_plan(
            s, clock, name="Business", base_fee="0", components=[messages_per_unit("0.01")]
        )
        cheap = make_plan(
            s, clock, name="Starter", base_fee="0", components=[messages_per_unit("0.0001")]
        )
        service.start_subscription(s, clock, "o", dear.id)
    run_billing(session_factory, clock, clock.now())
    clock.set(utc(2026, 11, 10, 12))
    with transaction(session_factory) as s:
        add_usage(s, clock, "o", utc(2026, 11, 10, 12), 10_000)
    clock.set(utc(2026, 11, 21))  # 20 of November's 30 days at Business prices
    with transaction(session_factory) as s:
        service.change_plan(s, clock, "o", cheap.id)
    clock.set(utc(2026, 11, 25, 12))
    with transaction(session_factory) as s:
        add_usage(s, clock, "o", utc(2026, 11, 25, 12), 1_000)
    clock.set(utc(2026, 12, 1, 1))
    run_billing(session_factory, clock, clock.now())

    lines = _usage_lines(session_factory)
    # 10,000 messages at Business's 0.01 and 1,000 at Starter's 0.0001; before, all 11,000
    # were rated at Starter's price (1.10).
    assert [(q, a) for q, a, _ in lines] == [
        (Decimal("10000"), Decimal("100.00")),
        (Decimal("1000"), Decimal("0.10")),
    ]
    business, starter = (c for _, _, c in lines)
    assert business.startswith(
        "Business version 1 prices, in force 2026-11-01 to 2026-11-21 (20 days of 30 days): "
        "10,000 messages in this part, 15,000 at this pace over the whole period; "
        "15,000 at 0.01 each = 150.00; × 20 days / 30 days = 100.00"
    )
    assert business.endswith("= 100.00")
    assert starter.startswith("Starter version 1 prices, in force 2026-11-21 to 2026-12-01")


def test_included_quantities_count_in_proportion_to_the_part_of_the_period(
    session_factory: sessionmaker[Session],
) -> None:
    # 3,000 messages included a month on both plans; the plan changes after 10 of 30 days, so
    # the first part includes 1,000 and the rest 2,000.
    clock = FrozenClock(utc(2026, 11, 1))
    with transaction(session_factory) as s:
        make_org(s, clock, org_id="i", country="US")
        a = make_plan(
            s, clock, name="A", base_fee="0", components=[messages_per_unit("0.01", "3000")]
        )
        b = make_plan(
            s, clock, name="B", base_fee="0", components=[messages_per_unit("0.02", "3000")]
        )
        service.start_subscription(s, clock, "i", a.id)
    run_billing(session_factory, clock, clock.now())
    clock.set(utc(2026, 11, 5))
    with transaction(session_factory) as s:
        add_usage(s, clock, "i", utc(2026, 11, 5), 1_500)  # 500 past A's 1,000
    clock.set(utc(2026, 11, 11))
    with transaction(session_factory) as s:
        service.change_plan(s, clock, "i", b.id)
    clock.set(utc(2026, 11, 20))
    with transaction(session_factory) as s:
        add_usage(s, clock, "i", utc(2026, 11, 20), 2_100)  # 100 past B's 2,000
    clock.set(utc(2026, 12, 1, 1))
    run_billing(session_factory, clock, clock.now())
    assert [a for _, a, _ in _usage_lines(session_factory)] == [Decimal("5.00"), Decimal("2.00")]


def test_a_period_without_a_plan_change_is_rated_as_a_whole_as_before(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 11, 1))
    with transaction(session_factory) as s:
        make_org(s, clock, org_id="w", country="US")
        pv = make_plan(s, clock, base_fee="0", components=[messages_per_unit("0.01", "100")])
        service.start_subscription(s, clock, "w", pv.id)
    run_billing(session_factory, clock, clock.now())
    with transaction(session_factory) as s:
        add_usage(s, clock, "w", utc(2026, 11, 1), 300)
    clock.set(utc(2026, 12, 1, 1))
    run_billing(session_factory, clock, clock.now())
    assert _usage_lines(session_factory) == [
        (
            Decimal("300"),
            Decimal("2.00"),
            "300 used, 100 included, 200 charged; 200 at 0.01 each = 2.00",
        )
    ]


def _terms(name: str, spec: PriceSpec) -> PlanTerms:
    return PlanTerms(
        plan_version_id=name,
        plan_id=name,
        plan_name=name,
        version=1,
        currency="EUR",
        interval="monthly",
        base_fee=Decimal(0),
        setup_fee=Decimal(0),
        trial_days=0,
        specs=(spec,),
    )


@given(
    before=st.integers(min_value=0, max_value=10**7),
    after=st.integers(min_value=0, max_value=10**7),
    cut=st.integers(min_value=1, max_value=30 * 86_400 - 1),
    price=st.decimals(min_value=0, max_value=1, places=4),
    included=st.integers(min_value=0, max_value=10**6),
)
def test_parts_at_unchanged_prices_add_up_to_the_whole_period_within_a_cent_a_part(
    before: int, after: int, cut: int, price: Decimal, included: int
) -> None:
    """A change to a version with the same prices costs what no change would have: the
    parts differ from the whole only by each part's own rounding."""
    spec = PriceSpec(
        model="per_unit",
        metric="messages",
        currency="EUR",
        unit_price=price,
        included_quantity=Decimal(included),
    )
    old, new = _terms("old", spec), _terms("new", spec)
    start, end = utc(2026, 11, 1), utc(2026, 12, 1)
    at = start + timedelta(seconds=cut)
    measured = {
        (start, at): {"messages": Decimal(before)},
        (at, end): {"messages": Decimal(after)},
        (start, end): {"messages": Decimal(before + after)},
    }
    parts = price_parts(start, end, [(at, "old", "new")], new, {"old": old, "new": new}.get)  # type: ignore[arg-type]
    assert [(p.start, p.end, p.plan.plan_name) for p in parts] == [
        (start, at, "old"),
        (at, end, "new"),
    ]
    split = rate_usage(parts, lambda a, b: measured[(a, b)])
    whole = rate_usage([PricePart(start, end, new)], lambda a, b: measured[(a, b)])
    total = sum((line.amount for line in split), Decimal(0))
    exact = sum((line.amount for line in whole), Decimal(0))
    # Included quantities shared in proportion: no more free units than one period's.
    if before * (30 * 86_400) >= included * cut and after * (30 * 86_400) >= included * (
        30 * 86_400 - cut
    ):
        assert abs(total - exact) <= Decimal("0.01")
    else:
        assert total >= exact - Decimal("0.01")
