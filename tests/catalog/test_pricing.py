"""Rating specifications: each pricing model worked by hand at its edges."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imhost.catalog.pricing import PriceSpec, PricingModel, Tier, parse_tiers, rate
from imhost.kit.errors import InvalidInput

D = Decimal

MESSAGE_TIERS = [
    {"up_to": 1000, "unit_price": "0.000", "flat_fee": "0"},
    {"up_to": 10000, "unit_price": "0.002", "flat_fee": "0"},
    {"up_to": None, "unit_price": "0.001", "flat_fee": "0"},
]


def spec(model: str, **kw: object) -> PriceSpec:
    kw.setdefault("metric", "messages")
    kw.setdefault("currency", "EUR")
    return PriceSpec(model=model, **kw)  # type: ignore[arg-type]


# --- per_unit -----------------------------------------------------------------------------


def test_per_unit_charges_every_billable_unit_at_the_unit_price() -> None:
    charge = rate(spec("per_unit", unit_price="0.05"), D(123))
    assert charge.amount == D("6.15")
    assert charge.billable_quantity == D(123)
    assert charge.explanation == "123 at 0.05 each = 6.15"


def test_per_unit_deducts_the_included_quantity_first_and_says_so() -> None:
    charge = rate(spec("per_unit", unit_price="0.50", included_quantity=25), D(30))
    assert charge.billable_quantity == D(5)
    assert charge.amount == D("2.50")
    assert "30 used, 25 included, 5 charged" in charge.explanation


def test_per_unit_within_the_included_quantity_costs_nothing() -> None:
    charge = rate(spec("per_unit", unit_price="0.50", included_quantity=25), D(25))
    assert charge.amount == D("0.00")
    assert charge.steps == []


def test_fractional_quantities_are_rated_exactly_and_the_line_rounded_once_half_up() -> None:
    # 3.333 GB x 0.05 = 0.16665 -> 0.17 (half up at the cent)
    charge = rate(spec("per_unit", metric="traffic_gb", unit_price="0.05"), D("3.333"))
    assert charge.exact_amount == D("0.16665")
    assert charge.amount == D("0.17")
    assert "3.333 at 0.05 each = 0.16665; total 0.17" in charge.explanation


def test_rounding_happens_once_on_the_line_not_on_each_band() -> None:
    # Two bands of 0.005 each: rounded per band would give 0.01 + 0.01 = 0.02; once: 0.01.
    tiers = [{"up_to": 1, "unit_price": "0.005"}, {"up_to": None, "unit_price": "0.005"}]
    charge = rate(spec("graduated", tiers=tiers), D(2))
    assert charge.exact_amount == D("0.010")
    assert charge.amount == D("0.01")


def test_a_currency_without_minor_unit_rounds_to_whole_units() -> None:
    charge = rate(spec("per_unit", currency="JPY", unit_price="0.5"), D(3))
    assert charge.amount == D(2)  # 1.5 -> 2 half up


def test_the_explanation_shows_amounts_as_kit_money_does() -> None:
    """Grouped thousands, the currency's digits, unit prices with their own digits."""
    charge = rate(spec("per_unit", currency="JPY", unit_price="2"), D(1500))
    assert "1,500 at 2 each = 3,000" in charge.explanation, charge.explanation
    charge = rate(spec("per_unit", unit_price="0.0025"), D(1_000_000))
    assert "at 0.0025 each = 2,500.00" in charge.explanation, charge.explanation


# --- graduated vs volume at the tier edges --------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "graduated", "volume"),
    [
        (1000, "0.00", "0.00"),  # all within the free band
        (1001, "0.00", "2.00"),  # graduated: 1 x 0.002 = 0.002 -> 0.00; volume: 1001 x 0.002
        (10000, "18.00", "20.00"),  # graduated: 9000 x 0.002; volume: 10000 x 0.002
        (10001, "18.00", "10.00"),  # graduated: 18 + 0.001; volume: 10001 x 0.001 = 10.001
        (12000, "20.00", "12.00"),  # graduated: 18 + 2000 x 0.001; volume: 12000 x 0.001
    ],
)
def test_graduated_tiers_charge_each_band_at_its_own_price_and_volume_the_whole_at_one(
    quantity: int, graduated: str, volume: str
) -> None:
    assert rate(spec("graduated", tiers=MESSAGE_TIERS), D(quantity)).amount == D(graduated)
    assert rate(spec("volume", tiers=MESSAGE_TIERS), D(quantity)).amount == D(volume)


