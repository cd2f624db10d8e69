"""Domain names as customers type them, checked and put in one form.

Names are validated as IDNA 2008 (RFC 5890-5893) with the UTS 46 mapping applied first (so
``Chat.Bücher.Example`` becomes ``chat.xn--bcher-kva.example``), at most 253 octets in their
ASCII form (RFC 1035 §2.3.4 less the final dot), labels of 1 to 63 octets of letters, digits
and hyphens (no hyphen first or last), and a top-level label that is not all digits.
"""

from __future__ import annotations

import idna

from imhost.kit.errors import InvalidInput

MAX_OCTETS = 253
MAX_LABEL = 63
_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def normalize_domain(value: str) -> str:
    """The A-label form of ``value`` (ASCII, lower case, no final dot), or InvalidInput."""
    text = value.strip().rstrip(".")
    if not text:
        raise InvalidInput("Enter a domain name, such as chat.example.com.", field="domain")
    if any(c.isspace() for c in text) or "@" in text or "/" in text or ":" in text:
        raise InvalidInput(
            "Enter only the domain name, such as chat.example.com (no spaces, addresses or "
            "web links).",
            field="domain",
        )
    if len(text) > MAX_OCTETS:
        raise InvalidInput(
            f"A domain name is at most {MAX_OCTETS} characters long (in its ASCII form).",
            field="domain",
        )
    if any(len(label) > MAX_LABEL for label in text.split(".")):
        raise InvalidInput(
            f"Each part of a domain name has 1 to {MAX_LABEL} characters.", field="domain"
        )
    try:
        ascii_name = idna.encode(text, uts46=True, std3_rules=True).decode("ascii")
    except idna.IDNAError:
        raise InvalidInput(
            f"{text[:80]} is not a valid domain name: use letters, digits and hyphens, with "
            "dots between the parts.",
            field="domain",
        ) from None
    ascii_name = ascii_name.lower()
    if len(ascii_name) > MAX_OCTETS:
        raise InvalidInput(
            f"A domain name is at most {MAX_OCTETS} characters long (in its ASCII form).",
            field="domain",
        )
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise InvalidInput(
            "Enter a full domain name with a dot, such as chat.example.com.", field="domain"
        )
    for label in labels:
        if not label or len(label) > MAX_LABEL:
            raise InvalidInput(
                f"Each part of a domain name has 1 to {MAX_LABEL} characters.", field="domain"
            )
        if not set(label) <= _LDH or label.startswith("-") or label.endswith("-"):
            raise InvalidInput(
                "A domain name uses letters, digits and hyphens (not at the start or end "
                "of a part).",
                field="domain",
            )
    if labels[-1].isdigit():
        raise InvalidInput(
            "Enter a domain name, not an IP address.",
            field="domain",
        )
    return ascii_name


def display_name(ascii_name: str) -> str:
    """The Unicode form for people (``xn--bcher-kva.example`` -> ``bücher.example``)."""
    try:
        return str(idna.decode(ascii_name))
    except idna.IDNAError:
        return ascii_name


def is_within(name: str, parent: str) -> bool:
    """``name`` is ``parent`` or one of its subdomains."""
    return name == parent or name.endswith("." + parent)
