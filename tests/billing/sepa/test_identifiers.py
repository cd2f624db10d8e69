"""IBAN, BIC and creditor identifier checks, the SEPA character set and banking days."""

from __future__ import annotations

from datetime import date

import pytest

from imhost.billing.sepa.calendar import (
    earliest_collection_date,
    easter_sunday,
    is_banking_day,
    next_banking_day,
)
from imhost.billing.sepa.identifiers import (
    mask_iban,
    normalize_bic,
    normalize_creditor_id,
    normalize_iban,
    sepa_id,
    sepa_text,
)
from imhost.kit.errors import InvalidInput


def test_an_iban_typed_with_spaces_and_lower_case_is_accepted() -> None:
    assert normalize_iban(" de89 3704 0044 0532 0130 00 ") == "DE89370400440532013000"


@pytest.mark.parametrize(
    ("iban", "words"),
    [
        ("DE89370400440532013001", "check digits do not match"),
        ("DE8937040044053201300", "check digits do not match"),  # a digit missing
        ("GB04WEST123456987654", "fixed length for each country"),
        ("hello", "This is not a valid IBAN"),
        ("", "Fill in the IBAN"),
        ("US64SVBKUS6S3300958879", "This is not a valid IBAN"),
        ("BR1800360305000010009795493C1", "SEPA country"),
    ],
)
def test_a_wrong_iban_gets_a_plain_message(iban: str, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        normalize_iban(iban)
    assert words in caught.value.detail
    assert caught.value.field == "iban"


def test_bic_is_optional_but_checked_when_given() -> None:
    assert normalize_bic("") is None
    assert normalize_bic("deutdeff 500") == "DEUTDEFF500"
    with pytest.raises(InvalidInput, match="not a BIC"):
        normalize_bic("COBADEF")
    with pytest.raises(InvalidInput, match="Fill in the BIC"):
        normalize_bic(" ", required=True)


def test_the_creditor_identifier_is_checked_with_mod_97_10() -> None:
    assert normalize_creditor_id("de98 zzz 09999999999") == "DE98ZZZ09999999999"
    # the business code (ZZZ) is not part of the check
    assert normalize_creditor_id("DE98ABC09999999999") == "DE98ABC09999999999"
    with pytest.raises(InvalidInput, match="check digits"):
        normalize_creditor_id("DE97ZZZ09999999999")
    with pytest.raises(InvalidInput, match="not a creditor identifier"):
        normalize_creditor_id("ZZZ")


def test_a_page_shows_only_the_ends_of_an_iban() -> None:
    assert mask_iban("DE89370400440532013000") == "DE89 **** 3000"


def test_text_is_cut_to_the_sepa_character_set() -> None:
    assert sepa_text("Müller & Söhne — Straße", 70) == "Muller + Sohne Strasse"
    assert sepa_id("INV 2026/000042") == "INV-2026/000042"
    assert sepa_id("//a//b//") == "a/b"
    assert len(sepa_id("X" * 50)) == 35


def test_target2_holidays_are_not_banking_days() -> None:
    assert easter_sunday(2026) == date(2026, 4, 5)
    assert not is_banking_day(date(2026, 4, 3))  # Good Friday
    assert not is_banking_day(date(2026, 4, 6))  # Easter Monday
    assert not is_banking_day(date(2026, 5, 1))
    assert not is_banking_day(date(2026, 12, 26))
    assert not is_banking_day(date(2026, 2, 7))  # a Saturday
    assert is_banking_day(date(2026, 2, 9))
    assert next_banking_day(date(2026, 12, 24)) == date(2026, 12, 24)
    assert next_banking_day(date(2026, 12, 25)) == date(2026, 12, 28)


def test_a_file_needs_two_banking_days_before_the_collection_date() -> None:
    assert earliest_collection_date(date(2026, 2, 9)) == date(2026, 2, 11)  # Mon -> Wed
    assert earliest_collection_date(date(2026, 2, 12)) == date(2026, 2, 16)  # Thu -> Mon
    assert earliest_collection_date(date(2026, 4, 2)) == date(2026, 4, 8)  # over Easter
