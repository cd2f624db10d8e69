"""Invoice composition: taxes, reverse charge, coupons, carry-over, and its invariants."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from imhost.billing.composition import CouponTerms, DraftLine, compose_invoice
from imhost.billing.taxes import (
    REVERSE_CHARGE_NOTE,
    TaxDecision,
    decide_tax,
    tax_id_looks_valid,
)

RATES = {"DE": (Decimal("19"), "VAT"), "FR": (Decimal("20"), "TVA"), "AT": (Decimal("20"), "USt")}
NO_TAX = TaxDecision(Decimal(0), "VAT", None, False, None)


def line(amount: str, kind: str = "base_fee") -> DraftLine:
    return DraftLine(kind=kind, description=kind, amount=Decimal(amount))


def test_a_french_business_with_a_valid_looking_vat_id_pays_no_tax_under_reverse_charge() -> None:
    tax = decide_tax(
        provider_country="DE",
        customer_country="FR",
        customer_tax_id="FR 40 303265045",
        rates=RATES,
    )
    assert tax.reverse_charge and tax.percent == 0 and tax.note == REVERSE_CHARGE_NOTE
    inv = compose_invoice("EUR", [line("123.40")], coupon=None, tax=tax, prices_include_tax=False)
    assert inv.total == Decimal("123.40") and inv.tax_total == 0
    assert inv.lines[-1].calculation == "reverse charge: 0 % of 123.40 = 0.00"
    assert inv.tax_note == REVERSE_CHARGE_NOTE


def test_no_reverse_charge_in_the_providers_own_country_or_with_a_malformed_id() -> None:
    home = decide_tax(
        provider_country="DE", customer_country="DE", customer_tax_id="DE123456789", rates=RATES
    )
    assert not home.reverse_charge and home.percent == Decimal("19")
    bad = decide_tax(
        provider_country="DE", customer_country="FR", customer_tax_id="12345", rates=RATES
    )
    assert not bad.reverse_charge and bad.percent == Decimal("20")
    outside = decide_tax(
        provider_country="DE", customer_country="US", customer_tax_id="12-3456789", rates=RATES
    )
    assert not outside.reverse_charge and outside.percent == 0


def test_a_customer_without_a_country_pays_the_home_country_rate() -> None:
    tax = decide_tax(
        provider_country="DE", customer_country=None, customer_tax_id=None, rates=RATES
    )
    assert tax.percent == Decimal("19") and tax.country == "DE"


def test_vat_ids_are_checked_per_country_with_their_check_digit() -> None:
    assert tax_id_looks_valid("AT", "ATU13585627")
    assert not tax_id_looks_valid("AT", "ATU13585626")  # the check digit is wrong
    assert not tax_id_looks_valid("AT", "AT13585627")  # Austria's numbers start with U
    assert tax_id_looks_valid("GR", "EL094259216")  # Greece's prefix is EL
    assert tax_id_looks_valid("NL", "NL004495445B01")
    assert not tax_id_looks_valid("NL", "NL004495445")
    assert not tax_id_looks_valid("BE", "FR40303265045")  # valid, but French


def test_a_well_formed_id_with_a_wrong_check_digit_gets_no_reverse_charge() -> None:
    tax = decide_tax(
        provider_country="DE", customer_country="FR", customer_tax_id="FR41303265045", rates=RATES
    )
    assert not tax.reverse_charge and tax.percent == Decimal("20") and tax.category == "S"


def test_each_decision_names_its_en16931_vat_category() -> None:
    def category(country: str, tax_id: str | None = None) -> str:
        rates = {**RATES, "CH": (Decimal(0), "VAT")}
        return decide_tax(
            provider_country="DE", customer_country=country, customer_tax_id=tax_id, rates=rates
        ).category

    assert category("DE") == "S"
    assert category("FR", "FR40303265045") == "AE"
    assert category("CH") == "Z"  # a 0 % rate the provider configured
    assert category("US") == "O"  # no rate: outside the provider's VAT


def test_exclusive_tax_is_added_as_its_own_line_worked_by_hand() -> None:
    tax = decide_tax(
        provider_country="AT", customer_country="AT", customer_tax_id=None, rates=RATES
    )
    inv = compose_invoice(
        "EUR",
        [line("100.00"), line("23.40", "usage")],
        coupon=None,
        tax=tax,
        prices_include_tax=False,
    )
    assert inv.lines[-1].calculation == "20 % of 123.40 = 24.68"
    assert inv.subtotal == Decimal("123.40") and inv.total == Decimal("148.08")


def test_inclusive_prices_state_the_tax_they_contain_without_adding_it() -> None:
    tax = decide_tax(
        provider_country="DE", customer_country="DE", customer_tax_id=None, rates=RATES
    )
    inv = compose_invoice("EUR", [line("119.00")], coupon=None, tax=tax, prices_include_tax=True)
    assert inv.total == Decimal("119.00")
    assert inv.tax_total == Decimal("19.00") and inv.subtotal == Decimal("100.00")
    assert not inv.lines[-1].counts_in_total


def test_a_percent_coupon_discounts_the_charges_before_tax() -> None:
    tax = TaxDecision(Decimal("19"), "VAT", "DE", False, None)
    inv = compose_invoice(
        "EUR",
        [line("49.00"), line("10.00", "add_on")],
        coupon=CouponTerms(code="SAVE20", kind="percent", percent_off=Decimal("20")),
        tax=tax,
        prices_include_tax=False,
    )
    discount = next(x for x in inv.lines if x.kind == "discount")
    assert discount.amount == Decimal("-11.80")
    assert discount.calculation == "20 % of 59.00 = 11.80"
    assert inv.lines[-1].calculation == "19 % of 47.20 = 8.97"
    assert inv.total == Decimal("56.17")


def test_an_amount_coupon_never_discounts_more_than_the_charges() -> None:
    inv = compose_invoice(
        "EUR",
        [line("5.00")],
        coupon=CouponTerms(code="TENOFF", kind="amount", amount_off=Decimal("10.00")),
        tax=NO_TAX,
        prices_include_tax=False,
    )
    assert inv.total == 0 and inv.carried_to_credit == 0


def test_credits_larger_than_the_charges_become_account_credit_and_the_total_is_zero() -> None:
    inv = compose_invoice(
        "EUR",
        [line("10.00", "usage"), line("-30.00", "proration")],
        coupon=None,
        tax=TaxDecision(Decimal("19"), "VAT", "DE", False, None),
        prices_include_tax=False,
    )
    assert inv.total == 0
    assert inv.carried_to_credit == Decimal("20.00")
    assert sum(x.amount for x in inv.lines if x.counts_in_total) == 0


amounts = st.decimals(min_value=-500, max_value=5000, places=4, allow_nan=False)
coupons = st.one_of(
    st.none(),
    st.builds(
        CouponTerms,
        code=st.just("C"),
        kind=st.just("percent"),
        percent_off=st.decimals(min_value="0.01", max_value=100, places=2),
    ),
    st.builds(
        CouponTerms,
        code=st.just("C"),
        kind=st.just("amount"),
        amount_off=st.decimals(min_value="0.01", max_value=1000, places=2),
    ),
)
taxes = st.builds(
    TaxDecision,
    percent=st.decimals(min_value=0, max_value=30, places=2),
    name=st.just("VAT"),
    country=st.just("DE"),
    reverse_charge=st.booleans(),
    note=st.none(),
)


@given(
    values=st.lists(amounts, min_size=0, max_size=12),
    coupon=coupons,
    tax=taxes,
    inclusive=st.booleans(),
    currency=st.sampled_from(["EUR", "JPY", "KWD"]),
)
def test_lines_sum_to_the_total_which_is_never_negative_and_the_same_inputs_give_the_same_invoice(
    values: list[Decimal],
    coupon: CouponTerms | None,
    tax: TaxDecision,
    inclusive: bool,
    currency: str,
) -> None:
    charges = [
        DraftLine(kind="proration" if v < 0 else "usage", description="x", amount=v) for v in values
    ]
    inv = compose_invoice(currency, charges, coupon=coupon, tax=tax, prices_include_tax=inclusive)
    assert inv.total == sum(x.amount for x in inv.lines if x.counts_in_total)
    assert inv.total >= 0
    assert inv.subtotal + inv.tax_total == inv.total
    again = compose_invoice(
        currency, list(charges), coupon=coupon, tax=tax, prices_include_tax=inclusive
    )
    assert again == inv
