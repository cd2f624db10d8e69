"""VAT identification numbers: EU ones checked with python-stdnum, others kept as typed.

An EU VAT ID is the member state's prefix (ISO 3166 alpha-2, but ``EL`` for Greece and ``XI``
for Northern Ireland) followed by the national number, whose length, letters and check digit
``stdnum.eu.vat`` verifies (a format check: whether the number is registered is a VIES
lookup, which this module does not make). A tax number of a country outside the EU has no
common format; it is kept as typed, spaces trimmed.
"""

from __future__ import annotations

import re

from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError

from imhost.kit.errors import InvalidInput

# The VAT prefix of a member state when it differs from its ISO 3166 code.
_PREFIX_COUNTRY = {"EL": "GR", "XI": "GB"}
_COUNTRY_PREFIX = {"GR": "EL"}

EU_VAT_PREFIXES = frozenset(p.upper() for p in eu_vat.MEMBER_STATES) | {"EL"}

EXAMPLE = "DE 136695976 or FR 40303265045"


def _prefix(value: str) -> str:
    return re.sub(r"[^A-Za-z]", "", value[:2]).upper()


def country_of_prefix(prefix: str) -> str:
    """The ISO 3166 country of a VAT prefix (``EL`` is Greece)."""
    return _PREFIX_COUNTRY.get(prefix, prefix)


def vat_prefix(country: str) -> str:
    return _COUNTRY_PREFIX.get(country.upper(), country.upper())


def is_eu_vat_id(value: str) -> bool:
    """Whether ``value`` starts like an EU VAT ID (a member state's prefix)."""
    compacted = re.sub(r"[\s.\-/]", "", value).upper()
    return compacted[:2] in EU_VAT_PREFIXES and compacted[:2] != "XI"


def is_valid_vat_id(country: str, value: str) -> bool:
    """True when ``value`` is a well-formed EU VAT ID (check digit included) of ``country``."""
    try:
        compacted = eu_vat.compact(value)
    except ValidationError:
        return False
    if country_of_prefix(compacted[:2]) != country.upper():
        return False
    return bool(eu_vat.is_valid(compacted))


def check_tax_id(value: str, country: str | None, *, field: str = "tax_id") -> str | None:
    """The tax id to store: EU VAT IDs compact (``DE136695976``), others trimmed.

    An id that starts like an EU VAT ID, or any id of a customer in an EU member state, must
    be a valid EU VAT ID of that state; the message says what is wrong in plain words.
    """
    text = " ".join(value.split())
    if not text:
        return None
    if len(text) > 64:
        raise InvalidInput("A VAT ID is at most 64 characters.", field=field)
    code = (country or "").strip().upper()
    eu_country = vat_prefix(code) in EU_VAT_PREFIXES and code not in ("", "GB")
    if not (eu_country or is_eu_vat_id(text)):
        return text
    try:
        compacted = eu_vat.compact(text)
    except ValidationError:
        compacted = ""
    if not compacted or not eu_vat.is_valid(compacted):
        if eu_country and not is_eu_vat_id(text):
            raise InvalidInput(
                f"An EU VAT ID starts with its country's letters ({vat_prefix(code)} here), "
                f"then the number, e.g. {EXAMPLE}.",
                field=field,
            )
        raise InvalidInput(
            "That is not a valid EU VAT ID: a letter or digit is missing, extra or mistyped. "
            f"Copy it from your VAT registration, e.g. {EXAMPLE}.",
            field=field,
        )
    issuer = country_of_prefix(compacted[:2])
    if code and issuer != code:
        raise InvalidInput(
            f"That VAT ID is from {issuer}, but the billing country is {code}. "
            f"Use the VAT ID of {code}, or change the country.",
            field=field,
        )
    return str(compacted)
