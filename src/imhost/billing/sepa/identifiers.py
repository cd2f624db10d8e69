"""Account and party identifiers of SEPA, checked before anything is stored.

- IBAN (ISO 13616) and BIC (ISO 9362) through python-stdnum, with messages a person can act on.
- The SEPA creditor identifier (EPC262-08): ``CC`` country, two check digits, a three-character
  creditor business code (not part of the check), the national identifier. The check digits
  are ISO 7064 MOD 97-10 over the national identifier followed by the country code and ``00``.
- Text in a SEPA file is limited to the Latin character set of the EPC implementation
  guidelines (EPC115-06, 1.4): ``sepa_text`` transliterates the rest.
"""

from __future__ import annotations

import re
import unicodedata

from stdnum import bic as stdnum_bic
from stdnum import iban as stdnum_iban
from stdnum.exceptions import InvalidChecksum, ValidationError
from stdnum.iso7064 import mod_97_10

from imhost.kit.errors import InvalidInput

# Countries and territories of the SEPA schemes (EPC409-09, list of SEPA scheme countries).
SEPA_COUNTRIES = frozenset(
    [
        "AD",
        "AT",
        "BE",
        "BG",
        "CH",
        "CY",
        "CZ",
        "DE",
        "DK",
        "EE",
        "ES",
        "FI",
        "FR",
        "GB",
        "GI",
        "GR",
        "HR",
        "HU",
        "IE",
        "IS",
        "IT",
        "LI",
        "LT",
        "LU",
        "LV",
        "MC",
        "MT",
        "NL",
        "NO",
        "PL",
        "PT",
        "RO",
        "SE",
        "SI",
        "SK",
        "SM",
        "VA",
        "AX",
        "GF",
        "GP",
        "MQ",
        "YT",
        "RE",
        "BL",
        "MF",
        "PM",
        "GG",
        "JE",
        "IM",
    ]
)

_NOT_AN_IBAN = (
    "This is not a valid IBAN. An IBAN starts with a country code and has a fixed length for "
    "each country, e.g. DE89 3704 0044 0532 0130 00."
)
_SEPA_CHARS = re.compile(r"[^A-Za-z0-9/\-?:().,'+ ]")


def normalize_iban(value: str) -> str:
    """An IBAN as typed (spaces, lower case) in its electronic form, or a plain error."""
    raw = value.strip()
    if not raw:
        raise InvalidInput("Fill in the IBAN.", field="iban")
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{8,30}", re.sub(r"[\s\-]", "", raw).upper()):
        raise InvalidInput(_NOT_AN_IBAN, field="iban")
    try:
        iban = str(stdnum_iban.validate(raw))
    except InvalidChecksum:
        raise InvalidInput(
            "This IBAN is not correct: its check digits do not match. Check it for a typing "
            "mistake.",
            field="iban",
        ) from None
    except ValidationError:
        raise InvalidInput(_NOT_AN_IBAN, field="iban") from None
    if iban[:2] not in SEPA_COUNTRIES:
        raise InvalidInput(
            "Direct debit works only with an account in a SEPA country.", field="iban"
        )
    return iban


def normalize_bic(value: str, *, required: bool = False) -> str | None:
    """A BIC (8 or 11 characters), or None when left empty and not required."""
    raw = value.strip().replace(" ", "").upper()
    if not raw:
        if required:
            raise InvalidInput("Fill in the BIC.", field="bic")
        return None
    try:
        return str(stdnum_bic.validate(raw))
    except ValidationError:
        raise InvalidInput(
            "This is not a BIC. A BIC has 8 or 11 letters and digits, e.g. DEUTDEFF500.",
            field="bic",
        ) from None


def normalize_creditor_id(value: str) -> str:
    """A SEPA creditor identifier, e.g. DE98ZZZ09999999999, checked with MOD 97-10."""
    ci = re.sub(r"\s+", "", value).upper()
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{3}[A-Z0-9]{1,28}", ci):
        raise InvalidInput(
            "This is not a creditor identifier. It looks like DE98ZZZ09999999999.",
            field="creditor_id",
        )
    if ci[:2] not in SEPA_COUNTRIES:
        raise InvalidInput(
            "A creditor identifier starts with the code of a SEPA country.", field="creditor_id"
        )
    if not mod_97_10.is_valid(ci[7:] + ci[:4]):
        raise InvalidInput(
            "This creditor identifier is not correct: its check digits do not match.",
            field="creditor_id",
        )
    return ci


def mask_iban(iban: str) -> str:
    """What a page shows of an IBAN: country, check digits and the last four characters."""
    if len(iban) < 8:
        return "****"
    return f"{iban[:4]} **** {iban[-4:]}"


def format_iban(iban: str) -> str:
    """An IBAN in groups of four, for the mandate a person reads and keeps."""
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def sepa_text(value: str, max_length: int) -> str:
    """``value`` in the SEPA Latin character set, cut to ``max_length``."""
    decomposed = unicodedata.normalize("NFKD", value)
    ascii_only = "".join(c for c in decomposed if not unicodedata.combining(c))
    for src, dst in (("ß", "ss"), ("&", "+"), ("Æ", "AE"), ("æ", "ae"), ("Ø", "O"), ("ø", "o")):
        ascii_only = ascii_only.replace(src, dst)
    cleaned = _SEPA_CHARS.sub(" ", ascii_only)
    return re.sub(r"\s+", " ", cleaned).strip()[:max_length].strip()


def sepa_id(value: str, max_length: int = 35) -> str:
    """An identifier (end-to-end id, message id) in the restricted set, no spaces, no leading
    or trailing slash and no double slash (EPC115-06, 1.4)."""
    cleaned = re.sub(r"[^A-Za-z0-9+?/\-:().,']", "", sepa_text(value, 200).replace(" ", "-"))
    cleaned = re.sub(r"/+", "/", cleaned).strip("/")
    return cleaned[:max_length].strip("/") or "NOTPROVIDED"