def test_graduated_explanation_lists_every_band_with_its_price_and_amount() -> None:
    charge = rate(spec("graduated", tiers=MESSAGE_TIERS), D(12000))
    assert charge.explanation == (
        "the first 1,000 free; 1,001 to 10,000 at 0.002 each = 18.00; "
        "10,001 to 12,000 at 0.001 each = 2.00; total 20.00"
    )
    assert [s.quantity for s in charge.steps] == [D(1000), D(9000), D(2000)]


def test_graduated_flat_fee_is_charged_for_each_band_reached() -> None:
    tiers = [
        {"up_to": 100, "unit_price": "0", "flat_fee": "5"},
        {"up_to": 200, "unit_price": "0", "flat_fee": "3"},
        {"up_to": None, "unit_price": "0.01", "flat_fee": "2"},
    ]
    s = spec("graduated", tiers=tiers)
    assert rate(s, D(100)).amount == D("5.00")
    assert rate(s, D(101)).amount == D("8.00")
    assert rate(s, D(300)).amount == D("11.00")  # 5 + 3 + (100 x 0.01 + 2)


def test_volume_adds_the_flat_fee_of_the_band_the_quantity_falls_in() -> None:
    tiers = [
        {"up_to": 10, "unit_price": "1", "flat_fee": "2"},
        {"up_to": None, "unit_price": "0.5", "flat_fee": "10"},
    ]
    s = spec("volume", tiers=tiers)
    assert rate(s, D(10)).amount == D("12.00")  # 10 x 1 + 2
    assert rate(s, D(11)).amount == D("15.50")  # 11 x 0.5 + 10
    explained = rate(s, D(11)).explanation
    assert "11 in the tier above 10, all at 0.50 each + 10.00 flat = 15.50" in explained


def test_graduated_with_included_quantity_applies_bands_to_the_billable_part() -> None:
    s = spec("graduated", tiers=MESSAGE_TIERS, included_quantity=500)
    charge = rate(s, D(1600))  # 1100 billable: 1000 free + 100 x 0.002
    assert charge.billable_quantity == D(1100)
    assert charge.amount == D("0.20")


# --- package ------------------------------------------------------------------------------


def test_package_rounds_a_partial_block_up_after_the_allowance() -> None:
    s = spec("package", unit_price="5", package_size=1000, included_quantity=500)
    assert rate(s, D(500)).amount == D("0.00")
    assert rate(s, D(501)).amount == D("5.00")  # 1 billable -> 1 block
    assert rate(s, D(1500)).amount == D("5.00")  # 1000 billable -> 1 block
    assert rate(s, D(1501)).amount == D("10.00")  # 1001 billable -> 2 blocks
    assert "1,001 in 2 blocks of 1,000 at 5.00 a block = 10.00" in rate(s, D(1501)).explanation


def test_package_of_fractional_units_counts_blocks_of_the_fraction() -> None:
    s = spec("package", metric="traffic_gb", unit_price="4", package_size="100")
    assert rate(s, D("100.000000001")).amount == D("8.00")


# --- flat_tier ----------------------------------------------------------------------------


def test_flat_tier_charges_the_flat_fee_of_the_tier_reached() -> None:
    tiers = [
        {"up_to": 5000, "flat_fee": "0"},
        {"up_to": 10000, "flat_fee": "250"},
        {"up_to": None, "flat_fee": "600"},
    ]
    s = spec("flat_tier", metric="monthly_active_users", tiers=tiers)
    assert rate(s, D(5000)).amount == D("0.00")
    assert rate(s, D(5001)).amount == D("250.00")
    assert rate(s, D(10000)).amount == D("250.00")
    assert rate(s, D(10001)).amount == D("600.00")


def test_flat_tier_refuses_unit_prices() -> None:
    with pytest.raises(InvalidInput) as err:
        spec("flat_tier", tiers=[{"up_to": None, "unit_price": "1", "flat_fee": "2"}])
    assert err.value.field == "tiers"


# --- cap, minimum, zero ---------------------------------------------------------------------


def test_a_cap_limits_the_charge_and_the_explanation_says_so() -> None:
    s = spec("per_unit", unit_price="0.01", cap="50")
    charge = rate(s, D(10_000))  # 100.00 uncapped
    assert charge.amount == D("50.00")
    assert "capped at 50.00" in charge.explanation
    assert rate(s, D(1000)).amount == D("10.00")


