"""Identifiers.

Internal primary keys are opaque strings (``new_id``). Identifiers a person reads or types
(ticket and invoice numbers, reference codes) use Crockford's base 32: no I, L, O or U, so
they survive being read aloud or copied by hand, and are case-insensitive.
"""

from __future__ import annotations

import secrets
import uuid

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(CROCKFORD)}
_DECODE.update({"O": 0, "I": 1, "L": 1})


def new_id() -> str:
    """A new random primary key (32 hex characters, UUID4 entropy)."""
    return uuid.uuid4().hex


def public_code(prefix: str, length: int = 8) -> str:
    """A short random code a person can read, e.g. ``TK-7Q2M9XHD``.

    ``length`` characters of Crockford base 32 carry 5 bits each (8 -> 40 bits). Callers that
    need uniqueness store it under a unique constraint and retry on a clash.
    """
    body = "".join(secrets.choice(CROCKFORD) for _ in range(length))
    return f"{prefix}-{body}" if prefix else body


def normalize_code(code: str) -> str:
    """Read a code typed by a person: case-insensitive, O->0, I/L->1, dashes kept."""
    out = []
    for ch in code.strip().upper():
        if ch == "-":
            out.append(ch)
        elif ch in _DECODE:
            out.append(CROCKFORD[_DECODE[ch]])
        else:
            raise ValueError(f"{ch!r} cannot appear in a code")
    return "".join(out)


def slugify(text: str, max_length: int = 40) -> str:
    """A lowercase DNS-label-safe slug: letters, digits and single dashes."""
    out: list[str] = []
    for ch in text.lower():
        if ch.isascii() and ch.isalnum():
            out.append(ch)
        elif out and out[-1] != "-":
            out.append("-")
    slug = "".join(out).strip("-")[:max_length].strip("-")
    return slug or "org"
