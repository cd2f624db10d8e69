"""Which tax applies to a customer, pure (no database).

The rule, in order (docs/billing.md, "Taxes"):

1. A business customer in another EU member state than the provider, with a tax id that looks
   valid for its country (format check only, no VIES lookup), pays 0 % under the reverse
   charge; the invoice carries the legal note.
2. Otherwise the customer's country's rate applies, as configured by the provider.
3. A customer without a country is taxed at the provider's home country rate.
4. A country with no configured rate is taxed at 0 % (export outside the provider's tax
   scope); the invoice says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

EU_COUNTRIES = frozenset(
    {
        "AT",
        "BE",
        "BG",
        "CY",
        "CZ",
        "DE",
        "DK",
        "EE",
        "ES",
        "FI",
        "FR",
        "GR",
        "HR",
        "HU",
        "IE",
        "IT",
        "LT",
        "LU",
        "LV",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SE",
        "SI",
        "SK",
    }
)

# VAT identification number formats (the country prefix, then the national part). Greece
# uses the prefix EL. Source: the European Commission's VIES format descriptions.
VAT_ID_FORMATS: dict[str, str] = {
    "AT": r"ATU\d{8}",
    "BE": r"BE[01]\d{9}",
    "BG": r"BG\d{9,10}",
    "CY": r"CY\d{8}[A-Z]",
    "CZ": r"CZ\d{8,10}",
    "DE": r"DE\d{9}",
    "DK": r"DK\d{8}",
    "EE": r"EE\d{9}",
    "ES": r"ES[A-Z0-9]\d{7}[A-Z0-9]",
    "FI": r"FI\d{8}",
    "FR": r"FR[A-HJ-NP-Z0-9]{2}\d{9}",
    "GR": r"EL\d{9}",
    "HR": r"HR\d{11}",
    "HU": r"HU\d{8}",
    "IE": r"IE\d{7}[A-W][A-I]?|IE\d[A-Z+*]\d{5}[A-W]",
    "IT": r"IT\d{11}",
    "LT": r"LT(\d{9}|\d{12})",
    "LU": r"LU\d{8}",
    "LV": r"LV\d{11}",
    "MT": r"MT\d{8}",
    "NL": r"NL\d{9}B\d{2}",
    "PL": r"PL\d{10}",
    "PT": r"PT\d{9}",
    "RO": r"RO\d{2,10}",
    "SE": r"SE\d{12}",
    "SI": r"SI\d{8}",
    "SK": r"SK\d{10}",
}

REVERSE_CHARGE_NOTE = (
    "Reverse charge: VAT to be accounted for by the recipient "
    "(Article 196, Council Directive 2006/112/EC)."
)


def normalize_tax_id(tax_id: str) -> str:
    return re.sub(r"[\s.\-]", "", tax_id).upper()


def tax_id_looks_valid(country: str, tax_id: str) -> bool:
    """True when ``tax_id`` matches the VAT id format of ``country`` (a format check)."""
    pattern = VAT_ID_FORMATS.get(country.upper())
    if pattern is None:
        return False
    return re.fullmatch(pattern, normalize_tax_id(tax_id)) is not None


@dataclass(frozen=True)
class TaxDecision:
    percent: Decimal
    name: str
    country: str | None
    reverse_charge: bool
    note: str | None


def decide_tax(
    *,
    provider_country: str,
    customer_country: str | None,
    customer_tax_id: str | None,
    rates: Mapping[str, tuple[Decimal, str]],
) -> TaxDecision:
    """The tax for a customer. ``rates`` maps country to (percent, tax name)."""
    provider_country = provider_country.upper()
    country = (customer_country or provider_country).upper()
    if (
        customer_tax_id
        and country != provider_country
        and country in EU_COUNTRIES
        and provider_country in EU_COUNTRIES
        and tax_id_looks_valid(country, customer_tax_id)
    ):
        name = rates.get(country, (Decimal(0), "VAT"))[1]
        return TaxDecision(Decimal(0), name, country, True, REVERSE_CHARGE_NOTE)
    if country in rates:
        percent, name = rates[country]
        return TaxDecision(percent, name, country, False, None)
    return TaxDecision(
        Decimal(0), "Tax", country, False, f"No tax rate is configured for {country}: 0 %."
    )