def test_a_minimum_applies_even_without_usage() -> None:
    s = spec("per_unit", unit_price="0.01", minimum="5")
    assert rate(s, D(0)).amount == D("5.00")
    assert "minimum 5.00 applies" in rate(s, D(0)).explanation
    assert rate(s, D(1000)).amount == D("10.00")


@pytest.mark.parametrize("model", ["per_unit", "graduated", "volume", "package", "flat_tier"])
def test_zero_quantity_charges_nothing(model: str) -> None:
    kwargs: dict[str, object] = {}
    if model in ("per_unit", "package"):
        kwargs["unit_price"] = "3"
    if model == "package":
        kwargs["package_size"] = 10
    if model in ("graduated", "volume"):
        kwargs["tiers"] = [{"up_to": None, "unit_price": "1", "flat_fee": "4"}]
    if model == "flat_tier":
        kwargs["tiers"] = [{"up_to": None, "flat_fee": "4"}]
    charge = rate(spec(model, **kwargs), D(0))
    assert charge.amount == D("0.00")
    assert "nothing to charge" in charge.explanation


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tiers", "field"),
    [
        ([], "tiers"),
        ([{"up_to": 10, "unit_price": "1"}], "tiers[0].up_to"),  # last must be open-ended
        ([{"up_to": None}, {"up_to": None}], "tiers[0].up_to"),
        ([{"up_to": 10}, {"up_to": 5}, {"up_to": None}], "tiers[1].up_to"),
        ([{"up_to": 10}, {"up_to": 10}, {"up_to": None}], "tiers[1].up_to"),
        ([{"up_to": None, "unit_price": "-1"}], "tiers[0].unit_price"),
        ([{"up_to": None, "flat_fee": "-0.01"}], "tiers[0].flat_fee"),
        ([{"up_to": 0}, {"up_to": None}], "tiers[0].up_to"),
        ([{"up_to": None, "price": "1"}], "tiers[0]"),
        ([{"up_to": None, "unit_price": 0.1}], "tiers[0].unit_price"),  # floats are not exact
    ],
)
def test_invalid_tiers_are_refused_naming_the_field(
    tiers: list[dict[str, object]], field: str
) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_tiers(tiers)  # type: ignore[arg-type]
    assert err.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"model": "bogus"}, "model"),
        ({"model": "per_unit"}, "unit_price"),
        ({"model": "per_unit", "unit_price": "-1"}, "unit_price"),
        ({"model": "package", "unit_price": "1"}, "package_size"),
        ({"model": "package", "unit_price": "1", "package_size": 0}, "package_size"),
        ({"model": "graduated"}, "tiers"),
        ({"model": "per_unit", "unit_price": "1", "currency": "EURO"}, "currency"),
        ({"model": "per_unit", "unit_price": "1", "cap": "5", "minimum": "6"}, "minimum"),
        ({"model": "per_unit", "unit_price": "1", "included_quantity": "-1"}, "included_quantity"),
    ],
)
def test_invalid_price_specs_are_refused_naming_the_field(
    kwargs: dict[str, object], field: str
) -> None:
    kwargs = {"metric": "messages", "currency": "EUR", **kwargs}
    with pytest.raises(InvalidInput) as err:
        PriceSpec(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_negative_quantities_cannot_be_rated() -> None:
    with pytest.raises(InvalidInput):
        rate(spec("per_unit", unit_price="1"), D(-1))


def test_prices_in_the_calculation_show_at_least_the_minor_unit_and_no_padding() -> None:
    # 4 and 4.000000000000 (as PostgreSQL reads numeric(38, 12) back) both read 4.00.
    for price in ("4", "4.000000000000"):
        s = spec("per_unit", metric="traffic_gb", unit_price=price)
        assert rate(s, D(2)).explanation == "2 at 4.00 each = 8.00"
    fine = spec("per_unit", unit_price="0.002000000000")
    assert "1,000 at 0.002 each = 2.00" in rate(fine, D(1000)).explanation


def test_tiers_round_trip_through_their_json_form() -> None:
    s = spec("graduated", tiers=MESSAGE_TIERS)
    assert parse_tiers(s.tiers_json()) == s.tiers
    assert s.tiers[0] == Tier(up_to=D(1000), unit_price=D("0.000"), flat_fee=D(0))
    assert s.model is PricingModel.GRADUATED


# --- properties -----------------------------------------------------------------------------

quantities = st.decimals(min_value=0, max_value=10**7, places=3, allow_nan=False)
prices = st.decimals(min_value=0, max_value=10, places=4, allow_nan=False)


@st.composite
def tier_lists(draw: st.DrawFn) -> list[dict[str, object]]:
    bounds = sorted(draw(st.sets(st.integers(1, 10**6), min_size=0, max_size=4)))
    ups: list[int | None] = [*bounds, None]
    return [
        {
            "up_to": up,
            "unit_price": str(draw(prices)),
            "flat_fee": str(draw(st.decimals(min_value=0, max_value=100, places=2))),
        }
        for up in ups
    ]


@st.composite
def monotone_specs(draw: st.DrawFn) -> PriceSpec:
    model = draw(st.sampled_from(["per_unit", "graduated", "package"]))
    included = draw(st.decimals(min_value=0, max_value=1000, places=0))
    cap = draw(st.none() | st.decimals(min_value=0, max_value=10**5, places=2))
    if model == "per_unit":
        return spec(model, unit_price=draw(prices), included_quantity=included, cap=cap)
    if model == "package":
        return spec(
            model,
            unit_price=draw(prices),
            package_size=draw(st.integers(1, 1000)),
            included_quantity=included,
            cap=cap,
        )
    return spec(model, tiers=draw(tier_lists()), included_quantity=included, cap=cap)


@settings(max_examples=200, deadline=None)
@given(monotone_specs(), quantities, quantities)
def test_per_unit_graduated_and_package_never_charge_less_for_more(
    s: PriceSpec, a: Decimal, b: Decimal
) -> None:
    low, high = sorted((a, b))
    assert rate(s, low).amount <= rate(s, high).amount


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["graduated", "volume", "flat_tier"]),
    tier_lists(),
    quantities,
    st.none() | st.decimals(min_value=0, max_value=1000, places=2),
)
def test_no_charge_is_ever_negative_and_a_cap_is_respected(
    model: str, tiers: list[dict[str, object]], q: Decimal, cap: Decimal | None
) -> None:
    if model == "flat_tier":
        tiers = [{**t, "unit_price": "0"} for t in tiers]
    charge = rate(spec(model, tiers=tiers, cap=cap), q)
    assert charge.amount >= 0
    if cap is not None:
        assert charge.amount <= cap


