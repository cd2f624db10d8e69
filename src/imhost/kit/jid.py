"""JIDs prepared per RFC 7622.

- localpart: PRECIS UsernameCaseMapped profile (RFC 8265 §3.3): width mapping, lower case,
  NFC, then the IdentifierClass rules, plus the characters RFC 7622 §3.3.1 forbids
  (``" & ' / : < > @``).
- domainpart: RFC 7622 §3.2: lower case and NFC, IDNA labels checked (no empty label, label
  at most 63 octets); a trailing dot is removed; IP literals in brackets are kept.
- resourcepart: PRECIS OpaqueString profile (RFC 8265 §4.2): non-ASCII spaces to U+0020,
  NFC, no control characters.

Each part is limited to 1023 octets once prepared (RFC 7622 §3.1). Parsing is cached and has
a fast path for ASCII input, which is what the router sees on the hot path.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

MAX_PART_BYTES = 1023
_LOCAL_FORBIDDEN = frozenset("\"&'/:<>@")
_ASCII_LOCAL_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$%()*+,-.;=?[\\]^_`{|}~")
_ASCII_DOMAIN_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


class JID:
    """An immutable, prepared JID. ``str(jid)`` is its canonical form."""

    __slots__ = ("_bare", "_str", "domain", "local", "resource")

    local: str
    domain: str
    resource: str
    _bare: str
    _str: str

    def __init__(self, local: str, domain: str, resource: str = "") -> None:
        """Build from parts that are already prepared (use :func:`parse_jid` for input)."""
        object.__setattr__(self, "local", local)
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "resource", resource)
        bare = f"{local}@{domain}" if local else domain
        object.__setattr__(self, "_bare", bare)
        object.__setattr__(self, "_str", f"{bare}/{resource}" if resource else bare)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("JID is immutable")

    @property
    def bare(self) -> str:
        """``local@domain`` (or ``domain``), as a string."""
        return self._bare

    @property
    def is_bare(self) -> bool:
        return not self.resource

    def to_bare(self) -> JID:
        return self if not self.resource else JID(self.local, self.domain)

    def with_resource(self, resource: str) -> JID:
        return JID(self.local, self.domain, prepare_resource(resource))

    def __str__(self) -> str:
        return self._str

    def __repr__(self) -> str:
        return f"JID({self._str!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JID) and other._str == self._str

    def __hash__(self) -> int:
        return hash(self._str)


def _check_len(value: str, what: str) -> None:
    if len(value.encode("utf-8")) > MAX_PART_BYTES:
        raise ValueError(f"{what} is longer than {MAX_PART_BYTES} bytes (RFC 7622 §3.1)")


def prepare_localpart(value: str) -> str:
    """RFC 7622 §3.3 with the UsernameCaseMapped profile (RFC 8265 §3.3)."""
    if not value:
        raise ValueError("localpart is empty")
    if value.isascii():
        out = value.lower()
        bad = set(out) - _ASCII_LOCAL_OK
        if bad:
            raise ValueError(f"localpart contains a forbidden character: {sorted(bad)[0]!r}")
        _check_len(out, "localpart")
        return out
    # Width mapping (RFC 8265 §3.3.1 step 1): fullwidth/halfwidth to their decomposition.
    mapped = "".join(
        unicodedata.normalize("NFKC", c) if unicodedata.east_asian_width(c) in ("F", "H") else c
        for c in value
    )
    out = unicodedata.normalize("NFC", mapped.lower())
    for c in out:
        if c in _LOCAL_FORBIDDEN:
            raise ValueError(f"localpart contains a forbidden character: {c!r}")
        cat = unicodedata.category(c)
        if cat[0] in ("C", "Z") or (cat in ("Sk", "Lm") and not c.isalnum()):
            raise ValueError(f"localpart contains a disallowed character U+{ord(c):04X}")
    if not out:
        raise ValueError("localpart is empty")
    _check_len(out, "localpart")
    return out


def prepare_domain(value: str) -> str:
    """RFC 7622 §3.2: lower case, NFC, valid labels; IDNA A-labels and U-labels accepted."""
    if value.endswith("."):
        value = value[:-1]
    if not value:
        raise ValueError("domainpart is empty")
    if value.startswith("["):
        if not value.endswith("]") or len(value) < 3:
            raise ValueError("domainpart: malformed IP literal")
        return value.lower()
    if value.isascii():
        out = value.lower()
        if set(out) - _ASCII_DOMAIN_OK:
            raise ValueError("domainpart contains a character not allowed in a DNS name")
    else:
        out = unicodedata.normalize("NFC", value.lower())
        for c in out:
            cat = unicodedata.category(c)
            if cat[0] in ("C", "Z") or c in "/@<>&'\":":
                raise ValueError(f"domainpart contains a disallowed character U+{ord(c):04X}")
        try:
            out.encode("idna")
        except UnicodeError as exc:
            raise ValueError(f"domainpart is not a valid internationalised name: {exc}") from None
    for label in out.split("."):
        if not label:
            raise ValueError("domainpart has an empty label")
        if len(label.encode("utf-8")) > 63 and label.isascii():
            raise ValueError("domainpart has a label longer than 63 octets")
        if label.startswith("-") or label.endswith("-"):
            raise ValueError("domainpart label starts or ends with a hyphen")
    _check_len(out, "domainpart")
    return out


def prepare_resource(value: str) -> str:
    """RFC 7622 §3.4 with the OpaqueString profile (RFC 8265 §4.2)."""
    if not value:
        raise ValueError("resourcepart is empty")
    if value.isascii():
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError("resourcepart contains a control character")
        _check_len(value, "resourcepart")
        return value
    mapped = "".join(" " if unicodedata.category(c) == "Zs" else c for c in value)
    out = unicodedata.normalize("NFC", mapped)
    for c in out:
        cat = unicodedata.category(c)
        if cat in ("Cc", "Cs", "Cn") or 0xFDD0 <= ord(c) <= 0xFDEF:
            raise ValueError(f"resourcepart contains a disallowed character U+{ord(c):04X}")
    _check_len(out, "resourcepart")
    return out


@lru_cache(maxsize=65536)
def parse_jid(value: str) -> JID:
    """Parse and prepare a JID string (RFC 7622 §3.1); raise ValueError with the reason."""
    if not value:
        raise ValueError("JID is empty")
    if len(value) > 3 * 1024 * 4:
        raise ValueError("JID is too long")
    # RFC 7622 §3.1: the first '/' separates the resource; the first '@' before it the local.
    slash = value.find("/")
    if slash >= 0:
        head, resource = value[:slash], value[slash + 1 :]
        if not resource:
            raise ValueError("resourcepart is empty after '/'")
    else:
        head, resource = value, ""
    at = head.find("@")
    if at >= 0:
        local, domain = head[:at], head[at + 1 :]
        if not local:
            raise ValueError("localpart is empty before '@'")
    else:
        local, domain = "", head
    return JID(
        prepare_localpart(local) if local else "",
        prepare_domain(domain),
        prepare_resource(resource) if resource else "",
    )


def try_parse_jid(value: str | None) -> JID | None:
    """Like :func:`parse_jid` but return None for a missing or invalid JID."""
    if not value:
        return None
    try:
        return parse_jid(value)
    except ValueError:
        return None
