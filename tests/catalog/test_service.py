"""Catalog service specifications: plans, versions, public listing, add-ons, defaults."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imhost.catalog import service
from imhost.catalog.models import Plan, PlanLimits, PlanVersion
from imhost.catalog.pricing import rate
from imhost.catalog.schemas import AddOnUpdate, PlanUpdate, PlanVersionChange
from imhost.kit.clock import FrozenClock
from imhost.kit.errors import Conflict, InvalidInput, NotFound
from imhost.metering.metrics import BILLABLE_CODES
from tests.catalog.factories import addon_data, create_plan, plan_data


def test_a_new_plan_starts_at_version_one_with_its_prices_and_limits(
    db: Session, clock: FrozenClock
) -> None:
    plan = create_plan(db, clock)
    version = service.current_plan_version(db, "team", "EUR")
    assert version.version == 1
    assert version.base_fee == Decimal("19.00")
    assert version.setup_fee == Decimal("10.00")
    assert version.trial_days == 7
    assert version.limits.max_xmpp_accounts == 50
    assert version.limits.max_connections is None  # unlimited
    specs = service.price_specs_for(db, version.id)
    assert [s.metric for s in specs] == ["messages", "traffic_gb"]
    assert rate(specs[0], Decimal(1500)).amount == Decimal("1.00")
    assert plan.created_at == clock.now()


def test_a_plan_code_is_unique(db: Session, clock: FrozenClock) -> None:
    create_plan(db, clock)
    with pytest.raises(Conflict) as err:
        create_plan(db, clock)
    assert err.value.field == "code"


def test_changing_a_price_makes_a_new_version_and_keeps_the_old_one(
    db: Session, clock: FrozenClock
) -> None:
    create_plan(db, clock)
    old = service.current_plan_version(db, "team")
    clock.advance(timedelta(days=1))
    new = service.new_plan_version(
        db, clock, "team", PlanVersionChange(base_fee=Decimal("21.00"), change_note="price rise")
    )
    assert new.version == 2
    assert new.base_fee == Decimal("21.00")
    # Everything not changed is copied, the usage prices included.
    assert new.setup_fee == old.setup_fee
    assert new.limits == old.limits
    assert [c.to_spec() for c in service.components_of(db, new.id)] == [
        c.to_spec() for c in service.components_of(db, old.id)
    ]
    # The old version is kept (subscriptions point at it) but superseded.
    db.refresh(old)
    assert old.superseded_at == clock.now()
    assert service.get_plan_version(db, old.id).base_fee == Decimal("19.00")
    assert service.current_plan_version(db, "team").id == new.id


def test_a_new_version_can_replace_the_usage_prices(db: Session, clock: FrozenClock) -> None:
    create_plan(db, clock)
    change = PlanVersionChange.model_validate(
        {"components": [{"metric": "messages", "pricing_model": "per_unit", "unit_price": "1"}]}
    )
    new = service.new_plan_version(db, clock, "team", change)
    assert [c.metric for c in service.components_of(db, new.id)] == ["messages"]


def test_a_plan_has_one_price_book_per_currency(db: Session, clock: FrozenClock) -> None:
    create_plan(db, clock)
    with pytest.raises(InvalidInput) as err:
        service.new_plan_version(db, clock, "team", PlanVersionChange(currency="USD"))
    assert err.value.field == "base_fee"
    usd = service.new_plan_version(
        db, clock, "team", PlanVersionChange(currency="USD", base_fee=Decimal("20"))
    )
    assert usd.currency == "USD"
    # The EUR book is untouched.
    assert service.current_plan_version(db, "team", "EUR").version == 1
    assert service.current_plan_version(db, "team", "USD").version == 2


def test_usage_prices_are_validated_with_the_field_named(db: Session, clock: FrozenClock) -> None:
    bad = plan_data(
        version={
            "base_fee": "1",
            "components": [
                {"metric": "messages", "pricing_model": "graduated", "tiers": [{"up_to": 5}]}
            ],
        }
    )
    with pytest.raises(InvalidInput) as err:
        service.create_plan(db, clock, bad)
    assert err.value.field == "components[0].tiers[0].up_to"
    twice = plan_data(
        version={
            "base_fee": "1",
            "components": [
                {"metric": "messages", "pricing_model": "per_unit", "unit_price": "1"},
                {"metric": "messages", "pricing_model": "per_unit", "unit_price": "2"},
            ],
        }
    )
    with pytest.raises(InvalidInput) as err:
        service.create_plan(db, clock, twice)
    assert err.value.field == "components[1].metric"


def test_an_unknown_metric_is_refused_when_the_known_ones_are_given(
    db: Session, clock: FrozenClock
) -> None:
    data = plan_data(
        version={
            "base_fee": "1",
            "components": [{"metric": "pigeons", "pricing_model": "per_unit", "unit_price": "1"}],
        }
    )
    with pytest.raises(InvalidInput) as err:
        service.create_plan(db, clock, data, known_metrics=BILLABLE_CODES)
    assert err.value.field == "components[0].metric"
    assert "pigeons" in err.value.detail


def test_public_listing_shows_only_public_plans_with_current_prices(
    db: Session, clock: FrozenClock
) -> None:
    create_plan(db, clock, "team")
    create_plan(db, clock, "secret", is_public=False)
    service.new_plan_version(db, clock, "team", PlanVersionChange(base_fee=Decimal("25")))
    views = service.list_plans(db)
    assert [v.plan.code for v in views] == ["team"]
    assert [v.version.version for v in views[0].versions] == [2]
    assert views[0].versions[0].price_specs()[0].metric == "messages"
    with pytest.raises(NotFound):
        service.plan_view(db, "secret", public_only=True)
    everything = service.list_plans(db, public_only=False, current_only=False)
    assert sorted(v.plan.code for v in everything) == ["secret", "team"]


def test_plan_details_that_are_not_prices_change_in_place(db: Session, clock: FrozenClock) -> None:
    create_plan(db, clock)
    service.update_plan(db, clock, "team", PlanUpdate(name="Team plan", is_public=False))
    assert service.get_plan(db, "team").name == "Team plan"
    assert db.scalar(select(func.count()).select_from(PlanVersion)) == 1


def test_add_ons_are_created_listed_changed_and_retired(db: Session, clock: FrozenClock) -> None:
    addon = service.create_addon(db, clock, addon_data())
    assert service.get_addon(db, "extra-domain").price == Decimal("3.00")
    with pytest.raises(Conflict):
        service.create_addon(db, clock, addon_data())
    service.update_addon(db, clock, "extra-domain", "EUR", AddOnUpdate(price=Decimal("4")))
    assert service.get_addon_by_id(db, addon.id).price == Decimal("4")
    service.deactivate_addon(db, clock, "extra-domain", "EUR")
    assert service.list_addons(db) == []
    assert [a.code for a in service.list_addons(db, active_only=False)] == ["extra-domain"]


def test_add_on_limit_deltas_must_name_a_known_limit(db: Session, clock: FrozenClock) -> None:
    with pytest.raises(InvalidInput) as err:
        service.create_addon(db, clock, addon_data(limit_deltas={"max_pigeons": 1}))
    assert err.value.field == "limit_deltas.max_pigeons"


def test_add_on_deltas_raise_plan_limits_and_unlimited_stays_unlimited() -> None:
    limits = PlanLimits(max_custom_domains=1, max_xmpp_accounts=None)
    raised = limits.plus({"max_custom_domains": 1, "max_xmpp_accounts": 10})
    assert raised.max_custom_domains == 2
    assert raised.max_xmpp_accounts is None


def test_default_plans_are_seeded_once_with_usage_prices_on_every_billed_metric(
    db: Session, clock: FrozenClock
) -> None:
    plans = service.seed_default_plans(db, clock)
    assert [p.code for p in plans] == ["starter", "business", "enterprise"]
    again = service.seed_default_plans(db, clock)
    assert [p.id for p in again] == [p.id for p in plans]
    assert db.scalar(select(func.count()).select_from(Plan)) == 3
    assert db.scalar(select(func.count()).select_from(PlanVersion)) == 3
    for plan in plans:
        version = service.current_plan_version(db, plan.code, "EUR")
        metrics = {s.metric for s in service.price_specs_for(db, version.id)}
        assert metrics == {"messages", "traffic_gb", "monthly_active_users", "storage_gb"}
        assert metrics <= set(BILLABLE_CODES)
        assert version.billing_interval == "monthly"


def test_default_plans_gain_a_price_book_in_another_currency(
    db: Session, clock: FrozenClock
) -> None:
    service.seed_default_plans(db, clock)
    service.seed_default_plans(db, clock, currency="USD")
    assert service.current_plan_version(db, "business", "USD").base_fee == Decimal("49.00")
    assert service.current_plan_version(db, "business", "EUR").version == 1
    assert db.scalar(select(func.count()).select_from(PlanVersion)) == 6


def test_a_refused_new_version_leaves_the_current_one_current(
    db: Session, clock: FrozenClock
) -> None:
    create_plan(db, clock)
    bad = PlanVersionChange.model_validate(
        {"components": [{"metric": "messages", "pricing_model": "package", "unit_price": "1"}]}
    )
    with pytest.raises(InvalidInput) as err:
        service.new_plan_version(db, clock, "team", bad)
    assert err.value.field == "components[0].package_size"
    assert service.current_plan_version(db, "team").version == 1


def test_prices_read_back_from_the_database_explain_themselves_without_padding(
    db: Session, clock: FrozenClock
) -> None:
    # PostgreSQL returns numeric(38, 12) as 0.050000000000; the invoice must say "at 0.05".
    create_plan(db, clock)
    db.expire_all()
    version = service.current_plan_version(db, "team")
    traffic = next(s for s in service.price_specs_for(db, version.id) if s.metric == "traffic_gb")
    assert "35.5 at 0.05 each = 1.775; total 1.78" in rate(traffic, Decimal("35.5")).explanation
    out = service.version_out(service.plan_view(db, "team").versions[0])
    assert str(out.base_fee) == "19.00"
    assert str(out.components[1].unit_price) == "0.05"