@settings(max_examples=200, deadline=None)
@given(tier_lists(), quantities)
def test_graduated_equals_the_sum_of_its_bands_each_within_its_band(
    tiers: list[dict[str, object]], q: Decimal
) -> None:
    charge = rate(spec("graduated", tiers=tiers), q)
    parsed = parse_tiers(tiers)  # type: ignore[arg-type]
    # Each band holds no more than its width, and the band quantities add up to the quantity.
    assert sum((s.quantity for s in charge.steps), D(0)) == q
    lower = D(0)
    for step, tier in zip(charge.steps, parsed, strict=False):
        if tier.up_to is not None:
            assert step.quantity <= tier.up_to - lower
            lower = tier.up_to
    # Never more than charging every unit at the dearest band's price plus every flat fee.
    dearest = max(t.unit_price for t in parsed)
    assert charge.exact_amount <= q * dearest + sum((t.flat_fee for t in parsed), D(0))


def test_price_words_list_every_tier_in_plain_words() -> None:
    from imhost.catalog.pricing import price_words

    graduated = spec("graduated", tiers=MESSAGE_TIERS)
    assert price_words(graduated) == [
        "the first 1,000: free",
        "1,001 to 10,000: €0.002 each",
        "above 10,000: €0.001 each",
    ]
    stairs = PriceSpec(
        model="flat_tier",
        metric="monthly_active_users",
        currency="EUR",
        tiers=parse_tiers(
            [
                {"up_to": "5000", "flat_fee": "0"},
                {"up_to": "10000", "flat_fee": "250"},
                {"up_to": None, "flat_fee": "600"},
            ]
        ),
    )
    assert price_words(stairs) == [
        "1 to 5,000: free",
        "5,001 to 10,000: a flat €250.00",
        "above 10,000: a flat €600.00",
    ]
    package = PriceSpec(
        model="package",
        metric="traffic_gb",
        currency="EUR",
        unit_price=D(4),
        package_size=D(100),
        included_quantity=D(100),
        cap=D(50),
    )
    assert price_words(package) == [
        "100 included",
        "then €4.00 per 100 (a part of 100 counts whole)",
        "at most €50.00 a period",
    ]
