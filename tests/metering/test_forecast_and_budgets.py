"""Forecast and budget specifications."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from imhost import events
from imhost.catalog.pricing import PriceSpec, rate
from imhost.kit.clock import Clock, FrozenClock, utc
from imhost.kit.errors import InvalidInput
from imhost.metering import budgets, ingestion, tasks
from imhost.metering import forecast as forecasting
from imhost.metering.models import BudgetAlert
from imhost.metering.schemas import BudgetIn
from imhost.metering.tasks import CAP_MARKER, BudgetForecast
from tests.metering.factories import make_org, usage

JAN = utc(2026, 1, 1)
FEB = utc(2026, 2, 1)
GB = 10**9

MESSAGES = PriceSpec(
    model="per_unit", metric="messages", currency="EUR", unit_price=Decimal("0.01")
)
MAU = PriceSpec(
    model="per_unit", metric="monthly_active_users", currency="EUR", unit_price=Decimal("1")
)
PEAK = PriceSpec(
    model="per_unit", metric="peak_connections", currency="EUR", unit_price=Decimal("2")
)
STORAGE = PriceSpec(
    model="per_unit", metric="storage_gb", currency="EUR", unit_price=Decimal("0.5")
)


def test_forecast_extrapolates_sums_and_holds_peaks_counts_and_storage_levels(
    db: Session,
) -> None:
    clock = FrozenClock(utc(2026, 1, 11))  # 10 of 31 days elapsed
    org = make_org(db, clock)
    records = [
        usage(org, "messages", utc(2026, 1, 2), 10_000),
        usage(org, "connections_peak", utc(2026, 1, 3), 12),
        usage(org, "active_users", utc(2026, 1, 4), 1, subject="a"),
        usage(org, "active_users", utc(2026, 1, 5), 1, subject="b"),
        usage(org, "offline_storage_bytes", JAN, 10 * GB),
        usage(org, "offline_storage_bytes", utc(2026, 1, 6), 20 * GB),
    ]
    ingestion.ingest(db, clock, records, atomic=True)
    fc = forecasting.forecast(
        db, clock, org.id, JAN, FEB, [MESSAGES, MAU, PEAK, STORAGE], Decimal("9.00"), "EUR"
    )
    assert fc.elapsed_fraction == Decimal(10) / 31
    assert fc.usage_to_date["messages"] == 10_000
    assert fc.projected_quantities["messages"] == 31_000  # 10,000 / (10/31)
    assert fc.projected_quantities["peak_connections"] == 12
    assert fc.projected_quantities["monthly_active_users"] == 2
    # 5 days at 10 GB, then 20 GB held for the other 26 days.
    expected_storage = (Decimal(10) * 5 + Decimal(20) * 26) / 31
    assert fc.projected_quantities["storage_gb"] == expected_storage.quantize(
        Decimal("0.000000001")
    )
    by_metric = {line.metric: line for line in fc.lines}
    assert by_metric["messages"].charge.amount == Decimal("310.00")
    expected_total = Decimal("9.00") + sum(
        (rate(s, fc.projected_quantities[s.metric]).amount for s in (MESSAGES, MAU, PEAK, STORAGE)),
        Decimal(0),
    )
    assert fc.total == expected_total
    assert "linear" in fc.method


def test_forecast_at_the_period_start_projects_only_the_base_fee(db: Session) -> None:
    clock = FrozenClock(JAN)
    org = make_org(db, clock)
    fc = forecasting.forecast(db, clock, org.id, JAN, FEB, [MESSAGES], Decimal("9"), "EUR")
    assert fc.total == Decimal("9.00")


def test_forecast_refuses_prices_in_another_currency(db: Session) -> None:
    clock = FrozenClock(utc(2026, 1, 11))
    org = make_org(db, clock)
    usd = PriceSpec(model="per_unit", metric="messages", currency="USD", unit_price=Decimal("1"))
    with pytest.raises(InvalidInput) as err:
        forecasting.forecast(db, clock, org.id, JAN, FEB, [usd], Decimal(0), "EUR")
    assert err.value.field == "currency"


# --- budgets --------------------------------------------------------------------------------


class Recorder:
    def __init__(self, db: Session) -> None:
        self.seen: list[Any] = []
        bus = events.make_bus()
        bus.subscribe(events.BudgetThresholdCrossed, lambda e, s: self.seen.append(e))
        bus.subscribe(events.BudgetCapReached, lambda e, s: self.seen.append(e))
        bus.subscribe(events.BudgetCapLifted, lambda e, s: self.seen.append(e))
        db.info["bus"] = bus

    def thresholds(self) -> list[int]:
        return [e.threshold for e in self.seen if isinstance(e, events.BudgetThresholdCrossed)]

    def caps(self) -> list[events.BudgetCapReached]:
        return [e for e in self.seen if isinstance(e, events.BudgetCapReached)]

    def lifts(self) -> list[events.BudgetCapLifted]:
        return [e for e in self.seen if isinstance(e, events.BudgetCapLifted)]


def monthly_pricing(clock: FrozenClock, specs: list[PriceSpec]) -> tasks.ForecastLookup:
    """A stand-in for billing's ``budget_forecast`` without an invoice: the period is the
    calendar month so far, so its forecast and its amount so far are the usage so far rated
    with ``specs`` (metering's own forecast of a period that is over); no base fee, EUR."""

    def forecast_for(session: Session, clock: Clock, organization_id: str) -> BudgetForecast:
        start, _ = tasks.calendar_month(clock.now())
        fc = forecasting.forecast(
            session, clock, organization_id, start, clock.now(), specs, Decimal(0), "EUR"
        )
        return BudgetForecast(start, clock.now(), clock.now(), fc.total, fc.total, "EUR")

    return forecast_for


def paced_forecast(specs: list[PriceSpec]) -> tasks.ForecastLookup:
    """The month's usage projected to its end (metering's forecast), the amount so far apart."""

    def forecast_for(session: Session, clock: Clock, organization_id: str) -> BudgetForecast:
        start, end = tasks.calendar_month(clock.now())
        fc = forecasting.forecast(
            session, clock, organization_id, start, end, specs, Decimal(0), "EUR"
        )
        so_far = sum(
            (rate(s, fc.usage_to_date.get(s.metric, Decimal(0))).amount for s in specs),
            Decimal(0),
        )
        return BudgetForecast(start, end, end, fc.total, so_far, "EUR")

    return forecast_for


def test_each_threshold_alerts_once_per_period(db: Session) -> None:
    clock = FrozenClock(utc(2026, 1, 10))
    org = make_org(db, clock)
    budgets.set_budget(db, clock, org.id, BudgetIn(amount=Decimal(100), currency="EUR"))
    rec = Recorder(db)
    pricing = monthly_pricing(clock, [MESSAGES])

    ingestion.ingest(db, clock, [usage(org, "messages", utc(2026, 1, 9), 4_000)], atomic=True)
    assert tasks.check_budgets(db, clock, pricing) == []  # 40.00 of 100: nothing yet

    ingestion.ingest(db, clock, [usage(org, "messages", utc(2026, 1, 9, 1), 2_000)], atomic=True)
    crossed = tasks.check_budgets(db, clock, pricing)  # 60.00
    assert [c.threshold for c in crossed] == [50]
    assert crossed[0].amount == Decimal("60.00")
    assert tasks.check_budgets(db, clock, pricing) == []  # never repeated
    assert rec.thresholds() == [50]

    ingestion.ingest(db, clock, [usage(org, "messages", utc(2026, 1, 9, 2), 5_000)], atomic=True)
    assert [c.threshold for c in tasks.check_budgets(db, clock, pricing)] == [80, 100]
    assert tasks.check_budgets(db, clock, pricing) == []
    assert rec.thresholds() == [50, 80, 100]
    assert rec.caps() == []  # no hard cap set
    event = rec.seen[0]
    assert (event.organization_id, event.budget_amount, event.currency) == (
        org.id,
        Decimal(100),
        "EUR",
    )

    # A new period starts afresh.
    clock.set(utc(2026, 2, 10))
    ingestion.ingest(db, clock, [usage(org, "messages", utc(2026, 2, 9), 5_500)], atomic=True)
    assert [c.threshold for c in tasks.check_budgets(db, clock, pricing)] == [50]
    assert db.scalar(select(func.count()).select_from(BudgetAlert)) == 4


def test_a_hard_cap_tells_the_service_to_stop_overage_once(db: Session) -> None:
    clock = FrozenClock(utc(2026, 1, 10))
    org = make_org(db, clock)
    budgets.set_budget(
        db,
        clock,
        org.id,
        BudgetIn(amount=Decimal(50), currency="EUR", thresholds=[90], hard_cap=True),
    )
    rec = Recorder(db)
    pricing = monthly_pricing(clock, [MESSAGES])
    ingestion.ingest(db, clock, [usage(org, "messages", utc(2026, 1, 9), 4_600)], atomic=True)
    tasks.check_budgets(db, clock, pricing)  # 46.00: 90 % only
    assert rec.thresholds() == [90] and rec.caps() == []
    ingestion.ingest(db, clock, [usage(org, "messages", utc(2026, 1, 9, 1), 400)], atomic=True)
    crossed = tasks.check_budgets(db, clock, pricing)  # 50.00: the cap
    assert [c.threshold for c in crossed] == [CAP_MARKER]
    tasks.check_budgets(db, clock, pricing)
    assert len(rec.caps()) == 1
    assert rec.caps()[0].organization_id == org.id
    assert "budget" in rec.caps()[0].reason


def test_a_hard_cap_is_lifted_when_a_new_period_begins(db: Session) -> None:
    clock = FrozenClock(utc(2026, 1, 10))
    org = make_org(db, clock)
    budgets.set_budget(
        db, clock, org.id, BudgetIn(amount=Decimal(50), currency="EUR", hard_cap=True)
    )
    rec = Recorder(db)
    pricing = monthly_pricing(clock, [MESSAGES])
    ingestion.ingest(db, clock, [usage(org, "messages", utc(2026, 1, 9), 5_000)], atomic=True)
    tasks.check_budgets(db, clock, pricing)
    assert len(rec.caps()) == 1 and rec.lifts() == []
    tasks.check_budgets(db, clock, pricing)  # still capped: nothing new
    assert (len(rec.caps()), len(rec.lifts())) == (1, 0)
    clock.set(utc(2026, 2, 1, 0, 10))  # February: nothing spent yet
    tasks.check_budgets(db, clock, pricing)
    assert len(rec.lifts()) == 1
    assert rec.lifts()[0].organization_id == org.id
    assert "under the budget's hard cap" in rec.lifts()[0].reason
    tasks.check_budgets(db, clock, pricing)  # lifted once
    assert len(rec.lifts()) == 1
    # February reaches the cap too: blocked again, once.
    ingestion.ingest(db, clock, [usage(org, "messages", utc(2026, 2, 1), 5_000)], atomic=True)
    tasks.check_budgets(db, clock, pricing)
    tasks.check_budgets(db, clock, pricing)
    assert (len(rec.caps()), len(rec.lifts())) == (2, 1)


def test_a_raised_budget_lifts_the_cap_and_a_second_crossing_blocks_again(db: Session) -> None:
    clock = FrozenClock(utc(2026, 1, 10))
    org = make_org(db, clock)
    capped = BudgetIn(amount=Decimal(50), currency="EUR", hard_cap=True)
    budgets.set_budget(db, clock, org.id, capped)
    rec = Recorder(db)
    pricing = monthly_pricing(clock, [MESSAGES])
    ingestion.ingest(db, clock, [usage(org, "messages", utc(2026, 1, 9), 5_000)], atomic=True)
    tasks.check_budgets(db, clock, pricing)
    budgets.set_budget(
        db, clock, org.id, BudgetIn(amount=Decimal(80), currency="EUR", hard_cap=True)
    )
    tasks.check_budgets(db, clock, pricing)
    assert (len(rec.caps()), len(rec.lifts())) == (1, 1)
    ingestion.ingest(db, clock, [usage(org, "messages", utc(2026, 1, 9, 1), 3_000)], atomic=True)
    tasks.check_budgets(db, clock, pricing)  # 80.00 of 80: capped again in the same month
    assert (len(rec.caps()), len(rec.lifts())) == (2, 1)
    budgets.delete_budget(db, org.id, clock)  # removing the budget lifts the block
    assert len(rec.lifts()) == 2
    assert rec.lifts()[1].reason == "the budget was removed"


def test_a_budget_in_another_currency_than_the_bill_is_not_checked(db: Session) -> None:
    clock = FrozenClock(utc(2026, 1, 10))
    org = make_org(db, clock)
    budgets.set_budget(db, clock, org.id, BudgetIn(amount=Decimal(1), currency="USD"))
    ingestion.ingest(db, clock, [usage(org, "messages", utc(2026, 1, 9), 1000)], atomic=True)
    assert tasks.check_budgets(db, clock, monthly_pricing(clock, [MESSAGES])) == []


def test_alerts_follow_the_forecast_and_the_hard_cap_the_amount_so_far(db: Session) -> None:
    clock = FrozenClock(utc(2026, 1, 11))
    org = make_org(db, clock)
    budgets.set_budget(
        db, clock, org.id, BudgetIn(amount=Decimal(50), currency="EUR", hard_cap=True)
    )
    rec = Recorder(db)
    ingestion.ingest(db, clock, [usage(org, "messages", utc(2026, 1, 2), 2_000)], atomic=True)
    crossed = tasks.check_budgets(db, clock, paced_forecast([MESSAGES]))  # 62.00 projected
    assert [c.threshold for c in crossed] == [50, 80, 100]
    assert crossed[0].amount == Decimal("62.00")
    assert rec.caps() == []  # 20.00 so far: the service keeps running


def test_budgets_are_set_replaced_and_removed(db: Session) -> None:
    from pydantic import ValidationError

    from imhost.kit.errors import NotFound

    clock = FrozenClock(JAN)
    org = make_org(db, clock)
    first = budgets.set_budget(db, clock, org.id, BudgetIn(amount=Decimal(10), currency="EUR"))
    assert first.thresholds == [50, 80, 100]
    second = budgets.set_budget(
        db, clock, org.id, BudgetIn(amount=Decimal(20), currency="EUR", thresholds=[90, 25])
    )
    assert second.id == first.id and second.thresholds == [25, 90]
    budgets.delete_budget(db, org.id)
    assert budgets.get_budget(db, org.id) is None
    with pytest.raises(NotFound):
        budgets.delete_budget(db, org.id)
    with pytest.raises(ValidationError):
        BudgetIn(amount=Decimal(10), currency="EUR", thresholds=[50, 50])
    with pytest.raises(ValidationError):
        BudgetIn(amount=Decimal(-1), currency="EUR")


def test_the_scheduled_check_commits_its_alerts_once(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FrozenClock(utc(2026, 1, 10))
    with session_factory() as session:
        org = make_org(session, clock)
        budgets.set_budget(session, clock, org.id, BudgetIn(amount=Decimal(10), currency="EUR"))
        ingestion.ingest(
            session, clock, [usage(org, "messages", utc(2026, 1, 9), 600)], atomic=True
        )
        session.commit()
    pricing = monthly_pricing(clock, [MESSAGES])  # 6.00 of 10.00
    assert tasks.scheduled_budget_check(session_factory, clock, pricing) == 1
    assert tasks.scheduled_budget_check(session_factory, clock, pricing) == 0
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(BudgetAlert)) == 1
