"""Which tax applies to a customer, pure (no database).

The rule, in order (docs/billing.md, "Taxes"):

1. A business customer in another EU member state than the provider, with a tax id that looks
   valid for its country (``kit.vat``: python-stdnum's format and check-digit test, no VIES
   lookup), pays 0 % under the reverse charge; the invoice carries the legal note.
2. Otherwise the customer's country's rate applies, as configured by the provider.
3. A customer without a country is taxed at the provider's home country rate.
4. A country with no configured rate is taxed at 0 % (export outside the provider's tax
   scope); the invoice says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from imhost.kit.vat import is_valid_vat_id

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

REVERSE_CHARGE_NOTE = (
    "Reverse charge: VAT to be accounted for by the recipient "
    "(Article 196, Council Directive 2006/112/EC)."
)


def tax_id_looks_valid(country: str, tax_id: str) -> bool:
    """True when ``tax_id`` is a well-formed EU VAT ID of ``country`` (python-stdnum checks
    its length, letters and check digit; no VIES lookup)."""
    return is_valid_vat_id(country, tax_id)


@dataclass(frozen=True)
class TaxDecision:
    percent: Decimal
    name: str
    country: str | None
    reverse_charge: bool
    note: str | None
    # The EN 16931 VAT category (UNTDID 5305): S standard rate, Z a configured 0 % rate,
    # AE reverse charge, O not subject to VAT (no rate configured for the country).
    category: str = "S"


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
        return TaxDecision(Decimal(0), name, country, True, REVERSE_CHARGE_NOTE, "AE")
    if country in rates:
        percent, name = rates[country]
        return TaxDecision(percent, name, country, False, None, "S" if percent > 0 else "Z")
    return TaxDecision(
        Decimal(0), "Tax", country, False, f"No tax rate is configured for {country}: 0 %.", "O"
    )
